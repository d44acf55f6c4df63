// Shared setup for token tests: a tailnet whose policy lets agents reach a
// service ("billing") and the token issuer ("tokens"), and the service
// reach the issuer; and a stand-in issuer that speaks the wire contract of
// src/tokens/types.ts (JWKS, signed revocation feed) with tokens signed here
// exactly as a test needs them (expired, tampered, another key...). The
// real issuer is tested against the verifier in its own files.
import crypto from "node:crypto";
import http from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalControl } from "../../src/control/index.js";
import { MeshNode } from "../../src/index.js";
import { sendTokenError, TokenVerifyError, type ClientNode, type TokenVerifier } from "../../src/tokens/index.js";
import { CNF_NODE, HTTP_DETAIL_TYPE, REVOCATIONS_TYP, TOKEN_TYP, type AccessTokenClaims, type RevocationEntry } from "../../src/tokens/types.js";

export const TAILNET_POLICY = {
  tagOwners: { "tag:agent-a": ["alice@"], "tag:agent-b": ["alice@"], "tag:billing": ["alice@"], "tag:tokens": ["alice@"] },
  grants: [
    { src: ["tag:agent-a", "tag:agent-b"], dst: ["tag:billing", "tag:tokens"], ip: ["*"] },
    { src: ["tag:billing"], dst: ["tag:tokens"], ip: ["*"] },
  ],
};

export interface TokensTailnet {
  control: LocalControl;
  start(hostname: string, tag: string, extra?: Partial<Parameters<typeof MeshNode.start>[0]>): Promise<MeshNode>;
}

export async function startTokensTailnet(policy: object = TAILNET_POLICY): Promise<TokensTailnet> {
  const control = await LocalControl.start({ policy });
  await control.createUser("alice");
  const stateDir = mkdtempSync(join(tmpdir(), "mg-tok-"));
  return {
    control,
    async start(hostname, tag, extra = {}) {
      const authKey = await control.createAuthKey({ tags: [tag], reusable: false, ephemeral: true, expiration: "1h" });
      return MeshNode.start({ controlUrl: control.url, authKey, hostname, dir: join(stateDir, hostname), ephemeral: true, timeoutMs: 30_000, tagOwners: TAILNET_POLICY.tagOwners, ...extra });
    },
  };
}

const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** signCompact signs any header and payload (no checks: tests make bad tokens on purpose). */
export function signCompact(header: object, payload: unknown, privateKey: crypto.KeyObject): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${crypto.sign(null, Buffer.from(input), privateKey).toString("base64url")}`;
}

/** FixtureIssuer: keys, a JWKS and a revocation feed served on a tailnet node, and a token signer. */
export class FixtureIssuer {
  readonly iss = "http://tokens";
  readonly keys = new Map<string, { privateKey: crypto.KeyObject; publicKey: crypto.KeyObject }>();
  /** The kids published in the JWKS (a key may sign without being published: an unknown kid). */
  readonly published = new Set<string>();
  readonly entries: RevocationEntry[] = [];
  jwksRequests = 0;
  feedRequests = 0;
  /** When set, the feed answers 503 (an issuer that is down). */
  feedDown = false;
  private server?: http.Server;
  private seq = 0;

  constructor() {
    this.addKey("k1");
  }

  addKey(kid: string, publish = true): void {
    this.keys.set(kid, crypto.generateKeyPairSync("ed25519"));
    if (publish) this.published.add(kid);
  }

  jwks(): { keys: object[] } {
    return {
      keys: [...this.published].map((kid) => ({ ...this.keys.get(kid)!.publicKey.export({ format: "jwk" }), kid, use: "sig", alg: "EdDSA" })),
    };
  }

  revoke(entry: { jti: string } | { sub: string; before: number }): void {
    this.entries.push({ seq: ++this.seq, ...entry } as RevocationEntry);
  }

  /** claims for `sub` with defaults a verifier accepts (times from `nowS`). */
  claims(sub: string, over: Partial<AccessTokenClaims> & Record<string, unknown> = {}, nowS = Math.floor(Date.now() / 1000)): AccessTokenClaims {
    return {
      iss: this.iss,
      sub,
      aud: "http://billing",
      iat: nowS,
      nbf: nowS,
      exp: nowS + 900,
      jti: crypto.randomBytes(16).toString("base64url"),
      cnf: { [CNF_NODE]: sub },
      node: "agent-a",
      tags: ["tag:agent-a"],
      owners: ["alice@"],
      authorization_details: [{ type: HTTP_DETAIL_TYPE, actions: ["GET"], locations: ["http://billing/v2/transactions/*"] }],
      ...over,
    } as AccessTokenClaims;
  }

  sign(claims: unknown, opts: { kid?: string; header?: Record<string, unknown> } = {}): string {
    const kid = opts.kid ?? "k1";
    return signCompact({ alg: "EdDSA", typ: TOKEN_TYP, kid, ...opts.header }, claims, this.keys.get(kid)!.privateKey);
  }

  async serve(node: MeshNode): Promise<void> {
    this.server = http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://tokens");
      if (url.pathname === "/.well-known/jwks.json") {
        this.jwksRequests++;
        res.setHeader("content-type", "application/json");
        return res.end(JSON.stringify(this.jwks()));
      }
      if (url.pathname === "/revocations") {
        this.feedRequests++;
        if (this.feedDown) {
          res.statusCode = 503;
          return res.end();
        }
        const since = Number(url.searchParams.get("since") ?? 0);
        const payload = { iss: this.iss, iat: Math.floor(Date.now() / 1000), seq: this.seq, entries: this.entries.filter((e) => e.seq > since) };
        res.setHeader("content-type", "application/jwt");
        return res.end(signCompact({ alg: "EdDSA", typ: REVOCATIONS_TYP, kid: "k1" }, payload, this.keys.get("k1")!.privateKey));
      }
      res.statusCode = 404;
      res.end();
    });
    await node.listen(80, this.server);
  }

  close(): void {
    this.server?.close();
  }
}

/** A clock tests move by hand: epoch milliseconds. */
export class TestClock {
  public ms: number;

  constructor(ms = Date.now()) {
    this.ms = ms;
  }
  readonly now = (): number => this.ms;
  get s(): number {
    return Math.floor(this.ms / 1000);
  }
}

/** eventually polls `fn` until it stops throwing, up to `boundMs` (revocation reaches verifiers within a bound). */
export async function eventually<T>(fn: () => Promise<T> | T, boundMs: number, stepMs = 50): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  for (;;) {
    try {
      return { value: await fn(), ms: performance.now() - t0 };
    } catch (err) {
      if (performance.now() - t0 > boundMs) throw err;
      await new Promise((r) => setTimeout(r, stepMs));
    }
  }
}

/**
 * billingService is the protected service of the client tests: each path in
 * `redirects` answers 302 to its location; every other request is verified
 * and answered with what the token granted (or the verifier's refusal).
 */
export function billingService(verifier: TokenVerifier, redirects: Record<string, string>): http.Server {
  return http.createServer((req, res) => {
    const to = redirects[req.url ?? ""];
    if (to !== undefined) return void res.writeHead(302, { location: to }).end();
    verifier.verifyRequest(req).then(
      (t) => res.end(JSON.stringify({ sub: t.sub, jti: t.jti, task: t.task ?? null, details: t.claims.authorization_details })),
      (err: unknown) => (err instanceof TokenVerifyError ? sendTokenError(res, err) : ((res.statusCode = 500), res.end(String(err)))),
    );
  });
}

/**
 * countingNode is `node` as a tokens client sees it, with every request it
 * makes to the issuer written to `calls`; `identity` also gives the client
 * the node's addresses and whois (policy targets need them).
 */
export function countingNode(node: MeshNode, calls: string[], identity: boolean): ClientNode {
  return {
    id: node.id,
    name: node.name,
    fetch: (url, init) => {
      calls.push(`${init?.method ?? "GET"} ${url} ${init?.body ?? ""}`);
      return node.fetch(url, init);
    },
    ...(identity ? { ips: node.ips, whois: (addr: string) => node.whois(addr) } : {}),
  };
}
