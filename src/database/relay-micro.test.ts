import { serialize } from "pg-protocol";
import { test } from "vitest";
import { loadPolicy } from "../policy/index.js";
import { sqlParserReady } from "../policy/sql.js";
import { ALLOW, Relay, type Verdict } from "./relay.js";
import { readyForQuery } from "./wire.js";

test("micro", async () => {
  await sqlParserReady();
  const policy = loadPolicy(JSON.stringify({ version: 5, rules: [{ id: "read", src: ["tag:bench"], sql: { database: ["benchdb"], operation: ["select"], table: ["public.items"], rows: "id > 0" } }] }));
  const cache = new Map<string, Verdict>();
  const principal = { node: "c", tags: ["tag:bench"] };
  let sink = 0;
  const judgeCached = (text: string): Verdict => {
    let v = cache.get(text);
    if (v === undefined) { const d = policy.evaluate({ principal, target: { kind: "sql", database: "benchdb", statement: text, rowFilters: true } }); v = d.effect === "allow" ? ALLOW : { allow: false, reason: d.reason }; cache.set(text, v); }
    return v;
  };
  const judgeEval = (text: string): Verdict => { const d = policy.evaluate({ principal, target: { kind: "sql", database: "benchdb", statement: text, rowFilters: true } }); return d.effect === "allow" ? ALLOW : { allow: false, reason: d.reason }; };
  const mk = (judge: (t: string) => Verdict) => new Relay({ judge, refused: (w) => w, toServer: (b) => void (sink += b.length), toClient: (b) => void (sink += b.length), failed: (e) => { throw e; }, released: () => {} }, "ab");
  const cycle = Buffer.concat([serialize.parse({ text: "SELECT id, v FROM items WHERE id = $1" }), serialize.bind({ values: ["7"] }), serialize.describe({ type: "P" }), serialize.execute({}), serialize.sync()]);
  const dataRow = Buffer.from([0x44, 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, 0x31]);
  const answer = Buffer.concat([Buffer.from([0x31, 0, 0, 0, 4, 0x32, 0, 0, 0, 4]), Buffer.from([0x54, 0, 0, 0, 6, 0, 0]), dataRow, Buffer.from([0x43, 0, 0, 0, 13]), Buffer.from("SELECT 1\0"), readyForQuery("I")]);
  for (const [name, judge, mode] of [["cached", judgeCached, 0], ["evaluate", judgeEval, 0], ["const ALLOW", () => ALLOW, 0], ["client only, const", () => ALLOW, 1], ["server only", () => ALLOW, 2], ["cached", judgeCached, 0]] as const) {
    const r = mk(judge);
    const N = 200_000;
    for (let i = 0; i < 20_000; i++) { r.fromClient(Buffer.from(cycle)); r.fromServer(Buffer.from(answer)); }
    const samples: number[] = [];
    for (let k = 0; k < 10; k++) {
      const bufs = Array.from({ length: N / 10 }, () => [Buffer.from(cycle), Buffer.from(answer)] as const);
      const t0 = performance.now();
      if (mode === 0) for (const [c, a] of bufs) { r.fromClient(c); r.fromServer(a); }
      else if (mode === 1) for (const [c] of bufs) { r.fromClient(c); }
      else for (const [, a] of bufs) { r.fromServer(a); }
      samples.push(((performance.now() - t0) * 1000) / (N / 10));
    }
    samples.sort((a, b) => a - b);
    console.log(`relay per query (${name}): median of 10 batches ${samples[5]!.toFixed(3)} µs, min ${samples[0]!.toFixed(3)}`);
  }
}, 120_000);
