import { serialize } from "pg-protocol";
import { describe, expect, test } from "vitest";
import { ALLOW, Relay, type RelayHost, type Verdict } from "./relay.js";
import { errorMessageOf, errorResponse, ProtocolError, readyForQuery } from "./wire.js";

/** Every way of cutting `buf` in two, and in single bytes. */
function splits(buf: Buffer): Buffer[][] {
  const out: Buffer[][] = [[buf], [...buf].map((b) => Buffer.from([b]))];
  for (let i = 1; i < buf.length; i++) out.push([buf.subarray(0, i), buf.subarray(i)]);
  return out;
}

/** types lists the message types of a frontend or backend stream ("P", "B", ...). */
function types(buf: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off < buf.length; off += 1 + buf.readInt32BE(off + 1)) out.push(String.fromCharCode(buf[off]!));
  return out;
}

/** texts lists the statement texts of the Query and Parse messages of a frontend stream. */
function texts(buf: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off < buf.length; off += 1 + buf.readInt32BE(off + 1)) {
    const t = buf[off];
    if (t === 0x51) out.push(buf.toString("utf8", off + 5, buf.indexOf(0, off + 5)));
    if (t === 0x50) {
      const z = buf.indexOf(0, off + 5);
      out.push(buf.toString("utf8", z + 1, buf.indexOf(0, z + 1)));
    }
  }
  return out;
}

function harness(judge: (text: string) => Verdict | Promise<Verdict> = () => ALLOW) {
  const server: Buffer[] = [];
  const client: Buffer[] = [];
  const judged: string[] = [];
  const refusals: string[] = [];
  let released = 0;
  const host: RelayHost = {
    judge: (t) => (judged.push(t), judge(t)),
    refused: (why) => (refusals.push(why), `refused: ${why}`),
    toServer: (b) => void server.push(b),
    toClient: (b) => void client.push(b),
    failed: (err) => {
      throw err;
    },
    released: () => void released++,
  };
  const relay = new Relay(host, "ab12");
  return { relay, server, client, judged, refusals, released: () => released, up: () => Buffer.concat(server), down: () => Buffer.concat(client) };
}

const deny = (t: string): Verdict => (/DELETE/i.test(t) ? { allow: false, reason: "no deletes" } : ALLOW);

// A node-postgres extended-protocol cycle, as it writes it (corked: one chunk).
const cycle = Buffer.concat([serialize.parse({ text: "SELECT id FROM items WHERE id = $1" }), serialize.bind({ values: ["7"] }), serialize.describe({ type: "P" }), serialize.execute({}), serialize.sync()]);

describe("Relay, client → server", () => {
  test("the allow path: a chunk goes upstream as it came, in one write, the statement judged once", () => {
    const h = harness();
    h.relay.fromClient(cycle);
    expect(h.server).toHaveLength(1);
    expect(h.server[0]).toBe(cycle);
    expect(h.judged).toEqual(["SELECT id FROM items WHERE id = $1"]);
    expect(h.relay.inFlight).toBe(1);
  });

  test("however the stream is cut, the same bytes go upstream and each statement is judged once", () => {
    const stream = Buffer.concat([cycle, serialize.query("SELECT 'é'"), serialize.parse({ name: "s1", text: "SELECT 2" }), serialize.bind({ statement: "s1", portal: "p1" }), serialize.execute({ portal: "p1" }), serialize.sync()]);
    for (const chunks of splits(stream)) {
      const h = harness();
      for (const c of chunks) h.relay.fromClient(c);
      expect(h.up()).toEqual(stream);
      expect(h.judged).toEqual(["SELECT id FROM items WHERE id = $1", "SELECT 'é'", "SELECT 2"]);
      expect(h.relay.inFlight).toBe(3);
    }
  });

  test("a denied Parse in a pipeline: the probe goes in its place, the rest up to Sync is dropped, the next cycle passes", () => {
    const stream = Buffer.concat([
      serialize.parse({ text: "SELECT 1" }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ text: "DELETE FROM items" }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.sync(),
      serialize.query("SELECT 7"),
    ]);
    for (const chunks of splits(stream)) {
      const h = harness(deny);
      for (const c of chunks) h.relay.fromClient(c);
      const up = h.up();
      expect(types(up)).toEqual(["P", "B", "E", "P", "S", "Q"]);
      expect(texts(up)).toEqual(["SELECT 1", "SELECT pg_catalog.mg_denied_ab12_1()", "SELECT 7"]);
      expect(h.relay.inFlight).toBe(2);
    }
  });

  test("a denied simple Query becomes the probe Query; Bind of an unseen statement and Execute of an unbound portal are refused", () => {
    const h = harness(deny);
    h.relay.fromClient(serialize.query("select 1; delete from items"));
    expect(texts(h.up())).toEqual(["SELECT pg_catalog.mg_denied_ab12_1()"]);
    h.server.length = 0;
    h.relay.fromClient(Buffer.concat([serialize.bind({ statement: "never-parsed" }), serialize.execute({}), serialize.sync()]));
    expect(types(h.up())).toEqual(["P", "S"]);
    expect(h.refusals[0]).toMatch(/did not see parsed/);
    h.server.length = 0;
    h.relay.fromClient(Buffer.concat([serialize.execute({ portal: "nope" }), serialize.sync()]));
    expect(h.refusals[1]).toMatch(/"nope", which was not bound/);
    // Close of a statement forgets it: a later Bind of it is refused.
    h.server.length = 0;
    h.relay.fromClient(Buffer.concat([serialize.parse({ name: "s", text: "SELECT 1" }), serialize.close({ type: "S", name: "s" }), serialize.bind({ statement: "s" }), serialize.sync()]));
    expect(types(h.up())).toEqual(["P", "C", "P", "S"]);
  });

  test("a statement held for an approver holds what follows it, then releases everything in order", async () => {
    let answer!: (v: Verdict) => void;
    const h = harness((t) => (t.startsWith("UPDATE") ? new Promise<Verdict>((r) => (answer = r)) : ALLOW));
    h.relay.fromClient(Buffer.concat([serialize.parse({ text: "UPDATE items SET z = 1" }), serialize.bind({}), serialize.execute({})]));
    h.relay.fromClient(Buffer.concat([serialize.parse({ text: "SELECT 1" }), serialize.bind({}), serialize.execute({}), serialize.sync()]));
    expect(h.server).toHaveLength(0);
    expect(h.relay.heldBytes).toBeGreaterThan(0);
    expect(h.relay.idle).toBe(false);
    answer(ALLOW);
    await new Promise((r) => setImmediate(r));
    expect(h.released()).toBe(1);
    expect(types(h.up())).toEqual(["P", "B", "E", "P", "B", "E", "S"]);
    expect(texts(h.up())).toEqual(["UPDATE items SET z = 1", "SELECT 1"]);
  });

  test("a refused approval denies the held statement; the rest of its cycle is dropped", async () => {
    const h = harness((t) => (t.startsWith("UPDATE") ? Promise.resolve<Verdict>({ allow: false, reason: "not today" }) : ALLOW));
    h.relay.fromClient(Buffer.concat([serialize.parse({ text: "UPDATE items SET z = 1" }), serialize.bind({}), serialize.execute({}), serialize.sync(), serialize.query("SELECT 2")]));
    await new Promise((r) => setImmediate(r));
    expect(types(h.up())).toEqual(["P", "S", "Q"]);
    expect(texts(h.up())).toEqual(["SELECT pg_catalog.mg_denied_ab12_1()", "SELECT 2"]);
  });

  test("a malformed or oversized length is a protocol error", () => {
    expect(() => harness().relay.fromClient(Buffer.from([0x51, 0, 0, 0, 2]))).toThrow(ProtocolError);
    expect(() => harness().relay.fromClient(Buffer.from([0x51, 0x7f, 0, 0, 0]))).toThrow(/larger than the gateway frames/);
  });
});

describe("Relay, server → client", () => {
  const dataRow = Buffer.from([0x44, 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, 0x31]);
  const probeError = errorResponse({ severity: "ERROR", code: "42883", message: "function pg_catalog.mg_denied_ab12_1() does not exist" });
  const otherError = errorResponse({ severity: "ERROR", code: "22012", message: "division by zero" });

  test("without a pending denial, chunks pass as they are (no copies) and ReadyForQuery is counted", () => {
    const h = harness();
    h.relay.fromClient(cycle);
    const answer = Buffer.concat([Buffer.from([0x31, 0, 0, 0, 4, 0x32, 0, 0, 0, 4]), dataRow, readyForQuery("I")]);
    expect(h.relay.idle).toBe(false);
    let idled = 0;
    h.relay.onIdle = () => idled++;
    h.relay.fromServer(answer);
    expect(h.client).toHaveLength(1);
    expect(h.client[0]).toBe(answer);
    expect(h.relay.inFlight).toBe(0);
    expect(h.relay.idle).toBe(true);
    expect(idled).toBe(1);
  });

  test("the probe's error is rewritten into the denial, other errors pass, however the stream is cut", () => {
    const stream = Buffer.concat([dataRow, readyForQuery("I"), otherError, dataRow, probeError, readyForQuery("T"), dataRow]);
    for (const chunks of splits(stream)) {
      const h = harness(deny);
      h.relay.fromClient(serialize.query("SELECT 1")); // cycle 0: answered by the first ReadyForQuery
      h.relay.fromClient(serialize.query("DELETE FROM items")); // cycle 1: the probe
      for (const c of chunks) h.relay.fromServer(c);
      const down = h.down();
      expect(types(down)).toEqual(["D", "Z", "E", "D", "E", "Z", "D"]);
      const errors: string[] = [];
      for (let off = 0; off < down.length; off += 1 + down.readInt32BE(off + 1)) if (down[off] === 0x45) errors.push(errorMessageOf(down.subarray(off, off + 1 + down.readInt32BE(off + 1)))!);
      expect(errors).toEqual(["division by zero", "meshguard: denied by policy: no deletes"]);
      expect(h.relay.inFlight).toBe(0);
    }
  });

  test("a denial whose cycle the server skipped (an earlier error in the pipeline) is forgotten at that cycle's ReadyForQuery", () => {
    const h = harness(deny);
    h.relay.fromClient(Buffer.concat([serialize.parse({ text: "SELECT 1/0" }), serialize.bind({}), serialize.execute({}), serialize.parse({ text: "DELETE FROM items" }), serialize.sync()]));
    h.relay.fromServer(Buffer.concat([Buffer.from([0x31, 0, 0, 0, 4, 0x32, 0, 0, 0, 4]), otherError, readyForQuery("I")]));
    // The same text as the probe would have had, later: no longer rewritten.
    h.relay.fromServer(probeError);
    expect(errorMessageOf(h.client.at(-1)!)).toMatch(/does not exist/);
  });
});
