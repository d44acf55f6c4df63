// The guard on a real tailnet: a local headscale, a service node running the
// policy server, and an agent node whose MeshNode.dial and MeshNode.fetch are
// guarded by a policy it receives, signed, over the tailnet.
import http from "node:http";
import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MeshNode } from "../../src/index.js";
import { PolicyDeniedError, installGuard, type GuardHandle } from "../../src/guard/index.js";
import { generateBundleKeys, pollPolicyServer, servePolicy, type PolicyServerClient, type ReloadEvent } from "../../src/distribution/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";

let tn: Tailnet;
let service: MeshNode;
let agent: MeshNode;
let g: GuardHandle | undefined;
let client: PolicyServerClient | undefined;
let served: Awaited<ReturnType<typeof servePolicy>> | undefined;
const keys = generateBundleKeys();

const policy = (ports: number[]) =>
  JSON.stringify({
    version: 1,
    rules: [
      { id: "dial-service", src: ["tag:agent-a"], tcp: { host: ["service"], port: ports, tailnet: true } },
      { id: "service-api", src: ["tag:agent-a"], http: { host: ["service"], path: ["/api/**"] } },
      // A peer by tag (from the netmap), on its full MagicDNS name or IP too.
      { id: "by-tag", src: ["tag:agent-a"], tcp: { host: ["tag:service"], port: [7003], tailnet: true } },
    ],
  });

beforeAll(async () => {
  tn = await startTailnet(false);
  service = await tn.start("service", { tags: ["tag:service"] });
  agent = await tn.start("agent-a", { tags: ["tag:agent-a"] });
});

afterAll(async () => {
  await client?.close();
  await g?.close();
  await served?.close();
  await agent?.close();
  await service?.close();
  await tn?.control.close();
});

/** accepts counts connections accepted on a tailnet port of the service. */
async function accepts(port: number): Promise<{ count: number; close(): Promise<void> }> {
  const c = { count: 0, close: async () => {} };
  const server = await service.listen(port);
  server.on("connection", (s: net.Socket) => {
    c.count++;
    s.end("hello");
  });
  c.close = () => new Promise<void>((r) => server.close(() => r()));
  return c;
}

describe("guard on a tailnet", () => {
  it("a signed policy arrives over the tailnet; MeshNode.dial and MeshNode.fetch are guarded by it", async () => {
    served = await servePolicy(service, 8080, { privateKey: keys.privateKey, policy: policy([7001]) });
    g = installGuard({ identity: agent, intercept: { sdk: false } });
    await g.ready;
    expect(g.principal).toMatchObject({ node: "agent-a", tags: ["tag:agent-a"] });
    client = pollPolicyServer(g, { url: "http://service:8080", node: agent, publicKeys: [keys.publicKey], waitSeconds: 20 });
    await client.ready;
    expect(client.current).toBeDefined();

    const allowed = await accepts(7001);
    const forbidden = await accepts(7002);
    const s = await agent.dial("service", 7001);
    s.destroy();
    const err = await agent.dial("service", 7002).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "tcp", host: "service", port: 7002, tailnet: true });
    const byTag = await accepts(7003);
    (await agent.dial(service.name, 7003)).destroy();
    (await agent.dial(service.ips[0]!, 7003)).destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(allowed.count).toBe(1);
    expect(forbidden.count).toBe(0);
    expect(byTag.count).toBe(2);
    await byTag.close();

    // HTTP over the tailnet: judged as an HTTP target (the dial is attributed to the request).
    let hits = 0;
    const web = await service.listen(80, http.createServer((req, res) => { hits++; res.end(req.url); }));
    expect(await (await agent.fetch("http://service/api/v1")).text()).toBe("/api/v1");
    const denied = await agent.fetch("http://service/admin").then(() => undefined, (e: unknown) => e);
    expect(String((denied as Error)?.cause ?? denied)).toMatch(/policy denied/);
    expect(hits).toBe(1);

    // The server signs a new policy; the agent applies it within seconds.
    const t0 = performance.now();
    const applied = new Promise<ReloadEvent>((r) => g!.once("reload", r));
    served.policy.update(policy([7001, 7002]));
    const ev = await applied;
    expect(ev.version).toBe(served.policy.bundle!.version);
    expect(performance.now() - t0).toBeLessThan(5000);
    (await agent.dial("service", 7002)).destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(forbidden.count).toBe(1);
    await allowed.close();
    await forbidden.close();
    await new Promise<void>((r) => web.close(() => r()));
  });
});
