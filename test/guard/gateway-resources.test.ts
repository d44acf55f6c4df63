// resources/read at a registered AI gateway's MCP endpoint is judged as the
// gateway judges it (issue 14, must-have 4): as an `mcp` target on the server
// the gateway named for the URI in this session's resources/list answer
// (`_meta["dev.meshguard/server"]`), else the only server, else refused.
// The "gateway" here is a counting server on 127.0.0.1 that does not speak
// MCP: the answers of resources/list reach the transport as the SDK delivers
// them, through its onmessage. The real gateway's parity is
// test/gateway/connectors-parity.test.ts.
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installGuard, type DecisionEvent, type GatewaySpec } from "../../src/guard/index.js";
import { markResourceServers, RESOURCE_SERVER_META } from "../../src/guard/gateway-route.js";
import { MAX_URIS } from "../../src/guard/mcp-resources.js";
import { denied, guard, victim, type Victim } from "./helpers.js";

let gw: Victim;
let spec: GatewaySpec;

const RULES = [
  { id: "gw-self", src: ["tag:agent"], http: { host: ["127.0.0.1"], path: ["/v1/mcp"] } },
  { id: "gh-docs", src: ["tag:agent"], mcp: { server: ["github"], resource: ["file:///docs/**"] } },
  { id: "no-secret", effect: "deny", src: ["tag:agent"], mcp: { server: ["*"], resource: ["*secret*"] } },
];

const policyOf6 = async () => (await import("../../src/policy/index.js")).loadPolicy(JSON.stringify({ version: 6, rules: RULES }));

beforeAll(async () => {
  gw = await victim("127.0.0.1");
  spec = { url: gw.url, mcpServers: ["github", "notes"] };
});
afterAll(async () => gw?.close());

async function guarded(extra: Partial<Parameters<typeof installGuard>[0]> = {}) {
  const g = guard({ policy: await policyOf6(), gateways: [spec], intercept: { sdk: true }, ...extra });
  const events: DecisionEvent[] = [];
  g.on("decision", (e) => events.push(e));
  return { g, events };
}

/** nothing reached the gateway while `fn` ran. */
async function silent(fn: () => Promise<unknown>): Promise<void> {
  const before = gw.snapshot();
  await fn();
  expect(gw.snapshot()).toEqual(before);
}

type T = StreamableHTTPClientTransport & { onmessage?: (m: unknown, extra?: unknown) => void };

function transport(): { t: T; received: unknown[] } {
  const t = new StreamableHTTPClientTransport(new URL(`${gw.url}/v1/mcp`)) as T;
  t.onerror = () => {};
  const received: unknown[] = [];
  // What a Client would install: the transport delivers each incoming message here.
  t.onmessage = (m) => received.push(m);
  return { t, received };
}

const read = (id: number, uri: unknown) => ({ jsonrpc: "2.0" as const, id, method: "resources/read", params: { uri } });
const list = (id: number) => ({ jsonrpc: "2.0" as const, id, method: "resources/list", params: {} });
const res = (uri: string, server?: string, meta: Record<string, unknown> = {}) => ({ uri, name: uri, _meta: { ...meta, ...(server !== undefined ? { [RESOURCE_SERVER_META]: server } : {}) } });
const answer = (id: number, resources: unknown[]) => ({ jsonrpc: "2.0" as const, id, result: { resources } });

/** sends a resources/list (it reaches the counting server, which does not answer MCP) and delivers `resources` as its answer. */
async function listed(t: T, id: number, resources: unknown[]): Promise<void> {
  await t.send(list(id)).catch(() => {});
  t.onmessage!(answer(id, resources));
}

/** a send that the guard let through: it reached the gateway (the counting server does not speak MCP, so it then fails). */
async function passes(t: T, m: object): Promise<void> {
  const before = gw.requests.length;
  const err = await t.send(m as never).then(
    () => undefined,
    (e: unknown) => e as { code?: string },
  );
  expect(err?.code).not.toBe("MESHGUARD_POLICY_DENIED");
  expect(gw.requests.length).toBe(before + 1);
}

describe("resources/read at a registered gateway: judged on the server the gateway named", () => {
  it("a URI not listed in this session is refused before sending (two servers: the gateway would refuse it too)", async () => {
    const { events } = await guarded();
    const { t } = transport();
    await silent(async () => {
      const e = await denied(t.send(read(1, "file:///docs/a.md")));
      expect(e.reason).toContain('unknown resource "file:///docs/a.md"');
      expect(e.reason).toContain("list resources first");
    });
    expect(events.at(-1)).toMatchObject({ layer: "mcp", outcome: "deny", via: { gateway: gw.url }, target: { kind: "mcp", server: gw.url, tool: "", resource: "file:///docs/a.md" } });
    expect(events.at(-1)!.ruleId).toBeUndefined();
  });

  it("learned from the resources/list answer: allowed, denied by rule, and a server the registration lacks is not believed", async () => {
    const { events } = await guarded();
    const { t, received } = transport();
    const a = answer(7, [res("file:///docs/a.md", "github", { "com.example/tag": 1 }), res("file:///notes/x.md", "notes"), res("file:///docs/secret.md", "github"), res("file:///evil.md", "jira"), res("file:///plain.md")]);
    await t.send(list(7)).catch(() => {});
    t.onmessage!(a);
    // The client gets the answer as it came.
    expect(received.at(-1)).toBe(a);

    await passes(t, read(8, "file:///docs/a.md"));
    expect(events.filter((e) => e.layer === "mcp").at(-1)).toMatchObject({ ruleId: "gh-docs", outcome: "allow", via: { gateway: gw.url }, target: { kind: "mcp", server: "github", tool: "", resource: "file:///docs/a.md" } });
    await silent(async () => {
      // notes: no rule allows it.
      expect((await denied(t.send(read(9, "file:///notes/x.md")))).message).toContain("notes");
      expect(events.at(-1)).toMatchObject({ outcome: "deny", target: { server: "notes", resource: "file:///notes/x.md" }, via: { gateway: gw.url } });
      expect((await denied(t.send(read(10, "file:///docs/secret.md")))).ruleId).toBe("no-secret");
      // jira is not a server of this gateway; a resource without the mark names none.
      expect((await denied(t.send(read(11, "file:///evil.md")))).reason).toContain("list resources first");
      expect((await denied(t.send(read(12, "file:///plain.md")))).reason).toContain("list resources first");
      // A uri that is not a string.
      expect((await denied(t.send(read(13, 42)))).reason).toContain("not a string");
    });
  });

  it("only answers to the resources/list requests it sent teach; a batch is judged as a whole", async () => {
    await guarded();
    const { t } = transport();
    // An answer to an id never sent as resources/list, and a server's request carrying resources, teach nothing.
    t.onmessage!(answer(99, [res("file:///docs/a.md", "github")]));
    t.onmessage!({ jsonrpc: "2.0", id: 5, method: "resources/list", result: { resources: [res("file:///docs/a.md", "github")] } });
    await t.send({ jsonrpc: "2.0", id: 6, method: "tools/list", params: {} }).catch(() => {});
    t.onmessage!(answer(6, [res("file:///docs/a.md", "github")]));
    await silent(async () => {
      await denied(t.send(read(1, "file:///docs/a.md")));
    });
    await listed(t, 2, [res("file:///docs/a.md", "github")]);
    // A batch with one read the guard cannot place: nothing of it is sent.
    await silent(async () => {
      await denied(t.send([read(3, "file:///docs/a.md"), read(4, "file:///docs/b.md")] as never));
    });
    await passes(t, read(5, "file:///docs/a.md"));
  });

  it("an onmessage the app assigns later still gets every message, and answers still teach", async () => {
    await guarded();
    const { t } = transport();
    await listed(t, 1, []);
    const later: unknown[] = [];
    t.onmessage = (m) => later.push(m);
    await t.send(list(2)).catch(() => {});
    t.onmessage!(answer(2, [res("file:///docs/a.md", "github")]));
    expect(later).toHaveLength(1);
    await passes(t, read(3, "file:///docs/a.md"));
  });

  it("per session: a new MCP session starts empty, like the gateway's", async () => {
    await guarded();
    const { t } = transport();
    await listed(t, 1, [res("file:///docs/a.md", "github")]);
    await passes(t, read(2, "file:///docs/a.md"));
    // The gateway gave the transport a new session.
    (t as unknown as { _sessionId?: string })._sessionId = "another-session";
    await silent(async () => {
      await denied(t.send(read(3, "file:///docs/a.md")));
    });
    // Another transport (another session) learned nothing either.
    const other = transport().t;
    await silent(async () => {
      await denied(other.send(read(4, "file:///docs/a.md")));
    });
  });

  it("bounded: at most MAX_URIS URIs per transport, the least recently used forgotten", async () => {
    await guarded();
    const { t } = transport();
    const many = Array.from({ length: MAX_URIS + 1 }, (_, i) => res(`file:///docs/${i}.md`, "github"));
    await listed(t, 1, many);
    await silent(async () => {
      await denied(t.send(read(2, "file:///docs/0.md")));
    });
    await passes(t, read(3, "file:///docs/1.md"));
    await passes(t, read(4, `file:///docs/${MAX_URIS}.md`));
  });

  it("a gateway with one MCP server: an unlisted URI goes to it, as at the gateway", async () => {
    const { events } = await guarded({ gateways: [{ ...spec, mcpServers: ["github"] }] });
    const { t } = transport();
    await passes(t, read(1, "file:///docs/a.md"));
    expect(events.filter((e) => e.layer === "mcp").at(-1)).toMatchObject({ ruleId: "gh-docs", target: { server: "github", resource: "file:///docs/a.md" }, via: { gateway: gw.url } });
    await silent(async () => {
      expect((await denied(t.send(read(2, "file:///other.md")))).message).toContain("github");
    });
  });

  it("without a registration a resources/read is not judged (as any MCP server's)", async () => {
    const { events } = await guarded({ gateways: [] });
    const { t } = transport();
    await passes(t, read(1, "file:///anything"));
    expect(events.filter((e) => e.layer === "mcp")).toHaveLength(0);
  });
});

describe("the gateway marks listed resources with their server", () => {
  it("keeps upstream _meta, and its own key is always the gateway's", () => {
    const owners = new Map([
      ["a", "github"],
      ["b", "notes"],
    ]);
    const out = markResourceServers(
      [
        { uri: "a", name: "a", _meta: { "com.example/x": 1, [RESOURCE_SERVER_META]: "notes" } },
        { uri: "b", name: "b" },
        { uri: "c", name: "c", _meta: { [RESOURCE_SERVER_META]: "github" } },
      ],
      (u) => owners.get(u),
    );
    expect(out).toEqual([
      { uri: "a", name: "a", _meta: { "com.example/x": 1, [RESOURCE_SERVER_META]: "github" } },
      { uri: "b", name: "b", _meta: { [RESOURCE_SERVER_META]: "notes" } },
      { uri: "c", name: "c", _meta: {} },
    ]);
  });
});
