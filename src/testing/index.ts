/**
 * meshguard/testing: helpers for tests of meshguard and of code built on it.
 * Nothing here is needed to use the library; it is a separate entry so the
 * root export stays the API a program uses.
 */
import { loadedBackend } from "../backend/load.js";
import type { HandlesResult } from "../backend/protocol.js";

/**
 * coreHandles reports how many entries the core's handle tables hold (nodes,
 * listeners, bridged connections), for leak checks: after everything is
 * closed each is 0. Without a loaded core, all are 0.
 */
export async function coreHandles(): Promise<HandlesResult> {
  const b = await loadedBackend();
  if (!b) return { nodes: 0, listeners: 0, conns: 0 };
  return b.call("handles");
}
