// `meshguard db-gateway` as its own process (the built CLI, dist/: `node
// test/build.mjs` or `npx tsup` first), on the local tailnet of `meshguard
// dev --json`, in front of a real PostgreSQL: an agent node of dev's
// tailnet (tag:agent) queries through it; SIGTERM stops it with status 0;
// the database password is printed nowhere.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { spawnCli as cli, type CliProcess } from "../cli-run.js";
import { MeshNode } from "../../src/index.js";
import { DB, GATEWAY_PASSWORD, GATEWAY_ROLE, prepareDatabase } from "./db-tailnet.js";
import { postgresUnavailable, startPostgres, type PgServer } from "../gateway/pg-server.js";

const CLI = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
const unavailable = postgresUnavailable();


let dir: string;
let server: PgServer;
const procs: CliProcess[] = [];
let agent: MeshNode | undefined;

beforeAll(async () => {
  if (unavailable) return;
  expect(existsSync(CLI), "dist/cli/main.js: build first (node test/build.mjs)").toBe(true);
  dir = mkdtempSync(join(tmpdir(), "mg-dbcli-"));
  server = await startPostgres();
  await prepareDatabase(server, { "tag:agent": "z IS NOT NULL" });
}, 120_000);
afterAll(async () => {
  await agent?.close();
  for (const p of procs) if (p.child.exitCode === null) (p.child.kill("SIGKILL"), await p.exited);
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it.skipIf(unavailable)("db-gateway --dev: joins meshguard dev's tailnet, an agent node queries through it, stops on SIGTERM, prints no password, writes redacted decision events to its audit file", async () => {
  const env = { MESHGUARD_DEV_STATE: join(dir, "dev.json") };
  const dev = cli(["dev", "--json"], env);
  procs.push(dev);
  const tailnet = await dev.ready;
  writeFileSync(join(dir, "policy.hujson"), JSON.stringify({ version: 5, rules: [{ id: "agents", src: ["tag:agent"], sql: { database: [DB], operation: ["select"], table: ["public.items"], rows: "z IS NOT NULL" } }] }));
  writeFileSync(
    join(dir, "db-gateway.hujson"),
    `{
  // the database gateway of this test
  "policy": "policy.hujson",
  "upstream": { "host": "127.0.0.1", "port": ${server.port}, "user": "${GATEWAY_ROLE}", "password": { "env": "PGW_PASSWORD" } },
  "audit": { "file": "audit.jsonl" },
}`,
  );
  const gw = cli(["db-gateway", "--config", join(dir, "db-gateway.hujson"), "--dev", "--json"], { ...env, PGW_PASSWORD: GATEWAY_PASSWORD });
  procs.push(gw);
  const ready = await gw.ready;
  expect(ready).toMatchObject({ url: "postgres://db-gateway", port: 5432, upstream: { host: "127.0.0.1", port: server.port, user: GATEWAY_ROLE }, audit: join(dir, "audit.jsonl") });
  expect(gw.stderr).toContain("joining the local tailnet of meshguard dev");

  agent = await MeshNode.start({ controlUrl: tailnet.controlUrl, authKey: tailnet.agentAuthKey, hostname: "db-agent", dir: join(dir, "agent"), ephemeral: true, timeoutMs: 30_000 });
  const a = agent;
  const fwd = net.createServer((local) => {
    local.pause();
    a.dial(ready.host, ready.port).then(
      (remote) => {
        local.pipe(remote).pipe(local);
        local.resume();
        remote.on("error", () => local.destroy());
        local.on("error", () => remote.destroy());
      },
      () => local.destroy(),
    );
  });
  await new Promise<void>((r) => fwd.listen(0, "127.0.0.1", r));
  const c = new pg.Client({ host: "127.0.0.1", port: (fwd.address() as net.AddressInfo).port, user: "agent", database: DB });
  c.on("error", () => {});
  await c.connect();
  expect((await c.query("SELECT id FROM items ORDER BY id")).rows.map((r) => r.id)).toEqual([1, 3]);
  await expect(c.query("DELETE FROM items WHERE z = 'cli-literal-4471'")).rejects.toMatchObject({ code: "42501" });
  await c.end();
  fwd.close();

  gw.child.kill("SIGTERM");
  expect(await gw.exited).toBe(0);
  expect(gw.stderr).toMatch(/stopping \(SIGTERM\): ending sessions/);
  expect(gw.stdout + gw.stderr).not.toContain(GATEWAY_PASSWORD);
  // The audit file: one event per statement, the denial with its reason, no literal.
  const audit = readFileSync(join(dir, "audit.jsonl"), "utf8");
  const events = audit.trim().split("\n").map((l) => JSON.parse(l));
  expect(events.map((e) => [e.layer, e.outcome, e.principal.tags])).toEqual([
    ["sql", "allow", ["tag:agent"]],
    ["sql", "deny", ["tag:agent"]],
  ]);
  expect(events[1].target.accesses).toEqual(["delete public.items (z)"]);
  expect(audit).not.toContain("cli-literal-4471");
  dev.child.kill("SIGTERM");
  expect(await dev.exited).toBe(0);
}, 120_000);

it.skipIf(unavailable)("db-gateway without --config is a usage error (exit 2); a missing password variable is exit 1 naming it", async () => {
  const p = cli(["db-gateway", "--json"], {});
  procs.push(p);
  expect(await p.exited).toBe(2);
  writeFileSync(join(dir, "nopw.hujson"), JSON.stringify({ policy: "policy.hujson", upstream: { user: "x", password: { env: "MG_TEST_UNSET_VARIABLE" } }, tailnet: { controlUrl: "http://127.0.0.1:9" } }));
  const q = cli(["db-gateway", "--config", join(dir, "nopw.hujson"), "--json"], {});
  procs.push(q);
  expect(await q.exited).toBe(1);
  expect(JSON.parse(q.stdout).error).toMatchObject({ code: "MESHGUARD_INVALID_OPTIONS", message: expect.stringMatching(/MG_TEST_UNSET_VARIABLE, which is not set/) });
});
