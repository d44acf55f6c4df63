// Documentation that must match the code: docs/errors.md lists every error
// code and no code that does not exist; docs/guard.md cites only tests that exist.
import { existsSync, readFileSync } from "node:fs";
import { expect, test } from "vitest";
import { ErrorCode } from "../../src/errors.js";

test("docs/errors.md documents exactly the ErrorCode values", () => {
  const text = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
  const documented = [...text.matchAll(/^\| `(MESHGUARD_[A-Z_]+)` \|/gm)].map((m) => m[1]).sort();
  expect(documented).toEqual(Object.values(ErrorCode).sort());
});

// docs/guard.md cites tests as `file` "title", "title", …: file is
// test/guard/FILE.test.ts, each title is a test's or a group's title as
// written there (without a leading `net:`-style label), and `…` stands for
// words left out (a trailing one: the title goes on). Every citation must
// name a title that exists, so the security model cannot claim a test that
// was renamed or removed.

const guardTests = new URL("../../test/guard/", import.meta.url);

/** The titles of the `it`/`test`/`describe` calls of a test file, as written (placeholders such as %s and ${…} kept). */
function titlesOf(source: string): string[] {
  const literal = /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`/.source;
  // `it(`, `test.skip(`, `describe(`, and the second call of `it.each(table)(`.
  const call = new RegExp(`(?:\\b(?:it|test|describe)(?:\\.(?:only|skip|todo|fails|concurrent|sequential))?|\\))\\(\\s*(${literal})`, "g");
  return [...source.matchAll(call)].map((m) => {
    const raw = m[1]!;
    return raw.startsWith('"') ? (JSON.parse(raw) as string) : raw.slice(1, -1).replace(/\\(.)/g, "$1");
  });
}

/** Each citation in a document: the file's short name and the quoted titles after it. */
function citations(text: string): { file: string; title: string }[] {
  const out: { file: string; title: string }[] = [];
  // One line per table row or paragraph: a citation may wrap across lines in prose.
  const flat = text.replace(/[ \t]*\n(?!\n)[ \t]*/g, " ");
  for (const m of flat.matchAll(/`([a-z][a-z0-9.-]*)` ("[^"]*"(?:, "[^"]*")*)/g)) {
    for (const t of m[2]!.matchAll(/"([^"]*)"/g)) out.push({ file: m[1]!, title: t[1]! });
  }
  return out;
}

/** cited says whether `title` is what `citation` names (… stands for any text). */
function cited(citation: string, title: string): boolean {
  const parts = citation.split("…").map((p) => p.trim().replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`^${parts.join("[\\s\\S]*")}${citation.trimEnd().endsWith("…") ? "" : "$"}`);
  return re.test(title) || re.test(title.replace(/^[a-z]+: /, ""));
}

test("every test docs/guard.md cites exists in test/guard/", () => {
  const doc = readFileSync(new URL("../../docs/guard.md", import.meta.url), "utf8");
  const found = citations(doc);
  // Not vacuous: the security model cites its tests in this form.
  expect(found.length).toBeGreaterThan(50);
  const titles = new Map<string, string[]>();
  const missing: string[] = [];
  for (const c of found) {
    if (!titles.has(c.file)) {
      const url = new URL(`${c.file}.test.ts`, guardTests);
      titles.set(c.file, existsSync(url) ? titlesOf(readFileSync(url, "utf8")) : []);
    }
    if (!titles.get(c.file)!.some((t) => cited(c.title, t))) missing.push(`\`${c.file}\` "${c.title}"`);
  }
  expect(missing, "cited in docs/guard.md, but no such test in test/guard/").toEqual([]);
});

test("the citation matcher: a title, a prefix, a left-out placeholder; not a wrong title or a prefix without …", () => {
  const src = 'it("net: the port judged never comes from the Host header", () => {});\nit.each([["a", 1]])("kinds: %s to a host the policy does not allow: no datagram leaves", () => {});\ndescribe(`run: worker threads (issue ${7})`, () => {});';
  const ts = titlesOf(src);
  expect(ts).toEqual(["net: the port judged never comes from the Host header", "kinds: %s to a host the policy does not allow: no datagram leaves", "run: worker threads (issue ${7})"]);
  const ok = (c: string) => ts.some((t) => cited(c, t));
  expect(ok("the port judged never comes from the Host header")).toBe(true);
  expect(ok("the port judged never comes …")).toBe(true);
  expect(ok("… to a host the policy does not allow: no datagram leaves")).toBe(true);
  expect(ok("worker threads …")).toBe(true);
  expect(ok("the port judged never comes")).toBe(false); // a prefix must say so with …
  expect(ok("the host judged never comes …")).toBe(false);
  expect(citations('a `bypass-net` "one", "two …" and `x` "three"; `mode` is not one')).toEqual([
    { file: "bypass-net", title: "one" },
    { file: "bypass-net", title: "two …" },
    { file: "x", title: "three" },
  ]);
});
