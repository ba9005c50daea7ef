/**
 * text__word_count: counts words, lines, characters and UTF-8 bytes of a text.
 *
 * Definitions (stated so results are predictable):
 * - words: maximal runs of non-whitespace, where whitespace is what JavaScript's `\s`
 *   matches (Unicode White_Space plus U+FEFF), as `wc -w` does for ASCII text.
 * - lines: the number of line feeds (U+000A), plus one when the text is not empty and does
 *   not end with a line feed; so "a\nb" and "a\nb\n" both have 2 lines and "" has 0.
 *   CRLF counts once; a lone CR does not end a line.
 * - characters: Unicode code points (an emoji such as U+1F600 counts 1, not 2 UTF-16
 *   units); a combining sequence counts each code point. A lone surrogate counts 1.
 * - bytes: the length of the text encoded as UTF-8 (a lone surrogate counts 3, as the
 *   U+FFFD it would be encoded as).
 *
 * Runs in a bare V8 isolate; pure computation, linear in the length of the text.
 */

const WHITESPACE = /\s/;

/** Default export: `({text}) => {words, lines, characters, bytes}`; `text` is validated by the manifest. */
export default function wordCount({text}) {
  let words = 0;
  let lines = 0;
  let characters = 0;
  let bytes = 0;
  let inWord = false;
  for (const ch of text) {
    characters++;
    const cp = ch.codePointAt(0);
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (cp === 0x0a) lines++;
    if (WHITESPACE.test(ch)) {
      inWord = false;
    } else if (!inWord) {
      inWord = true;
      words++;
    }
  }
  if (text.length > 0 && !text.endsWith('\n')) lines++;
  return {words, lines, characters, bytes};
}
