/**
 * `meshguard run`: the hardened launch mode (src/cli/run-hardened.ts). The
 * agent (test/guard/fixtures/run-agent.mjs) is launched through the built
 * executable, the guard preloaded and Node's permission model on; it calls
 * two counting servers in this process: "denied" must stay at zero hits,
 * "allowed" gets its hit. The last case pins the table of docs/guard.md
 * ("Hardened launch mode") to what this Node actually closes.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { countingServer, type Counting } from "./helpers.js";

const MAIN = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
const AGENT = fileURLToPath(new URL("./fixtures/run-agent.mjs", import.meta.url));
const PROBE = fileURLToPath(new URL("./fixtures/permission-probe.mjs", import.meta.url));
const ADDON = fileURLToPath(new URL("../../build/meshguard.node", import.meta.url));
const DOC = fileURLToPath(new URL("../../docs/guard.md", import.meta.url));

let tmp: string;
let allowed: Counting;
let denied: Counting;
let policyFile: string;
const POLICY = (port: number) => JSON.stringify({ version: 1, rules: [{ id: "ok", src: ["tag:agent"], http: { host: ["127.0.0.1"], port: [port], path: ["/ok/**"] } }] });

beforeAll(async () => {
  expect(existsSync(MAIN), "dist/ is missing: run node test/build.mjs first").toBe(true);
  tmp = mkdtempSync(join(tmpdir(), "meshguard-run-"));
  allowed = await countingServer();
  denied = await countingServer();
  policyFile = join(tmp, "policy.json");
});
afterAll(async () => {
  await allowed.close();
  await denied.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** meshguard runs the executable, asynchronously: the counting servers live in this process. */
function meshguard(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { encoding: "utf8", timeout: 60_000, cwd: tmp, ...(opts.env ? { env: opts.env } : {}) }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe("meshguard run", () => {
  test("the agent's denied fetch is refused (zero hits), the allowed one gets its hit; child_process fails with ERR_ACCESS_DENIED; the policy file cannot be rewritten", async () => {
    writeFileSync(policyFile, POLICY(allowed.port));
    const audit = join(tmp, "audit.jsonl");
    const r = await meshguard(["run", "--policy", policyFile, "--as", "tag:agent", "--audit", audit, "--json", "--", process.execPath, AGENT, `${allowed.url}/ok/1`, `${denied.url}/ok/1`, policyFile]);
    expect(r.code, r.stderr).toBe(0);
    const [first, second] = r.stdout.trim().split("\n");
    const launched = JSON.parse(first!).launched;
    expect(launched).toMatchObject({ mode: "enforce", principal: { tags: ["tag:agent"] }, permissions: { flag: "--permission", childProcess: false, wasi: false, workers: false, addons: false } });
    expect(launched.permissions.fsWrite).toEqual([audit]);
    expect(launched.argv).toContain("--require");
    const out = JSON.parse(second!);
    expect(out.allowed).toEqual({ ok: 200 });
    expect(out.denied).toEqual({ error: "MESHGUARD_POLICY_DENIED" });
    expect(out.spawn).toEqual({ error: "ERR_ACCESS_DENIED" });
    expect(out.rewritePolicy).toEqual({ error: "ERR_ACCESS_DENIED" });
    expect(readFileSync(policyFile, "utf8")).toBe(POLICY(allowed.port));
    expect(denied.hits).toBe(0);
    expect(allowed.hits).toBe(1);
    // The denial is in the audit file.
    const events = readFileSync(audit, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { outcome: string; request: string });
    expect(events.filter((e) => e.outcome === "deny").map((e) => e.request)).toEqual([`GET ${denied.url}/ok/1`]);
  });

  test("positive control: the same agent under plain node reaches the denied server, spawns and rewrites its policy", async () => {
    writeFileSync(policyFile, POLICY(allowed.port));
    const before = denied.hits;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [AGENT, `${allowed.url}/ok/1`, `${denied.url}/ok/1`, policyFile], { encoding: "utf8", timeout: 60_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    expect(JSON.parse(out)).toMatchObject({ denied: { ok: 200 }, spawn: { ok: 0 }, rewritePolicy: {} });
    expect(denied.hits).toBe(before + 1);
  });

  test("worker threads: closed by default; with --allow-workers a worker is guarded and stays inside the permission model even with execArgv: []", async () => {
    writeFileSync(policyFile, POLICY(allowed.port));
    const before = denied.hits;
    const args = (extra: string[]) => ["run", "--policy", policyFile, "--as", "tag:agent", ...extra, "--", process.execPath, AGENT, `${allowed.url}/ok/w`, `${denied.url}/ok/w`, policyFile, "worker"];
    const closed = await meshguard(args([]));
    expect(closed.code, closed.stderr).toBe(0);
    expect(JSON.parse(closed.stdout).worker).toEqual({ error: "ERR_ACCESS_DENIED" });
    const open = await meshguard(args(["--allow-workers"]));
    expect(open.code, open.stderr).toBe(0);
    expect(JSON.parse(open.stdout).worker).toEqual({ ok: { denied: "MESHGUARD_POLICY_DENIED", allowed: 200, spawn: "ERR_ACCESS_DENIED" } });
    expect(denied.hits).toBe(before);
  });

  test("the exit status is the agent's; a signal sent to meshguard run is passed on", async () => {
    writeFileSync(join(tmp, "exit7.mjs"), "process.exit(7)\n");
    expect((await meshguard(["run", "--", process.execPath, join(tmp, "exit7.mjs")])).code).toBe(7);
    writeFileSync(join(tmp, "wait.mjs"), 'process.on("SIGTERM", () => { console.log("got SIGTERM"); process.exit(3); }); console.log("ready"); setInterval(() => {}, 1000);\n');
    const cp = spawn(process.execPath, [MAIN, "run", "--", process.execPath, join(tmp, "wait.mjs")], { cwd: tmp, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    await new Promise<void>((resolve) =>
      cp.stdout.on("data", (d: Buffer) => {
        out += d;
        if (out.includes("ready")) resolve();
      }),
    );
    cp.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => cp.on("exit", (c) => resolve(c)));
    expect(out).toContain("got SIGTERM");
    expect(code).toBe(3);
    writeFileSync(join(tmp, "kill.mjs"), 'process.kill(process.pid, "SIGKILL")\n');
    expect((await meshguard(["run", "--", process.execPath, join(tmp, "kill.mjs")])).code).toBe(128 + 9);
  });

  test("refused before launch: an invalid policy (exit 1), a command that is not Node or sets permission options itself (exit 2)", async () => {
    writeFileSync(join(tmp, "bad.json"), '{"version":1,"rules":[{}]}');
    writeFileSync(join(tmp, "hello.mjs"), 'console.log("the agent ran")\n');
    const bad = await meshguard(["run", "--policy", join(tmp, "bad.json"), "--json", "--", process.execPath, join(tmp, "hello.mjs")]);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout).error.code).toBe("MESHGUARD_POLICY_INVALID");
    const perm = await meshguard(["run", "--", process.execPath, "--allow-child-process", join(tmp, "hello.mjs")]);
    expect(perm.code).toBe(2);
    expect(perm.stderr).toMatch(/--allow-child-process: meshguard run sets Node's permission options itself/);
    const notNode = await meshguard(["run", "--", "/bin/false", "x"]);
    expect(notNode.code).toBe(2);
    for (const r of [bad, perm, notNode]) expect(r.stdout).not.toContain("the agent ran");
    // NODE_OPTIONS could lift the permission model: the agent does not get it.
    const env = { ...process.env, NODE_OPTIONS: "--no-deprecation" };
    writeFileSync(join(tmp, "env.mjs"), "console.log(JSON.stringify(process.env.NODE_OPTIONS ?? null))\n");
    const r = await meshguard(["run", "--json", "--", process.execPath, join(tmp, "env.mjs")], { env });
    const [doc, line] = r.stdout.trim().split("\n");
    expect(JSON.parse(doc!).launched.envRemoved).toEqual(["NODE_OPTIONS"]);
    expect(line).toBe("null");
  });

  test("what this Node's permission model closes under meshguard run is what docs/guard.md says", async () => {
    const major = process.versions.node.split(".")[0];
    const doc = readFileSync(DOC, "utf8");
    const header = doc.split("\n").find((l) => l.startsWith("| what the agent tries |"));
    expect(header, "docs/guard.md lacks the measured table").toBeDefined();
    const cols = header!.split("|").map((c) => c.trim());
    for (const workers of [false, true]) {
      const col = cols.findIndex((c) => c.startsWith(`Node ${major}.`) && c.includes("--allow-workers") === workers);
      expect(col, `no column for Node ${major} ${workers ? "with" : "without"} --allow-workers`).toBeGreaterThan(0);
      const probeDir = mkdtempSync(join(tmp, "probe-"));
      const policy = join(probeDir, "policy.json");
      const audit = join(probeDir, "audit.jsonl");
      writeFileSync(policy, JSON.stringify({ version: 1, rules: [{ id: "lo", src: ["*"], tcp: { host: ["127.0.0.1"], port: ["*"] } }] }));
      const copy = join(probeDir, "probe.mjs");
      writeFileSync(copy, readFileSync(PROBE));
      const r = await meshguard(["run", "--policy", policy, "--audit", audit, ...(workers ? ["--allow-workers"] : []), "--", process.execPath, copy, policy, audit, ADDON]);
      expect(r.code, r.stderr).toBe(0);
      const results = JSON.parse(r.stdout).results as Record<string, string>;
      for (const [probe, got] of Object.entries(results)) {
        const row = doc.split("\n").find((l) => l.startsWith(`| \`${probe}\` |`));
        expect(row, `docs/guard.md has no row for ${probe}`).toBeDefined();
        const cell = row!.split("|").map((c) => c.trim())[col]!;
        expect(cell.replace(/`/g, ""), `${probe} (Node ${process.versions.node}${workers ? ", --allow-workers" : ""})`).toBe(got.replace(/:.*/, ""));
      }
    }
  });
});
