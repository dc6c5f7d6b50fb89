/**
 * What the documentation's link check needs from Markdown: the anchors GitHub gives a
 * file's headings, and the relative links a file makes. No Markdown library is installed
 * (none is worth a dependency for this), so both follow GitHub's rules directly, for the
 * Markdown this repository writes: ATX headings (`## Title`), inline links and images,
 * reference definitions, fenced code blocks and code spans.
 */

/**
 * GitHub's anchor for a heading's text, as github-slugger makes it: lower case, every
 * character dropped that is neither a letter, a mark, a digit, a connector (`_`), a
 * hyphen nor a space, then each space a hyphen. Inline Markdown is rendered first: a code
 * span keeps its text, a link its label.
 */
export function githubSlug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]*>/g, '')
    .replace(/`/g, '');
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Lines outside fenced code blocks (``` or ~~~), with their 1-based line numbers. */
function proseLines(markdown: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let fence: string | undefined;
  markdown.split('\n').forEach((text, index) => {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(text)?.[1];
    if (fence === undefined && marker !== undefined) fence = marker;
    else if (fence !== undefined && marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) fence = undefined;
    else if (fence === undefined) out.push({ line: index + 1, text });
  });
  return out;
}

/**
 * The anchors of a file's headings, in order. A repeated heading gets `-1`, `-2`, … as on
 * GitHub (skipping any anchor another heading already has).
 */
export function headingAnchors(markdown: string): string[] {
  const anchors: string[] = [];
  const taken = new Set<string>();
  const repeats = new Map<string, number>();
  for (const { text } of proseLines(markdown)) {
    const title = /^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/.exec(text)?.[1];
    if (title === undefined) continue;
    const base = githubSlug(title);
    let anchor = base;
    if (taken.has(base)) {
      let n = repeats.get(base) ?? 0;
      do anchor = `${base}-${++n}`;
      while (taken.has(anchor));
      repeats.set(base, n);
    }
    taken.add(anchor);
    anchors.push(anchor);
  }
  return anchors;
}

/** A link in a Markdown file: where it points, as written, and the line it is on. */
export interface MarkdownLink {
  readonly target: string;
  readonly line: number;
}

/**
 * The relative links of a file: inline links and images (`[text](target)`) and reference
 * definitions (`[name]: target`) outside code, whose target has no scheme (`https:`,
 * `mailto:`) — a path, a path with `#fragment`, or a `#fragment` of the file itself.
 */
export function relativeLinks(markdown: string): MarkdownLink[] {
  const links: MarkdownLink[] = [];
  for (const { line, text } of proseLines(markdown)) {
    const prose = text.replace(/(`+)[\s\S]*?\1/g, '');
    const targets = [
      ...[...prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1] as string),
      ...[...prose.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?/g)].map((m) => m[1] as string),
    ];
    for (const target of targets) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue;
      links.push({ target, line });
    }
  }
  return links;
}
