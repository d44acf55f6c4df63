// The SDK examples (examples/sdk/) are documentation: each runs as a user
// would run it (one command, `node examples/sdk/<name>.mjs`), brings up a
// local tailnet with a simulated provider or an MCP server on a node, and
// makes one call the guard allows and one it blocks. Asserted here from
// what each prints (the RESULT line, measured inside the example against
// the server it started): the allowed call was answered and reached the
// server; the blocked one failed with PolicyDeniedError, made one decision
// (the SDK did not retry it) and never reached the server.
//
// dist/ must be built first (the test command builds it). `npm run
// check:sdk-latest` runs this file against the newest release of each SDK.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));

interface Call {
  what: string;
  ok: boolean;
  error?: string;
  code?: string;
  policyDenied?: boolean;
  ms: number;
  denies: number;
  reachedServer: boolean;
}

function run(name: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [`examples/sdk/${name}.mjs`], { cwd: root, stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => (out += d));
    p.stderr.on("data", (d: Buffer) => (err += d));
    p.on("close", (code) => resolve({ code, out, err }));
  });
}

const EXAMPLES: Array<[name: string, allowed: RegExp, blocked: RegExp]> = [
  ["openai", /ALLOWED  openai chat\.completions\.create\(\{ model: 'gpt-4o-mini' \}\)\n\s+-> "(\w+ ?){8}"/, /BLOCKED  openai .*'gpt-4o' .*\n\s+-> PolicyDeniedError MESHGUARD_POLICY_DENIED .*llm openai\/gpt-4o/],
  ["anthropic", /ALLOWED  anthropic messages\.create\(\{ model: 'claude-haiku-4-5' \}\)\n\s+-> "(\w+ ?){8}"/, /BLOCKED  anthropic .*\n\s+-> PolicyDeniedError MESHGUARD_POLICY_DENIED .*llm anthropic\/claude-opus-4-1/],
  ["vercel-ai", /ALLOWED  ai streamText.*\n\s+-> "(\w+ ?){8}" \(streamed\)/, /BLOCKED  ai generateText.*\n\s+-> PolicyDeniedError MESHGUARD_POLICY_DENIED .*llm openai\/gpt-4o/],
  ["langchain", /ALLOWED  langchain .*'gpt-4o-mini'.*\n\s+-> "(\w+ ?){8}"/, /BLOCKED  langchain .*'gpt-4o'.*\n\s+-> PolicyDeniedError MESHGUARD_POLICY_DENIED .*llm openai\/gpt-4o/],
  ["mcp", /ALLOWED  mcp callTool search_docs.*\n\s+-> "2 hits for "tailnet" under \/docs\/guide \(for agent \(tag:agent\)\)"/, /BLOCKED  mcp callTool delete_doc.*\n\s+-> PolicyDeniedError MESHGUARD_POLICY_DENIED .*mcp docs delete_doc/],
];

describe("examples/sdk", () => {
  it.each(EXAMPLES)("%s: one call allowed and answered, one blocked with PolicyDeniedError at once, never reaching the server", async (name, allowed, blocked) => {
    const r = await run(name);
    const line = /^RESULT (.*)$/m.exec(r.out)?.[1];
    expect(line, `no RESULT line\n${r.out}\n${r.err}`).toBeDefined();
    const res = JSON.parse(line!) as { example: string; ok: boolean; allowed: Call; blocked: Call };
    expect(res.allowed, r.out + r.err).toMatchObject({ ok: true, reachedServer: true });
    expect(res.blocked, r.out + r.err).toMatchObject({ ok: false, error: "PolicyDeniedError", code: "MESHGUARD_POLICY_DENIED", policyDenied: true, reachedServer: false, denies: 1 });
    // At once: the SDKs' first retry waits ≥ 375 ms (openai, Anthropic), 2 s (the AI SDK), 1 s (LangChain).
    expect(res.blocked.ms, r.out).toBeLessThan(300);
    expect(r.out).toMatch(allowed);
    expect(r.out).toMatch(blocked);
    expect(r.code, r.err).toBe(0);
  }, 150_000);
});
