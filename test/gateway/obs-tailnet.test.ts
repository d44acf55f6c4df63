// Metrics and exports over a real tailnet: who may read them is decided by
// the tailnet identity (whois) like every gateway API call. alice's laptop
// holds the admin role (the gateway capability in the tailnet policy's
// grants); the agents are users: /metrics, /meshguard/v1/metrics and the
// exports answer them 403, and the requests they made show up, by node, in
// what the admin reads.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MeshNode } from "../../src/index.js";
import { startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";

let t: GatewayTailnet;

beforeAll(async () => {
  t = await startGatewayTailnet({
    meshguard: {
      version: 3,
      rules: [
        { id: "agents", effect: "allow", src: ["tag:agent-a", "tag:agent-b"], llm: { model: ["openai/gpt-4o-mini"] } },
        { id: "alice", effect: "allow", src: ["alice@"], llm: { model: ["*"] } },
      ],
    },
    sim: { outputTokens: 9 },
  });
  const msg = [{ role: "user" as const, content: "count me" }];
  await t.openai(t.nodes.agentA).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 50, messages: msg });
  await t.openai(t.nodes.agentA).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 50, messages: msg });
  await t.openai(t.nodes.agentB).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 50, messages: msg });
  await expect(t.openai(t.nodes.agentB).chat.completions.create({ model: "gpt-4o", max_tokens: 50, messages: msg })).rejects.toMatchObject({ status: 403 });
  await t.gw.store!.flush();
}, 120_000);
afterAll(() => t?.close());

const get = (node: MeshNode, path: string) => node.fetch(`${t.gw.url}${path}`);

describe("admins only", () => {
  for (const path of ["/metrics", "/meshguard/v1/metrics", "/meshguard/v1/export/logs", "/meshguard/v1/export/logs?format=csv", "/meshguard/v1/export/usage"]) {
    it(`${path}: 403 for a user's agent, 200 for the admin`, async () => {
      for (const node of [t.nodes.agentA, t.nodes.agentB]) {
        const r = await get(node, path);
        expect(r.status).toBe(403);
        const body = (await r.json()) as { error: { message: string } };
        expect(body.error.message).toMatch(/admin role/);
      }
      const r = await get(t.nodes.laptop, path);
      expect(r.status).toBe(200);
      await r.text();
    });
  }
});

describe("what the admin reads", () => {
  it("metrics count the tailnet callers' requests; no label names a user or a node", async () => {
    const text = await (await get(t.nodes.laptop, "/metrics")).text();
    expect(text).toContain('meshguard_gateway_requests_total{provider="openai",model="gpt-4o-mini",operation="openai.chat",outcome="ok"} 3');
    expect(text).toContain('meshguard_gateway_requests_total{provider="openai",model="gpt-4o",operation="openai.chat",outcome="denied"} 1');
    expect(text).toContain('meshguard_gateway_tokens_total{provider="openai",model="gpt-4o-mini",type="output"} 27');
    expect(text).not.toMatch(/agent-a|agent-b|alice|bob/);
  });

  it("the usage export sums each node's requests; the logs export names the callers", async () => {
    const usage = (await (await get(t.nodes.laptop, "/meshguard/v1/export/usage")).text()).split("\n").filter(Boolean).map((l) => JSON.parse(l));
    const byNode = Object.fromEntries(usage.filter((u) => u.outputTokens > 0).map((u) => [u.node, u]));
    expect(byNode["agent-a"]).toMatchObject({ user: "alice@", provider: "openai", model: "gpt-4o-mini", requests: 2, outputTokens: 18 });
    expect(byNode["agent-b"]).toMatchObject({ user: "bob@", requests: 1, outputTokens: 9 });
    const csv = await (await get(t.nodes.laptop, "/meshguard/v1/export/logs?format=csv&node=agent-b")).text();
    const rows = csv.trimEnd().split("\r\n");
    expect(rows).toHaveLength(3);
    expect(rows.slice(1).every((r) => r.includes(",agent-b,tag:agent-b,tailnet,100."))).toBe(true);
    expect(rows.slice(1).map((r) => r.split(",")[13]).sort()).toEqual(["denied", "ok"]);
  });
});
