import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { githubSlug, headingAnchors, relativeLinks } from '../kit/markdown-links';

// Every relative link of the documentation leads somewhere: to a file of the repository
// and, with a #fragment into a Markdown file, to a heading that file has. A section that
// moves or is renamed breaks the links to it here, not for a reader.

const ROOT = join(__dirname, '..', '..');
const DOCUMENTS = [
  'README.md',
  'deploy/README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
];

/** What is wrong with one link of `file`, or undefined when it resolves. */
function brokenLink(file: string, target: string): string | undefined {
  const hash = target.indexOf('#');
  const path = hash < 0 ? target : target.slice(0, hash);
  const fragment = hash < 0 ? undefined : target.slice(hash + 1);
  const resolved = path === '' ? join(ROOT, file) : join(ROOT, dirname(file), decodeURIComponent(path));
  if (!resolved.startsWith(ROOT)) return `${target} leaves the repository`;
  if (!existsSync(resolved)) return `${target}: no file ${relative(ROOT, resolved)}`;
  if (fragment === undefined || !resolved.endsWith('.md') || !statSync(resolved).isFile()) return undefined;
  const anchors = headingAnchors(readFileSync(resolved, 'utf8'));
  if (anchors.includes(decodeURIComponent(fragment))) return undefined;
  return `${target}: ${relative(ROOT, resolved)} has no heading #${fragment}`;
}

describe('githubSlug', () => {
  test.each([
    ['Quick start', 'quick-start'],
    ['The SQL contract for any language', 'the-sql-contract-for-any-language'],
    ['Deliver-by time (`expires_at`)', 'deliver-by-time-expires_at'],
    ['It keeps running until `stop()`', 'it-keeps-running-until-stop'],
    ['Batches, order and a standby: choosing the options', 'batches-order-and-a-standby-choosing-the-options'],
    ['Replicas: one leads, the others stand by', 'replicas-one-leads-the-others-stand-by'],
    ["The CLI's output", 'the-clis-output'],
    ['What exactly-once means here, and where it ends', 'what-exactly-once-means-here-and-where-it-ends'],
    ['Cost model: what one message costs', 'cost-model-what-one-message-costs'],
    ['claim → publish — mark · 2 × µs', 'claim--publish--mark--2--µs'],
    ['Über [the link](https://example.com) 2.0', 'über-the-link-20'],
    ['snake_case and kebab-case', 'snake_case-and-kebab-case'],
  ])('%s → #%s', (heading, slug) => {
    expect(githubSlug(heading)).toBe(slug);
  });
});

describe('headingAnchors and relativeLinks', () => {
  const sample = [
    '# Title',
    '## Metrics',
    '```sh',
    '# not a heading [nor a link](nowhere.md)',
    '```',
    '### Metrics',
    '## Metrics-1',
    '## Metrics',
    'See [the table](#metrics), [`code`](other.md#part), ![a picture](img/a.png "title"),',
    '`[not a link](inside-code.md)`, [the web](https://example.com) and [mail](mailto:a@b.c).',
    '[reference]: ../up.md#there',
  ].join('\n');

  test('a repeated heading gets -1, -2, skipping an anchor a heading already has; fenced lines are not headings', () => {
    expect(headingAnchors(sample)).toEqual(['title', 'metrics', 'metrics-1', 'metrics-1-1', 'metrics-2']);
  });

  test('relative links and images outside code, with their lines; URLs with a scheme are left out', () => {
    expect(relativeLinks(sample)).toEqual([
      { target: '#metrics', line: 9 },
      { target: 'other.md#part', line: 9 },
      { target: 'img/a.png', line: 9 },
      { target: '../up.md#there', line: 11 },
    ]);
  });
});

describe('the documentation links resolve', () => {
  test('the documents checked include the README and docs/', () => {
    expect(DOCUMENTS).toEqual(expect.arrayContaining(['README.md', 'docs/runbook.md', 'docs/architecture.md']));
  });

  test.each(DOCUMENTS)('every relative link of %s leads to a file and heading that exist', (file) => {
    const links = relativeLinks(readFileSync(join(ROOT, file), 'utf8'));
    const broken = links.flatMap(({ target, line }) => {
      const problem = brokenLink(file, target);
      return problem === undefined ? [] : [`${file}:${line}: ${problem}`];
    });
    expect(broken).toEqual([]);
  });

  test('the README links into docs/ with relative links, and every docs/ file is linked from it', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const linked = new Set(relativeLinks(readme).map(({ target }) => target.split('#')[0]));
    const unlinked = DOCUMENTS.filter((file) => file.startsWith('docs/') && !linked.has(file));
    expect(unlinked).toEqual([]);
  });
});
