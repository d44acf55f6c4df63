// Shared setup of the database gateway's tests and bench: a real PostgreSQL
// (test/gateway/pg-server.ts), a real headscale tailnet, the gateway node
// started with startDatabaseGateway, and agent nodes reached by local
// clients (psql, node-postgres) through a loopback forwarder that dials the
// gateway over the tailnet as that agent's node, as `meshguard connect` does.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import pg from "pg";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalControl } from "../../src/control/index.js";
import { meshguardSchemaSql, quoteIdent, roleForTag, startDatabaseGateway, type DatabaseGatewayHandle, type DatabaseGatewayOptions } from "../../src/database/index.js";
import { MeshNode } from "../../src/index.js";
import { tailnetPart } from "../../src/policy/index.js";
import { startPostgres, type PgServer } from "../gateway/pg-server.js";

export const DB = "appdb";
export const GATEWAY_ROLE = "mg_gateway";
export const GATEWAY_PASSWORD = "gw-Pa55-for-tests-only";

export const TAILNET = {
  tagOwners: {
    "tag:dbgw": ["alice@"],
    "tag:agent-a": ["alice@"],
    "tag:agent-b": ["bob@"],
    // A tag the database has no role for.
    "tag:agent-c": ["bob@"],
  },
  grants: [{ src: ["*"], dst: ["tag:dbgw"], ip: ["*"] }],
};

/**
 * The database as `meshguard policy apply --db` would leave it for the
 * rules in the tests: the meshguard schema, the gateway's login role
 * (NOINHERIT, no privileges, a member of each caller role), a role per
 * tag, grants, and row security keyed on current_user mirroring the rules'
 * `rows` filters.
 */
export async function prepareDatabase(server: PgServer, rows: Record<string, string>, extra: string[] = []): Promise<void> {
  await server.createDatabase(DB);
  const roles = Object.keys(rows).map((t) => quoteIdent(roleForTag(t)));
  for (const s of [
    // The superuser is named "meshguard": its "$user" schema would take unqualified tables once the meshguard schema exists.
    ...meshguardSchemaSql(),
    `CREATE ROLE ${GATEWAY_ROLE} LOGIN NOINHERIT PASSWORD '${GATEWAY_PASSWORD}'`,
    ...roles.map((r) => `CREATE ROLE ${r} NOLOGIN`),
    `GRANT ${roles.join(", ")} TO ${GATEWAY_ROLE}`,
    "CREATE TABLE public.items (id int PRIMARY KEY, owner text NOT NULL, z text)",
    "INSERT INTO public.items VALUES (1, 'alice@', 'a1'), (2, 'alice@', NULL), (3, 'bob@', 'b3'), (4, 'bob@', NULL)",
    "CREATE TABLE public.secrets (id int, value text)",
    "INSERT INTO public.secrets VALUES (1, 'top')",
    `GRANT SELECT, INSERT, UPDATE ON public.items TO ${roles.join(", ")}`,
    "ALTER TABLE public.items ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE public.items FORCE ROW LEVEL SECURITY",
    ...Object.entries(rows).map(([t, expr], i) => `CREATE POLICY p${i} ON public.items TO ${quoteIdent(roleForTag(t))} USING (${expr}) WITH CHECK (${expr})`),
    ...extra,
  ])
    await server.sql(DB, s);
}

export interface DbTailnet {
  server: PgServer;
  control: LocalControl;
  gw: DatabaseGatewayHandle;
  nodes: Record<"agentA" | "agentB", MeshNode>;
  /** A loopback port whose connections reach the gateway over the tailnet as that agent's node. */
  ports: Record<"agentA" | "agentB", number>;
  /** forward makes a loopback port for another node, as `ports` are for the agents (to the gateway, or to another tailnet address). */
  forward(node: MeshNode, to?: { host: string; port: number }): Promise<number>;
  /** connect opens a node-postgres client to an agent's port (or any forwarded port), ended with the rest. */
  connect(to: "agentA" | "agentB" | number, extra?: pg.ClientConfig): Promise<pg.Client>;
  /** startNode starts one more node of the tailnet with a tag (closed with the rest). */
  startNode(hostname: string, tag: string): Promise<MeshNode>;
  policyPath: string;
  dir: string;
  warnings: string[];
  close(): Promise<void>;
}

export async function startDbTailnet(opts: { server: PgServer; meshguard: object; gateway?: Partial<DatabaseGatewayOptions> }): Promise<DbTailnet> {
  const dir = mkdtempSync(join(tmpdir(), "mg-dbgw-"));
  const policyText = JSON.stringify({ ...TAILNET, meshguard: opts.meshguard }, null, 2);
  const policyPath = join(dir, "policy.hujson");
  writeFileSync(policyPath, policyText);
  const control = await LocalControl.start({ policy: tailnetPart(policyText) });
  const cleanups: Array<() => Promise<unknown>> = [() => control.close()];
  try {
    await control.createUser("alice");
    await control.createUser("bob");
    const start = async (hostname: string, tag: string) =>
      MeshNode.start({
        controlUrl: control.url,
        authKey: await control.createAuthKey({ tags: [tag], reusable: true, ephemeral: true, expiration: "1h" }),
        hostname,
        dir: join(dir, hostname),
        ephemeral: true,
        timeoutMs: 30_000,
      });
    const [gwNode, agentA, agentB] = await Promise.all([start("db-gateway", "tag:dbgw"), start("agent-a", "tag:agent-a"), start("agent-b", "tag:agent-b")]);
    cleanups.push(() => gwNode.close(), () => agentA.close(), () => agentB.close());
    const warnings: string[] = [];
    const gw = await startDatabaseGateway({
      config: { policy: policyPath, upstream: { host: "127.0.0.1", port: opts.server.port, user: GATEWAY_ROLE, password: { env: "DBGW_PASSWORD" } } },
      node: gwNode,
      env: { DBGW_PASSWORD: GATEWAY_PASSWORD },
      onWarning: (e) => warnings.push(e.message),
      ...opts.gateway,
    });
    cleanups.push(() => gw.close());
    const forward = async (node: MeshNode, to: { host: string; port: number } = gw): Promise<number> => {
      const srv = net.createServer((local) => {
        local.pause();
        node.dial(to.host, to.port).then(
          (remote) => {
            local.pipe(remote).pipe(local);
            local.resume();
            const end = () => {
              local.destroy();
              remote.destroy();
            };
            local.on("error", end).on("close", end);
            remote.on("error", end).on("close", end);
          },
          () => local.destroy(),
        );
      });
      await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
      cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
      return (srv.address() as net.AddressInfo).port;
    };
    const ports = { agentA: await forward(agentA), agentB: await forward(agentB) };
    return {
      server: opts.server,
      control,
      gw,
      nodes: { agentA, agentB },
      ports,
      forward,
      async connect(to, extra = {}) {
        const c = new pg.Client({ host: "127.0.0.1", port: typeof to === "number" ? to : ports[to], user: "anyone", password: "ignored", database: DB, ...extra });
        c.on("error", () => {});
        await c.connect();
        // A client the gateway already ended (a drain) may never say so again: bounded.
        cleanups.push(() => Promise.race([c.end(), new Promise((r) => setTimeout(r, 2000).unref())]));
        return c;
      },
      async startNode(hostname, tag) {
        const n = await start(hostname, tag);
        cleanups.push(() => n.close());
        return n;
      },
      policyPath,
      dir,
      warnings,
      async close() {
        for (const f of cleanups.reverse()) await f().catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const f of cleanups.reverse()) await f().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

export { startPostgres };
