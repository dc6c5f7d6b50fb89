import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load-config';
import { SETTINGS } from '../../src/config/settings';
import { exitCodeFor, OutboxError } from '../../src/errors';

// The README's "Configuration" section is the operator's view of SETTINGS: one table row
// per setting, in the same order, with the same names, default and sentence. Nothing
// generates the table; this test keeps the two in step and, when they drift, prints the
// row the README should have.

const README = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');

/** The text of the `## <title>` section, up to the next `## ` heading. */
function section(title: string): string {
  const start = README.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`README has no "## ${title}" section`);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

/** The cells of a Markdown table row; `\|` is a literal bar. */
function cells(line: string): string[] {
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

interface Row {
  /** The whole first cell, e.g. "`OUTBOX_AMQP_URL` · `OUTBOX_AMQP_URL_FILE`". */
  readonly variable: string;
  readonly defaultValue: string;
  readonly meaning: string;
}

/** The rows of the first table in `text` whose header is `variable | default | meaning`. */
function configTable(text: string): Row[] {
  const lines = text.split('\n');
  const header = lines.findIndex((line) => line.startsWith('|') && cells(line).join('|') === 'variable|default|meaning');
  if (header < 0) throw new Error('the Configuration section has no "| variable | default | meaning |" table');
  const rows: Row[] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break;
    const [variable = '', defaultCell = '', meaning = '', ...extra] = cells(line);
    if (extra.length > 0) throw new Error(`README configuration row has more than three cells: ${line}`);
    // A setting without a default (an unset OTLP endpoint) shows an em dash.
    const code = defaultCell === '—' ? ['—', ''] : /^`(.+)`$/.exec(defaultCell);
    if (!code) throw new Error(`README configuration default is not one code span (nor — for none): ${line}`);
    rows.push({ variable, defaultValue: code[1] as string, meaning });
  }
  return rows;
}

/** The row SETTINGS says the README should have for each setting, in SETTINGS order. */
function expectedRows(): Row[] {
  return Object.values(SETTINGS).map((setting) => {
    const aliases = 'aliases' in setting ? setting.aliases : [];
    const fromFile = 'fromFile' in setting && setting.fromFile;
    let variable = `\`${setting.env}\``;
    if (aliases.length > 0) variable += ` (or ${aliases.map((a) => `\`${a}\``).join(', ')})`;
    if (fromFile) variable += ` · \`${setting.env}_FILE\``;
    return { variable, defaultValue: setting.defaultValue, meaning: setting.doc };
  });
}

const CONFIGURATION = section('Configuration');
const ROWS = configTable(CONFIGURATION);

describe('README "Configuration" against SETTINGS', () => {
  test('one row per setting, in SETTINGS order, with its names, default and sentence', () => {
    // On a failure, the diff shows the row to write (or the doc to correct in settings.ts).
    expect(ROWS).toEqual(expectedRows());
  });

  test('no variable is documented twice', () => {
    const names = ROWS.flatMap((row) => [...row.variable.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1]));
    expect(names.length).toBeGreaterThan(Object.keys(SETTINGS).length);
    expect(new Set(names).size).toBe(names.length);
  });

  test('"the URL variables may instead be given as <NAME>_FILE": exactly the URL settings read a file; they and the OTLP headers are the secret ones', () => {
    expect(CONFIGURATION).toContain('The URL variables may instead be given as `<NAME>_FILE`');
    const urlSettings = Object.values(SETTINGS)
      .filter((s) => s.env.endsWith('_URL'))
      .map((s) => s.env);
    const fileSettings = Object.values(SETTINGS)
      .filter((s) => 'fromFile' in s && s.fromFile)
      .map((s) => s.env);
    const secretSettings = Object.values(SETTINGS)
      .filter((s) => 'secret' in s && s.secret)
      .map((s) => s.env);
    expect(urlSettings.length).toBeGreaterThan(0);
    expect(fileSettings).toEqual(urlSettings);
    // The OTLP headers carry the API keys of a tracing backend: never echoed either.
    expect(secretSettings).toEqual([...urlSettings, 'OTEL_EXPORTER_OTLP_TRACES_HEADERS']);
  });

  test('the example of a rejected configuration is what loadConfig reports, and the exit code is 2', () => {
    const example = /```text\n\$ ((?:[A-Z_]+=\S+ )+)npx outbox-relay run\noutbox-relay: (.*)\n\$ echo \$\?\n(\d+)\n```/.exec(CONFIGURATION);
    if (!example) throw new Error('the Configuration section has no example of a rejected configuration');
    const [, assignments = '', message, exitCode] = example;
    const env = Object.fromEntries(
      assignments
        .trim()
        .split(' ')
        .map((assignment) => assignment.split('=') as [string, string]),
    );
    let error: unknown;
    try {
      loadConfig(env);
    } catch (err: unknown) {
      error = err;
    }
    expect(error).toBeInstanceOf(OutboxError);
    expect((error as OutboxError).message).toBe(message);
    expect(String(exitCodeFor(error))).toBe(exitCode);
  });
});
