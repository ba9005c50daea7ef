// The three Reflect metadata functions tsyringe (a dependency of @peculiar/x509) calls, when no reflect-metadata polyfill is loaded.
/**
 * @peculiar/x509 registers its algorithms with tsyringe, which refuses to load unless
 * `Reflect.getMetadata` exists (it expects the `reflect-metadata` package, which toolcell does
 * not depend on). tsyringe calls only `getMetadata`, `getOwnMetadata` and `defineMetadata`
 * (tsyringe/dist/esm2015/reflection-helpers.js); this defines those three over a WeakMap, and
 * nothing when a polyfill is already present. Import it before `@peculiar/x509`.
 * Not a full polyfill: no property keys, no `hasMetadata`/`deleteMetadata`.
 */
const store = new WeakMap<object, Map<unknown, unknown>>();
const reflect = Reflect as unknown as Record<string, unknown>;
if (typeof reflect.getMetadata !== 'function') {
  const own = (key: unknown, target: object): unknown => store.get(target)?.get(key);
  reflect.getOwnMetadata = own;
  reflect.getMetadata = (key: unknown, target: object): unknown => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const value = own(key, t);
      if (value !== undefined) return value;
    }
    return undefined;
  };
  reflect.defineMetadata = (key: unknown, value: unknown, target: object): void => {
    let map = store.get(target);
    if (map === undefined) store.set(target, (map = new Map()));
    map.set(key, value);
  };
}
export {};
