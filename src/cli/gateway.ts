/**
 * `meshguard gateway --config gateway.hujson`: the AI gateway in its own
 * process. Joins the tailnet the config names (or, with --dev, the local
 * tailnet of a running `meshguard dev`), guards its own process (outbound
 * calls only to the configured providers and hooks), prints its URL and the
 * client settings, and runs until SIGINT or SIGTERM, then drains in-flight
 * requests and closes.
 */

import { startGateway, type GatewayHandle } from "../gateway/index.js";
import type { Command, Context } from "./command.js";
import { serveUntilStopped, STOPPED_EARLY } from "./serve.js";
const DEV_HOSTNAME = "ai-gateway";

/** clientSettings: what to point each kind of client at. */
export function clientSettings(base: string): Record<string, string> {
  return {
    OPENAI_BASE_URL: `${base}/v1`,
    ANTHROPIC_BASE_URL: base,
    GEMINI_BASE_URL: base,
  };
}

/** The web console's URL, or undefined when the config turns it off. */
function consoleUrl(gw: GatewayHandle): string | undefined {
  return gw.config.console?.enabled === false ? undefined : `${gw.url ?? gw.loopbackUrl!}/console/`;
}

function readyText(gw: GatewayHandle): string {
  const base = gw.url ?? gw.loopbackUrl!;
  const env = clientSettings(base);
  const providers = Object.entries(gw.config.providers).map(([name, p]) => `${name} (${p.format}: ${p.models.join(", ")})`);
  const lines = [
    "meshguard AI gateway ready",
    "",
    ...(gw.url ? [`  tailnet    ${gw.url}${gw.ipUrl ? `  (${gw.ipUrl})` : ""}`] : []),
    ...(gw.loopbackUrl ? [`  loopback   ${gw.loopbackUrl}`] : []),
    `  providers  ${providers.join("\n             ")}`,
    `  policy     ${gw.config.policy} (reloaded when it changes)`,
    `  logs       ${gw.store ? gw.config.dataDir : "off (retention none)"}`,
    ...(consoleUrl(gw) ? [`  console    ${consoleUrl(gw)}  (logs, usage, quotas, chat, client settings: each caller sees what the tailnet says they may)`] : []),
    `  guard      ${gw.guard.kind === "own" ? `outbound calls only to ${gw.guard.origins.join(", ")}${gw.guard.database ? ` and PostgreSQL at ${gw.guard.database}` : ""}` : gw.guard.kind === "existing" ? "the process's own guard" : "none"}`,
    "",
    "Point clients at it (any API key string works: the gateway drops it and sends the provider's):",
    `  export OPENAI_BASE_URL=${env.OPENAI_BASE_URL}`,
    `  export ANTHROPIC_BASE_URL=${env.ANTHROPIC_BASE_URL}      # Claude Code too`,
    `  Gemini (@google/genai): httpOptions: { baseUrl: "${base}" }`,
    `  Codex CLI, ~/.codex/config.toml:`,
    `    model_provider = "meshguard"`,
    `    [model_providers.meshguard]`,
    `    name = "meshguard"`,
    `    base_url = "${env.OPENAI_BASE_URL}"`,
    `    wire_api = "responses"`,
    "",
    "Press Ctrl-C to stop.",
    "",
  ];
  return lines.join("\n");
}

async function run(ctx: Context): Promise<number> {
  const config = ctx.str("config");
  if (config === undefined) throw ctx.usage("--config FILE is required");
  return serveUntilStopped(
    ctx,
    DEV_HOSTNAME,
    (tailnet) =>
      startGateway({
        config,
        selfGuard: true,
        ...(tailnet ? { tailnet } : {}),
        onProgress: (m) => ctx.progress(m),
        onWarning: (e) => ctx.progress(`warning: ${e.message}`),
      }),
    (g) => {
      const base = g.url ?? g.loopbackUrl!;
      ctx.result(
        {
          url: g.url ?? null,
          ipUrl: g.ipUrl ?? null,
          loopbackUrl: g.loopbackUrl ?? null,
          providers: Object.entries(g.config.providers).map(([name, p]) => ({ name, format: p.format, baseUrl: p.baseUrl, models: p.models })),
          policy: g.config.policy,
          dataDir: g.store ? g.config.dataDir : null,
          guard: g.guard,
          console: consoleUrl(g) ?? null,
          env: clientSettings(base),
        },
        () => readyText(g),
      );
    },
    "finishing requests in flight",
  );
}

export const gatewayCommand: Command = {
  name: "gateway",
  summary: "run the AI gateway: provider keys in one place, every LLM call attributed, budgeted, hooked and logged",
  usage: ["--config FILE [--dev] [--json]"],
  description: `Runs the AI gateway as a tailnet node in its own process. Clients on the
tailnet point their SDKs at it with a base URL only (OPENAI_BASE_URL=http://HOST/v1,
ANTHROPIC_BASE_URL=http://HOST); the gateway identifies each caller with whois,
decides with the policy file's llm rules (the guard's engine), holds quota,
runs hooks, injects the provider key and logs the call. FILE is HuJSON
(docs/gateway.md lists every setting); provider keys come from environment
variables or files it names. The process guards itself: its outbound calls may
go only to the configured providers, hooks and approval webhook.
With --dev it joins the local tailnet of a running \`meshguard dev\` as "${DEV_HOSTNAME}"
(instead of the config's "tailnet" section). Prints the URL and client settings
when ready, runs until SIGINT or SIGTERM, then lets requests in flight finish
(up to 10 s) and flushes the logs. Progress goes to stderr.`,
  args: [],
  options: {
    config: { type: "string", arg: "FILE", help: "the gateway config (HuJSON)" },
    dev: { type: "boolean", help: "join the local tailnet of a running `meshguard dev`" },
  },
  json: "print one JSON object when ready: { url, ipUrl, loopbackUrl, providers, policy, dataDir, guard, console, env: { OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GEMINI_BASE_URL } }",
  examples: [
    { cmd: "gateway --config gateway.hujson", about: "run the gateway on the tailnet its config names" },
    { cmd: "gateway --config gateway.hujson --dev", about: "run it on the local tailnet of `meshguard dev` (start that first)" },
  ],
  exits: {
    0: "stopped by SIGINT or SIGTERM after the gateway was ready",
    1: "the config, a provider key or the policy is invalid, the tailnet could not be joined, or a listener could not be opened",
    2: "usage error (also: --config missing)",
    [STOPPED_EARLY]: "stopped by a signal before the gateway was ready",
  },
  run,
};
