/**
 * text__diff: a unified diff (the format of `diff -u` and `git diff`) of two texts, made
 * with jsdiff (`diff` package, createTwoFilesPatch).
 *
 * - Identical texts give an empty string, as `diff -u` prints nothing for equal files; so
 *   do texts that differ only in leading/trailing whitespace of lines when
 *   `ignoreWhitespace` is set (jsdiff's diffLines semantics: inner whitespace still counts).
 * - Otherwise the patch starts with an `Index`-less header (`===…`, `--- a`, `+++ b`) and
 *   has one hunk per group of changes with `context` unchanged lines around each.
 *   A missing final newline is marked `\ No newline at end of file`.
 * - The line diff is Myers' O(ND) algorithm, quadratic in the number of changed lines
 *   (measured here: 3000 completely different lines take about 1 s). MAX_EDIT_LENGTH
 *   bounds the changed lines and MAX_DIFF_MS the time spent, so texts that are too
 *   different fail with a clear error instead of running into the profile's timeout. The
 *   profile's time and heap limits still apply; MAX_DIFF_MS is wall-clock time measured
 *   with Date.now(), so whether a borderline input passes depends on the machine.
 *
 * File names must not contain line breaks (validated by the manifest), so a name cannot
 * forge extra header or hunk lines.
 */
import {createTwoFilesPatch} from 'diff';

/** Largest edit distance (inserted plus removed lines) the diff will search for. */
export const MAX_EDIT_LENGTH = 4000;
/** Time the diff may search, in ms, before it gives up (jsdiff `timeout`). */
export const MAX_DIFF_MS = 3000;

/**
 * Default export: `({a, b, aName?, bName?, context?, ignoreWhitespace?}) => string`.
 * @throws Error when the texts differ in more than MAX_EDIT_LENGTH lines or the search takes over MAX_DIFF_MS
 */
export default function diff({a, b, aName = 'a', bName = 'b', context = 3, ignoreWhitespace = false}) {
  if (a === b) return '';
  const patch = createTwoFilesPatch(aName, bName, a, b, undefined, undefined,
    {context, ignoreWhitespace, maxEditLength: MAX_EDIT_LENGTH, timeout: MAX_DIFF_MS});
  if (patch === undefined) {
    throw new Error(`The texts are too different to diff (more than ${MAX_EDIT_LENGTH} changed lines, or over ${MAX_DIFF_MS / 1000} s of work); diff smaller pieces.`);
  }
  return patch.includes('\n@@ ') ? patch : '';
}
