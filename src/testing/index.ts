/**
 * meshguard/testing: helpers for tests of meshguard and of code built on it.
 * Nothing here is needed to use the library; it is a separate entry so the
 * root export stays the API a program uses.
 */
import { loadedBackends } from "../backend/load.js";
import type { HandlesResult } from "../backend/protocol.js";

/**
 * coreHandles reports how many entries the core's handle tables hold (nodes,
 * listeners, bridged connections), for leak checks: after everything is
 * closed each is 0. Without a loaded core, all are 0; with both the native
 * and the wasm core loaded, the sum of both.
 */
export async function coreHandles(): Promise<HandlesResult> {
  const sum: HandlesResult = { nodes: 0, listeners: 0, conns: 0 };
  for (const b of await loadedBackends()) {
    const h = await b.call("handles");
    sum.nodes += h.nodes;
    sum.listeners += h.listeners;
    sum.conns += h.conns;
  }
  return sum;
}
