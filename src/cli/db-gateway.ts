/**
 * `meshguard db-gateway --config db-gateway.hujson`: the database gateway in
 * its own process. Joins the tailnet the config names (or, with --dev, the
 * local tailnet of a running `meshguard dev`), prints how to connect, and
 * runs until SIGINT or SIGTERM, then drains (statements in flight finish, drainTimeoutMs) and closes.
 */

import { startDatabaseGateway, type DatabaseGatewayHandle } from "../database/index.js";
import type { Command, Context } from "./command.js";
import { serveUntilStopped, STOPPED_EARLY } from "./serve.js";
const DEV_HOSTNAME = "db-gateway";

function readyText(gw: DatabaseGatewayHandle): string {
  const host = gw.node.hostname;
  return [
    "meshguard database gateway ready",
    "",
    `  tailnet    ${gw.url}  (${gw.host}:${gw.port})`,
    `  upstream   ${gw.config.upstream.host}:${gw.config.upstream.port} as ${gw.config.upstream.user}`,
    `  policy     ${gw.config.policy} (reloaded when it changes)`,
    `  audit      ${gw.config.audit ? gw.config.audit.file : "decision events off (no \"audit\" in the config)"}`,
    "",
    "Connect from a tailnet node (the user name and password are ignored: whois names the caller):",
    `  psql "host=${host}${gw.port === 5432 ? "" : ` port=${gw.port}`} dbname=DATABASE"`,
    `  from a machine outside the tailnet: meshguard connect ${host}:${gw.port} --listen 127.0.0.1:5433, then psql -h 127.0.0.1 -p 5433 -d DATABASE`,
    "",
    "Press Ctrl-C to stop.",
    "",
  ].join("\n");
}

async function run(ctx: Context): Promise<number> {
  const config = ctx.str("config");
  if (config === undefined) throw ctx.usage("--config FILE is required");
  return serveUntilStopped(
    ctx,
    DEV_HOSTNAME,
    (tailnet) =>
      startDatabaseGateway({
        config,
        ...(tailnet ? { tailnet } : {}),
        onProgress: (m) => ctx.progress(m),
        onWarning: (e) => ctx.progress(`warning: ${e.message}`),
      }),
    (g) =>
      ctx.result(
        { url: g.url, host: g.host, port: g.port, upstream: { host: g.config.upstream.host, port: g.config.upstream.port, user: g.config.upstream.user }, policy: g.config.policy, audit: g.config.audit?.file ?? null },
        () => readyText(g),
      ),
    "ending sessions",
  );
}

export const dbGatewayCommand: Command = {
  name: "db-gateway",
  summary: "run the database gateway: PostgreSQL on the tailnet, every statement judged, rows filtered per caller",
  usage: ["--config FILE [--dev] [--json]"],
  description: `Runs the database gateway as a tailnet node in its own process. Clients on the
tailnet (psql, any driver, any language) connect to it as to PostgreSQL; the
gateway identifies each connection with whois, logs in upstream as its own
role, does SET ROLE to the caller's role (one per user and per tag) and sets
meshguard.principal() and meshguard.owners(), then judges every statement with
the policy file's sql rules before it reaches the server; PostgreSQL's row
security applies the rules' rows filters. Statements that would change the
session's identity are always refused. FILE is HuJSON (docs/database.md lists
every setting); the upstream password comes from an environment variable or a
file it names. With --dev it joins the local tailnet of a running \`meshguard dev\`
as "${DEV_HOSTNAME}" (instead of the config's "tailnet" section). Prints how to
connect when ready, runs until SIGINT or SIGTERM, then drains: statements in flight finish (up to drainTimeoutMs), then every session ends.
Progress goes to stderr.`,
  args: [],
  options: {
    config: { type: "string", arg: "FILE", help: "the database gateway config (HuJSON)" },
    dev: { type: "boolean", help: "join the local tailnet of a running `meshguard dev`" },
  },
  json: "print one JSON object when ready: { url, host, port, upstream: { host, port, user }, policy, audit }",
  examples: [
    { cmd: "db-gateway --config db-gateway.hujson", about: "run the database gateway on the tailnet its config names" },
    { cmd: "db-gateway --config db-gateway.hujson --dev", about: "run it on the local tailnet of `meshguard dev` (start that first)" },
  ],
  exits: {
    0: "stopped by SIGINT or SIGTERM after the gateway was ready",
    1: "the config, the upstream password or the policy is invalid, the tailnet could not be joined, or the listener could not be opened",
    2: "usage error (also: --config missing)",
    [STOPPED_EARLY]: "stopped by a signal before the gateway was ready",
  },
  run,
};
