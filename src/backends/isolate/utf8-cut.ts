/**
 * Cuts `text` so that its UTF-8 encoding is at most `maxBytes` bytes, on a character
 * boundary (a surrogate pair is never split; a lone surrogate counts 3 bytes, as the
 * U+FFFD it encodes to). Returns the text and whether anything was cut.
 */
export function cutUtf8(text: string, maxBytes: number): {text: string; cut: boolean} {
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text, 'utf8') <= maxBytes) return {text, cut: false};
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let size = 3;
    let units = 1;
    if (c < 0x80) size = 1;
    else if (c < 0x800) size = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        size = 4;
        units = 2;
      }
    }
    if (bytes + size > maxBytes) return {text: text.slice(0, i), cut: true};
    bytes += size;
    i += units - 1;
  }
  return {text, cut: false};
}
