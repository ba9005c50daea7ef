/**
 * A hosted server's listing made immutable once it was parsed, so that a pin hash computed from
 * it ahead of a call (warm pool, off the call's path) is still the hash of what the call checks.
 */

/** Entries deep-frozen by {@link freezeListing} (by identity; the set does not keep them alive). */
const frozen = new WeakSet<object>();

/**
 * Deep-freezes every entry of `listing` (parsed JSON: plain objects, arrays, primitives) and
 * records each entry as frozen, then returns `listing` itself (the array is frozen too).
 * Iterative (an explicit stack), so a listing nested as deep as JSON.parse accepts cannot
 * overflow the call stack. Cost: one visit per object or array in the listing.
 * Does NOT: copy anything, or freeze objects reachable only through prototypes, accessors or
 * non-enumerable properties (parsed JSON has none of them).
 */
export function freezeListing<T extends object>(listing: T[]): T[] {
  const stack: object[] = [...listing];
  const seen = new Set<object>();
  while (stack.length > 0) {
    const value = stack.pop()!;
    if (seen.has(value)) continue;
    seen.add(value);
    Object.freeze(value);
    for (const child of Object.values(value)) {
      if (typeof child === 'object' && child !== null) stack.push(child);
    }
  }
  for (const entry of listing) frozen.add(entry);
  Object.freeze(listing);
  return listing;
}

/**
 * Whether `entry` was deep-frozen by {@link freezeListing}: its content (pinned fields
 * included) can no longer change, so a hash of it may be kept and reused.
 */
export function isFrozenEntry(entry: object): boolean {
  return frozen.has(entry);
}
