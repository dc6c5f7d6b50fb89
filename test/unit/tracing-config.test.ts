import { loadConfig } from '../../src/config/load-config';
import { tracingSettings } from '../../src/config/tracing';
import { exitCodeFor } from '../../src/errors';
import { configError, names } from './config-errors';

// The OTEL_* settings as the relay reads them (docs/tracing.md); their rejected values are in config-rejections.test.ts.

describe('tracing settings', () => {
  test('off by default: no endpoint, no tracing', () => {
    expect(tracingSettings(loadConfig({}))).toBeUndefined();
    expect(tracingSettings(loadConfig({ OTEL_SERVICE_NAME: 'x', OTEL_EXPORTER_OTLP_HEADERS: 'a=b' }))).toBeUndefined();
  });

  test.each([
    ['http://collector:4318', 'http://collector:4318/v1/traces'],
    ['http://collector:4318/', 'http://collector:4318/v1/traces'],
    ['https://otlp.example.com/tenant/7', 'https://otlp.example.com/tenant/7/v1/traces'],
  ])('the base endpoint %s sends spans to %s', (endpoint, url) => {
    expect(tracingSettings(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }))?.tracesUrl).toBe(url);
  });

  test('the traces endpoint is used as it is, and wins over the base endpoint', () => {
    const config = loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://b:9999/spans' });
    expect(tracingSettings(config)?.tracesUrl).toBe('http://b:9999/spans');
  });

  test('OTEL_SDK_DISABLED=true turns it off whatever the endpoints say', () => {
    expect(tracingSettings(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_SDK_DISABLED: 'true' }))).toBeUndefined();
    expect(tracingSettings(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_SDK_DISABLED: 'false' }))).toBeDefined();
  });

  test('the generic protocol and headers variables apply when the traces ones are unset; the traces ones win', () => {
    const generic = tracingSettings(
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_EXPORTER_OTLP_HEADERS: 'k=1',
      }),
    );
    expect(generic).toMatchObject({ protocol: 'http/json', headers: { k: '1' } });
    const specific = tracingSettings(
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf',
        OTEL_EXPORTER_OTLP_HEADERS: 'k=1',
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'k=2,authorization=Bearer%20t',
      }),
    );
    expect(specific).toMatchObject({ protocol: 'http/protobuf', headers: { k: '2', authorization: 'Bearer t' } });
  });

  test('a malformed endpoint exits 2 naming the variable', () => {
    const err = configError({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(exitCodeFor(err)).toBe(2);
    expect(names(err.message, 'OTEL_EXPORTER_OTLP_ENDPOINT')).toBe(true);
    expect(configError({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'grpc://c:4317' }).message).toMatch(
      /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must start with http:\/\/ or https:\/\//,
    );
  });

  test('bad OTLP headers are named, never echoed (they carry API keys)', () => {
    const key = 'sk-live-0123456789abcdef';
    for (const [name, value] of [
      ['OTEL_EXPORTER_OTLP_HEADERS', `x-api-key%=${key}`],
      ['OTEL_EXPORTER_OTLP_HEADERS', `${key}`],
      ['OTEL_EXPORTER_OTLP_TRACES_HEADERS', `a=b,x-api-key=${key}%`],
    ] as const) {
      const err = configError({ [name]: value });
      expect(names(err.message, name)).toBe(true);
      expect(err.message).not.toContain(key);
      expect(err.message).toMatch(/entry #\d/);
    }
  });
});
