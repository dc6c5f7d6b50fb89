import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// Numbers read as text (`id::text AS id`, a bigint may exceed a JS number) must never be
// ordered under that name: ORDER BY resolves an output column first, so it would sort the
// text ("9" after "16"). Every SQL statement of src/ is checked for it.

const SRC = join(__dirname, '..', '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

/** Output names that stand for a number cast to text, in one statement. */
function textNumbers(sql: string): string[] {
  return [...sql.matchAll(/::text\s+AS\s+(\w+)/gi)].map((m) => m[1] as string);
}

/** The names ORDER BY, GROUP BY or DISTINCT ON use unqualified (no `table.` before them). */
function orderedNames(sql: string): string[] {
  const names: string[] = [];
  for (const clause of sql.matchAll(/(?:ORDER|GROUP)\s+BY\s+([^;)`]*?)(?:\bLIMIT\b|\bOFFSET\b|\bFOR\b|\bROWS\b|\)|`|$)/gis)) {
    for (const item of (clause[1] as string).split(',')) {
      const name = /^\s*([a-z_]\w*)\b(?!\s*\.)(?!\s*\()/i.exec(item)?.[1];
      if (name !== undefined && !/^(ASC|DESC|NULLS)$/i.test(name)) names.push(name);
    }
  }
  return names;
}

/** The file's string constants (`const COLUMNS = '…'`), which statements interpolate. */
function constants(text: string): Map<string, string> {
  return new Map([...text.matchAll(/const (\w+)\s*=\s*(['`])([^'`]*)\2;/g)].map((m) => [m[1] as string, m[3] as string]));
}

test('no statement in src/ orders by a number it reads as text', () => {
  const offenders: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    const known = constants(text);
    for (const literal of text.matchAll(/`[^`]*`/g)) {
      const sql = literal[0].replace(/\$\{(\w+)\}/g, (whole, name: string) => known.get(name) ?? whole);
      const asText = new Set(textNumbers(sql));
      for (const name of orderedNames(sql)) if (asText.has(name)) offenders.push(`${file.slice(SRC.length + 1)}: ORDER BY ${name}`);
    }
  }
  expect(offenders).toEqual([]);
});

test('the check finds the pattern it is for', () => {
  expect(orderedNames('SELECT id::text AS id FROM t ORDER BY id DESC LIMIT 1')).toEqual(['id']);
  expect(textNumbers('SELECT id::text AS id FROM t ORDER BY id DESC LIMIT 1')).toEqual(['id']);
  expect(orderedNames('SELECT a.id::text AS id FROM t AS a ORDER BY a.id DESC LIMIT 1')).toEqual([]);
});
