import assert from 'node:assert/strict';
import {existsSync, readFileSync} from 'node:fs';
import path from 'node:path';
import {before, describe, test} from 'node:test';
import {REPO, ensureBuilt, useToolBackend, validator} from './helpers.ts';

/** markdown__to_html in the isolate backend under isolate-standard's limits. */

before(ensureBuilt);
const {valueOf} = useToolBackend();

const README_LIKE = readFileSync(new URL('./fixtures/readme-like.md', import.meta.url), 'utf8');
const render = async (args: Record<string, unknown>) => {
  const html = await valueOf('markdown', 'to_html', args);
  assert.equal(typeof html, 'string');
  return html as string;
};

describe('markdown__to_html', () => {
  test('renders a README: headings, lists, tables with alignment, code blocks, links and task lists', async () => {
    const html = await render({markdown: README_LIKE});
    assert.match(html, /^<h1>toolcell<\/h1>\n/);
    assert.match(html, /<h2>Quick start<\/h2>/);
    assert.match(html, /<h3>Isolate tools<\/h3>/);
    assert.match(html, /<blockquote>\n<p>Nothing is granted that a profile does not name\.\nAbsent means denied\.<\/p>\n<\/blockquote>/);
    assert.match(html, /<pre><code class="language-sh">npm ci\nnode dist\/cli\.js serve --stdio\nnode dist\/cli\.js call text__word_count --args &#39;\{&quot;text&quot;: &quot;hello world&quot;\}&#39;\n<\/code><\/pre>/);
    assert.match(html, /<table>\n<thead>\n<tr>\n<th align="left">Profile<\/th>\n<th align="center">Backend<\/th>\n<th align="right">Memory<\/th>/);
    assert.match(html, /<td align="left"><code>isolate-strict<\/code><\/td>/);
    assert.equal(html.match(/<tr>/g)?.length, 4, 'header row and three body rows');
    assert.match(html, /<input checked="" disabled="" type="checkbox"> isolate entries bundled with esbuild/);
    assert.match(html, /<del>shell strings<\/del>/);
    assert.match(html, /<a href="https:\/\/modelcontextprotocol\.io">https:\/\/modelcontextprotocol\.io<\/a>/);
    assert.match(html, /<a href="https:\/\/modelcontextprotocol\.io\/specification" title="MCP specification">the spec<\/a>/);
    assert.match(html, /<img src="https:\/\/example\.test\/badge\.svg" alt="CI">/);
    assert.match(html, /Escaped \*stars\* and an ampersand &amp; a less-than &lt; stay text\./);
    assert.match(html, /<pre><code>indented code block\nsecond line\n<\/code><\/pre>/);
    assert.match(html, /line<br>with a hard break/);
    assert.match(html, /<ol>\n<li><a href="#quick-start">Quick start<\/a><\/li>/);
    assert.match(html, /<hr>/);
  });

  test('renders a large README (about 170 kB) within the profile limits', async () => {
    const big = Array.from({length: 100}, (_, i) => README_LIKE.replace('# toolcell', `# toolcell part ${i}`)).join('\n\n');
    assert.ok(big.length > 150_000 && big.length <= 500_000);
    const html = await render({markdown: big});
    assert.equal(html.match(/<h1>/g)?.length, 100);
    assert.equal(html.match(/<table>/g)?.length, 100);
    assert.match(html, /<h1>toolcell part 99<\/h1>/);
  });

  test('renders the project README when there is one', {skip: !existsSync(path.join(REPO, 'README.md')) && 'no README.md yet'}, async () => {
    const markdown = readFileSync(path.join(REPO, 'README.md'), 'utf8');
    const html = await render({markdown});
    assert.match(html, /<h[1-2]>/);
  });

  test('gfm: false turns GitHub tables off; breaks: true turns line breaks into <br>', async () => {
    const table = '| a | b |\n|---|---|\n| 1 | 2 |';
    assert.doesNotMatch(await render({markdown: table, gfm: false}), /<table>/);
    assert.match(await render({markdown: table}), /<table>/);
    assert.equal(await render({markdown: 'one\ntwo', breaks: true}), '<p>one<br>two</p>\n');
    assert.equal(await render({markdown: 'one\ntwo'}), '<p>one\ntwo</p>\n');
  });

  test('by default raw HTML from the input is escaped, not emitted', async () => {
    const cases: Array<[string, RegExp]> = [
      ['<script>alert(1)</script>', /&lt;script&gt;alert\(1\)&lt;\/script&gt;/],
      ['text <img src=x onerror=alert(1)> more', /text &lt;img src=x onerror=alert\(1\)&gt; more/],
      ['<div onclick="x()">\n\nblock\n\n</div>', /&lt;div onclick=&quot;x\(\)&quot;&gt;/],
      ['<!-- comment --> after', /&lt;!-- comment --&gt;/],
      // Text inside an inline raw <script> is marked "escaped" by marked; it must still be escaped.
      ['a <script>b<img/src=x onerror=alert(1)></script>', /&lt;script&gt;b&lt;img\/src=x onerror=alert\(1\)&gt;&lt;\/script&gt;/],
    ];
    for (const [markdown, expected] of cases) {
      const html = await render({markdown});
      assert.match(html, expected, markdown);
      assert.doesNotMatch(html, /<(script|img|div|!--)/i, `no raw tag from ${markdown}`);
    }
  });

  test('by default links and images with unsafe URL schemes keep only their text', async () => {
    const unsafe = [
      '[click](javascript:alert(1))',
      '[click](JavaScript:alert(1))',
      '[click](java&#115;cript:alert(1))',
      '[click](javascript&colon;alert(1))',
      '[click](&#x6A;avascript:alert(1))',
      '[click](vbscript:msgbox)',
      '[click](data:text/html;base64,PHNjcmlwdD4=)',
      '<javascript:alert(1)>',
    ];
    for (const markdown of unsafe) {
      const html = await render({markdown});
      assert.doesNotMatch(html, /<a /, markdown);
      assert.doesNotMatch(html, /href=/i, markdown);
    }
    assert.equal(await render({markdown: '![pic](data:image/svg+xml,<svg/onload=alert(1)>)'}), '<p>pic</p>\n');
    assert.equal(await render({markdown: '![pic](javascript:alert(1))'}), '<p>pic</p>\n');
    assert.equal(await render({markdown: '[ok](https://example.test/a?b=1)'}), '<p><a href="https://example.test/a?b=1">ok</a></p>\n');
    assert.equal(await render({markdown: '[mail](mailto:a@example.test)'}), '<p><a href="mailto:a@example.test">mail</a></p>\n');
    assert.equal(await render({markdown: '[rel](docs/a.md#x)'}), '<p><a href="docs/a.md#x">rel</a></p>\n');
  });

  test('allowRawHtml: true passes HTML and any URL scheme through unchanged', async () => {
    assert.equal(await render({markdown: '<b>bold</b>', allowRawHtml: true}), '<p><b>bold</b></p>\n');
    assert.match(await render({markdown: '[x](javascript:void(0))', allowRawHtml: true}), /href="javascript:void\(0\)"/);
  });

  test('inputSchema accepts markdown with options and rejects anything else', () => {
    const valid = validator('markdown', 'to_html');
    assert.ok(valid({markdown: ''}));
    assert.ok(valid({markdown: '# x', gfm: false, breaks: true, allowRawHtml: false}));
    for (const bad of [{}, {markdown: 5}, {markdown: 'x', gfm: 'yes'}, {markdown: 'x', allowRawHtml: 1}, {markdown: 'x', sanitize: true},
      {markdown: 'x'.repeat(500_001)}]) {
      assert.equal(valid(bad), false, `rejects ${JSON.stringify(bad).slice(0, 60)}`);
    }
  });
});
