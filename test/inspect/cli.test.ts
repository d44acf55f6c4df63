// Looking inside a running node: the control socket a MeshNode serves in its
// state directory, and `meshguard status`, `whois`, `ping` and `policy
// explain` attaching to it — each run as the installed executable
// (dist/cli/main.js) in a process of its own, against real nodes on a local
// headscale. Also: the socket's permissions and refusals, bad requests, and
// what the commands do when no node runs (a clear error, or a node brought
// up briefly).
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { installGuard, type GuardHandle } from "../../src/guard/index.js";
import { ErrorCode, MeshguardError, type MeshNode } from "../../src/index.js";
import { LIMITS, openControlSocket, SOCKET_NAME } from "../../src/inspect/index.js";
import { loadPolicy } from "../../src/policy/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";

const MAIN = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

const GUARD_POLICY = JSON.stringify({
  version: 1,
  rules: [{ id: "service-http", src: ["tag:agent-a"], tcp: { host: ["tag:service"], port: [80], tailnet: true } }],
});

let tn: Tailnet;
let agent: MeshNode;
let service: MeshNode;
let guard: GuardHandle;
/** HOME and TMPDIR of the CLI processes: only this test's nodes are found there. */
let home: string;
let emptyHome: string;
let agentDir: string;
const policy = loadPolicy(GUARD_POLICY);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** meshguard runs the executable with the test's HOME/TMPDIR and without the caller's tailnet settings. */
function meshguard(args: string[], env: Record<string, string> = {}, h = home): Promise<Run> {
  return new Promise((resolve, reject) => {
    const clean = { ...process.env };
    delete clean.TS_CONTROL_URL;
    delete clean.TS_AUTHKEY;
    delete clean.XDG_STATE_HOME;
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...clean, HOME: h, TMPDIR: join(h, "tmp"), ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const t = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

function json(r: Run): any {
  const lines = r.stdout.trim().split("\n");
  expect(lines, `one JSON document on stdout; stderr: ${r.stderr}`).toHaveLength(1);
  return JSON.parse(lines[0]!);
}

/** request sends raw lines on a fresh connection and collects the answer lines until `n` arrived or the server closed. */
function request(path: string, data: string | Buffer, n: number): Promise<{ lines: any[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    let buf = "";
    const lines: any[] = [];
    const done = (closed: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve({ lines, closed });
    };
    const t = setTimeout(() => done(false), 10_000);
    s.on("error", (e) => (lines.length ? done(true) : reject(e)));
    s.on("data", (c) => {
      buf += c;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        lines.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
      if (lines.length >= n) done(false);
    });
    s.on("end", () => done(true));
    s.write(data);
  });
}

beforeAll(async () => {
  expect(existsSync(MAIN), "dist/cli/main.js is missing: run node test/build.mjs first").toBe(true);
  home = mkdtempSync(join(tmpdir(), "mg-inspect-"));
  emptyHome = mkdtempSync(join(tmpdir(), "mg-inspect-empty-"));
  mkdirSync(join(home, "tmp"));
  mkdirSync(join(emptyHome, "tmp"));
  tn = await startTailnet();
  // The agent keeps its state where a persistent node does by default, so the CLI finds it without flags.
  agentDir = join(home, ".local", "state", "meshguard", "agent-a");
  agent = await tn.start("agent-a", { tags: ["tag:agent-a"], dir: agentDir });
  service = await tn.start("service", { tags: ["tag:service"], controlSocket: false });
  guard = installGuard({ policy, identity: agent, intercept: { fetch: false, http: false, net: false, dns: false, dgram: false, sdk: false, worker: false } });
  await guard.ready;
}, 180_000);

afterAll(async () => {
  await guard?.close();
  await agent?.close();
  await service?.close();
  await tn?.control.close();
});

describe("the control socket", () => {
  test("is served by default at DIR/meshguard.sock, mode 0600, in a directory only its owner can write", () => {
    const path = join(agentDir, SOCKET_NAME);
    expect(agent.controlSocket).toBe(path);
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(statSync(agentDir).mode & 0o022).toBe(0);
    expect(service.controlSocket).toBeUndefined();
  });

  test("answers bad requests with MESHGUARD_CONTROL_SOCKET_BAD_REQUEST and keeps serving", async () => {
    const path = agent.controlSocket!;
    const bad = 'not json\n{"v":2,"id":1,"method":"status"}\n{"v":1,"method":"status"}\n{"v":1,"id":2,"method":"nope"}\n{"v":1,"id":3,"method":"ping","params":{"host":"service","count":"x"}}\n{"v":1,"id":4,"method":"whois","params":[]}\n{"v":1,"id":5,"method":"hello"}\n';
    const { lines } = await request(path, bad, 7);
    expect(lines.slice(0, 6).map((l) => l.error?.code)).toEqual(Array(6).fill(ErrorCode.CONTROL_SOCKET_BAD_REQUEST));
    expect(lines[0]).toMatchObject({ v: 1, id: null });
    expect(lines[1].error.message).toMatch(/version 2 .* v 1/);
    expect(lines[3].error.message).toMatch(/unknown method "nope"/);
    expect(lines[4].error.message).toMatch(/count/);
    // the same connection still answers a good request
    expect(lines[6]).toMatchObject({ v: 1, id: 5, result: { v: 1, pid: process.pid, name: agent.name } });
  });

  test("closes a connection whose request is over the size limit, and the node lives on", async () => {
    const path = agent.controlSocket!;
    const { lines, closed } = await request(path, Buffer.alloc(LIMITS.maxRequestBytes + 10, "a"), 1);
    expect(lines[0].error).toMatchObject({ code: ErrorCode.CONTROL_SOCKET_BAD_REQUEST });
    expect(lines[0].error.message).toMatch(/65536/);
    expect(closed || lines.length === 1).toBe(true);
    // a client that vanishes mid-request harms nothing either
    const s = net.connect(path);
    await new Promise((r) => s.once("connect", r));
    s.write('{"v":1,"id":1,"meth');
    s.destroy();
    const again = await request(path, '{"v":1,"id":9,"method":"hello"}\n', 1);
    expect(again.lines[0]).toMatchObject({ id: 9, result: { name: agent.name } });
  });

  test("survives garbage: random bytes and hostile JSON, then still answers", async () => {
    const path = agent.controlSocket!;
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const junk: Buffer[] = [];
    // newline bytes left out, so that each junk line is one request
    for (let i = 0; i < 200; i++) junk.push(Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)).map((b) => (b === 10 ? 11 : b))), Buffer.from("\n"));
    const hostile = ['{"v":1,"id":1,"method":"__proto__"}', '{"v":1,"id":2,"method":"status","params":{"__proto__":{"ping":false}}}', '{"v":1,"id":3,"method":"ping","params":{"host":"' + "a".repeat(300) + '"}}', '{"v":1,"id":4,"method":"explain","params":{"request":"GET https://x/","at":"not a time"}}', '{"v":1,"id":1e400,"method":"hello"}', '[]', 'null', '"str"', '{"v":1,"id":{},"method":"hello"}', '{"v":1,"id":5,"method":"whois","params":{"addr":"999.1.1.1"}}'];
    const all = [...junk, Buffer.from(hostile.join("\n") + "\n")];
    let answered = 0;
    // 20 lines a connection: more than LIMITS.maxPending waiting at once is refused (below)
    for (let i = 0; i < all.length; i += 40) {
      const batch = Buffer.concat(all.slice(i, i + 40));
      const n = batch.toString("latin1").split("\n").filter((l) => l.trim() !== "").length;
      const { lines } = await request(path, batch, n);
      for (const l of lines) expect(l.error?.code, JSON.stringify(l)).toMatch(/^MESHGUARD_/);
      answered += lines.length;
    }
    expect(answered).toBeGreaterThan(190);
    // a client that pipelines more than maxPending requests is told so and cut off
    const flood = await request(path, '{"v":1,"id":1,"method":"hello"}\n'.repeat(LIMITS.maxPending + 5), LIMITS.maxPending + 5);
    expect(flood.lines.some((l) => /more than 32 requests waiting/.test(l.error?.message ?? ""))).toBe(true);
    const again = await request(path, '{"v":1,"id":"after","method":"hello"}\n', 1);
    expect(again.lines[0]).toMatchObject({ id: "after", result: { pid: process.pid } });
  });

  test("tells a client over the connection limit so", async () => {
    const path = agent.controlSocket!;
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < LIMITS.maxConnections; i++) {
        const s = net.connect(path);
        await new Promise((r) => s.once("connect", r));
        held.push(s);
      }
      const { lines } = await request(path, "", 1);
      expect(lines[0].error.message).toMatch(/too many connections/);
    } finally {
      for (const s of held) s.destroy();
    }
  });

  test("refuses a group- or world-writable directory, a live socket, a non-socket file and a path too long; clears a stale socket", async () => {
    const base = mkdtempSync(join(tmpdir(), "mg-sock-"));
    const open = mkdtempSync(join(base, "open-"));
    chmodSync(open, 0o775);
    await expect(openControlSocket(agent, join(open, "s.sock"))).rejects.toMatchObject({ code: ErrorCode.CONTROL_SOCKET_FAILED, message: expect.stringMatching(/group- or world-writable \(mode 775\)/) });
    // another process's live node on the path
    const livePath = join(base, "live.sock");
    const other = net.createServer().listen(livePath);
    await new Promise((r) => other.once("listening", r));
    await expect(openControlSocket(agent, livePath)).rejects.toMatchObject({ code: ErrorCode.CONTROL_SOCKET_FAILED, message: expect.stringMatching(/another process is serving/) });
    other.close();
    // a file that is not a socket is not ours to delete
    writeFileSync(join(base, "file.sock"), "x");
    await expect(openControlSocket(agent, join(base, "file.sock"))).rejects.toMatchObject({ message: expect.stringMatching(/not a socket/) });
    await expect(openControlSocket(agent, join(base, "x".repeat(120)))).rejects.toMatchObject({ message: expect.stringMatching(/at most 10[37]/) });
    // a stale socket: bound by a process that died without removing it
    const stalePath = join(base, "stale.sock");
    await staleSocket(stalePath);
    expect(statSync(stalePath).isSocket()).toBe(true);
    const s = await openControlSocket(agent, stalePath);
    const { lines } = await request(stalePath, '{"v":1,"id":1,"method":"hello"}\n', 1);
    expect(lines[0].result.name).toBe(agent.name);
    await s.close();
    expect(existsSync(stalePath)).toBe(false);
  });
});

/** staleSocket leaves a socket file nobody listens on: a child binds it and is killed. */
async function staleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((r) => child.stdout.once("data", r));
  child.kill("SIGKILL");
  await new Promise((r) => child.once("close", r));
}

describe("meshguard status", () => {
  test("finds the one running node and shows its peers with tags, path and latency (--json)", async () => {
    const r = await meshguard(["status", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const s = json(r);
    expect(s.self).toMatchObject({ name: agent.name, tags: ["tag:agent-a"], state: "Running", pid: process.pid, dir: agentDir, socket: agent.controlSocket, controlUrl: tn.control.url });
    expect(s.self.guard).toEqual({ mode: "enforce", principal: { node: "agent-a", tags: ["tag:agent-a"] }, policy: { hash: policy.hash, format: 1 } });
    const peer = s.peers.find((p: { name: string }) => p.name === service.name);
    expect(peer).toMatchObject({ hostname: "service", tags: ["tag:service"], ips: service.ips, online: true });
    expect(["direct", "derp"]).toContain(peer.path);
    expect(peer.latencyMs).toBeGreaterThan(0);
    if (peer.path === "direct") expect(peer.curAddr).toMatch(/:\d+$/);
  });

  test("prints a table for people, and --no-ping leaves latency out", async () => {
    const r = await meshguard(["status", "--state-dir", agentDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${agent.name}  ${agent.ips.join(", ")}  tag:agent-a  Running`);
    expect(r.stdout).toMatch(/guard: enforce, policy sha256:[0-9a-f]{12}, deciding as tag:agent-a/);
    expect(r.stdout).toMatch(new RegExp(`service\\.\\S+\\s+${service.ips[0]!.replace(/\./g, "\\.")}\\s+tag:service\\s+(direct \\S+|relay "\\S+")\\s+\\d+\\.\\d\\d ms`));
    const quick = json(await meshguard(["status", "--socket", agent.controlSocket!, "--no-ping", "--json"]));
    expect(quick.peers[0].latencyMs).toBeNull();
  });

  test("with no node running: a clear error, or --control brings a node up briefly (progress on stderr)", async () => {
    // a node that died left its socket behind: found, probed, named as stale
    const goneDir = join(emptyHome, ".local", "state", "meshguard", "gone");
    mkdirSync(goneDir, { recursive: true, mode: 0o700 });
    await staleSocket(join(goneDir, SOCKET_NAME));
    const none = await meshguard(["status", "--json"], {}, emptyHome);
    expect(none.code).toBe(1);
    expect(json(none).error).toMatchObject({ code: ErrorCode.NO_RUNNING_NODE, message: expect.stringMatching(/no running node found/) });
    expect(json(none).error.message).toContain(`stale sockets of nodes that are gone: ${join(goneDir, SOCKET_NAME)}`);
    expect(none.stderr).toMatch(/--control URL/);

    const key = await tn.key(["tag:agent-a"]);
    const brief = await meshguard(["status", "--control", tn.control.url, "--auth-key", key, "--hostname", "peek", "--json"], {}, emptyHome);
    expect(brief.code, brief.stderr).toBe(0);
    const s = json(brief);
    expect(s.self).toMatchObject({ hostname: "peek", tags: ["tag:agent-a"], guard: null });
    expect(s.self.socket).toBeUndefined();
    // Only the peers the tailnet policy lets it see: the service, not the other agent.
    expect(s.peers.map((p: { hostname: string }) => p.hostname)).toEqual(["service"]);
    expect(brief.stderr).toMatch(/connecting to control/);
    expect(brief.stderr).toMatch(/online as peek/);
    expect(brief.stderr).toMatch(/closing the brief node/);
  });

  test("several running nodes: an error listing them, and --state-dir picks one", async () => {
    const dirB = join(home, ".local", "state", "meshguard", "agent-b");
    const b = await tn.start("agent-b", { tags: ["tag:agent-a"], dir: dirB });
    try {
      const r = await meshguard(["status", "--no-ping", "--json"]);
      expect(r.code).toBe(1);
      const err = json(r).error;
      expect(err).toMatchObject({ code: ErrorCode.NO_RUNNING_NODE, hint: "pass --state-dir DIR or --socket PATH" });
      expect(err.message).toContain("2 nodes are running");
      expect(err.message).toContain(`--state-dir ${agentDir}`);
      expect(err.message).toContain(`--state-dir ${dirB}`);
      const picked = json(await meshguard(["status", "--no-ping", "--state-dir", dirB, "--json"]));
      expect(picked.self).toMatchObject({ hostname: "agent-b", socket: b.controlSocket });
    } finally {
      await b.close();
    }
  });

  test("a socket that is not a meshguard node's: a clear error, no hang", async () => {
    const p = join(emptyHome, "tmp", "foreign.sock");
    const foreign = net.createServer((c) => c.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await new Promise<void>((r) => foreign.listen(p, r));
    try {
      const r = await meshguard(["status", "--socket", p, "--json"], {}, emptyHome);
      expect(r.code).toBe(1);
      expect(json(r).error).toMatchObject({ code: ErrorCode.CONTROL_SOCKET_FAILED, message: expect.stringMatching(/answered something that is not JSON/) });
    } finally {
      foreign.close();
    }
  });

  test("a stale socket named by --socket is reported as such", async () => {
    const p = join(emptyHome, "tmp", "dead.sock");
    await staleSocket(p);
    const r = await meshguard(["status", "--socket", p, "--json"], {}, emptyHome);
    expect(r.code).toBe(1);
    expect(json(r).error).toMatchObject({ code: ErrorCode.NO_RUNNING_NODE, message: expect.stringMatching(/stale socket/) });
  });
});

describe("meshguard whois", () => {
  test("says who is behind a tailnet IP, as JSON and as text", async () => {
    const r = await meshguard(["whois", service.ips[0]!, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r)).toMatchObject({ node: { name: service.name, tags: ["tag:service"], ips: service.ips }, tagged: true, owners: ["alice@"] });
    const t = await meshguard(["whois", service.ips[0]!]);
    expect(t.stdout).toContain(`${service.ips[0]}: ${service.name} (tagged node`);
    expect(t.stdout).toMatch(/tags: +tag:service/);
  });

  test("an address no node has is MESHGUARD_WHOIS_NOT_FOUND; a name is a usage error", async () => {
    const r = await meshguard(["whois", "100.100.100.100", "--json"]);
    expect(r.code).toBe(1);
    expect(json(r).error.code).toBe(ErrorCode.WHOIS_NOT_FOUND);
    const u = await meshguard(["whois", "service", "--json"]);
    expect(u.code).toBe(2);
    expect(json(u).error).toMatchObject({ code: ErrorCode.USAGE, message: expect.stringMatching(/"service" is not a tailnet IP/) });
    // on the socket, the same is a bad request
    const { lines } = await request(agent.controlSocket!, '{"v":1,"id":1,"method":"whois","params":{"addr":"service"}}\n', 1);
    expect(lines[0].error).toMatchObject({ code: ErrorCode.CONTROL_SOCKET_BAD_REQUEST, message: expect.stringMatching(/addr: must be a tailnet IP/) });
  });
});

describe("meshguard ping", () => {
  test("pings a peer by name and reports the round trip and path", async () => {
    const r = await meshguard(["ping", "service", "--count", "2", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const p = json(r);
    expect(p).toMatchObject({ host: "service", kind: "disco", sent: 2 });
    expect(p.received).toBeGreaterThanOrEqual(1);
    const reply = p.replies.find((x: { latencyMs?: number }) => x.latencyMs !== undefined);
    expect(reply).toMatchObject({ ip: service.ips[0], name: service.name });
    expect(["direct", "derp"]).toContain(reply.path);
    const t = await meshguard(["ping", service.ips[0]!, "--count", "1", "--kind", "tsmp"]);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(new RegExp(`pong from ${service.name.replace(/\./g, "\\.")} \\(${service.ips[0]!.replace(/\./g, "\\.")}\\) via WireGuard in \\d+\\.\\d\\d ms`));
    expect(t.stdout).toMatch(/1 sent, 1 answered/);
  });

  test("a relayed path is shown as such: a brief node that may only use DERP (TS_DEBUG_ALWAYS_USE_DERP)", async () => {
    const key = await tn.key(["tag:agent-a"]);
    const env = { TS_DEBUG_ALWAYS_USE_DERP: "1" };
    const args = ["--control", tn.control.url, "--auth-key", key];
    const r = await meshguard(["ping", "service", "--count", "3", "--timeout", "1500", ...args, "--hostname", "relayed", "--json"], env, emptyHome);
    expect(r.code, r.stderr).toBe(0);
    const reply = json(r).replies.find((x: { latencyMs?: number }) => x.latencyMs !== undefined);
    expect(reply).toMatchObject({ path: "derp", name: service.name });
    expect(reply.derpRegion).toMatch(/\S/);
    expect(reply.endpoint).toBeUndefined();
    const t = await meshguard(["status", ...args, "--hostname", "relayed2"], env, emptyHome);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/service\.\S+\s+\S+\s+tag:service\s+relay "\S+"\s+\d+\.\d\d ms/);
  });

  test("a name that is not a peer is MESHGUARD_NO_PEER; a bad --kind a usage error", async () => {
    const r = await meshguard(["ping", "nosuchpeer", "--json"]);
    expect(r.code).toBe(1);
    expect(json(r).error.code).toBe(ErrorCode.NO_PEER);
    const u = await meshguard(["ping", "service", "--kind", "udp"]);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/--kind must be one of disco, tsmp, icmp/);
  });
});

describe("meshguard policy explain, attached", () => {
  test("explains with the node's live policy and identity, the peer's tags from its netmap", async () => {
    const r = await meshguard(["policy", "explain", "tcp service:80 tailnet", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const ex = json(r);
    expect(ex.decision).toMatchObject({ effect: "allow", ruleId: "service-http" });
    expect(ex.principal).toEqual({ node: "agent-a", tags: ["tag:agent-a"] });
    expect(ex).toMatchObject({ policy: { hash: policy.hash }, mode: "enforce", socket: agent.controlSocket });
    // the same decision the guard makes for a real dial
    const denied = await meshguard(["policy", "explain", "tcp service:22 tailnet"]);
    expect(denied.code).toBe(0);
    expect(denied.stdout).toMatch(/^DENY/);
    expect(denied.stdout).toMatch(/policy: +sha256:[0-9a-f]{12}, in force in the node at /);
    await expect(agent.dial("service", 22)).rejects.toBeInstanceOf(MeshguardError);
  });

  test("--as overrides the identity; FILE with --state-dir asks a new policy as the running node", async () => {
    const other = json(await meshguard(["policy", "explain", "tcp service:80 tailnet", "--as", "tag:other", "--json"]));
    expect(other.decision.effect).toBe("deny");
    const file = join(home, "new.hujson");
    writeFileSync(file, JSON.stringify({ version: 1, rules: [{ id: "web", src: ["tag:agent-a"], http: { host: ["example.com"] } }] }));
    const r = await meshguard(["policy", "explain", file, "--state-dir", agentDir, "GET https://example.com/", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r)).toMatchObject({ decision: { effect: "allow", ruleId: "web" }, principal: { tags: ["tag:agent-a"] } });
  });

  test("a guard with no policy in force: status says so, and explain answers deny", async () => {
    guard.setPolicy(undefined);
    try {
      const st = json(await meshguard(["status", "--no-ping", "--json"]));
      expect(st.self.guard).toMatchObject({ mode: "enforce", policy: null });
      const r = await meshguard(["policy", "explain", "tcp service:80 tailnet"]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^DENY: the guard has no policy in force/);
      expect(r.stdout).toMatch(/policy: +none, in force/);
    } finally {
      guard.setPolicy(policy);
    }
  });

  test("with no node running, explain says so and how to explain a file instead", async () => {
    const r = await meshguard(["policy", "explain", "GET https://example.com/", "--json"], { TS_CONTROL_URL: tn.control.url }, emptyHome);
    expect(r.code).toBe(1);
    expect(json(r).error.code).toBe(ErrorCode.NO_RUNNING_NODE);
  });
});

describe("the socket's life", () => {
  test("a node whose default socket cannot be made still starts, and says why; close removes the socket", async () => {
    const dir = join(home, "wide");
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    const n = await tn.start("agent-wide", { tags: ["tag:agent-a"], dir });
    await new Promise((r) => setImmediate(r)); // process warnings are emitted on the next tick
    process.off("warning", onWarning);
    expect(n.controlSocket).toBeUndefined();
    expect(warnings.map((w) => w.message).join("\n")).toMatch(/group- or world-writable/);
    await n.close();
    // explicitly asked for, the same refusal fails the start
    await expect(tn.start("agent-wide2", { tags: ["tag:agent-a"], dir, controlSocket: true })).rejects.toMatchObject({ code: ErrorCode.CONTROL_SOCKET_FAILED });
    const d2 = join(home, "short");
    const m = await tn.start("agent-short", { tags: ["tag:agent-a"], dir: d2 });
    const sock = m.controlSocket!;
    expect(existsSync(sock)).toBe(true);
    await m.close();
    expect(existsSync(sock)).toBe(false);
    // that node not running: --state-dir and --control bring it up briefly, with its state directory
    const key = await tn.key(["tag:agent-a"]);
    const r = await meshguard(["status", "--state-dir", d2, "--control", tn.control.url, "--auth-key", key, "--no-ping", "--json"], {}, emptyHome);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r).self).toMatchObject({ hostname: "short", dir: d2 });
    expect(r.stderr).toMatch(/no node is running with state .*short: bringing it up briefly/);
  });
});
