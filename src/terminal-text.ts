// Text for a terminal: characters that could act on it (escape sequences, C1 controls, bidi overrides) written as \uXXXX escapes.

/**
 * Characters that could act on a terminal or hide text: C0 controls (newline, ESC, BEL), DEL,
 * C1 controls (U+009B is CSI on many terminals), line and paragraph separators, and
 * bidirectional marks and overrides (Unicode TR #9), which can make text read in another order.
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const UNSAFE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const escape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * `text` with every terminal-unsafe character, newlines included, written as a `\uXXXX`
 * escape: for one line built from data a package, client or tool chose (a directory name, a
 * message), so that it stays one line and cannot restyle or rewrite the terminal.
 * Does not make the text safe for any other interpreter (a shell, HTML).
 */
export function escapeForTerminal(text: string): string {
  return text.replace(UNSAFE, escape);
}

/**
 * The same, keeping `\n`: for JSON that `JSON.stringify(value, null, 2)` laid out over lines.
 * JSON strings hold no raw newline, and `\uXXXX` inside a JSON string is the same character,
 * so the JSON means what it meant.
 */
export function escapeJsonForTerminal(json: string): string {
  return json.replace(UNSAFE_BUT_NEWLINE, escape);
}
