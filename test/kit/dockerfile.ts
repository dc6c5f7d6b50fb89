/**
 * A small Dockerfile reader for structure tests (no Docker engine here): joins
 * continuation lines, drops comments and parser directives, splits into stages.
 * Handles what this repository's Dockerfile uses, not the whole grammar (no heredocs).
 */

export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, … */
  readonly keyword: string;
  /** Everything after the keyword, continuation lines joined with a space. */
  readonly args: string;
  readonly line: number;
}

export interface Stage {
  readonly name: string | undefined;
  readonly from: string;
  readonly instructions: readonly Instruction[];
}

export function parseDockerfile(text: string): { readonly preamble: readonly Instruction[]; readonly stages: readonly Stage[] } {
  const instructions: Instruction[] = [];
  const lines = text.split('\n');
  let pending = '';
  let startLine = 0;
  lines.forEach((raw, index) => {
    const line = raw.trimEnd();
    if (pending === '' && /^\s*#/.test(line)) return; // comments and parser directives
    if (pending !== '' && /^\s*#/.test(line)) return; // comments inside a continuation
    if (pending === '' && line.trim() === '') return;
    if (pending === '') startLine = index + 1;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      return;
    }
    const full = `${pending}${line.trim()}`.trim();
    pending = '';
    const match = /^(\S+)\s*(.*)$/.exec(full);
    if (match) instructions.push({ keyword: match[1]!.toUpperCase(), args: match[2]!, line: startLine });
  });
  const preamble: Instruction[] = [];
  const stages: { name: string | undefined; from: string; instructions: Instruction[] }[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === 'FROM') {
      const words = instruction.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const asIndex = words.findIndex((w) => w.toUpperCase() === 'AS');
      stages.push({ name: asIndex >= 0 ? words[asIndex + 1] : undefined, from: words[0] ?? '', instructions: [] });
    } else if (stages.length === 0) {
      preamble.push(instruction);
    } else {
      stages[stages.length - 1]!.instructions.push(instruction);
    }
  }
  return { preamble, stages };
}

/** The JSON array of an exec-form instruction (`["node", "x"]`), or undefined for shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.trim().startsWith('[')) return undefined;
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) && parsed.every((p) => typeof p === 'string') ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** Flags (`--from=build`) and the sources and destination of a COPY/ADD instruction. */
export function copyParts(args: string): { flags: Record<string, string>; sources: string[]; destination: string } {
  const asJson = execForm(args);
  const words = asJson ?? args.split(/\s+/).filter((w) => w.length > 0);
  const flags: Record<string, string> = {};
  const rest: string[] = [];
  for (const word of words) {
    const flag = /^--([a-z-]+)(?:=(.*))?$/.exec(word);
    if (flag && rest.length === 0) flags[flag[1]!] = flag[2] ?? 'true';
    else rest.push(word);
  }
  return { flags, sources: rest.slice(0, -1), destination: rest[rest.length - 1] ?? '' };
}

/**
 * A .dockerignore, as the builder applies it to the build context: patterns in Go's
 * filepath.Match syntax plus `**`, relative to the context root; a path is excluded
 * when the last pattern that matches it (or one of its parent directories) is not a
 * `!` exception.
 */
export class DockerIgnore {
  private readonly rules: { negate: boolean; regex: RegExp }[];

  constructor(text: string) {
    this.rules = text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0 && !l.startsWith('#'))
      .map((l) => {
        const negate = l.startsWith('!');
        const pattern = clean(negate ? l.slice(1) : l);
        return { negate, regex: globToRegex(pattern) };
      });
  }

  excludes(path: string): boolean {
    const parts = clean(path).split('/');
    let excluded = false;
    // A directory that is excluded takes its contents with it; an exception for a path
    // inside it re-includes just that path.
    for (let depth = 1; depth <= parts.length; depth += 1) {
      const prefix = parts.slice(0, depth).join('/');
      for (const rule of this.rules) if (rule.regex.test(prefix)) excluded = !rule.negate;
    }
    return excluded;
  }
}

function clean(path: string): string {
  return path
    .replace(/^\.?\/+/, '')
    .replace(/\/+$/, '')
    .replace(/\/+/g, '/');
}

function globToRegex(pattern: string): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i += 1) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      // `**/` matches any number of directories, a trailing `**` anything.
      out += pattern[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += pattern[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}
