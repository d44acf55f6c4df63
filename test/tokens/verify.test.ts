// The verifier on a real tailnet: a service ("billing") checks the bearer
// tokens of agents calling it over the tailnet, with whois naming the
// caller. Tokens come from a stand-in issuer (./fixtures.ts) so that each
// test can make exactly the bad token it is about; the verifier reads the
// stand-in's JWKS and revocation feed over the tailnet like a real one's.
import crypto from "node:crypto";
import http from "node:http";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, type MeshNode } from "../../src/index.js";
import { createVerifier, sendTokenError, TokenVerifyError, type TokenVerifier, type VerifierOptions } from "../../src/tokens/index.js";
import { eventually, FixtureIssuer, startTokensTailnet, TestClock, type TokensTailnet } from "./fixtures.js";

let tn: TokensTailnet;
let tokensNode: MeshNode;
let billing: MeshNode;
let agentA: MeshNode;
let agentB: MeshNode;
const issuer = new FixtureIssuer();
let current: TokenVerifier | undefined;
const made: TokenVerifier[] = [];

beforeAll(async () => {
  tn = await startTokensTailnet();
  [tokensNode, billing, agentA, agentB] = await Promise.all([tn.start("tokens", "tag:tokens"), tn.start("billing", "tag:billing"), tn.start("agent-a", "tag:agent-a"), tn.start("agent-b", "tag:agent-b")]);
  await issuer.serve(tokensNode);
  const server = http.createServer((req, res) => {
    if (!current) return res.end("no verifier");
    current.verifyRequest(req).then(
      (t) => res.end(JSON.stringify({ sub: t.sub, jti: t.jti, task: t.task ?? null, caller: t.caller?.node.name })),
      (err: unknown) => (err instanceof TokenVerifyError ? sendTokenError(res, err) : ((res.statusCode = 500), res.end(String(err)))),
    );
  });
  await billing.listen(80, server);
});

afterEach(async () => {
  current = undefined;
  await Promise.all(made.splice(0).map((v) => v.close()));
});

afterAll(async () => {
  issuer.close();
  await Promise.all([agentA, agentB, billing, tokensNode].map((n) => n?.close()));
  await tn?.control.close();
});

/** use makes the service check tokens with a verifier built from these options. */
async function use(opts: Partial<VerifierOptions> = {}): Promise<TokenVerifier> {
  const v = createVerifier({ issuer: "http://tokens", audience: "http://billing", node: billing, ...opts });
  made.push(v);
  await v.ready;
  current = v;
  return v;
}

interface Answer {
  status: number;
  www: string | null;
  body: { error?: string; error_description?: string; code?: string; sub?: string; caller?: string };
}

async function call(from: MeshNode, token: string | undefined, path = "/v2/transactions/42", method = "GET"): Promise<Answer> {
  const res = await from.fetch(`http://billing${path}`, { method, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  const text = await res.text();
  return { status: res.status, www: res.headers.get("www-authenticate"), body: JSON.parse(text) as Answer["body"] };
}

const refused = (a: Answer, code: string, status = 401) => {
  expect({ status: a.status, code: a.body.code }, a.body.error_description).toEqual({ status, code });
};

describe("verifier: a token is accepted only for its node, audience, actions and lifetime", () => {
  it("happy path: the agent's own token, for a covered GET, is accepted and the service sees who called", async () => {
    await use();
    const a = await call(agentA, issuer.sign(issuer.claims(agentA.id)));
    expect(a.status).toBe(200);
    expect(a.body.sub).toBe(agentA.id);
    expect(a.body.caller).toBe(agentA.name.replace(/\.$/, ""));
  });

  it("no token: 401 with a bare Bearer challenge naming the realm", async () => {
    await use();
    const a = await call(agentA, undefined);
    refused(a, ErrorCode.TOKEN_MISSING);
    expect(a.www).toBe('Bearer realm="http://billing"');
  });

  it("expired: refused once exp + skew has passed, with error=invalid_token", async () => {
    const clock = new TestClock();
    await use({ now: clock.now });
    const t = issuer.sign(issuer.claims(agentA.id, {}, clock.s));
    expect((await call(agentA, t)).status).toBe(200);
    clock.ms += (900 + 30) * 1000;
    const a = await call(agentA, t);
    refused(a, ErrorCode.TOKEN_EXPIRED);
    expect(a.www).toMatch(/^Bearer realm="http:\/\/billing", error="invalid_token", error_description="the token expired at /);
  });

  it("not yet valid: nbf in the future beyond the skew is refused", async () => {
    const clock = new TestClock();
    await use({ now: clock.now });
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id, { nbf: clock.s + 120 }, clock.s))), ErrorCode.TOKEN_NOT_YET_VALID);
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id, { iat: clock.s + 120, nbf: clock.s }, clock.s))), ErrorCode.TOKEN_NOT_YET_VALID);
  });

  it("clock-skew edges: accepted up to (not at) exp + skew, and from nbf - skew", async () => {
    const clock = new TestClock(Math.floor(Date.now() / 1000) * 1000);
    const v = await use({ now: clock.now, clockSkewS: 30 });
    const s = clock.s;
    const expiring = issuer.sign(issuer.claims(agentA.id, { iat: s - 100, nbf: s - 100, exp: s - 29 }));
    expect((await call(agentA, expiring)).status).toBe(200); // exp 29 s ago: within 30 s of skew
    const atEdge = issuer.sign(issuer.claims(agentA.id, { iat: s - 100, nbf: s - 100, exp: s - 30 }));
    refused(await call(agentA, atEdge), ErrorCode.TOKEN_EXPIRED); // exactly exp + skew: refused
    const early = issuer.sign(issuer.claims(agentA.id, { iat: s, nbf: s + 30, exp: s + 600 }));
    expect((await call(agentA, early)).status).toBe(200); // nbf 30 s ahead: within the skew
    const tooEarly = issuer.sign(issuer.claims(agentA.id, { iat: s, nbf: s + 31, exp: s + 600 }));
    refused(await call(agentA, tooEarly), ErrorCode.TOKEN_NOT_YET_VALID);
    // No skew: exp is exclusive.
    await v.close();
    await use({ now: clock.now, clockSkewS: 0 });
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id, { iat: s - 10, nbf: s - 10, exp: s }))), ErrorCode.TOKEN_EXPIRED);
    expect((await call(agentA, issuer.sign(issuer.claims(agentA.id, { iat: s - 10, nbf: s - 10, exp: s + 1 })))).status).toBe(200);
  });

  it("a skew above 300 s is refused when the verifier is made", () => {
    expect(() => createVerifier({ issuer: "http://tokens", audience: "http://billing", node: billing, clockSkewS: 3600 })).toThrow(/clockSkewS: .*at most 300/);
  });

  it("tampered payload: another sub (or scope) under the original signature is refused", async () => {
    await use();
    const t = issuer.sign(issuer.claims(agentB.id));
    const [h, , sig] = t.split(".");
    const forged = issuer.claims(agentA.id);
    const a = await call(agentA, `${h}.${Buffer.from(JSON.stringify(forged)).toString("base64url")}.${sig}`);
    refused(a, ErrorCode.TOKEN_INVALID);
    expect(a.body.error_description).toMatch(/signature does not verify/);
  });

  it("tampered signature: one bit flipped is refused; a signature by a key the issuer does not publish too", async () => {
    await use();
    const t = issuer.sign(issuer.claims(agentA.id));
    const sig = Buffer.from(t.split(".")[2]!, "base64url");
    sig[10]! ^= 1;
    refused(await call(agentA, `${t.split(".").slice(0, 2).join(".")}.${sig.toString("base64url")}`), ErrorCode.TOKEN_INVALID);
    const stranger = crypto.generateKeyPairSync("ed25519");
    const input = t.split(".").slice(0, 2).join(".");
    refused(await call(agentA, `${input}.${crypto.sign(null, Buffer.from(input), stranger.privateKey).toString("base64url")}`), ErrorCode.TOKEN_INVALID);
  });

  it("wrong audience: a token for another service is refused", async () => {
    await use();
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id, { aud: "http://payroll" }))), ErrorCode.TOKEN_WRONG_AUDIENCE);
  });

  it("wrong issuer: a token whose iss is not the issuer's URL is refused, even signed with its key", async () => {
    await use();
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id, { iss: "http://evil" }))), ErrorCode.TOKEN_INVALID);
  });

  it("actions that do not cover the request: another method, another path, a deeper path, dot segments: 403 insufficient_scope", async () => {
    await use();
    const t = issuer.sign(issuer.claims(agentA.id));
    expect((await call(agentA, t, "/v2/transactions/42")).status).toBe(200);
    expect((await call(agentA, t, "/v2/transactions/42?page=2")).status).toBe(200);
    for (const [path, method] of [
      ["/v2/transactions/42", "POST"],
      ["/v2/accounts/1", "GET"],
      ["/v2/transactions/42/refund", "GET"],
      ["/v2/transactions/%2e%2e/admin", "GET"],
      ["/v2/transactions/42%2Fx", "GET"],
    ] as const) {
      const a = await call(agentA, t, path, method);
      refused(a, ErrorCode.TOKEN_INSUFFICIENT_SCOPE, 403);
      expect(a.www).toMatch(/error="insufficient_scope"/);
    }
    // `**` crosses segments; "*" as an action is any method.
    const wide = issuer.sign(issuer.claims(agentA.id, { authorization_details: [{ type: "meshguard.dev/http", actions: ["*"], locations: ["http://billing/v2/**"] }] }));
    expect((await call(agentA, wide, "/v2/transactions/42/refund", "POST")).status).toBe(200);
    refused(await call(agentA, wide, "/v3/x", "POST"), ErrorCode.TOKEN_INSUFFICIENT_SCOPE, 403);
    // A location of another origin grants nothing here.
    const other = issuer.sign(issuer.claims(agentA.id, { authorization_details: [{ type: "meshguard.dev/http", actions: ["GET"], locations: ["http://payroll/v2/**"] }] }));
    refused(await call(agentA, other), ErrorCode.TOKEN_INSUFFICIENT_SCOPE, 403);
  });

  it("replay from a different node: agent-a's token sent by agent-b is refused", async () => {
    await use();
    const t = issuer.sign(issuer.claims(agentA.id));
    expect((await call(agentA, t)).status).toBe(200);
    const a = await call(agentB, t);
    refused(a, ErrorCode.TOKEN_WRONG_NODE);
    expect(a.body.error_description).toMatch(/bound to another tailnet node/);
  });

  it("one-time use: a token is accepted once; a second use, even by its own node, is refused", async () => {
    await use({ oneTimeUse: true });
    const t = issuer.sign(issuer.claims(agentA.id));
    expect((await call(agentA, t)).status).toBe(200);
    refused(await call(agentA, t), ErrorCode.TOKEN_REUSED);
    expect((await call(agentA, issuer.sign(issuer.claims(agentA.id)))).status).toBe(200);
  });

  it("a failed check does not use up a one-time token", async () => {
    await use({ oneTimeUse: true });
    const t = issuer.sign(issuer.claims(agentA.id));
    refused(await call(agentA, t, "/v2/accounts/1"), ErrorCode.TOKEN_INSUFFICIENT_SCOPE, 403);
    refused(await call(agentB, t), ErrorCode.TOKEN_WRONG_NODE);
    expect((await call(agentA, t)).status).toBe(200);
  });
});

describe("verifier: forged and malformed tokens are refused before any crypto", () => {
  const header = (h: object) => Buffer.from(JSON.stringify(h)).toString("base64url");
  const payload = () => Buffer.from(JSON.stringify(issuer.claims(agentA.id))).toString("base64url");

  it('alg "none" (empty signature, or a valid-looking one) is refused, naming the algorithm', async () => {
    await use();
    for (const sig of ["", issuer.sign(issuer.claims(agentA.id)).split(".")[2]]) {
      const a = await call(agentA, `${header({ alg: "none", typ: "at+jwt", kid: "k1" })}.${payload()}.${sig}`);
      refused(a, ErrorCode.TOKEN_INVALID);
      expect(a.body.error_description).toMatch(/algorithm is "none"; only EdDSA/);
    }
  });

  it("HS256 with the issuer's public key as the HMAC secret is refused", async () => {
    await use();
    const pub = issuer.keys.get("k1")!.publicKey;
    const secrets = [Buffer.from(pub.export({ format: "jwk" }).x!, "base64url"), pub.export({ format: "pem", type: "spki" }), JSON.stringify(issuer.jwks())];
    for (const secret of secrets) {
      const input = `${header({ alg: "HS256", typ: "at+jwt", kid: "k1" })}.${payload()}`;
      const a = await call(agentA, `${input}.${crypto.createHmac("sha256", secret).update(input).digest("base64url")}`);
      refused(a, ErrorCode.TOKEN_INVALID);
      expect(a.body.error_description).toMatch(/algorithm is "HS256"/);
    }
  });

  it("another typ, crit, or no kid is refused", async () => {
    await use();
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id), { header: { typ: "JWT" } })), ErrorCode.TOKEN_INVALID);
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id), { header: { crit: ["exp"] } })), ErrorCode.TOKEN_INVALID);
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id), { header: { kid: "" } })), ErrorCode.TOKEN_INVALID);
  });

  it("a verified token's signature pasted onto other claims is not taken from the cache", async () => {
    const v = await use();
    const ctx = { method: "GET", path: "/v2/transactions/1", node: agentA.id };
    const t = issuer.sign(issuer.claims(agentA.id));
    await v.verify(t, ctx); // now cached
    const [h, , sig] = t.split(".");
    const wider = issuer.claims(agentA.id, { authorization_details: [{ type: "meshguard.dev/http", actions: ["*"], locations: ["http://billing/**"] }] });
    const forged = `${h}.${Buffer.from(JSON.stringify(wider)).toString("base64url")}.${sig}`;
    const err = await v.verify(forged, { ...ctx, method: "DELETE" }).then(() => undefined, (e: unknown) => e);
    expect((err as TokenVerifyError).code).toBe(ErrorCode.TOKEN_INVALID);
    expect((err as Error).message).toMatch(/signature does not verify/);
  });

  it("regression: a payload character outside ASCII whose low byte is the signed one is refused (a latin1 reading truncated it to the signed text)", async () => {
    const v = await use();
    const ctx = { method: "GET", path: "/v2/transactions/1", node: agentA.id };
    const t = issuer.sign(issuer.claims(agentA.id));
    const [h, p, sig] = t.split(".") as [string, string, string];
    const i = p.search(/[A-Za-z]/);
    // U+0100 + c: latin1 (and base64url decoding) read it as c, so the forged text decoded to the signed claims.
    const forged = `${h}.${p.slice(0, i)}${String.fromCharCode(0x100 + p.charCodeAt(i))}${p.slice(i + 1)}.${sig}`;
    const err = await v.verify(forged, ctx).then(() => undefined, (e: unknown) => e);
    expect((err as TokenVerifyError).code).toBe(ErrorCode.TOKEN_INVALID);
    await expect(v.verify(t, ctx)).resolves.toMatchObject({ sub: agentA.id });
  });

  it("a token without a contract claim, or living longer than maxLifetimeS, is refused", async () => {
    const v = await use({ maxLifetimeS: 3600 });
    const ctx = { method: "GET", path: "/v2/transactions/1", node: agentA.id };
    for (const missing of ["sub", "aud", "jti", "exp", "nbf", "iat", "cnf", "authorization_details"]) {
      const c = issuer.claims(agentA.id) as unknown as Record<string, unknown>;
      delete c[missing];
      const err = await v.verify(issuer.sign(c), ctx).then(() => undefined, (e: unknown) => e);
      expect((err as TokenVerifyError).code, missing).toBe(ErrorCode.TOKEN_INVALID);
    }
    const nowS = Math.floor(Date.now() / 1000);
    const long = await v.verify(issuer.sign(issuer.claims(agentA.id, { exp: nowS + 3601 })), ctx).then(() => undefined, (e: unknown) => e);
    expect((long as Error).message).toMatch(/lives 3601 s; this verifier accepts at most 3600 s/);
  });

  it("oversized and garbage tokens are refused without a JWKS fetch or signature check", async () => {
    const v = await use();
    const fetchesBefore = issuer.jwksRequests;
    const big = issuer.sign(issuer.claims(agentA.id, { pad: "x".repeat(9000) }), { header: { kid: "no-such-kid" } });
    const garbage = ["x", "a.b", "a.b.c", "a.b.c.d", "....", "%%%.%%%.%%%", crypto.randomBytes(300).toString("base64url"), `${header({ alg: "EdDSA", typ: "at+jwt", kid: "k9" })}.${payload()}.short`, big];
    for (const g of garbage) {
      const err = await v.verify(g, { method: "GET", path: "/v2/transactions/1", node: agentA.id }).then(() => undefined, (e: unknown) => e);
      expect(err, g.slice(0, 40)).toBeInstanceOf(TokenVerifyError);
      expect((err as TokenVerifyError).code).toBe(ErrorCode.TOKEN_INVALID);
    }
    expect((await v.verify(big, { method: "GET", path: "/", node: agentA.id }).catch((e: Error) => e.message)) as string).toMatch(/at most 8192/);
    expect(issuer.jwksRequests).toBe(fetchesBefore);
    // Over the tailnet too (node's header limit is far above 8 KiB).
    refused(await call(agentA, big), ErrorCode.TOKEN_INVALID);
  });
});

describe("verifier: keys", () => {
  it("an unknown kid makes the verifier refetch the JWKS (key rotation), at most once per refetchMinMs", async () => {
    const clock = new TestClock();
    await use({ now: clock.now, jwksRefetchMinMs: 10_000, revocations: { pollMs: 500, maxStalenessMs: 60_000 } });
    issuer.addKey("k2");
    clock.ms += 10_001; // the JWKS was read when the verifier started: the window starts there
    const before = issuer.jwksRequests;
    expect((await call(agentA, issuer.sign(issuer.claims(agentA.id), { kid: "k2" }))).status).toBe(200);
    expect(issuer.jwksRequests).toBe(before + 1);
    // Made-up kids within the window: refused without asking the issuer again.
    issuer.addKey("k3", false);
    for (let i = 0; i < 5; i++) refused(await call(agentA, issuer.sign(issuer.claims(agentA.id), { kid: "k3" })), ErrorCode.TOKEN_INVALID);
    expect(issuer.jwksRequests).toBe(before + 1);
    // Published now and the window over: the next token with it refetches and passes.
    issuer.published.add("k3");
    clock.ms += 10_001;
    expect((await call(agentA, issuer.sign(issuer.claims(agentA.id), { kid: "k3" }))).status).toBe(200);
    expect(issuer.jwksRequests).toBe(before + 2);
  });

  it("@noble/curves verifies the same tokens when chosen (the fallback for runtimes without node:crypto Ed25519)", async () => {
    const v = await use({ crypto: "@noble/curves" });
    expect(v.crypto).toBe("@noble/curves");
    expect((await call(agentA, issuer.sign(issuer.claims(agentA.id)))).status).toBe(200);
    const t = issuer.sign(issuer.claims(agentA.id));
    const sig = Buffer.from(t.split(".")[2]!, "base64url");
    sig[0]! ^= 0x80;
    refused(await call(agentA, `${t.split(".").slice(0, 2).join(".")}.${sig.toString("base64url")}`), ErrorCode.TOKEN_INVALID);
  });
});

describe("verifier: revocation", () => {
  const opts = { revocations: { pollMs: 200, maxStalenessMs: 5_000 } };

  it("a revoked jti is refused within a bound; other tokens of the agent still pass", async () => {
    await use(opts);
    const claims = issuer.claims(agentA.id);
    const t = issuer.sign(claims);
    const other = issuer.sign(issuer.claims(agentA.id));
    expect((await call(agentA, t)).status).toBe(200);
    issuer.revoke({ jti: claims.jti });
    const { ms } = await eventually(async () => refused(await call(agentA, t), ErrorCode.TOKEN_REVOKED), 3_000);
    expect(ms).toBeLessThan(3_000);
    expect((await call(agentA, other)).status).toBe(200);
  });

  it("an agent revoked (every token issued before now) is refused; a token issued after passes", async () => {
    await use(opts);
    const nowS = Math.floor(Date.now() / 1000);
    const old = issuer.sign(issuer.claims(agentB.id, { iat: nowS - 5, nbf: nowS - 5 }));
    expect((await call(agentB, old)).status).toBe(200);
    issuer.revoke({ sub: agentB.id, before: nowS });
    await eventually(async () => refused(await call(agentB, old), ErrorCode.TOKEN_REVOKED), 3_000);
    expect((await call(agentB, issuer.sign(issuer.claims(agentB.id, { iat: nowS, nbf: nowS })))).status).toBe(200);
    expect((await call(agentA, issuer.sign(issuer.claims(agentA.id, { iat: nowS - 5, nbf: nowS - 5 })))).status).toBe(200);
  });

  it("feed staleness fails closed: when the feed cannot be read for longer than maxStalenessMs every token is refused (503), and accepted again once it can", async () => {
    const clock = new TestClock();
    const v = await use({ now: clock.now, revocations: { pollMs: 60_000, maxStalenessMs: 10_000 } });
    const t = issuer.sign(issuer.claims(agentA.id, {}, clock.s));
    expect((await call(agentA, t)).status).toBe(200);
    issuer.feedDown = true;
    try {
      await expect(v.refreshRevocations()).rejects.toThrow(/503/);
      clock.ms += 9_000;
      expect((await call(agentA, t)).status).toBe(200); // stale for 9 s: within the bound
      clock.ms += 2_000;
      const a = await call(agentA, t);
      refused(a, ErrorCode.TOKEN_REVOCATIONS_STALE, 503);
      expect(a.body.error_description).toMatch(/revocation feed is stale \(last read 11 s ago\)/);
    } finally {
      issuer.feedDown = false;
    }
    await v.refreshRevocations();
    expect((await call(agentA, t)).status).toBe(200);
  });

  it("a verifier that never read the feed refuses every token", async () => {
    issuer.feedDown = true;
    try {
      await use(opts);
      refused(await call(agentA, issuer.sign(issuer.claims(agentA.id))), ErrorCode.TOKEN_REVOCATIONS_STALE, 503);
    } finally {
      issuer.feedDown = false;
    }
  });

  it("a feed signed by a key the issuer does not publish is not applied (and does not count as fresh)", async () => {
    const clock = new TestClock();
    const v = await use({ now: clock.now, revocations: { pollMs: 60_000, maxStalenessMs: 10_000 }, jwks: { keys: [{ ...issuer.jwks().keys[0], kid: "k1", x: Buffer.alloc(32, 7).toString("base64url") }] } });
    // The verifier's only key is not the one that signs the feed: it never becomes fresh.
    await expect(v.refreshRevocations()).rejects.toThrow(/signature does not verify/);
    refused(await call(agentA, issuer.sign(issuer.claims(agentA.id, {}, clock.s))), ErrorCode.TOKEN_INVALID);
  });
});
