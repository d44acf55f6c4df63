// Shared setup of the gateway's end-to-end tests: a real headscale tailnet,
// the simulated provider on 127.0.0.1, a gateway node started with
// startGateway, and client nodes whose official SDKs reach the gateway over
// the tailnet (their fetch is the client node's).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";
import OpenAI from "openai";
import { startLlmSim, type LlmSim, type LlmSimOptions } from "../../bench/lib/llm-sim.mjs";
import { LocalControl } from "../../src/control/index.js";
import { startGateway, type GatewayHandle, type GatewayOptions } from "../../src/gateway/index.js";
import { MeshNode } from "../../src/index.js";
import { tailnetPart } from "../../src/policy/index.js";

/** The provider key the simulator requires; it must never reach a client, a log line or the database. */
export const PROVIDER_KEY = "sk-sim-PROVIDER-5ecret-4f9a";
/** What clients send as their key: dropped by the gateway. */
export const CLIENT_KEY = "sk-client-key-must-not-reach-the-provider";

/** The tailnet part: who owns which tag, who may reach the gateway, and alice's admin grant (the gateway capability). */
export const TAILNET = {
  tagOwners: {
    "tag:gateway": ["alice@"],
    "tag:agent-a": ["alice@"],
    "tag:agent-b": ["bob@"],
  },
  grants: [
    { src: ["*"], dst: ["tag:gateway"], ip: ["*"] },
    { src: ["alice@"], dst: ["tag:gateway"], app: { "meshguard.dev/cap/gateway": [{ role: "admin" }] } },
  ],
};

/** A combined policy file: the tailnet part and meshguard's part (rules for the gateway). */
export function policyFile(meshguard: object): string {
  return JSON.stringify({ ...TAILNET, meshguard }, null, 2);
}

export interface GatewayTailnet {
  control: LocalControl;
  sim: LlmSim;
  gw: GatewayHandle;
  dir: string;
  policyPath: string;
  /** Client nodes: agent-a (tag:agent-a, owned by alice), agent-b (tag:agent-b, owned by bob), laptop (alice's own node). */
  nodes: Record<"agentA" | "agentB" | "laptop", MeshNode>;
  openai(node: MeshNode, opts?: { apiKey?: string }): OpenAI;
  anthropic(node: MeshNode): Anthropic;
  gemini(node: MeshNode): GoogleGenAI;
  /** Everything the gateway printed as a warning. */
  warnings: string[];
  close(): Promise<void>;
}

export const PROVIDERS = (simUrl: string) => ({
  openai: { baseUrl: `${simUrl}/v1`, format: "openai" as const, key: { env: "SIM_PROVIDER_KEY" }, models: ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-*"] },
  anthropic: { baseUrl: simUrl, format: "anthropic" as const, key: { env: "SIM_PROVIDER_KEY" }, models: ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-*"] },
  gemini: { baseUrl: simUrl, format: "gemini" as const, key: { env: "SIM_PROVIDER_KEY" }, models: ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-*"] },
});

export async function startGatewayTailnet(opts: {
  meshguard: object;
  /** Gateway config settings; a function is given the test's directory (for file paths in it). */
  config?: Record<string, unknown> | ((dir: string) => Record<string, unknown>);
  sim?: LlmSimOptions;
  gateway?: Partial<GatewayOptions>;
}): Promise<GatewayTailnet> {
  const dir = mkdtempSync(join(tmpdir(), "mg-gw-"));
  const policyText = policyFile(opts.meshguard);
  const policyPath = join(dir, "policy.hujson");
  writeFileSync(policyPath, policyText);
  const sim = await startLlmSim({ key: PROVIDER_KEY, ...opts.sim });
  const control = await LocalControl.start({ policy: tailnetPart(policyText) });
  const cleanups: Array<() => Promise<unknown>> = [() => sim.close(), () => control.close()];
  try {
    const alice = await control.createUser("alice");
    await control.createUser("bob");
    const start = async (hostname: string, authKey: string) =>
      MeshNode.start({ controlUrl: control.url, authKey, hostname, dir: join(dir, hostname), ephemeral: true, timeoutMs: 30_000 });
    const tagKey = (tag: string) => control.createAuthKey({ tags: [tag], reusable: true, ephemeral: true, expiration: "1h" });
    const [gwNode, agentA, agentB, laptop] = await Promise.all([
      start("ai-gateway", await tagKey("tag:gateway")),
      start("agent-a", await tagKey("tag:agent-a")),
      start("agent-b", await tagKey("tag:agent-b")),
      start("laptop", await control.createAuthKey({ user: alice.id, reusable: true, ephemeral: true, expiration: "1h" })),
    ]);
    cleanups.push(() => gwNode.close(), () => agentA.close(), () => agentB.close(), () => laptop.close());
    const warnings: string[] = [];
    const gw = await startGateway({
      config: { policy: policyPath, dataDir: join(dir, "data"), providers: PROVIDERS(sim.url), ...(typeof opts.config === "function" ? opts.config(dir) : opts.config) },
      node: gwNode,
      env: { SIM_PROVIDER_KEY: PROVIDER_KEY },
      onWarning: (e) => warnings.push(e.message),
      ...opts.gateway,
    });
    cleanups.push(() => gw.close());
    const fetchOf = (node: MeshNode) => ((url: RequestInfo | URL, init?: RequestInit) => node.fetch(url as never, init as never)) as unknown as typeof fetch;
    return {
      control,
      sim,
      gw,
      dir,
      policyPath,
      nodes: { agentA, agentB, laptop },
      warnings,
      openai: (node, o) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: o?.apiKey ?? CLIENT_KEY, fetch: fetchOf(node), maxRetries: 0 }),
      anthropic: (node) => new Anthropic({ baseURL: gw.url, apiKey: CLIENT_KEY, fetch: fetchOf(node), maxRetries: 0 }),
      gemini: (node) => new GoogleGenAI({ apiKey: CLIENT_KEY, httpOptions: { baseUrl: gw.url, apiVersion: "v1beta", fetch: fetchOf(node) as never } }),
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
