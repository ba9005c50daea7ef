/**
 * math__evaluate: evaluates a mathjs expression: arithmetic, units and conversions
 * (`2 inch to cm`), matrices (`det([[1,2],[3,4]])`), complex numbers, big numbers,
 * statistics, user functions and variables within one expression (`f(x) = x^2; f(3)`).
 *
 * Returns `{result, type}`: `result` is `math.format(value, {precision})` (a string:
 * "5.08 cm", "-2", "[[17], [39]]"); `type` is mathjs `typeOf(value)` ("Unit", "number",
 * "DenseMatrix", "Complex", "ResultSet" for several statements, ...).
 *
 * Hardening, following the mathjs "Security" documentation (docs/expressions/security.md):
 * the functions that alter the instance or parse arbitrary input into manipulable
 * expression trees are replaced, for expressions, by functions that throw:
 * DISABLED_FUNCTIONS. The caller's expression is evaluated with the `evaluate` captured
 * before that replacement. Each call runs in a fresh V8 isolate, so nothing an expression
 * defines outlives the call; time and heap are bounded by the profile (e.g. `ones(1e5,1e5)`
 * ends at the heap limit, not here).
 */
import {all, create} from 'mathjs';

/** Functions an expression may not call (mathjs security docs, plus their siblings). */
export const DISABLED_FUNCTIONS = [
  'import', 'createUnit', 'reviver', 'config',
  'evaluate', 'parse', 'compile', 'parser', 'resolve',
  'simplify', 'simplifyConstant', 'simplifyCore', 'derivative', 'rationalize', 'symbolicEqual', 'leafCount',
];

const math = create(all, {});
const limitedEvaluate = math.evaluate;
math.import(Object.fromEntries(DISABLED_FUNCTIONS.map((name) => [name, () => {
  throw new Error(`Function ${name} is disabled`);
}])), {override: true});

/**
 * Default export: `({expression, precision?}) => {result, type}`; `precision` is the number
 * of significant digits of numbers in `result` (default 14, which hides binary rounding:
 * 0.1 + 0.2 gives "0.3").
 * @throws Error with mathjs's message (e.g. "Undefined symbol x", "Unexpected end of expression (char 5)")
 */
export default function evaluate({expression, precision = 14}) {
  let value;
  try {
    value = limitedEvaluate(expression);
  } catch (error) {
    throw new Error(error instanceof Error ? error.message : String(error));
  }
  return {result: math.format(value, {precision}), type: math.typeOf(value)};
}
