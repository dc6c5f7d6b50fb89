import { join } from 'node:path';
import { DEPLOY, yamlDoc, yamlDocs, type Doc } from './deploy-yaml';

describe('kubernetes/', () => {
  const deployment = yamlDoc('kubernetes/deployment.yaml');
  const pod = deployment['spec']['template'];
  const containers: Doc[] = pod['spec']['containers'];
  const initContainers: Doc[] = pod['spec']['initContainers'] ?? [];
  /** The relay: a native sidecar, i.e. an init container with restartPolicy Always. */
  const relay = [...initContainers, ...containers].find((c) => c['name'] === 'outbox-relay')!;
  const standalone = yamlDoc('kubernetes/relay-deployment.yaml');
  const standalonePod = standalone['spec']['template'];
  const standaloneRelay = (standalonePod['spec']['containers'] as Doc[]).find((c) => c['name'] === 'outbox-relay')!;
  const env = (container: Doc): Record<string, string> =>
    Object.fromEntries((container['env'] as Doc[]).map((e) => [e['name'] as string, e['value'] as string]));
  const secrets = yamlDocs(join(DEPLOY, 'kubernetes', 'secret.example.yaml'));
  /** What the relay may take to stop after SIGTERM (s): OUTBOX_SHUTDOWN_TIMEOUT_MS, then the daemon's forced exit 8 s later. */
  const relayDrainSeconds = (container: Doc): number => Number(env(container)['OUTBOX_SHUTDOWN_TIMEOUT_MS'] ?? 10_000) / 1000 + 8;

  /** The Secret key a file path inside `container` comes from, or undefined if no secret volume holds it. */
  function secretKeyOf(container: Doc, path: string, inPod: Doc = pod): { secretName: string; key: string } | undefined {
    for (const mount of (container['volumeMounts'] ?? []) as Doc[]) {
      const dir = String(mount['mountPath']).replace(/\/$/, '');
      if (!path.startsWith(`${dir}/`)) continue;
      const volume = (inPod['spec']['volumes'] as Doc[]).find((v) => v['name'] === mount['name']);
      if (!volume?.['secret']) return undefined;
      const file = path.slice(dir.length + 1);
      const items = volume['secret']['items'] as Doc[] | undefined;
      const key = items ? items.find((i) => i['path'] === file)?.['key'] : file;
      return key === undefined ? undefined : { secretName: volume['secret']['secretName'], key };
    }
    return undefined;
  }

  function secretHasKey(secretName: string, key: string): boolean {
    const secret = secrets.find((s) => s['kind'] === 'Secret' && s['metadata']['name'] === secretName);
    return secret !== undefined && key in { ...secret['stringData'], ...secret['data'] };
  }

  test('a Deployment runs the service with the relay as a native sidecar: an init container with restartPolicy Always', () => {
    expect(deployment).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment' });
    expect(containers.length).toBeGreaterThanOrEqual(1);
    expect(containers.map((c) => c['name'])).not.toContain('outbox-relay');
    expect(initContainers.find((c) => c['name'] === 'outbox-relay')).toBe(relay);
    // Without it the init container would have to exit before the service starts; with it,
    // it starts before the service container and stops after it.
    expect(relay['restartPolicy']).toBe('Always');
    expect(relay['image']).toMatch(/outbox-relay/);
    expect(relay['args'] ?? ['run']).toEqual(['run']);
  });

  /** Probes on the relay's HTTP port: liveness (and startup) on /healthz. */
  function expectHealthProbes(container: Doc): void {
    const port = (container['ports'] as Doc[])[0]!;
    const probePort = (probe: Doc): unknown => probe['httpGet']['port'];
    expect(container['livenessProbe']['httpGet']['path']).toBe('/healthz');
    if (container['startupProbe']) expect(container['startupProbe']['httpGet']['path']).toBe('/healthz');
    for (const probe of [container['livenessProbe'], container['startupProbe'], container['readinessProbe']].filter(Boolean))
      expect([port['name'], port['containerPort']]).toContain(probePort(probe as Doc));
    expect(String(port['containerPort'])).toBe(env(container)['OUTBOX_HTTP_PORT'] ?? '9464');
  }

  test('the sidecar has a /healthz liveness (and startup) probe on its HTTP port, and no readiness on /readyz', () => {
    expectHealthProbes(relay);
    // /readyz is 503 while the broker or the database is down: as the sidecar's readiness
    // it would take the service's pod out of its Service during the outage the outbox absorbs.
    expect(relay['readinessProbe']?.['httpGet']?.['path']).not.toBe('/readyz');
    for (const container of [...initContainers, ...containers])
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe'])
        expect({ container: container['name'], probe, path: container[probe]?.['httpGet']?.['path'] }).not.toMatchObject({
          path: '/readyz',
        });
  });

  test('the relay has resource requests and limits', () => {
    expect(relay['resources']['requests']).toEqual(expect.objectContaining({ cpu: expect.anything(), memory: expect.anything() }));
    expect(relay['resources']['limits']).toEqual(expect.objectContaining({ memory: expect.anything() }));
  });

  test('the URLs come from a Secret mounted as files (OUTBOX_*_URL_FILE), never from plain env values', () => {
    const vars = env(relay);
    for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_AMQP_URL', 'DATABASE_URL']) expect(vars[name]).toBeUndefined();
    for (const name of ['OUTBOX_DATABASE_URL_FILE', 'OUTBOX_AMQP_URL_FILE']) {
      const source = secretKeyOf(relay, vars[name]!);
      expect({ name, source }).toEqual({ name, source: expect.objectContaining({ key: expect.any(String) }) });
      expect(secretHasKey(source!.secretName, source!.key)).toBe(true);
    }
    for (const mount of relay['volumeMounts'] as Doc[]) expect(mount['readOnly']).toBe(true);
  });

  test('terminationGracePeriodSeconds covers the drain of the relay: OUTBOX_SHUTDOWN_TIMEOUT_MS and the 8 s grace of the daemon', () => {
    const shutdownMs = Number(env(relay)['OUTBOX_SHUTDOWN_TIMEOUT_MS'] ?? 10_000);
    expect(pod['spec']['terminationGracePeriodSeconds']).toBeGreaterThan(shutdownMs / 1000);
    // The sidecar stops after the service container, within the same grace period.
    expect(pod['spec']['terminationGracePeriodSeconds']).toBeGreaterThan(relayDrainSeconds(relay));
    expect(standalonePod['spec']['terminationGracePeriodSeconds']).toBeGreaterThan(relayDrainSeconds(standaloneRelay));
  });

  describe('relay-deployment.yaml: the relay on its own', () => {
    test('a Deployment of relays only, with the image and settings of the sidecar', () => {
      expect(standalone).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment' });
      expect(standalonePod['spec']['containers']).toHaveLength(1);
      expect(standalonePod['spec']['initContainers']).toBeUndefined();
      expect(standaloneRelay['image']).toBe(relay['image']);
      expect(standaloneRelay['args'] ?? ['run']).toEqual(['run']);
      expect(env(standaloneRelay)['OUTBOX_APP_ID']).toBe(env(relay)['OUTBOX_APP_ID']);
      expect(standalonePod['metadata']['labels']).toMatchObject(standalone['spec']['selector']['matchLabels']);
      // Its pods are not the service's: the service's Deployment must not select them.
      const serviceSelector = deployment['spec']['selector']['matchLabels'] as Record<string, string>;
      const labels = standalonePod['metadata']['labels'] as Record<string, string>;
      expect(Object.entries(serviceSelector).every(([k, v]) => labels[k] === v)).toBe(false);
    });

    test('/healthz liveness and /readyz readiness (no Service depends on it)', () => {
      expectHealthProbes(standaloneRelay);
      expect(standaloneRelay['readinessProbe']['httpGet']['path']).toBe('/readyz');
    });

    test('non-root, resource limits, URLs from the Secret as files, scraped', () => {
      expect(standalonePod['spec']['securityContext']).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(standaloneRelay['securityContext']).toMatchObject({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ['ALL'] },
      });
      expect(standaloneRelay['resources']['requests']).toEqual(
        expect.objectContaining({ cpu: expect.anything(), memory: expect.anything() }),
      );
      expect(standaloneRelay['resources']['limits']).toEqual(expect.objectContaining({ memory: expect.anything() }));
      const vars = env(standaloneRelay);
      for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_AMQP_URL']) expect(vars[name]).toBeUndefined();
      for (const name of ['OUTBOX_DATABASE_URL_FILE', 'OUTBOX_AMQP_URL_FILE']) {
        const source = secretKeyOf(standaloneRelay, vars[name]!, standalonePod);
        expect({ name, source }).toEqual({ name, source: expect.objectContaining({ key: expect.any(String) }) });
        expect(secretHasKey(source!.secretName, source!.key)).toBe(true);
      }
      for (const mount of standaloneRelay['volumeMounts'] as Doc[]) expect(mount['readOnly']).toBe(true);
      const monitor = yamlDoc('kubernetes/podmonitor.yaml');
      expect(standalonePod['metadata']['labels']).toMatchObject(monitor['spec']['selector']['matchLabels']);
      expect(standalonePod['metadata']['annotations']['prometheus.io/port']).toBe(
        String((standaloneRelay['ports'] as Doc[])[0]!['containerPort']),
      );
    });
  });

  test('the pod runs as non-root and carries the prometheus.io scrape annotations for the relay port', () => {
    expect(pod['spec']['securityContext']['runAsNonRoot']).toBe(true);
    expect(pod['metadata']['annotations']).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
    expect(pod['metadata']['annotations']['prometheus.io/port']).toBe(String((relay['ports'] as Doc[])[0]!['containerPort']));
  });

  test('the migration Job runs `migrate` with the same image and its URL from a mounted Secret', () => {
    const job = yamlDoc('kubernetes/migration-job.yaml');
    expect(job).toMatchObject({ apiVersion: 'batch/v1', kind: 'Job' });
    const container = (job['spec']['template']['spec']['containers'] as Doc[])[0]!;
    expect(container['image']).toBe(relay['image']);
    expect(container['args']).toEqual(['migrate']);
    expect(job['spec']['template']['spec']['restartPolicy']).toBe('Never');
    const path = env(container)['OUTBOX_DATABASE_URL_FILE']!;
    const mount = (container['volumeMounts'] as Doc[]).find((m) => path.startsWith(`${m['mountPath']}/`))!;
    const volume = (job['spec']['template']['spec']['volumes'] as Doc[]).find((v) => v['name'] === mount['name'])!;
    const item = (volume['secret']['items'] as Doc[]).find((i) => path.endsWith(`/${i['path']}`))!;
    expect(secretHasKey(volume['secret']['secretName'], item['key'])).toBe(true);
  });

  test('the selftest Job runs `selftest` with the same image, its URLs from the mounted Secret, bounded, as non-root', () => {
    const job = yamlDoc('kubernetes/selftest-job.yaml');
    expect(job).toMatchObject({ apiVersion: 'batch/v1', kind: 'Job' });
    const spec = job['spec']['template']['spec'];
    const container = (spec['containers'] as Doc[])[0]!;
    expect(container['image']).toBe(relay['image']);
    const args = container['args'] as string[];
    expect(args[0]).toBe('selftest');
    expect(spec['restartPolicy']).toBe('Never');
    const timeoutIndex = args.indexOf('--timeout-ms');
    const timeoutMs = timeoutIndex < 0 ? 10_000 : Number(args[timeoutIndex + 1]);
    expect(job['spec']['backoffLimit']).toEqual(expect.any(Number));
    // The deadline leaves the canary its whole --timeout-ms, and the connections and the relay wait besides.
    expect(job['spec']['activeDeadlineSeconds']).toBeGreaterThan(timeoutMs / 1000 + 10);
    expect(job['spec']['ttlSecondsAfterFinished']).toBeGreaterThan(0);

    const vars = env(container);
    for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_AMQP_URL', 'DATABASE_URL']) expect(vars[name]).toBeUndefined();
    for (const name of ['OUTBOX_DATABASE_URL_FILE', 'OUTBOX_AMQP_URL_FILE']) {
      const path = vars[name]!;
      const mount = (container['volumeMounts'] as Doc[]).find((m) => path.startsWith(`${m['mountPath']}/`))!;
      expect(mount['readOnly']).toBe(true);
      const volume = (spec['volumes'] as Doc[]).find((v) => v['name'] === mount['name'])!;
      const item = (volume['secret']['items'] as Doc[]).find((i) => path.endsWith(`/${i['path']}`))!;
      expect({ name, secret: secretHasKey(volume['secret']['secretName'], item['key']) }).toEqual({ name, secret: true });
    }
    // It inserts and deletes a canary: not as the sidecar's relay role, which may not INSERT.
    expect(vars['OUTBOX_DATABASE_URL_FILE']).not.toBe(env(relay)['OUTBOX_DATABASE_URL_FILE']);
    expect(vars['OUTBOX_APP_ID']).toBe(env(relay)['OUTBOX_APP_ID']);

    expect(spec['securityContext']).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container['securityContext']).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(container['resources']['limits']).toEqual(expect.objectContaining({ memory: expect.anything() }));
  });

  test('the PodMonitor selects the sidecar pods, scrapes the metrics port and sets job="outbox-relay" for the alerts', () => {
    const monitor = yamlDoc('kubernetes/podmonitor.yaml');
    expect(monitor).toMatchObject({ apiVersion: 'monitoring.coreos.com/v1', kind: 'PodMonitor' });
    expect(pod['metadata']['labels']).toMatchObject(monitor['spec']['selector']['matchLabels']);
    const endpoint = (monitor['spec']['podMetricsEndpoints'] as Doc[])[0]!;
    expect(endpoint['port']).toBe((relay['ports'] as Doc[])[0]!['name']);
    expect(endpoint['relabelings']).toEqual(
      expect.arrayContaining([expect.objectContaining({ targetLabel: 'job', replacement: 'outbox-relay' })]),
    );
  });
});
