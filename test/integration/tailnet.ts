// Shared setup for integration tests: a real headscale on loopback with a
// policy, and auth keys for tagged and user-owned nodes.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalControl } from "../../src/control/index.js";
import type net from "node:net";
import { expect } from "vitest";
import { MeshNode, MeshguardError, type StartOptions } from "../../src/index.js";

export const OWNER = "alice@";

/** Policy: agent-a may reach the service; agent-c may not. */
export function policy(allowC: boolean): object {
  return {
    groups: { "group:security": ["alice@"] },
    tagOwners: {
      "tag:agent-a": ["alice@"],
      "tag:agent-c": ["group:security"],
      "tag:service": ["alice@"],
    },
    grants: [
      { src: ["tag:agent-a"], dst: ["tag:service"], ip: ["*"], app: { "meshguard.dev/cap/tools": [{ tools: ["search", "read"] }] } },
      { src: ["alice@"], dst: ["tag:service"], ip: ["*"], app: { "meshguard.dev/cap/tools": [{ tools: ["admin"] }] } },
      ...(allowC ? [{ src: ["tag:agent-c"], dst: ["tag:service"], ip: ["*"] }] : []),
    ],
  };
}

export interface Tailnet {
  control: LocalControl;
  key(tags: string[]): Promise<string>;
  userKey(): Promise<string>;
  start(hostname: string, opts: Partial<StartOptions> & { tags?: string[] }): Promise<MeshNode>;
  stateDir: string;
}

export async function startTailnet(allowC = false): Promise<Tailnet> {
  const control = await LocalControl.start({ policy: policy(allowC) });
  await control.createUser("alice");
  const stateDir = mkdtempSync(join(tmpdir(), "mg-it-"));
  const keys = new Map<string, string>();
  const key = async (tags: string[]) => {
    const k = tags.join(",");
    if (!keys.has(k)) keys.set(k, await control.createAuthKey({ tags, reusable: true, ephemeral: true, expiration: "1h" }));
    return keys.get(k)!;
  };
  const userKey = () => control.createAuthKey({ user: "alice", reusable: true, ephemeral: true, expiration: "1h" });
  const p = policy(false) as { tagOwners: Record<string, string[]>; groups: Record<string, string[]> };
  return {
    control,
    key,
    userKey,
    stateDir,
    async start(hostname, opts) {
      // A tagged auth key already gives the node its tags; headscale refuses
      // a node that also advertises them itself.
      const { tags = [], ...rest } = opts;
      const t0 = performance.now();
      const authKey = opts.authKey ?? (await key(tags));
      const t1 = performance.now();
      const node = await MeshNode.start({
        controlUrl: control.url,
        authKey,
        hostname,
        dir: join(stateDir, hostname),
        ephemeral: true,
        tagOwners: p.tagOwners,
        groups: p.groups,
        timeoutMs: 30_000,
        ...rest,
      });
      if (process.env.MESHGUARD_TEST_TIMING) console.log(`start ${hostname}: key ${(t1 - t0).toFixed(0)} ms, online ${(performance.now() - t1).toFixed(0)} ms`);
      return node;
    },
  };
}

/** readAll collects a socket's bytes until the peer's end. */
export async function readAll(sock: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of sock) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** expectCode expects p to reject with a MeshguardError of that code, and returns it. */
export async function expectCode(p: Promise<unknown>, code: string): Promise<MeshguardError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(MeshguardError);
  expect((err as MeshguardError).code).toBe(code);
  return err as MeshguardError;
}
