/**
 * The methods the SDK layer (sdk.ts, mcp.ts) replaced on SDK classes, so
 * that closing the guard puts every one back exactly as it was (an own
 * method restored, an inherited one uncovered again).
 */

export type Fn = (this: unknown, ...args: unknown[]) => unknown;

interface Patch {
  proto: object;
  name: string;
  /** The own property before the patch; undefined when the method was inherited. */
  had: PropertyDescriptor | undefined;
}

const patches: Patch[] = [];
let names = new WeakMap<object, Set<string>>();

export function isPatched(proto: object, name: string): boolean {
  return names.get(proto)?.has(name) === true;
}

/**
 * patchMethod replaces `proto[name]` (own or inherited) with `make(original)`
 * as an own method of `proto`. False when it is already patched or is not a
 * function.
 */
export function patchMethod(proto: object, name: string, make: (original: Fn) => Fn): boolean {
  if (isPatched(proto, name)) return false;
  const original = (proto as Record<string, unknown>)[name];
  if (typeof original !== "function") return false;
  patches.push({ proto, name, had: Object.getOwnPropertyDescriptor(proto, name) });
  let s = names.get(proto);
  if (s === undefined) names.set(proto, (s = new Set()));
  s.add(name);
  Object.defineProperty(proto, name, { value: make(original as Fn), writable: true, configurable: true, enumerable: false });
  return true;
}

/** unpatchAll restores every method patchMethod replaced, newest first. */
export function unpatchAll(): void {
  for (const { proto, name, had } of patches.reverse()) {
    if (had !== undefined) Object.defineProperty(proto, name, had);
    else delete (proto as Record<string, unknown>)[name];
  }
  patches.length = 0;
  names = new WeakMap();
}
