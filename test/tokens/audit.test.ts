// The issuer's audit trail on a real tailnet: tokens issued, refused (with
// the reason), exchanged and revoked are decision events in the guard's audit
// sink (a JSON-lines file, read back with the schema), attributed to the
// caller — and no event carries a token or key material.
import { createPrivateKey } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError, type MeshNode } from "../../src/index.js";
import { jsonLinesSink, loadPolicy, readDecisionEvents, type ClosableAuditSink, type DecisionEvent } from "../../src/policy/index.js";
import { createTokenClient, startTokenIssuer, type TokenClient, type TokenIssuer } from "../../src/tokens/index.js";
import { startTokensTailnet, type TokensTailnet } from "./fixtures.js";

let tn: TokensTailnet;
let tokensNode: MeshNode;
let agentA: MeshNode;
let agentB: MeshNode;
let issuer: TokenIssuer;
let sink: ClosableAuditSink;
let file: string;
let keyDir: string;
let a: TokenClient;
let b: TokenClient;

const POLICY = {
  version: 4,
  rules: [
    { id: "a-billing", src: ["tag:agent-a"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/**"], maxTtl: "10m" } },
    { id: "b-billing", src: ["tag:agent-b"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/transactions/*"] } },
  ],
};

beforeAll(async () => {
  tn = await startTokensTailnet();
  [tokensNode, agentA, agentB] = await Promise.all([tn.start("tokens", "tag:tokens"), tn.start("agent-a", "tag:agent-a"), tn.start("agent-b", "tag:agent-b")]);
  const dir = mkdtempSync(join(tmpdir(), "mg-tok-audit-"));
  file = join(dir, "audit.jsonl");
  keyDir = join(dir, "keys");
  sink = jsonLinesSink(file);
  issuer = await startTokenIssuer({ node: tokensNode, policy: loadPolicy(JSON.stringify(POLICY)), keyDir, audit: sink });
  a = createTokenClient({ node: agentA, issuer: "http://tokens", attach: false });
  b = createTokenClient({ node: agentB, issuer: "http://tokens", attach: false });
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await issuer?.close();
  await sink?.close?.();
  await Promise.all([agentA, agentB, tokensNode].map((n) => n?.close()));
  await tn?.control.close();
});

/** events reads the audit file as written so far, validating every line with the event schema. */
async function events(): Promise<DecisionEvent[]> {
  await sink.flush?.();
  return readDecisionEvents(readFileSync(file, "utf8"), file);
}

describe("the issuer's audit trail", () => {
  const tokens: string[] = [];

  it("issued, refused, exchanged and revoked tokens are decision events attributed to the caller", async () => {
    const t = await a.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"], ttl: 60 });
    tokens.push(t.value);
    const refused = await b.token({ audience: "http://billing", actions: ["http:POST:billing/v2/reports"] }).catch((e: unknown) => e);
    expect(isMeshguardError(refused, ErrorCode.TOKEN_REQUEST_FAILED)).toBe(true);
    const narrow = await a.exchange(t, { actions: ["http:GET:billing/v2/transactions/1"] });
    tokens.push(narrow.value);
    const wider = await a.exchange(narrow, { actions: ["http:GET:billing/v2/**"] }).catch((e: unknown) => e);
    expect(isMeshguardError(wider, ErrorCode.TOKEN_REQUEST_FAILED)).toBe(true);
    const bad = await agentA.fetch("http://tokens/token", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `audience=http://billing&subject_token=${t.value}` });
    expect(bad.status).toBe(400);
    await narrow.release();
    const stranger = await agentB.fetch("http://tokens/revoke", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams({ jti: t.jti }).toString() });
    expect(stranger.status).toBe(403);
    issuer.revoke({ sub: agentB.id });

    const all = (await events()).filter((e) => e.layer === "tokens");
    const principalA = { node: agentA.name.replace(/\.$/, ""), tags: ["tag:agent-a"] };

    // Issued: one event per (method, location) pair, the policy's rule, the token's jti and expiry.
    const issued = all.filter((e) => e.token?.op === "issue" && e.outcome === "allow");
    expect(issued.map((e) => e.target)).toEqual([
      { kind: "token", audience: "http://billing", method: "GET", location: "http://billing/v2/transactions/*" },
      { kind: "token", audience: "http://billing", method: "GET", location: "https://billing/v2/transactions/*" },
    ]);
    for (const e of issued) {
      expect(e).toMatchObject({ effect: "allow", ruleId: "a-billing", principal: principalA, token: { op: "issue", jti: t.jti, exp: t.claims.exp } });
      expect(e.policyHash).toMatch(/^[0-9a-f]{64}$/);
    }

    // Refused by the policy, with its reason.
    const refusedEv = all.filter((e) => e.token?.op === "issue" && e.outcome === "deny" && e.principal.tags.includes("tag:agent-b"));
    expect(refusedEv.length).toBeGreaterThan(0);
    for (const e of refusedEv) {
      expect(e.effect).toBe("deny");
      expect(e.reason).toMatch(/no rule allows tag:agent-b/);
      expect(e.token!.jti).toBeUndefined();
    }

    // Exchanged: the narrow token's jti and the subject's.
    const exchanged = all.filter((e) => e.token?.op === "exchange");
    expect(exchanged.filter((e) => e.outcome === "allow").map((e) => e.token)).toEqual([
      { op: "exchange", jti: narrow.jti, exp: narrow.claims.exp, subject: t.jti },
      { op: "exchange", jti: narrow.jti, exp: narrow.claims.exp, subject: t.jti },
    ]);
    const widened = exchanged.filter((e) => e.outcome === "deny");
    expect(widened).toHaveLength(1);
    expect(widened[0]!.reason).toMatch(/^invalid_scope: an exchange can only narrow/);
    expect(widened[0]!.token).toEqual({ op: "exchange", subject: narrow.jti });

    // A malformed request is refused with the OAuth error.
    expect(all.some((e) => e.token?.op === "issue" && e.outcome === "deny" && /^invalid_request: grant_type is missing/.test(e.reason))).toBe(true);

    // Revoked: by its owner (release), refused for a stranger, and every token of a node through the API.
    const revokes = all.filter((e) => e.token?.op === "revoke");
    expect(revokes.map((e) => [e.outcome, e.reason.split(":")[0], e.principal.node])).toEqual([
      ["allow", "revoked by its owner", principalA.node],
      ["deny", "access_denied", agentB.name.replace(/\.$/, "")],
      ["allow", "revoked through the issuer's API", tokensNode.name.replace(/\.$/, "")],
    ]);
    expect(revokes[0]!.token).toEqual({ op: "revoke", jti: narrow.jti, revoked: 1 });
    expect(revokes[0]!.target).toEqual({ kind: "token", audience: "http://billing", method: "*", location: "*" });
    expect(revokes[1]!.token).toEqual({ op: "revoke", jti: t.jti });
    expect(revokes[2]!.token).toMatchObject({ op: "revoke", sub: agentB.id, revoked: 1 });
  });

  it("no event carries a token or key material", async () => {
    const text = readFileSync(file, "utf8");
    expect(tokens.length).toBe(2);
    for (const t of tokens) {
      expect(text).not.toContain(t);
      expect(text).not.toContain(t.split(".")[2]!); // nor its signature
    }
    const keys = readdirSync(keyDir).filter((f) => f.endsWith(".json"));
    expect(keys.length).toBeGreaterThan(0);
    for (const f of keys) {
      const { privateKey } = JSON.parse(readFileSync(join(keyDir, f), "utf8")) as { privateKey: string };
      const d = createPrivateKey(privateKey).export({ format: "jwk" }).d!;
      expect(d).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(text).not.toContain(d);
      expect(text).not.toContain(privateKey.split("\n")[1]!); // nor the PEM's base64
    }
  });
});
