/**
 * The token issuer with real nodes on a real headscale: an agent asks for
 * tokens over the tailnet (whois is its only credential), and what it gets
 * is checked with `jose` using nothing but the discovery document — keys
 * fetched from `jwks_uri` over the tailnet. The issuer's clock is injected,
 * so lifetimes, expiry and key retirement are exact.
 */

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { compactVerify, createRemoteJWKSet, customFetch, decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { MeshNode } from "../../src/index.js";
import { loadPolicy } from "../../src/policy/index.js";
import { startTokenIssuer, type TokenIssuer, type DiscoveryDocument, type TokenResponse, type OAuthErrorResponse, type RevocationFeedPayload } from "../../src/tokens/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";

const POLICY = {
  version: 4,
  rules: [
    {
      id: "billing-read",
      src: ["tag:agent-a"],
      token: {
        audience: ["http://billing"],
        actions: [{ methods: ["GET"], locations: ["https://billing/v2/transactions/*"] }, "http:POST:billing/v2/reports"],
        maxTtl: "10m",
      },
    },
    { id: "ledger", src: ["tag:agent-a"], token: { audience: ["http://ledger"], actions: ["http:GET:ledger/**"] } },
    { id: "no-admin", src: ["*"], effect: "deny", token: { audience: ["*"], actions: ["http:*:ledger/admin/**"] } },
  ],
};

const T0 = Date.UTC(2026, 2, 9, 14, 0, 0);
const clock = { now: T0 };

let tn: Tailnet;
let issuerNode: MeshNode;
let agent: MeshNode;
let alice: MeshNode;
/** Same tag as agent-a, another node: not the owner of agent-a's tokens, not an admin. */
let sibling: MeshNode;
let issuer: TokenIssuer;
let stateDir: string;

beforeAll(async () => {
  tn = await startTailnet(false);
  issuerNode = await tn.start("tokens", { tags: ["tag:service"] });
  agent = await tn.start("agent-a", { tags: ["tag:agent-a"] });
  alice = await tn.start("alice-laptop", { authKey: await tn.userKey() });
  sibling = await tn.start("agent-b", { tags: ["tag:agent-a"] });
  stateDir = join(tn.stateDir, "issuer-state");
  issuer = await startTokenIssuer({ node: issuerNode, policy: loadPolicy(JSON.stringify(POLICY)), stateDir, admins: ["alice@"], clock: () => clock.now });
});

afterAll(async () => {
  await issuer?.close();
  for (const n of [sibling, alice, agent, issuerNode]) await n?.close();
  await tn?.control.close();
});

/** POST a form to the issuer from `node`. */
async function post(node: MeshNode, path: string, form: Record<string, string>): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await node.fetch(`http://tokens${path}`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(form).toString() });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

const ask = (node: MeshNode, form: Record<string, string>) => post(node, "/token", { grant_type: "client_credentials", ...form });

async function token(node: MeshNode, form: Record<string, string>): Promise<TokenResponse> {
  const r = await ask(node, form);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as TokenResponse;
}

const READ_TX = { audience: "http://billing", scope: "http:GET:https://billing/v2/transactions/*" };

/** The verifier a standard library builds from the discovery document alone, fetching over the agent's tailnet node. */
async function verifierFromDiscovery(node: MeshNode) {
  const doc = (await (await node.fetch("http://tokens/.well-known/openid-configuration")).json()) as DiscoveryDocument;
  const jwks = createRemoteJWKSet(new URL(doc.jwks_uri), { [customFetch]: ((url: string, init: RequestInit) => node.fetch(url, init as never)) as unknown as typeof fetch, cooldownDuration: 0 });
  return {
    doc,
    verify: (jwt: string, audience: string) => jwtVerify(jwt, jwks, { issuer: doc.issuer, audience, typ: "at+jwt", algorithms: ["EdDSA"], currentDate: new Date(clock.now) }),
    jwks,
  };
}

describe("discovery and issuing", () => {
  test("the discovery document names the endpoints under the issuer's tailnet URL", async () => {
    const res = await agent.fetch("http://tokens/.well-known/openid-configuration");
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      issuer: "http://tokens",
      jwks_uri: "http://tokens/.well-known/jwks.json",
      token_endpoint: "http://tokens/token",
      revocation_endpoint: "http://tokens/revoke",
      meshguard_revocations_uri: "http://tokens/revocations",
      grant_types_supported: ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
      id_token_signing_alg_values_supported: ["EdDSA"],
      token_endpoint_auth_methods_supported: ["none"],
    });
  });

  test("happy path: the token's claims are exactly the contract's, and jose verifies it from the discovery document alone", async () => {
    const r = await ask(agent, { ...READ_TX, task: "task-42" });
    expect(r.status).toBe(200);
    expect(r.headers.get("cache-control")).toBe("no-store");
    const body = r.body as TokenResponse;
    expect(body).toMatchObject({ token_type: "Bearer", expires_in: 600, authorization_details: [{ type: "meshguard.dev/http", actions: ["GET"], locations: ["https://billing/v2/transactions/*"] }] });
    const { verify } = await verifierFromDiscovery(agent);
    const { payload, protectedHeader } = await verify(body.access_token, "http://billing");
    expect(protectedHeader).toEqual({ alg: "EdDSA", typ: "at+jwt", kid: issuer.jwks().keys[0]!.kid });
    const iat = Math.floor(T0 / 1000);
    expect(payload).toEqual({
      iss: "http://tokens",
      sub: agent.id,
      aud: "http://billing",
      iat,
      nbf: iat,
      exp: iat + 600,
      jti: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/),
      cnf: { "meshguard.dev/node": agent.id },
      node: "agent-a",
      tags: ["tag:agent-a"],
      owners: ["alice@"],
      authorization_details: [{ type: "meshguard.dev/http", actions: ["GET"], locations: ["https://billing/v2/transactions/*"] }],
      task: "task-42",
    } satisfies JWTPayload);
    // A token for another audience does not verify for this one.
    await expect(verify(body.access_token, "http://ledger")).rejects.toThrow(/aud/);
  });

  test("issue() answers as the endpoint does, without HTTP (for benchmarks): a whois made by hand", () => {
    const who = { node: { id: "nHandMade", name: "bench-agent.example.", hostname: "bench-agent", tags: ["tag:agent-a"], ips: [] }, user: { login: "tagged-devices", displayName: "" }, tagged: true, owners: ["alice@"], caps: {} };
    const a = issuer.issue(who, { grant_type: "client_credentials", ...READ_TX });
    expect(a.status).toBe(200);
    expect(decodeJwt((a.body as TokenResponse).access_token)).toMatchObject({ sub: "nHandMade", node: "bench-agent", cnf: { "meshguard.dev/node": "nHandMade" } });
    expect(issuer.issue({ ...who, node: { ...who.node, tags: ["tag:other"] } }, { grant_type: "client_credentials", ...READ_TX }).status).toBe(403);
  });

  test("two tokens never share a jti", async () => {
    const a = decodeJwt((await token(agent, READ_TX)).access_token);
    const b = decodeJwt((await token(agent, READ_TX)).access_token);
    expect(a.jti).not.toBe(b.jti);
  });

  test("authorization_details and scope requests mean the same; a scheme-less scope grants both schemes", async () => {
    const viaDetails = await token(agent, { audience: "http://billing", authorization_details: JSON.stringify([{ type: "meshguard.dev/http", actions: ["POST"], locations: ["http://billing/v2/reports", "https://billing/v2/reports"] }]) });
    const viaScope = await token(agent, { audience: "http://billing", scope: "http:POST:billing/v2/reports" });
    expect(viaScope.authorization_details).toEqual(viaDetails.authorization_details);
  });

  test("lifetime: the requested ttl, capped by the rule's maxTtl (10m) or else the issuer's cap (1h); default 15m", async () => {
    const ttlOf = async (form: Record<string, string>) => {
      const t = await token(agent, form);
      const c = decodeJwt(t.access_token);
      expect(t.expires_in).toBe(c.exp! - c.iat!);
      return t.expires_in;
    };
    expect(await ttlOf({ ...READ_TX, ttl: "60" })).toBe(60);
    expect(await ttlOf({ ...READ_TX, ttl: "99999" })).toBe(600);
    expect(await ttlOf({ audience: "http://ledger", scope: "http:GET:ledger/x" })).toBe(900);
    expect(await ttlOf({ audience: "http://ledger", scope: "http:GET:ledger/x", ttl: "86400" })).toBe(3600);
  });
});

describe("refusals say why", () => {
  test("an action not contained in the rule: 403 access_denied naming the action and the rule situation", async () => {
    const r = await ask(agent, { audience: "http://billing", scope: "http:GET:https://billing/v2/**" });
    expect(r.status).toBe(403);
    expect(r.body).toEqual({ error: "access_denied", error_description: expect.stringMatching(/GET https:\/\/billing\/v2\/\*\*: no rule allows tag:agent-a/) });
  });

  test("all or nothing: one refused action refuses the request, and every refused action is named", async () => {
    const r = await ask(agent, { audience: "http://billing", scope: "http:GET:https://billing/v2/transactions/* http:DELETE:https://billing/v2/transactions/x http:GET:https://billing/v3/x" });
    expect(r.status).toBe(403);
    const d = (r.body as OAuthErrorResponse).error_description;
    expect(d).toMatch(/DELETE https:\/\/billing\/v2\/transactions\/x/);
    expect(d).toMatch(/GET https:\/\/billing\/v3\/x/);
    expect(d).not.toMatch(/GET https:\/\/billing\/v2\/transactions\/\*:/);
  });

  test("a deny rule wins and is named", async () => {
    const r = await ask(agent, { audience: "http://ledger", scope: "http:GET:ledger/**" });
    expect(r.status).toBe(403);
    expect((r.body as OAuthErrorResponse).error_description).toMatch(/denied by rule "no-admin"/);
  });

  test("a caller no rule names (a user's laptop) and a wrong audience are refused", async () => {
    const a = await ask(alice, READ_TX);
    expect(a.status).toBe(403);
    expect((a.body as OAuthErrorResponse).error_description).toMatch(/no rule allows alice \(node alice-laptop/);
    const b = await ask(agent, { ...READ_TX, audience: "http://billing-v2" });
    expect(b.status).toBe(403);
    expect((b.body as OAuthErrorResponse).error_description).toMatch(/for audience http:\/\/billing-v2/);
  });

  test.each([
    [{ audience: "http://billing", scope: "http:GET:billing/x" }, "no grant_type", 400, "invalid_request", /grant_type is missing/, false],
    [{ grant_type: "password", audience: "x", scope: "http:GET:billing/x" }, "unsupported grant", 400, "unsupported_grant_type", /"password" is not supported/, false],
    [{ grant_type: "client_credentials", scope: "http:GET:billing/x" }, "no audience", 400, "invalid_target", /audience is missing/, false],
    [{ grant_type: "client_credentials", audience: "http://billing/x" }, "audience with a path", 400, "invalid_target", /an http\(s\) origin/, false],
    [{ grant_type: "client_credentials", audience: "http://billing" }, "no actions", 400, "invalid_request", /name the actions/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", authorization_details: "[{" }, "details not JSON", 400, "invalid_authorization_details", /not JSON/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", authorization_details: '[{"type":"x","actions":["GET"],"locations":["https://billing/"]}]' }, "unknown type", 400, "invalid_authorization_details", /type must be "meshguard.dev\/http"/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", authorization_details: '[{"type":"meshguard.dev/http","actions":["GET"],"locations":["https://billing/"],"extra":1}]' }, "unknown field", 400, "invalid_authorization_details", /unknown field extra/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", scope: "GET:billing/x" }, "bad scope", 400, "invalid_scope", /is not a scope/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", scope: "http:GET:billing/x", ttl: "-5" }, "bad ttl", 400, "invalid_request", /ttl must be a positive whole number/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", scope: "http:GET:billing/x", task: "two words" }, "bad task", 400, "invalid_request", /task must be/, false],
    [{ grant_type: "client_credentials", audience: "http://billing", scope: "http:GET:billing/x" }, "wrong content type", 400, "invalid_request", /x-www-form-urlencoded/, true],
  ])("malformed: %j (%s) → %i %s", async (form, _what, status, error, description, asJson) => {
    const res = asJson
      ? await agent.fetch("http://tokens/token", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(form) })
      : await agent.fetch("http://tokens/token", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(form as Record<string, string>).toString() });
    expect(res.status).toBe(status);
    expect(await res.json()).toEqual({ error, error_description: expect.stringMatching(description) });
  });

  test("a parameter given twice, a GET on /token and an unknown path are refused", async () => {
    const twice = await agent.fetch("http://tokens/token", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "grant_type=client_credentials&audience=a&audience=b" });
    expect(twice.status).toBe(400);
    expect(await twice.json()).toMatchObject({ error: "invalid_request", error_description: expect.stringMatching(/"audience" is given more than once/) });
    const get = await agent.fetch("http://tokens/token");
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    expect((await agent.fetch("http://tokens/nope")).status).toBe(404);
  });
});

describe("token exchange (RFC 8693): narrowing only", () => {
  const exchange = (node: MeshNode, subject: string, form: Record<string, string>) =>
    post(node, "/token", { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: subject, subject_token_type: "urn:ietf:params:oauth:token-type:jwt", ...form });

  test("a narrower token: subset of the actions, same audience, shorter life, act names the exchanging node; jose verifies it", async () => {
    const parent = await token(agent, { audience: "http://billing", scope: "http:GET:https://billing/v2/transactions/* http:POST:billing/v2/reports", task: "t-1" });
    const r = await exchange(agent, parent.access_token, { scope: "http:GET:https://billing/v2/transactions/tx-7", ttl: "30" });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const child = r.body as TokenResponse;
    expect(child).toMatchObject({ issued_token_type: "urn:ietf:params:oauth:token-type:access_token", expires_in: 30 });
    const { verify } = await verifierFromDiscovery(agent);
    const { payload } = await verify(child.access_token, "http://billing");
    expect(payload).toMatchObject({
      sub: agent.id,
      aud: "http://billing",
      task: "t-1",
      act: { sub: agent.id },
      cnf: { "meshguard.dev/node": agent.id },
      authorization_details: [{ type: "meshguard.dev/http", actions: ["GET"], locations: ["https://billing/v2/transactions/tx-7"] }],
    });
  });

  test("never longer than the subject token, whatever ttl is asked", async () => {
    const parent = await token(agent, { ...READ_TX, ttl: "120" });
    clock.now += 20_000;
    try {
      const r = await exchange(agent, parent.access_token, { ttl: "3000" });
      expect(r.status).toBe(200);
      expect(decodeJwt((r.body as TokenResponse).access_token).exp).toBe(decodeJwt(parent.access_token).exp);
    } finally {
      clock.now -= 20_000;
    }
  });

  test("trying to widen is refused with invalid_scope naming what is wider: a wider path, another method, all methods", async () => {
    const parent = await token(agent, READ_TX);
    for (const scope of ["http:GET:https://billing/v2/**", "http:DELETE:https://billing/v2/transactions/x", "http:*:https://billing/v2/transactions/x"]) {
      const r = await exchange(agent, parent.access_token, { scope });
      expect(r.status, scope).toBe(400);
      expect(r.body).toEqual({ error: "invalid_scope", error_description: expect.stringMatching(/an exchange can only narrow the subject token: .* is not within the subject token's actions/) });
    }
  });

  test("another audience is refused with invalid_target", async () => {
    const parent = await token(agent, READ_TX);
    const r = await exchange(agent, parent.access_token, { audience: "http://ledger", scope: "http:GET:ledger/x" });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: "invalid_target" });
  });

  test("the subject token is useless to another node: exchanging it there is refused (invalid_grant)", async () => {
    const parent = await token(agent, READ_TX);
    const r = await exchange(sibling, parent.access_token, {});
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ error: "invalid_grant", error_description: expect.stringMatching(/bound to another node \(agent-a\)/) });
  });

  test("an expired, tampered or foreign subject token is refused (invalid_grant)", async () => {
    const parent = await token(agent, { ...READ_TX, ttl: "5" });
    const [h, p, s] = parent.access_token.split(".") as [string, string, string];
    const widened = Buffer.from(JSON.stringify({ ...decodeJwt(parent.access_token), authorization_details: [{ type: "meshguard.dev/http", actions: ["*"], locations: ["https://billing/**"] }] })).toString("base64url");
    expect((await exchange(agent, `${h}.${widened}.${s}`, {})).body).toMatchObject({ error: "invalid_grant", error_description: expect.stringMatching(/signature does not verify/) });
    const none = `${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString("base64url")}.${p}.`;
    expect((await exchange(agent, none, {})).body).toMatchObject({ error: "invalid_grant", error_description: expect.stringMatching(/algorithm is "none"/) });
    clock.now += 6_000;
    try {
      expect((await exchange(agent, parent.access_token, {})).body).toMatchObject({ error: "invalid_grant", error_description: expect.stringMatching(/expired/) });
    } finally {
      clock.now -= 6_000;
    }
  });
});

describe("revocation", () => {
  const feed = async (since: number) => {
    const res = await agent.fetch(`http://tokens/revocations?since=${since}`);
    expect(res.headers.get("content-type")).toBe("application/jwt");
    return res.text();
  };

  test("the owner revokes its token (RFC 7009); another node may not; an admin may; the feed is signed (jose, keys from the JWKS) and ordered", async () => {
    const { jwks } = await verifierFromDiscovery(agent);
    const start = (decodeJwt(await feed(0)) as unknown as RevocationFeedPayload).seq;
    const mine = await token(agent, READ_TX);
    const theirs = await post(sibling, "/revoke", { token: mine.access_token });
    expect(theirs.status).toBe(403);
    expect(theirs.body).toMatchObject({ error: "access_denied", error_description: expect.stringMatching(/belongs to node agent-a/) });

    const own = await post(agent, "/revoke", { token: mine.access_token });
    expect(own.status).toBe(200);
    const jti = decodeJwt(mine.access_token).jti!;
    expect(own.body).toEqual({ revoked: [{ seq: start + 1, jti }] });

    const other = await token(agent, READ_TX);
    const byAdmin = await post(alice, "/revoke", { jti: decodeJwt(other.access_token).jti! });
    expect(byAdmin.body).toEqual({ revoked: [{ seq: start + 2, jti: decodeJwt(other.access_token).jti }] });
    const bySub = await post(alice, "/revoke", { sub: agent.id });
    expect(bySub.body).toEqual({ revoked: [{ seq: start + 3, sub: agent.id, before: Math.floor(clock.now / 1000) + 1 }] });

    const jws = await feed(start);
    const { payload, protectedHeader } = await compactVerify(jws, jwks);
    expect(protectedHeader).toMatchObject({ alg: "EdDSA", typ: "meshguard-revocations+jwt" });
    const body = JSON.parse(new TextDecoder().decode(payload)) as RevocationFeedPayload;
    expect(body).toMatchObject({ iss: "http://tokens", iat: Math.floor(clock.now / 1000), seq: start + 3 });
    expect(body.entries.map((e) => e.seq)).toEqual([start + 1, start + 2, start + 3]);
    expect((decodeJwt(await feed(start + 2)) as unknown as RevocationFeedPayload).entries).toEqual([{ seq: start + 3, sub: agent.id, before: Math.floor(clock.now / 1000) + 1 }]);
  });

  test("a revoked token cannot be exchanged; revoking a token revokes the tokens exchanged from it", async () => {
    clock.now += 2_000; // past the earlier revocation of everything agent-a was issued before
    try {
      const parent = await token(agent, READ_TX);
      const child = await post(agent, "/token", { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: parent.access_token, subject_token_type: "urn:ietf:params:oauth:token-type:jwt" });
      const childJti = decodeJwt((child.body as TokenResponse).access_token).jti;
      const r = await post(agent, "/revoke", { token: parent.access_token });
      expect((r.body as { revoked: { jti: string }[] }).revoked.map((e) => e.jti).sort()).toEqual([decodeJwt(parent.access_token).jti, childJti].sort());
      const again = await post(agent, "/token", { grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: parent.access_token, subject_token_type: "urn:ietf:params:oauth:token-type:jwt" });
      expect(again.body).toMatchObject({ error: "invalid_grant", error_description: expect.stringMatching(/revoked/) });
    } finally {
      clock.now -= 2_000;
    }
  });

  test("only an admin revokes another node's tokens by sub; a node may revoke its own", async () => {
    expect((await post(agent, "/revoke", { sub: sibling.id })).status).toBe(403);
    expect((await post(sibling, "/revoke", { jti: "AAAAAAAAAAAAAAAAAAAAAA" })).body).toMatchObject({ error: "access_denied", error_description: expect.stringMatching(/does not remember that jti's owner/) });
    expect((await post(agent, "/revoke", { sub: agent.id })).status).toBe(200);
    expect((await post(agent, "/revoke", { jti: "x", sub: agent.id })).body).toMatchObject({ error: "invalid_request" });
  });

  test("revocations survive an issuer restart on the same state directory, with the same key", async () => {
    const before = await feed(0);
    const kid = decodeProtectedHeader(before).kid;
    await issuer.close();
    issuer = await startTokenIssuer({ node: issuerNode, policy: loadPolicy(JSON.stringify(POLICY)), stateDir, admins: ["alice@"], clock: () => clock.now });
    const after = await feed(0);
    expect(decodeProtectedHeader(after).kid).toBe(kid);
    expect((decodeJwt(after) as unknown as RevocationFeedPayload).entries).toEqual((decodeJwt(before) as unknown as RevocationFeedPayload).entries);
  });
});

describe("keys", () => {
  test("the key files in the state directory have mode 0600", () => {
    const dir = join(stateDir, "keys");
    const files = readdirSync(dir);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
    expect(statSync(join(stateDir, "revocations.jsonl")).mode & 0o777).toBe(0o600);
  });

  test("rotation with overlap: a token signed by the old key still verifies (JWKS from discovery) until it expires; then the old key leaves the JWKS", async () => {
    clock.now += 10_000; // past every revocation of agent-a's earlier tokens
    const old = await token(agent, { ...READ_TX, ttl: "300" });
    const oldKid = decodeProtectedHeader(old.access_token).kid!;
    const newKid = issuer.rotateKeys();
    expect(newKid).not.toBe(oldKid);
    const fresh = await token(agent, READ_TX);
    expect(decodeProtectedHeader(fresh.access_token).kid).toBe(newKid);

    const v = await verifierFromDiscovery(agent);
    await expect(v.verify(old.access_token, "http://billing")).resolves.toBeTruthy();
    await expect(v.verify(fresh.access_token, "http://billing")).resolves.toBeTruthy();

    clock.now += 299_000; // the old token's last second
    await expect((await verifierFromDiscovery(agent)).verify(old.access_token, "http://billing")).resolves.toBeTruthy();

    // Retired + the issuer's cap (1h) + overlap (5m): every token the old key signed has expired.
    clock.now += 3600_000 + 300_000;
    const jwks = (await (await agent.fetch("http://tokens/.well-known/jwks.json")).json()) as { keys: { kid: string }[] };
    expect(jwks.keys.map((k) => k.kid)).toEqual([newKid]);
    expect(readdirSync(join(stateDir, "keys"))).toEqual([`${newKid}.json`]);
  });
});
