// Issue 7, item 7 (in-process half): worker threads started after the guard
// is installed are guarded with the same policy, receive its reloads and
// carry the node's identity. Each case counts what reaches a local server
// from inside a worker and expects zero where the policy says no, with a
// positive control (the same worker code aimed at the allowed server gets
// its hits). The family is the first word of each title ("run:").
// `meshguard run` (the hardened launch mode) is in bypass-hardened.test.ts.
import { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allowHttp, allowTcp, guard, policyOf, settle, until, samePortPair, victim, type Victim } from "./helpers.js";

let A: Victim; // allowed
let B: Victim; // never allowed
beforeAll(async () => {
  [A, B] = await samePortPair(victim);
});
afterAll(async () => {
  await A.close();
  await B.close();
});

/**
 * The worker: on each message { url, host, port } it makes one fetch, one
 * node:http request and one raw TCP connection that writes a request, and
 * answers with what each call did.
 */
const WORKER = `
const { parentPort } = require("node:worker_threads");
const net = require("node:net");
const http = require("node:http");
const code = (e) => String((e && (e.code || (e.cause && e.cause.code) || e.message)) || e);
parentPort.on("message", async ({ url, host, port }) => {
  const out = {};
  try { const r = await fetch(url + "/w-fetch"); await r.text(); out.fetch = r.status; } catch (e) { out.fetch = code(e); }
  out.http = await new Promise((res) => { const q = http.get(url + "/w-http", { agent: false }, (r) => { r.resume(); r.on("end", () => res(r.statusCode)); }); q.on("error", (e) => res(code(e))); });
  out.net = await new Promise((res) => { const s = net.connect(port, host); s.on("connect", () => { s.end("GET /w-net HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"); res("connected"); }); s.on("error", (e) => res(code(e))); });
  parentPort.postMessage(out);
});
`;

/** A worker started now, and a function that makes its three calls against `v`. */
function startWorker(): { calls(v: Victim): Promise<Record<string, unknown>>; stop(): Promise<number> } {
  const w = new Worker(WORKER, { eval: true });
  let failed: Error | undefined;
  w.on("error", (e) => (failed = e));
  return {
    calls: (v) =>
      new Promise((resolve, reject) => {
        if (failed) return reject(failed);
        w.once("message", resolve);
        w.once("error", reject);
        w.postMessage({ url: v.url, host: v.host, port: v.port });
      }),
    stop: () => w.terminate(),
  };
}

const rules = () => [allowHttp("127.0.0.1", { port: [A.port] }), allowTcp("127.0.0.1", A.port)];

describe("run: worker threads (issue 7 item 7)", () => {
  it("run: a worker started after install is guarded with the same policy and identity (fetch, node:http, raw TCP)", async () => {
    // The rules name the agent's tag: a worker without the node's identity would be denied even the positive control.
    guard({ rules: rules() });
    const w = startWorker();
    try {
      const before = B.snapshot();
      const out = await w.calls(B);
      await settle();
      expect(B.snapshot(), `the worker's calls to a denied host (${JSON.stringify(out)})`).toEqual(before);
      const hits = A.hits("/w-");
      await w.calls(A);
      expect(await until(() => A.hits("/w-") === hits + 3), "positive control: the same worker code reaches the allowed server three times").toBe(true);
    } finally {
      await w.stop();
    }
  });

  it("run: a worker receives the guard's reloads (setPolicy)", async () => {
    const g = guard({ rules: rules() });
    const w = startWorker();
    try {
      const hits = A.hits("/w-");
      await w.calls(A);
      expect(await until(() => A.hits("/w-") === hits + 3), "positive control: allowed before the reload").toBe(true);
      g.setPolicy(policyOf([allowHttp("127.0.0.9")]));
      await settle(100); // a reload reaches the worker by message
      const before = A.snapshot();
      await w.calls(A);
      await settle();
      expect(A.snapshot(), "the worker's calls after a reload that denies them").toEqual(before);
    } finally {
      await w.stop();
    }
  });

  it("run: a worker started before any policy is loaded reaches nothing, and gets the policy set later", async () => {
    const g = guard({});
    // No policy yet: everything is denied, in the worker too.
    const w = startWorker();
    try {
      const before = A.snapshot();
      await w.calls(A);
      await settle();
      expect(A.snapshot(), "a worker of a guard with no policy reaches nothing").toEqual(before);
      g.setPolicy(policyOf(rules()));
      await settle(100);
      const hits = A.hits("/w-");
      await w.calls(A);
      expect(await until(() => A.hits("/w-") === hits + 3), "positive control: the policy set later reaches the worker").toBe(true);
    } finally {
      await w.stop();
    }
  });
});
