/**
 * markdown__to_html: renders Markdown (CommonMark with GitHub extensions by default) to an
 * HTML fragment with `marked`.
 *
 * Safe by default (`allowRawHtml: false`):
 * - raw HTML in the Markdown (blocks, inline tags, comments) is escaped and shows as text;
 *   text inside what would have been a raw `<pre>`/`<script>` block is escaped too;
 * - links whose URL has a scheme other than http, https or mailto (e.g. `javascript:`,
 *   `data:`, `vbscript:`) lose the link and keep their text; images whose URL has a
 *   scheme other than http or https keep only their alt text. The scheme is read the way
 *   a browser reads it: after decoding character references and dropping control
 *   characters and spaces.
 * With `allowRawHtml: true` the caller's HTML passes through unchanged (marked does not
 * sanitize), and so do URLs of any scheme.
 *
 * What "safe" does NOT guarantee: the output is meant to be inserted as element content.
 * It is not a general HTML sanitizer policy (no CSP, no attribute allowlist beyond what
 * marked emits); relative URLs and http(s) links to any host remain.
 *
 * Runs in a bare V8 isolate: marked needs only ECMAScript built-ins.
 */
import {Marked} from 'marked';

const LINK_SCHEMES = new Set(['http', 'https', 'mailto']);
const IMAGE_SCHEMES = new Set(['http', 'https']);

const ESCAPES = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
/** HTML-escapes `text` for element content or a quoted attribute value. */
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function fromCodePoint(n) {
  return n > 0 && n <= 0x10ffff ? String.fromCodePoint(n) : '';
}

/**
 * The URL scheme a browser would see in `href` (lower case), or null for a relative URL.
 * Decodes numeric character references and the named ones that spell separators, and
 * removes ASCII control characters and spaces (which URL parsers strip or skip), before
 * reading the scheme.
 */
export function schemeOf(href) {
  const decoded = href
    .replace(/&#x([0-9a-f]+);?/gi, (_, hex) => fromCodePoint(Number.parseInt(hex, 16)))
    .replace(/&#([0-9]+);?/g, (_, dec) => fromCodePoint(Number.parseInt(dec, 10)))
    .replace(/&colon;/gi, ':')
    .replace(/&(tab|newline);/gi, '')
    .replace(/[\u0000-\u0020\u007f-\u009f]/g, '');
  const match = /^([a-z][a-z0-9+.-]*):/i.exec(decoded);
  return match ? match[1].toLowerCase() : null;
}

function allowed(href, schemes) {
  if (typeof href !== 'string') return false;
  const scheme = schemeOf(href);
  return scheme === null || schemes.has(scheme);
}

/** A marked instance with the safe-mode overrides described above. */
function safeMarked(options) {
  return new Marked(options, {
    walkTokens(token) {
      // Text that marked would emit verbatim because it sits inside a raw HTML block.
      if (token.type === 'text' && token.escaped) token.escaped = false;
    },
    renderer: {
      html(token) {
        return escapeHtml(token.text);
      },
      link(token) {
        if (allowed(token.href, LINK_SCHEMES)) return false; // marked's own renderer
        return this.parser.parseInline(token.tokens);
      },
      image(token) {
        if (allowed(token.href, IMAGE_SCHEMES)) return false;
        return escapeHtml(token.text);
      },
    },
  });
}

/**
 * Default export: `({markdown, gfm?, breaks?, allowRawHtml?}) => string` (an HTML fragment).
 * Arguments are validated by the manifest's inputSchema.
 */
export default function toHtml({markdown, gfm = true, breaks = false, allowRawHtml = false}) {
  const options = {gfm, breaks, async: false};
  const marked = allowRawHtml ? new Marked(options) : safeMarked(options);
  return marked.parse(markdown);
}
