// meshguard nodes on a tailnet with a real Tailscale client (issue 11,
// must-have 6): `tailscaled` and `tailscale`, built from the tailscale.com
// version go/go.mod pins (test/integration/tailscale-client.mjs), run with
// userspace networking as an ordinary user's laptop would join: `tailscale
// up` with a user-owned auth key against the local headscale. The meshguard
// node and the client reach each other both ways over TCP, each names the
// other with whois, and a policy change trims them apart (and back).
//
// Nothing reaches past 127.0.0.1: tailscaled gets the same TS_* knobs a
// meshguard node gets (src/config.ts knobsFor: no log upload, no port
// mapping, plain-HTTP local DERP, a panic instead of Tailscale's control
// server) plus --no-logs-no-support; its DERP map is headscale's embedded
// DERP; the control URL is an IP literal (no DNS bootstrap); update checks
// are switched off in its prefs. Incoming TCP to a userspace-networking
// tailscaled's own address is forwarded to 127.0.0.1:<same port> on this
// machine, which is how the meshguard node reaches a listener here.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { knobsFor } from "../../src/config.js";
import { LocalControl, MAGIC_DNS_DOMAIN } from "../../src/control/index.js";
import { MeshNode, MeshguardError, type WhoIs } from "../../src/index.js";
import * as tsclient from "./tailscale-client.mjs";

const tagOwners = { "tag:mg": ["alice@"] };
// alice's laptop (user-owned, the real client) and the meshguard agent (tag:mg) may talk both ways.
const together = {
  tagOwners,
  grants: [
    { src: ["alice@"], dst: ["tag:mg"], ip: ["*"] },
    { src: ["tag:mg"], dst: ["alice@"], ip: ["*"] },
  ],
};
// No grant between them: headscale trims each out of the other's netmap.
const apart = { tagOwners, grants: [] };

const LAPTOP = "alice-laptop";
const AGENT = "mg-agent";
const MG_PORT = 7400;
const BOUND_MS = 20_000;

let control: LocalControl;
let dir: string;
let agent: MeshNode;
let tailscaled: ChildProcess | undefined;
let socket: string;
let laptopIP: string;
let echo: net.Server;
let echoPort: number;
const daemonLog: string[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** tailscale runs the CLI against our tailscaled; `input` is written to stdin, which stays open until the command exits. */
async function tailscale(args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<Run> {
  const child = spawn(tsclient.TAILSCALE_BIN, [`--socket=${socket}`, ...args], { stdio: ["pipe", "pipe", "pipe"], env: clientEnv() });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin!.on("error", () => {});
  if (opts.input !== undefined) child.stdin!.write(opts.input);
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(timer);
  child.stdin!.destroy();
  return { code, stdout, stderr };
}

async function tailscaleJSON<T>(args: string[]): Promise<T> {
  const r = await tailscale(args);
  if (r.code !== 0) throw new Error(`tailscale ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

function clientEnv(): NodeJS.ProcessEnv {
  // TS_LOGS_DIR: as root, tailscaled would otherwise keep its log state in /var/lib/tailscale.
  return { ...process.env, ...knobsFor(control.url), TS_NO_LOGS_NO_SUPPORT: "true", TS_LOGS_DIR: join(dir, "logs"), HOME: dir };
}

interface ClientStatus {
  BackendState: string;
  Version: string;
  Self: { HostName: string; TailscaleIPs: string[] };
  Peer?: Record<string, { HostName: string; DNSName: string; TailscaleIPs: string[]; Tags?: string[] }>;
}
const clientPeers = async () => Object.values((await tailscaleJSON<ClientStatus>(["status", "--json"])).Peer ?? {});

/** until polls `check` every 100 ms until it holds, failing with `what` (and tailscaled's last lines) after `ms`. */
async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms\ntailscaled's last lines:\n${daemonLog.slice(-30).join("\n")}`);
    await sleep(100);
  }
  return Date.now() - t0;
}

beforeAll(async () => {
  if (!tsclient.ready()) {
    if (process.env.MESHGUARD_NETNS === "1") {
      throw new Error(`tailscaled ${tsclient.TAILSCALE_VERSION} is not built in ${tsclient.TAILSCALE_DIR} and the Go module proxy cannot be reached from this network namespace: run \`node test/build.mjs --only tailscale-client\` first`);
    }
    tsclient.ensure((m) => console.log(m));
  }
  control = await LocalControl.start({ policy: together });
  await control.createUser("alice");
  dir = mkdtempSync(join(tmpdir(), "mg-tsclient-"));
  socket = join(dir, "tailscaled.sock");
  mkdirSync(join(dir, "logs"));

  agent = await MeshNode.start({
    controlUrl: control.url,
    authKey: await control.createAuthKey({ tags: ["tag:mg"], ephemeral: true, expiration: "1h" }),
    hostname: AGENT,
    dir: join(dir, "agent"),
    ephemeral: true,
    tagOwners,
    timeoutMs: 30_000,
  });
  // The meshguard side of both directions: says who called (by whois on the
  // accepted socket) and echoes the caller's first line.
  const server = await agent.listen(MG_PORT);
  server.on("connection", (sock: net.Socket) => {
    sock.on("error", () => {});
    sock.once("data", async (first: Buffer) => {
      const who = await agent.whois(sock).catch((e: Error) => ({ error: e.message }));
      sock.end(JSON.stringify({ line: first.toString().trim(), who }) + "\n");
    });
  });

  // What the client's host serves on 127.0.0.1: tailscaled forwards a peer's
  // TCP to its own tailnet address here.
  echo = net.createServer((s) => {
    s.on("error", () => {});
    s.once("data", (d: Buffer) => s.end(`laptop got: ${d.toString().trim()}\n`));
  });
  echo.listen(0, "127.0.0.1");
  await once(echo, "listening");
  echoPort = (echo.address() as net.AddressInfo).port;

  tailscaled = spawn(
    tsclient.TAILSCALED_BIN,
    ["--tun=userspace-networking", `--statedir=${join(dir, "state")}`, `--socket=${socket}`, "--port=0", "--no-logs-no-support"],
    // fd 3: tailscaled exits when its read sees this process gone (TS_PARENT_DEATH_FD), so a crashed run leaves no daemon behind.
    { stdio: ["ignore", "pipe", "pipe", "pipe"], env: { ...clientEnv(), TS_PARENT_DEATH_FD: "3" } },
  );
  for (const s of [tailscaled.stdout!, tailscaled.stderr!]) {
    s.on("data", (d: Buffer) => {
      daemonLog.push(...d.toString().split("\n").filter(Boolean));
      if (daemonLog.length > 5000) daemonLog.splice(0, daemonLog.length - 5000);
    });
  }
  await until("tailscaled answers on its socket", 30_000, async () => (await tailscale(["status", "--json"], { timeoutMs: 5_000 })).stdout.includes("BackendState"));

  const key = await control.createAuthKey({ user: "alice", ephemeral: true, expiration: "1h" });
  const up = await tailscale(["up", `--login-server=${control.url}`, `--auth-key=${key}`, `--hostname=${LAPTOP}`, "--accept-dns=false", "--timeout=60s"], { timeoutMs: 70_000 });
  if (up.code !== 0) throw new Error(`tailscale up exited ${up.code}: ${up.stderr.trim()}\ntailscaled's last lines:\n${daemonLog.slice(-30).join("\n")}`);
  // Update checks off: they would only show what headscale reports, but a laptop left to defaults should ask for nothing.
  const set = await tailscale(["set", "--update-check=false"]);
  if (set.code !== 0) throw new Error(`tailscale set exited ${set.code}: ${set.stderr.trim()}`);
  const st = await tailscaleJSON<ClientStatus>(["status", "--json"]);
  expect(st.BackendState).toBe("Running");
  // The client is the pinned release (stamped as Tailscale's own builds are).
  expect(st.Version).toBe(tsclient.TAILSCALE_VERSION.replace(/^v/, ""));
  laptopIP = st.Self.TailscaleIPs.find((ip) => !ip.includes(":"))!;
});

afterAll(async () => {
  if (tailscaled && tailscaled.exitCode === null) {
    await tailscale(["logout"], { timeoutMs: 10_000 }).catch(() => {});
    tailscaled.kill("SIGTERM");
    const gone = await Promise.race([once(tailscaled, "exit").then(() => true), sleep(10_000).then(() => false)]);
    if (!gone) tailscaled.kill("SIGKILL");
  }
  await agent?.close();
  echo?.close();
  await control?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** fromClient connects the real client to the meshguard node (`tailscale nc`) and returns what the node answered. */
async function fromClient(line: string, timeoutMs = 15_000): Promise<Run> {
  return tailscale(["nc", agent.ips[0]!, String(MG_PORT)], { input: `${line}\n`, timeoutMs });
}

/** toClient dials the real client's address from the meshguard node and returns what its host answered. */
async function toClient(line: string): Promise<string> {
  const sock = await agent.dial(laptopIP, echoPort, { timeoutMs: 10_000 });
  sock.write(`${line}\n`);
  const chunks: Buffer[] = [];
  for await (const c of sock) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe("a real Tailscale client on the tailnet", () => {
  it("each sees the other in its netmap", async () => {
    await until("the meshguard node sees the laptop", BOUND_MS, async () => (await agent.peers()).some((p) => p.hostname === LAPTOP));
    const p = (await agent.peers()).find((x) => x.hostname === LAPTOP)!;
    expect(p.ips).toContain(laptopIP);
    expect(p.tags).toEqual([]);
    expect(p.user).toMatch(/^alice/);
    await until("the laptop sees the meshguard node", BOUND_MS, async () => (await clientPeers()).some((x) => x.HostName === AGENT));
    const q = (await clientPeers()).find((x) => x.HostName === AGENT)!;
    expect(q.TailscaleIPs).toContain(agent.ips[0]);
    expect(q.Tags).toEqual(["tag:mg"]);
  });

  it("`tailscale ping` gets pongs from the meshguard node: disco over a direct path, and TSMP through WireGuard", async () => {
    const pong = new RegExp(`^pong from ${AGENT} \\(${agent.ips[0]!.replaceAll(".", "\\.")}\\b`);
    // Disco pings stop at the first pong over a direct path (and fail after 5 without one).
    const disco = await tailscale(["ping", "--c=5", "--timeout=5s", agent.ips[0]!]);
    expect(disco.code, disco.stdout + disco.stderr).toBe(0);
    const last = disco.stdout.trim().split("\n").at(-1)!;
    expect(last).toMatch(pong);
    expect(last).toMatch(/ via 127\.0\.0\.1:\d+ in /);
    const tsmp = await tailscale(["ping", "--tsmp", "--c=5", "--timeout=5s", agent.ips[0]!]);
    expect(tsmp.code, tsmp.stdout + tsmp.stderr).toBe(0);
    expect(tsmp.stdout.trim().split("\n").at(-1)).toMatch(pong);
  });

  it("the meshguard node reaches a service on the laptop (tailscaled forwards to its host's 127.0.0.1)", async () => {
    expect(await toClient("hello from meshguard")).toBe("laptop got: hello from meshguard\n");
  });

  it("the laptop reaches the meshguard node (tailscale nc), which names it with whois", async () => {
    const r = await fromClient("hello from tailscaled");
    expect(r.code, r.stderr).toBe(0);
    const reply = JSON.parse(r.stdout) as { line: string; who: WhoIs };
    expect(reply.line).toBe("hello from tailscaled");
    expect(reply.who.node.hostname).toBe(LAPTOP);
    expect(reply.who.node.ips).toContain(laptopIP);
    expect(reply.who.tagged).toBe(false);
    expect(reply.who.node.tags).toEqual([]);
    expect(reply.who.user.login).toMatch(/^alice/);
    expect(reply.who.owners).toEqual([reply.who.user.login]);
  });

  it("whois both ways: the meshguard node names the laptop and its user, `tailscale whois` names the meshguard node and its tag", async () => {
    const w = await agent.whois(laptopIP);
    expect(w.node.hostname).toBe(LAPTOP);
    expect(w.user.login).toMatch(/^alice/);
    expect(w.tagged).toBe(false);

    const t = await tailscaleJSON<{ Node: { Name: string; Tags?: string[]; Addresses: string[] }; UserProfile: { LoginName: string } }>(["whois", "--json", agent.ips[0]!]);
    expect(t.Node.Name).toBe(`${AGENT}.${MAGIC_DNS_DOMAIN}.`);
    expect(t.Node.Tags).toEqual(["tag:mg"]);
    expect(t.Node.Addresses).toContain(`${agent.ips[0]}/32`);
  });

  it("a policy change trims them apart, both ways, and a later one brings them back", async () => {
    await control.setPolicy(apart);
    const tMg = await until("the laptop leaves the meshguard node's netmap", BOUND_MS, async () => !(await agent.peers()).some((p) => p.hostname === LAPTOP));
    const tTs = await until("the meshguard node leaves the laptop's netmap", BOUND_MS, async () => !(await clientPeers()).some((x) => x.HostName === AGENT));
    if (process.env.MESHGUARD_TEST_TIMING) console.log(`trimmed: meshguard side ${tMg} ms, tailscaled side +${tTs} ms`);

    // meshguard → laptop: no route to a peer it does not have.
    const err = await toClient("still there?").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MeshguardError);
    expect((err as MeshguardError).code).toBe("MESHGUARD_NO_PEER");
    // laptop → meshguard: the dial fails and no byte comes back.
    const r = await fromClient("still there?", 10_000);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    // And neither can name the other any more.
    await expect(agent.whois(laptopIP)).rejects.toMatchObject({ code: "MESHGUARD_WHOIS_NOT_FOUND" });
    expect((await tailscale(["whois", "--json", agent.ips[0]!])).code).not.toBe(0);

    await control.setPolicy(together);
    await until("the laptop is back in the meshguard node's netmap", BOUND_MS, async () => (await agent.peers()).some((p) => p.hostname === LAPTOP));
    await until("the meshguard node is back in the laptop's netmap", BOUND_MS, async () => (await clientPeers()).some((x) => x.HostName === AGENT));
    expect(await toClient("back")).toBe("laptop got: back\n");
    const back = await fromClient("back");
    expect(back.code, back.stderr).toBe(0);
    expect((JSON.parse(back.stdout) as { who: WhoIs }).who.node.hostname).toBe(LAPTOP);
  });

  it("tailscaled never tried to reach anything but the local tailnet", () => {
    // Tailscale's own services (log upload, control, DERP, bootstrap DNS,
    // update checks) are all *.tailscale.com/.io names; a knob left out
    // shows up here as a dial or lookup of one of them.
    const outside = daemonLog.filter((l) => /\b[\w-]+\.tailscale\.(com|io)\b|bootstrap ?dns|dnsfallback|logtail: (upload|dial)/i.test(l));
    expect(outside).toEqual([]);
    // Its only relay was headscale's embedded DERP region.
    const derps = daemonLog.filter((l) => l.includes("derphttp.Client.Connect: connecting to"));
    expect(derps.length).toBeGreaterThan(0);
    for (const l of derps) expect(l).toMatch(/connecting to derp-999 \(meshguard\)/);
  });
});
