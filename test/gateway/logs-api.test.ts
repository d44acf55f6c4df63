// The logs API: users read only their own records (enforced in the route
// handlers themselves), admins read all; paging, sessions, export.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logRoutes } from "../../src/gateway/logs-api.js";
import { openStore } from "../../src/gateway/store/index.js";
import type { AdminResponse, AdminRoute, Caller, GatewayStore, LogRecord } from "../../src/gateway/types.js";
import { record } from "./fixtures-records.js";

function caller(user: string, role: Caller["role"] = "user"): Caller {
  const node = user === "" ? "tagged-bot" : `${user.split("@")[0]}-laptop`;
  return { principal: { node, tags: [], ...(user ? { user } : {}) }, node, tags: [], user, owners: user ? [user] : [], groups: [], role, addr: "100.64.0.2", via: "tailnet", caps: {} };
}
const ALICE = caller("alice@example.com");
const BOB = caller("bob@example.com");
const ADMIN = caller("carol@example.com", "admin");
const NOBODY = caller("");

let dir: string;
let store: GatewayStore;
let routes: AdminRoute[];
const T0 = Date.UTC(2026, 1, 1);
const aliceRecs: LogRecord[] = [];
const bobRecs: LogRecord[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-logs-api-"));
  store = await openStore({}, { dataDir: dir, retention: { mode: "full" } });
  routes = logRoutes(store);
  for (let i = 0; i < 620; i++) aliceRecs.push(record(ALICE.user, T0 + i * 1000, { sessionId: i < 600 ? "a-1" : "a-2" }));
  for (let i = 0; i < 5; i++) bobRecs.push(record(BOB.user, T0 + i * 1000 + 500, { sessionId: "b-1", caller: { node: BOB.node, user: BOB.user, tags: [], addr: BOB.addr, via: "tailnet" } }));
  for (const r of [...aliceRecs, ...bobRecs]) store.appendLog(r);
  await store.flush();
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Routes a GET the way a router matching patterns in order would. */
async function get(who: Caller, url: string): Promise<AdminResponse> {
  const u = new URL(url, "http://gw");
  for (const r of routes) {
    const names: string[] = [];
    const re = new RegExp(`^${r.pattern.replace(/:(\w+)/g, (_, n: string) => (names.push(n), "([^/]+)"))}$`);
    const m = re.exec(u.pathname);
    if (r.method !== "GET" || !m) continue;
    const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1]!)]));
    return r.handle({ method: "GET", path: u.pathname, query: u.searchParams, body: undefined, caller: who }, params);
  }
  throw new Error(`no route for ${url}`);
}

function body(res: AdminResponse): any {
  if (!("body" in res)) throw new Error("a streamed response");
  return res.body;
}

async function lines(res: AdminResponse): Promise<any[]> {
  if (!("stream" in res)) throw new Error("not a stream");
  let text = "";
  for await (const chunk of res.stream) text += chunk;
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

describe("who reads what", () => {
  it("a user lists only their own records, even when the query names another user", async () => {
    for (const url of ["/logs?limit=1000", `/logs?limit=1000&user=${encodeURIComponent(BOB.user)}`]) {
      const res = await get(ALICE, url);
      expect(res.status).toBe(200);
      const users = new Set(body(res).records.map((r: LogRecord) => r.caller.user));
      expect(users).toEqual(new Set([ALICE.user]));
    }
    const bobs = body(await get(BOB, "/logs"));
    expect(bobs.records.map((r: LogRecord) => r.id)).toEqual(bobRecs.map((r) => r.id).reverse());
  });

  it("an admin lists everyone's records and may filter by user", async () => {
    const all = body(await get(ADMIN, `/logs?limit=1000&since=${T0}&until=${T0 + 5000}`));
    expect(new Set(all.records.map((r: LogRecord) => r.caller.user))).toEqual(new Set([ALICE.user, BOB.user]));
    const onlyBob = body(await get(ADMIN, `/logs?user=${encodeURIComponent(BOB.user)}`));
    expect(onlyBob.records).toHaveLength(5);
  });

  it("another user's record by id is a 404 exactly like an id that does not exist", async () => {
    const theirs = await get(ALICE, `/logs/${bobRecs[0]!.id}`);
    const none = await get(ALICE, `/logs/${randomUUID()}`);
    expect(theirs.status).toBe(404);
    expect(none.status).toBe(404);
    const shape = (r: AdminResponse) => JSON.stringify(body(r)).replace(/[0-9a-f-]{36}/g, "ID");
    expect(shape(theirs)).toBe(shape(none));
  });

  it("one's own record by id, and an admin any record, come back whole", async () => {
    const own = await get(BOB, `/logs/${bobRecs[2]!.id}`);
    expect(own.status).toBe(200);
    expect(body(own).record).toEqual(bobRecs[2]);
    expect(body(await get(ADMIN, `/logs/${aliceRecs[7]!.id}`)).record).toEqual(aliceRecs[7]);
  });

  it("a non-admin with no accountable user reads nothing (403), not the records of others without one", async () => {
    for (const url of ["/logs", "/sessions", "/logs/export"]) expect((await get(NOBODY, url)).status).toBe(403);
    expect((await get(NOBODY, `/logs/${aliceRecs[0]!.id}`)).status).toBe(404);
  });

  it("sessions are the caller's own; an admin sees all", async () => {
    const mine = body(await get(BOB, "/sessions")).sessions;
    expect(mine).toEqual([{ id: "b-1", user: BOB.user, node: BOB.node, firstTime: T0 + 500, lastTime: T0 + 4500, requests: 5, inputTokens: 500, outputTokens: 100, costUsd: expect.closeTo(0.006, 9) }]);
    const aliceView = body(await get(ALICE, `/sessions?user=${encodeURIComponent(BOB.user)}`)).sessions;
    expect(aliceView.map((s: { id: string }) => s.id)).toEqual(["a-2", "a-1"]);
    const adminView = body(await get(ADMIN, "/sessions")).sessions.map((s: { id: string }) => s.id);
    expect(adminView).toEqual(expect.arrayContaining(["a-1", "a-2", "b-1"]));
  });

  it("an export holds exactly the caller's records, bodies included, as JSON lines", async () => {
    const res = await get(ALICE, "/logs/export");
    expect(res.status).toBe(200);
    expect("contentType" in res && res.contentType).toMatch(/^application\/x-ndjson/);
    const got = await lines(res);
    // 620 records: more than one page of the store.
    expect(got).toHaveLength(620);
    expect(got).toEqual([...aliceRecs].reverse());
    const bobsExport = await lines(await get(BOB, `/logs/export?user=${encodeURIComponent(ALICE.user)}`));
    expect(bobsExport.map((r) => r.caller.user)).toEqual(Array(5).fill(BOB.user));
  });
});

describe("listing", () => {
  it("pages newest first: pass `next` back as `before` until there is none", async () => {
    const seen: string[] = [];
    let url = "/logs?limit=250&session=a-1";
    for (;;) {
      const b = body(await get(ALICE, url));
      seen.push(...b.records.map((r: LogRecord) => r.id));
      if (!b.next) break;
      url = `/logs?limit=250&session=a-1&before=${encodeURIComponent(b.next)}`;
    }
    expect(seen).toEqual(aliceRecs.slice(0, 600).map((r) => r.id).reverse());
  });

  it("the list leaves out headers and bodies unless bodies=true", async () => {
    const lean = body(await get(BOB, "/logs?limit=1")).records[0];
    expect(lean).not.toHaveProperty("requestBody");
    expect(lean).not.toHaveProperty("responseBody");
    expect(lean).not.toHaveProperty("requestHeaders");
    expect(lean.usage).toEqual(bobRecs[4]!.usage);
    expect(body(await get(BOB, "/logs?limit=1&bodies=true")).records[0]).toEqual(bobRecs[4]);
  });

  it("model filters the list, the sessions and the export", async () => {
    expect(body(await get(BOB, "/logs?model=claude-sonnet-4-5")).records).toHaveLength(5);
    expect(body(await get(BOB, "/logs?model=gpt-4o")).records).toEqual([]);
    expect(body(await get(BOB, "/sessions?model=gpt-4o")).sessions).toEqual([]);
    expect(await lines(await get(BOB, "/logs/export?model=gpt-4o"))).toEqual([]);
  });

  it("since/until take epoch milliseconds or ISO 8601 times", async () => {
    const iso = new Date(T0 + 2000).toISOString();
    const a = body(await get(BOB, `/logs?since=${T0 + 2000}`)).records.length;
    const b = body(await get(BOB, `/logs?since=${encodeURIComponent(iso)}`)).records.length;
    expect(a).toBe(3);
    expect(b).toBe(3);
  });

  it.each([
    ["/logs?sesion=a-1", /unknown query parameter\(s\) sesion/],
    ["/logs?since=yesterday", /since: "yesterday" is not a time/],
    ["/logs?limit=0", /limit: must be from 1 to 1000/],
    ["/logs?limit=1001", /limit: must be from 1 to 1000/],
    ["/logs?limit=ten", /limit: must be a whole number/],
    ["/logs?before=garbage", /invalid log cursor/],
    ["/logs?node=a&node=b", /node is given twice/],
    ["/sessions?before=x", /unknown query parameter\(s\) before/],
    ["/logs/export?limit=5", /unknown query parameter\(s\) limit/],
  ])("%s is a 400 that says what is wrong", async (url, message) => {
    const res = await get(ALICE, url);
    expect(res.status).toBe(400);
    expect(body(res).error.message).toMatch(message);
  });
});
