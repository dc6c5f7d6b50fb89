import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Script } from 'node:vm';
import { copyParts, DockerIgnore, execForm, parseDockerfile, type Instruction, type Stage } from '../kit/dockerfile';

// The container image (docs/deployment.md). No Docker engine runs here, so the Dockerfile is checked for its structure,
// and .ci/run rebuilds the runtime stage's contents with the same npm steps.

const ROOT = join(__dirname, '..', '..');
const dockerfile = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const dockerignore = new DockerIgnore(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
const runtime = dockerfile.stages[dockerfile.stages.length - 1]!;

function all(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword);
}

function last(stage: Stage, keyword: string): Instruction | undefined {
  return all(stage, keyword).pop();
}

/** HEALTHCHECK [--option=value…] CMD <command>: the command part. */
function healthcheckCommand(args: string): string {
  return args.replace(/^(?:--[a-z-]+=\S+\s+)*/, '').replace(/^CMD\s+/i, '');
}

describe('Dockerfile', () => {
  test('is multi-stage: a build stage with the dev toolchain, a separate runtime stage', () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    const build = dockerfile.stages.find((s) => s.name === 'build');
    expect(build).toBeDefined();
    expect(all(build!, 'RUN').map((r) => r.args)).toEqual(expect.arrayContaining([expect.stringMatching(/npm run build/)]));
    expect(runtime.name).not.toBe('build');
  });

  test('the runtime stage installs production dependencies only', () => {
    const installs = all(runtime, 'RUN').filter((r) => /\bnpm\s+(ci|install|i)\b/.test(r.args));
    expect(installs).toHaveLength(1);
    expect(installs[0]!.args).toMatch(/\bnpm ci\b/);
    expect(installs[0]!.args).toMatch(/--omit=dev\b/);
    expect(all(runtime, 'ENV').map((e) => e.args)).toContain('NODE_ENV=production');
    // No sources or compiler configuration: only the compiled output of the build stage.
    const sources = all(runtime, 'COPY').flatMap((c) => copyParts(c.args).sources.map((s) => s.replace(/^\.\//, '')));
    expect(sources).not.toEqual(expect.arrayContaining([expect.stringMatching(/^(src|test|tsconfig)/)]));
  });

  test('the runtime stage runs as a non-root user', () => {
    const user = last(runtime, 'USER');
    expect(user).toBeDefined();
    const name = user!.args.split(':')[0]!.trim();
    expect(name).not.toMatch(/^(root|0)$/);
  });

  test('HEALTHCHECK calls GET /healthz with a command that exists in the image', () => {
    const healthcheck = last(runtime, 'HEALTHCHECK');
    expect(healthcheck).toBeDefined();
    expect(healthcheck!.args).not.toMatch(/^NONE\b/i);
    const command = execForm(healthcheckCommand(healthcheck!.args));
    expect(command).toBeDefined();
    expect(command![0]).toBe('node'); // slim images have no curl or wget
    expect(command!.join(' ')).toContain('/healthz');
    // The inline script at least compiles (test/integration/healthcheck.test.ts runs it).
    const script = command![command!.indexOf('-e') + 1]!;
    expect(() => new Script(script)).not.toThrow();
  });

  test('ENTRYPOINT is exec form (node is PID 1 and receives SIGTERM) and runs `outbox-relay run` by default', () => {
    const entrypoint = execForm(last(runtime, 'ENTRYPOINT')?.args ?? '');
    // node, then V8 flags (the same as `npm start`), then the package's bin.
    expect(entrypoint![0]).toBe('node');
    expect(entrypoint!.slice(1, -1).every((flag) => flag.startsWith('--'))).toBe(true);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
      scripts: Record<string, string>;
    };
    expect(pkg.bin['outbox-relay']).toBe(entrypoint![entrypoint!.length - 1]);
    expect(pkg.scripts['start']).toBe(`${entrypoint!.join(' ')} run`);
    expect(execForm(last(runtime, 'CMD')?.args ?? '')).toEqual(['run']);
  });

  test('every file it copies from the build context exists and is not excluded by .dockerignore', () => {
    const stageNames = new Set<string>();
    const checked: string[] = [];
    for (const stage of dockerfile.stages) {
      for (const copy of all(stage, 'COPY').concat(all(stage, 'ADD'))) {
        const { flags, sources } = copyParts(copy.args);
        if (flags['from'] !== undefined) {
          expect(stageNames).toContain(flags['from']);
          continue;
        }
        for (const source of sources) {
          expect(source).not.toMatch(/[*?[]/); // a glob would need expanding; none is used
          const path = join(ROOT, source);
          expect({ source, exists: existsSync(path) }).toEqual({ source, exists: true });
          expect({ source, excluded: dockerignore.excludes(source) }).toEqual({ source, excluded: false });
          if (statSync(path).isDirectory()) expect(readdirSync(path).length).toBeGreaterThan(0);
          checked.push(source.replace(/^\.\//, ''));
        }
      }
      if (stage.name) stageNames.add(stage.name);
    }
    expect(checked).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'src', 'bin', 'migrations']));
  });

  test('.dockerignore keeps the local build output, dependencies and secrets out of the context', () => {
    for (const path of [
      'node_modules',
      'node_modules/pg/package.json',
      'dist/cli.js',
      '.git',
      '.env',
      '.env.local',
      'test/unit',
      'deploy/compose.yaml',
    ]) {
      expect({ path, excluded: dockerignore.excludes(path) }).toEqual({ path, excluded: true });
    }
    for (const path of ['src/cli.ts', 'migrations/0001_messages.sql', 'bin/outbox-relay.js', 'tsconfig.build.json']) {
      expect({ path, excluded: dockerignore.excludes(path) }).toEqual({ path, excluded: false });
    }
  });

  test(".ci/run rebuilds exactly the runtime stage's contents with the same npm ci flags", () => {
    const ci = readFileSync(join(ROOT, '.ci', 'run'), 'utf8');
    const copied = all(runtime, 'COPY')
      .map((c) => copyParts(c.args))
      .flatMap((c) => (c.flags['from'] !== undefined ? [c.destination] : c.sources))
      .map((p) => p.replace(/^\.\//, ''))
      .sort();
    const listed = /^image_paths="([^"]+)"$/m.exec(ci)?.[1]?.split(/\s+/).sort();
    expect(listed).toEqual(copied);
    const npmCi = all(runtime, 'RUN').find((r) => /\bnpm ci\b/.test(r.args))!.args;
    const flags = /npm ci ([^&]*)/.exec(npmCi)![1]!.trim().split(/\s+/);
    const ciLine = ci.split('\n').find((l) => /npm ci .*--omit=dev/.test(l));
    expect(ciLine).toBeDefined();
    for (const flag of flags) expect(ciLine).toContain(flag);
  });
});

describe('the .dockerignore matcher', () => {
  test('follows the builder: anchored patterns, directories take their contents, later ! exceptions win', () => {
    const ignore = new DockerIgnore('*.log\nbuild\n**/*.tmp\ndocs/**\n!docs/keep.md\n');
    expect(ignore.excludes('a.log')).toBe(true);
    expect(ignore.excludes('sub/a.log')).toBe(false);
    expect(ignore.excludes('build/x/y.js')).toBe(true);
    expect(ignore.excludes('a/b/c.tmp')).toBe(true);
    expect(ignore.excludes('docs/other.md')).toBe(true);
    expect(ignore.excludes('docs/keep.md')).toBe(false);
    expect(ignore.excludes('src/build.ts')).toBe(false);
  });
});
