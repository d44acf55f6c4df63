// Credentials are dropped from headers by name, and provider keys wherever
// they occur.
import { expect, it } from "vitest";
import { REDACTED, redactHeaders, scrubSecrets } from "../../src/gateway/redact.js";

const KEY = "sk-ant-api03-abcdefghijklmnop";

it("drops every credential header, whatever the case of its name, and keeps the rest", () => {
  const out = redactHeaders(
    {
      Authorization: "Bearer client",
      "Proxy-Authorization": "Basic x",
      "X-Api-Key": "client",
      "api-key": "azure",
      "x-goog-api-key": "g",
      Cookie: "sid=1",
      "set-cookie": ["a=1", "b=2"],
      "Content-Type": "application/json",
      "anthropic-beta": ["a", "b"],
      "x-missing": undefined,
    },
    [],
  );
  expect(out).toEqual({ "content-type": "application/json", "anthropic-beta": "a, b" });
});

it("drops any header whose value contains a provider key", () => {
  expect(redactHeaders({ "x-forwarded-auth": `token ${KEY}`, accept: "*/*" }, [KEY])).toEqual({ accept: "*/*" });
});

it("reads a fetch Headers and name/value pairs the same way", () => {
  const h = new Headers({ authorization: "Bearer x", "User-Agent": "openai-node" });
  expect(redactHeaders(h, [])).toEqual({ "user-agent": "openai-node" });
  expect(redactHeaders([["X-Api-Key", "k"], ["Accept", "a"]], [])).toEqual({ accept: "a" });
});

it("scrubSecrets replaces every occurrence of every key, longest first", () => {
  const short = "sk-ant-api03";
  expect(scrubSecrets(`a ${KEY} b ${KEY}`, [KEY])).toBe(`a ${REDACTED} b ${REDACTED}`);
  // The longer key is removed whole, not left with its tail showing.
  expect(scrubSecrets(`x ${KEY}`, [short, KEY])).toBe(`x ${REDACTED}`);
  expect(scrubSecrets("nothing here", [KEY, ""])).toBe("nothing here");
});
