// Revocation through the control server holds, also across a restart of it
// (issue 7, item 8; docs/revocation.md). headscale v0.29.2 sends a peer that
// a policy just revoked back to the node it was revoked from when the policy
// compiles to no filter rule and a node then joins or reconnects (after a
// restart, every node reconnects). LocalControl stores every policy with an
// anchor grant that keeps the filter non-empty; these tests fail without it.
import { mkdtempSync, rmSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalControl } from "../../src/control/index.js";
import { MeshNode, MeshguardError, type Peer } from "../../src/index.js";

const tagOwners = { "tag:svc": ["alice@"], "tag:agent": ["alice@"] };
const allowed = { tagOwners, grants: [{ src: ["tag:agent"], dst: ["tag:svc"], ip: ["*"] }] };
// Removing the only grant: the policy now compiles to no filter rule at all.
const revoked = { tagOwners, grants: [] };
const PORT = 7100;

let control: LocalControl;
let stateDir: string;
let svc: MeshNode;
let agent: MeshNode;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const names = (peers: Peer[]) => peers.map((p) => p.hostname);

async function start(hostname: string, tag: string): Promise<MeshNode> {
  return MeshNode.start({
    controlUrl: control.url,
    authKey: await control.createAuthKey({ tags: [tag], ephemeral: true, expiration: "1h" }),
    hostname,
    dir: join(stateDir, hostname),
    ephemeral: true,
    timeoutMs: 30_000,
  });
}

/** until polls `check` every 100 ms until it holds, failing with `what` after `ms`. */
async function until(what: string | (() => string), ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${typeof what === "string" ? what : what()}: not within ${ms} ms`);
    await sleep(100);
  }
}

/** netmapLog records the peers of every netmap event `node` emits from now on. */
function netmapLog(node: MeshNode): { events: string[][]; stop(): void } {
  const events: string[][] = [];
  const on = (ev: { peers: Peer[] }) => events.push(names(ev.peers));
  node.on("netmap", on);
  return { events, stop: () => node.off("netmap", on) };
}

async function dialError(node: MeshNode, host: string): Promise<unknown> {
  return node.dial(host, PORT, { timeoutMs: 5_000 }).then(
    (s) => (s.destroy(), undefined),
    (e: unknown) => e,
  );
}

async function allow(): Promise<void> {
  await control.setPolicy(allowed);
  await until("agent sees svc under the allowing policy", 15_000, async () => names(await agent.peers()).includes("svc"));
}

beforeAll(async () => {
  control = await LocalControl.start({ policy: allowed });
  stateDir = mkdtempSync(join(tmpdir(), "mg-revoke-"));
  svc = await start("svc", "tag:svc");
  agent = await start("agent", "tag:agent");
  const server = await svc.listen(PORT);
  server.on("connection", (s: net.Socket) => s.on("data", (d) => s.write(d)).on("error", () => {}));
});

afterAll(async () => {
  await agent?.close();
  await svc?.close();
  await control?.close();
  rmSync(stateDir, { recursive: true, force: true });
});

describe("revocation through the control server", () => {
  it("a node joining after a revocation is not shown to the nodes the policy isolates", async () => {
    await allow();
    await control.setPolicy(revoked);
    await until("agent loses svc", 15_000, async () => !names(await agent.peers()).includes("svc"));

    const log = netmapLog(agent);
    const late = await start("late", "tag:svc");
    try {
      // headscale announces a new node to every other node as it registers;
      // the announcement reached agent within 0.3 s when it leaked.
      await sleep(1_000);
      log.stop();
      expect(names(await agent.peers())).toEqual([]);
      expect(log.events.flat(), "a netmap event showed a peer the policy does not allow").toEqual([]);
      const err = await dialError(agent, "late");
      expect(err).toBeInstanceOf(MeshguardError);
      expect((err as MeshguardError).code).toBe("MESHGUARD_NO_PEER");
    } finally {
      await late.close();
    }
  });

  it("cuts access after the control server restarts: the peer goes, new dials fail, the stream stops", async () => {
    await allow();
    const sock = await agent.dial("svc", PORT);
    let echoed = 0;
    sock.on("data", (d: Buffer) => (echoed += d.length));
    sock.on("error", () => {});
    const pinger = setInterval(() => sock.write("ping"), 100);
    try {
      await until("the stream echoes", 5_000, async () => echoed > 0);

      // A crash: SIGKILL, and back on the same URL and state.
      await control.restart({ signal: "SIGKILL", downMs: 500 });
      const before = echoed;
      await sleep(500);
      expect(echoed, "the stream did not survive the restart").toBeGreaterThan(before);

      // The nodes have not reconnected yet (they come back after their own
      // back-off, several seconds): they will get the revoking policy as they
      // reconnect, which is when headscale v0.29.2 re-sent the revoked peer.
      const log = netmapLog(agent);
      await control.setPolicy(revoked);
      const seen = () => `agent loses svc (its netmap events since the revocation: ${JSON.stringify(log.events)})`;
      await until(seen, 40_000, async () => !names(await agent.peers()).includes("svc"));
      await until("both nodes reconnect", 30_000, async () => (await control.listNodes()).filter((n) => n.online).length === 2);
      // When it leaked, svc came back 0.1 s after the netmap that dropped it.
      await sleep(2_000);
      log.stop();

      expect(names(await agent.peers())).toEqual([]);
      const firstWithout = log.events.findIndex((peers) => !peers.includes("svc"));
      expect(firstWithout).toBeGreaterThanOrEqual(0);
      expect(
        log.events.slice(firstWithout).filter((peers) => peers.includes("svc")),
        `svc came back after it was removed; netmap events: ${JSON.stringify(log.events)}`,
      ).toEqual([]);
      const err = await dialError(agent, "svc");
      expect(err).toBeInstanceOf(MeshguardError);
      expect((err as MeshguardError).code).toBe("MESHGUARD_NO_PEER");
      // Both ends dropped each other's WireGuard peer: nothing gets through
      // the connection any more (it is not closed, though: see docs/revocation.md).
      const stopped = echoed;
      await sleep(1_000);
      expect(echoed - stopped, "the established stream still flows").toBe(0);
    } finally {
      clearInterval(pinger);
      sock.destroy();
    }
  });
});
