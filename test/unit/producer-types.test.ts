import { join } from 'node:path';
import ts from 'typescript';

test('the producer type test compiles: right payloads accepted, every wrong payload rejected', () => {
  const configPath = join(__dirname, '..', '..', 'tsconfig.json');
  const { config } = ts.readConfigFile(configPath, (p) => ts.sys.readFile(p));
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, join(__dirname, '..', '..'));
  const file = join(__dirname, '..', 'types', 'producer.types.ts');
  const program = ts.createProgram([file], { ...parsed.options, noEmit: true });
  const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === file);
  const text = diagnostics.map((d) => `${d.start}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`).join('\n');
  expect(text).toBe('');
  // Sanity: the file holds the expected-error markers this relies on.
  expect(ts.sys.readFile(file)?.match(/^\s*\/\/ @ts-expect-error/gm)?.length).toBe(6);
}, 60_000);
