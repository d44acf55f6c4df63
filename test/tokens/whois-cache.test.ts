/**
 * Whois per connection (src/tokens/whois-cache.ts, the issuer's and the verifier's): one
 * look-up per keep-alive connection, never shared between connections (an
 * address is reused by another node), asked again once the socket closes,
 * after a failure, and when the answer is older than WHOIS_MAX_AGE_MS.
 * Real sockets; the look-up is counted.
 */

import net from "node:net";
import { expect, test } from "vitest";
import type { WhoIs } from "../../src/node.js";
import { callerOf } from "../../src/tokens/caller.js";
import { WHOIS_MAX_AGE_MS, WhoisCache } from "../../src/tokens/whois-cache.js";

function who(id: string, tags: string[]): WhoIs {
  return { node: { id, name: `${id}.tail.`, hostname: id, tags, ips: [] }, user: { login: "", displayName: "" }, tagged: true, owners: [], caps: {} };
}

function setup() {
  let now = 0;
  const answers = new Map<net.Socket, WhoIs | Error>();
  const asked: net.Socket[] = [];
  const node = {
    whois: async (s: net.Socket | string) => {
      asked.push(s as net.Socket);
      const a = answers.get(s as net.Socket);
      if (a === undefined || a instanceof Error) throw a ?? new Error("unknown");
      return a;
    },
  };
  const cache = new WhoisCache((s: net.Socket) => node.whois(s).then(callerOf), () => now);
  return { cache, answers, asked, advance: (ms: number) => (now += ms) };
}

test("one look-up per connection: later requests on it reuse the answer; another connection asks for its own", async () => {
  const { cache, answers, asked } = setup();
  const a = new net.Socket();
  const b = new net.Socket();
  answers.set(a, who("n1", ["tag:agent"]));
  answers.set(b, who("n2", ["tag:other"]));
  expect((await cache.of(a)).id).toBe("n1");
  expect((await cache.of(a)).id).toBe("n1");
  expect((await cache.of(b)).principal.tags).toEqual(["tag:other"]);
  expect(asked).toEqual([a, b]);
  a.destroy();
  b.destroy();
});

test("a closed connection forgets its caller; a failed look-up is not remembered; an old answer is asked again", async () => {
  const { cache, answers, asked, advance } = setup();
  const s = new net.Socket();
  answers.set(s, new Error("not on the tailnet"));
  await expect(cache.of(s)).rejects.toThrow("not on the tailnet");
  answers.set(s, who("n1", ["tag:agent"]));
  expect((await cache.of(s)).id).toBe("n1");
  expect(asked.length).toBe(2);
  // The tailnet policy retagged the node: seen once the answer is older than the bound.
  answers.set(s, who("n1", ["tag:retagged"]));
  advance(WHOIS_MAX_AGE_MS - 1);
  expect((await cache.of(s)).tags).toEqual(["tag:agent"]);
  advance(1);
  expect((await cache.of(s)).tags).toEqual(["tag:retagged"]);
  expect(asked.length).toBe(3);
  // One "close" listener however often the socket was looked up again.
  expect(s.listenerCount("close")).toBe(1);
  s.destroy();
  await new Promise((r) => s.once("close", r).on("error", r));
  await cache.of(s);
  expect(asked.length).toBe(4);
});
