// Issue 7, items 7 and 9: what an in-process guard cannot close, and what
// closes it. Two kinds of case:
//
// - "run:" cases: `meshguard run --policy F -- node agent.js`, the hardened
//   launch mode. The agent's calls are judged before any of its code runs,
//   and Node's permission model refuses what the guard cannot see (child
//   processes, raw socket bindings, WASI). Each counts hits on a local
//   server (zero expected) with a positive control: the same agent run with
//   plain `node` (no guard) does reach it, so the probes work.
// - "gap (measured):" cases: facts docs/guard.md ("Security model") states
//   about Node itself and about the in-process guard alone. They pass while
//   the fact holds; when one fails, Node or the guard changed and the
//   security model must be updated with it.
//
// Needs dist/ (npm test builds it first): `meshguard run` starts the
// published CLI, as a user would.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allowHttp, allowTcp, guard, settle, settled, udpVictim, until, samePortPair, victim, type Victim } from "./helpers.js";

const root = join(import.meta.dirname, "..", "..");
const cli = join(root, "dist", "cli", "main.js");
const dir = mkdtempSync(join(tmpdir(), "mg-hardened-"));

let A: Victim; // allowed by the policies below
let B: Victim; // never allowed
beforeAll(async () => {
  [A, B] = await samePortPair(victim);
});
afterAll(async () => {
  await A.close();
  await B.close();
});

/** run starts a process and resolves with its exit code and output (never rejects). */
function run(argv: string[], opts: { timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Its own process group: on timeout the whole group is killed, so a grandchild (the agent under
    // `meshguard run`) holding the pipes cannot keep "close" from coming, and the test fails with
    // what was printed instead of hanging until vitest's timeout (seen once in a full run).
    const p = spawn(argv[0]!, argv.slice(1), { cwd: dir, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => {
      stderr += `\n[test] killed after ${opts.timeoutMs ?? 20_000} ms`;
      try {
        process.kill(-p.pid!, "SIGKILL");
      } catch {
        p.kill("SIGKILL");
      }
    }, opts.timeoutMs ?? 20_000);
    p.on("error", (e) => {
      clearTimeout(t);
      resolve({ code: null, stdout, stderr: stderr + String(e) });
    });
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The agent's last stdout line, parsed: what each probe did. */
function results(out: { stdout: string; stderr: string }): Record<string, string> {
  const line = out.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line) as Record<string, string>;
  } catch {
    throw new Error(`the agent printed no result line:\nstdout: ${out.stdout}\nstderr: ${out.stderr}`);
  }
}

/**
 * The agent: its FIRST statement is a fetch (the guard must already be in
 * place), then every way out the issue names. Each probe reports what
 * happened; none throws.
 */
const AGENT = `
import http from "node:http";
import net from "node:net";
import { spawn } from "node:child_process";
const [a, b] = JSON.parse(process.argv[2]);
const code = (e) => String((e && (e.code || (e.cause && e.cause.code) || e.message)) || e);
const first = await fetch(b.url + "/first").then((r) => r.text().then(() => "status " + r.status), code);
const out = { first };
const probe = async (name, fn) => { try { out[name] = String(await fn()); } catch (e) { out[name] = "threw " + code(e); } };
const connect = (v, path) => new Promise((res) => { const s = net.connect(v.port, v.host); s.on("connect", () => { s.end("GET " + path + " HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"); res("connected"); }); s.on("error", (e) => res(code(e))); });
await probe("fetchA", () => fetch(a.url + "/fetch-a").then((r) => r.text().then(() => "status " + r.status)));
await probe("fetchB", () => fetch(b.url + "/fetch-b").then((r) => "status " + r.status));
await probe("netB", () => connect(b, "/net-b"));
await probe("child", () => new Promise((res, rej) => {
  const c = spawn(process.execPath, ["-e", "require('node:net').connect(" + b.port + ", '" + b.host + "').on('connect', function () { this.end('GET /child HTTP/1.1\\\\r\\\\nhost: x\\\\r\\\\n\\\\r\\\\n'); }).on('error', () => {})"]);
  c.on("error", rej);
  c.on("exit", (status) => res("child exited " + status));
}));
await probe("binding", () => new Promise((res) => {
  const { TCP, TCPConnectWrap, constants } = process.binding("tcp_wrap");
  const h = new TCP(constants.SOCKET);
  const req = new TCPConnectWrap();
  req.oncomplete = (status) => { res(status === 0 ? "connected" : "status " + status); h.close(); };
  const err = h.connect(req, b.host, b.port);
  if (err) res("error " + err);
}));
await probe("wasi", async () => { const { WASI } = await import("node:wasi"); new WASI({ version: "preview1" }); return "constructed"; });
await probe("worker", async () => {
  const { Worker } = await import("node:worker_threads");
  const w = new Worker("fetch(" + JSON.stringify(b.url + "/worker") + ").then(() => {}, () => {})", { eval: true });
  return new Promise((res) => { w.on("error", (e) => res("worker error " + code(e))); w.on("exit", (c) => res("worker exited " + c)); });
});
console.log(JSON.stringify(out));
process.exit(0);
`;

function agentFile(): string {
  const f = join(dir, "agent.mjs");
  writeFileSync(f, AGENT);
  return f;
}

describe("run: meshguard run, the hardened launch mode (issue 7 item 7)", () => {
  it("run: under `meshguard run --policy F -- node agent.mjs`, nothing of the agent reaches a denied host: not its first statement, not a child process, a raw socket binding, WASI or a worker", async () => {
    expect(existsSync(cli), "dist/cli/main.js (build first: node test/build.mjs)").toBe(true);
    const policy = join(dir, "policy.json");
    writeFileSync(policy, JSON.stringify({ version: 1, rules: [{ ...allowHttp("127.0.0.1", { port: [A.port] }), src: ["*"] }, { ...allowTcp("127.0.0.1", A.port), src: ["*"] }] }));
    const agent = agentFile();
    const arg = JSON.stringify([A, B].map((v) => ({ url: v.url, host: v.host, port: v.port })));

    // Positive control: the same agent under plain node (no guard) reaches B by every probe.
    const plain = await run([process.execPath, agent, arg]);
    const p = results(plain);
    expect(p, "the probes work (plain node)").toMatchObject({ first: "status 200", fetchA: "status 200", fetchB: "status 200", netB: "connected", binding: "connected", wasi: "constructed" });
    await settle(200);

    const before = B.snapshot();
    const hitsA = A.hits("/fetch-a");
    const hardened = await run([process.execPath, cli, "run", "--policy", policy, "--", process.execPath, agent, arg]);
    const h = results(hardened);
    await settle(200);
    expect(B.snapshot(), `what reached the denied host under meshguard run (${JSON.stringify(h)}; stderr: ${hardened.stderr.slice(0, 400)})`).toEqual(before);
    expect(A.hits("/fetch-a") - hitsA, "positive control: the agent's allowed call goes through").toBe(1);
    expect(h.fetchA).toBe("status 200");
  });
});

/** A script probing what Node's permission model refuses; prints { probe: "ALLOWED ..." | "REFUSED code" }. */
const PERMISSION_PROBE = `
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const out = {};
const probe = (name, fn) => { try { out[name] = "ALLOWED " + String(fn()); } catch (e) { out[name] = "REFUSED " + (e.code || e.message); } };
probe("child_process", () => require("node:child_process").spawnSync(process.execPath, ["-e", "1"]).status);
probe("worker_threads", () => { const w = new (require("node:worker_threads").Worker)("1", { eval: true }); w.on("error", () => {}); void w.terminate(); return "started"; });
probe("process.binding(tcp_wrap)", () => typeof process.binding("tcp_wrap").TCP);
probe("process.binding(udp_wrap)", () => typeof process.binding("udp_wrap").UDP);
probe("process.binding(pipe_wrap)", () => typeof process.binding("pipe_wrap").Pipe);
probe("process.binding(cares_wrap)", () => typeof process.binding("cares_wrap").GetAddrInfoReqWrap);
probe("addon", () => { process.dlopen({ exports: {} }, "/nonexistent/addon.node"); return "loaded"; });
probe("wasi", () => { const { WASI } = require("node:wasi"); new WASI({ version: "preview1" }); return "constructed"; });
probe("inspector", () => { const i = require("node:inspector"); i.open(0); i.close(); return "opened"; });
// Without the permission model execve would replace this process: probe it only under --permission.
if (process.permission) probe("process.execve", () => { if (typeof process.execve !== "function") throw Object.assign(new Error("absent"), { code: "ABSENT" }); process.execve("/nonexistent", []); return "returned"; });
console.log(JSON.stringify(out));
`;

/** A script probing what the permission model leaves open: UDP, DNS, unix sockets; and one write it refuses. */
const OPEN_PROBE = `
import dgram from "node:dgram";
import dns from "node:dns";
import net from "node:net";
import { writeFileSync } from "node:fs";
const [udpPort, sockPath, file] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
const out = {};
out.dgram = await new Promise((res) => { const u = dgram.createSocket("udp4"); u.send("probe", udpPort, "127.0.0.1", (e) => { u.close(); res(e ? "REFUSED " + e.code : "ALLOWED sent"); }); }).catch((e) => "REFUSED " + e.code);
out.dns = await dns.promises.lookup("localhost").then((a) => "ALLOWED " + a.address, (e) => "REFUSED " + e.code);
out.unix = await new Promise((res) => { try { const s = net.connect(sockPath); s.on("connect", () => { s.destroy(); res("ALLOWED connected"); }); s.on("error", (e) => res("REFUSED " + e.code)); } catch (e) { res("REFUSED " + e.code); } });
try { writeFileSync(file, "{}"); out.fsWrite = "ALLOWED written"; } catch (e) { out.fsWrite = "REFUSED " + e.code; }
console.log(JSON.stringify(out));
`;

/** A script that opens a raw TCP connection below net.Socket.prototype.connect, through a socket's own handle. */
const HANDLE_PROBE = `
import http from "node:http";
import net from "node:net";
const [host, port, allowedPort] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const s = new net.Socket();
s.on("error", () => {});
s.connect(allowedPort, "127.0.0.1"); // creates the socket's TCP handle
const handle = s._handle;
const rawConnect = Object.getPrototypeOf(handle).connect;
let Req;
handle.connect = function (req, ...rest) { Req = req.constructor; return rawConnect.call(this, req, ...rest); };
setTimeout(() => {
  const h = new handle.constructor(0);
  const req = new Req();
  req.oncomplete = (status) => { console.log(status === 0 ? "connected" : "status " + status); process.exit(0); };
  const err = rawConnect.call(h, req, host, port);
  if (err) { console.log("error " + err); process.exit(0); }
}, 50);
`;

describe("gap (measured): what Node's permission model closes, and what it does not (docs/guard.md, \"Known gaps\")", () => {
  it(`gap (measured): Node ${process.version} --permission refuses child processes, workers, process.binding, addons, WASI, the inspector and execve`, async () => {
    const f = join(dir, "permission-probe.mjs");
    writeFileSync(f, PERMISSION_PROBE);
    const out = results(await run([process.execPath, "--permission", `--allow-fs-read=${dir}`, f]));
    for (const [name, what] of Object.entries(out)) expect(what, name).toMatch(/^REFUSED (ERR_ACCESS_DENIED|ERR_DLOPEN_DISABLED|ABSENT)/);
    // Without --permission the same probes are allowed (the probes work).
    const open = results(await run([process.execPath, f]));
    expect(open).toMatchObject({ child_process: "ALLOWED 0", "process.binding(tcp_wrap)": "ALLOWED function", wasi: "ALLOWED constructed" });
  });

  it(`gap (measured): Node ${process.version} --permission leaves UDP, DNS and unix sockets open, and refuses writing a file it was not given`, async () => {
    const f = join(dir, "open-probe.mjs");
    writeFileSync(f, OPEN_PROBE);
    const udp = await udpVictim("127.0.0.1");
    // The unix socket lives outside the one path the probe may read.
    const sockDir = mkdtempSync(join(tmpdir(), "mg-unix-"));
    const sockPath = join(sockDir, "s.sock");
    let unixConns = 0;
    const unix = net.createServer((c) => {
      unixConns++;
      c.end();
    });
    await new Promise<void>((r) => unix.listen(sockPath, r));
    try {
      const out = results(await run([process.execPath, "--permission", `--allow-fs-read=${f}`, f, String(udp.port), sockPath, join(sockDir, "policy.json")]));
      expect(out).toEqual({ dgram: "ALLOWED sent", dns: "ALLOWED 127.0.0.1", unix: "ALLOWED connected", fsWrite: "REFUSED ERR_ACCESS_DENIED" });
      expect(await until(() => udp.datagrams.length === 1 && unixConns === 1)).toBe(true);
    } finally {
      await udp.close();
      await new Promise<void>((r) => unix.close(() => r()));
    }
  });

  it(`gap (measured): Node ${process.version} --permission does not restrict the network: a socket's own handle connects anywhere (only OS-level egress closes this)`, async () => {
    const f = join(dir, "handle-probe.mjs");
    writeFileSync(f, HANDLE_PROBE);
    const before = B.conns;
    const out = await run([process.execPath, "--permission", `--allow-fs-read=${dir}`, f, B.host, String(B.port), String(A.port)]);
    expect(out.stdout.trim(), out.stderr).toBe("connected");
    expect(await until(() => B.conns > before)).toBe(true);
  });

  it("gap (measured): a node:http request to an allowed destination carries the Host header the caller sets (domain fronting on a shared front end); fetch does not", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] })] });
    const n = A.requests.length;
    await settled(fetch(`${A.url}/fronted`, { headers: { host: "elsewhere.example" } }));
    await new Promise<void>((resolve) => {
      const req = http.request({ host: A.host, port: A.port, path: "/fronted", headers: { host: "elsewhere.example" }, agent: false }, (res) => {
        res.resume();
        res.on("end", () => resolve());
      });
      req.on("error", () => resolve());
      req.end();
    });
    const sent = A.requests.slice(n).filter((r) => r.path === "/fronted").map((r) => r.headers.host);
    // The decision is about 127.0.0.1 (the Host header never names the destination). fetch sends the URL's
    // host whatever the caller sets; node:http sends the caller's header as set.
    expect(sent).toEqual([`127.0.0.1:${A.port}`, "elsewhere.example"]);
  });

  it("gap (measured): the in-process guard alone does not see child processes or raw socket bindings (closed by meshguard run)", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    // A child process: not this process, not its guard.
    const before = B.conns;
    await run([process.execPath, "-e", `require("node:net").connect(${B.port}, "${B.host}").on("connect", function () { this.end(); }).on("error", () => {})`]);
    expect(await until(() => B.conns > before), "a child process reaches a host the parent's guard denies").toBe(true);
    // process.binding("tcp_wrap"): below net.Socket.prototype.connect.
    const before2 = B.conns;
    const status = await new Promise<string>((resolve) => {
      const { TCP, TCPConnectWrap, constants } = (process as unknown as { binding(m: string): Record<string, never> }).binding("tcp_wrap") as unknown as {
        TCP: new (t: number) => { connect(req: object, host: string, port: number): number; close(): void };
        TCPConnectWrap: new () => { oncomplete?: (status: number) => void };
        constants: { SOCKET: number };
      };
      const h = new TCP(constants.SOCKET);
      const req = new TCPConnectWrap();
      req.oncomplete = (s: number) => {
        resolve(s === 0 ? "connected" : `status ${s}`);
        h.close();
      };
      const err = h.connect(req, B.host, B.port);
      if (err) resolve(`error ${err}`);
    });
    expect(status).toBe("connected");
    expect(await until(() => B.conns > before2), "a raw tcp_wrap connection reaches a host the guard denies").toBe(true);
    // The guard itself still refuses the same host through net (the gap is below it, not in it).
    const s = net.connect(B.port, B.host);
    const r = await settled(new Promise((resolve, reject) => s.on("connect", resolve).on("error", reject)));
    s.destroy();
    expect(r.ok).toBe(false);
  });
});
