import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';

// Reading deploy/, shared by the deploy*.test.ts files.

const ROOT = join(__dirname, '..', '..');
export const DEPLOY = join(ROOT, 'deploy');

export function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesUnder(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}

export type Doc = Record<string, any>;

/** Every document of a (multi-document) YAML file; fails on any error or warning. */
export function yamlDocs(path: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`);
  for (const doc of docs) {
    const problems = [...doc.errors, ...doc.warnings].map((e) => e.message);
    if (problems.length > 0) throw new Error(`${relative(ROOT, path)}: ${problems.join('; ')}`);
  }
  return docs.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

export function yamlDoc(path: string): Doc {
  const docs = yamlDocs(join(DEPLOY, path));
  expect(docs).toHaveLength(1);
  return docs[0]!;
}
