// `meshguard connect` end to end against a real headscale: in-process with
// --json, and the installed executable (dist/cli/main.js) printing the
// client settings, serving through them, and stopping on SIGINT.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/run.js";
import type { MeshNode } from "../../src/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";
import { DIGEST_PORT, exchange, serveDigest, serveWho, who } from "./service.js";

const MAIN = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

let tn: Tailnet;
let service: MeshNode;
let keyFile: string;

beforeAll(async () => {
  tn = await startTailnet(false);
  service = await tn.start("service", { tags: ["tag:service"] });
  await serveWho(service);
  await serveDigest(service);
  keyFile = join(mkdtempSync(join(tmpdir(), "mg-connect-cli-")), "laptop.key");
  writeFileSync(keyFile, `${await tn.key(["tag:agent-a"])}\n`, { mode: 0o600 });
});

afterAll(async () => {
  await service?.close();
  await tn?.control.close();
});

/** start runs `meshguard connect ARGV` in-process; `lines` yields its stdout lines as they come. */
function start(argv: string[]) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let err = "";
  stderr.on("data", (d) => (err += d));
  const abort = new AbortController();
  const lines = createInterface({ input: stdout })[Symbol.asyncIterator]();
  const exit = runCli(["connect", ...argv], { stdout, stderr, signal: abort.signal });
  return { exit, lines, stop: () => abort.abort(), stderr: () => err, onStderr: (f: (s: string) => void) => stderr.on("data", (d) => f(String(d))) };
}

describe("meshguard connect (in-process)", () => {
  it("--json: one document with each forward's URL and client settings; traffic carries the node's identity; stops cleanly", async () => {
    const run = start(["service:80", `service:${DIGEST_PORT}`, "--listen", "127.0.0.1:0", "--control", tn.control.url, "--auth-key-file", keyFile, "--hostname", "cli-json", "--json"]);
    const doc = JSON.parse((await run.lines.next()).value as string);
    expect(doc.name).toMatch(/^cli-json\./);
    expect(doc.forwards).toHaveLength(2);
    const [a, b] = doc.forwards;
    expect(a).toEqual({ target: "service:80", listen: { host: "127.0.0.1", port: expect.any(Number) }, url: `http://127.0.0.1:${a.listen.port}`, env: { OPENAI_BASE_URL: `http://127.0.0.1:${a.listen.port}/v1`, ANTHROPIC_BASE_URL: `http://127.0.0.1:${a.listen.port}` } });
    expect(b.target).toBe(`service:${DIGEST_PORT}`);
    // The second target had no --listen: it got a free loopback port of its own.
    expect(b.listen.host).toBe("127.0.0.1");
    expect(b.listen.port).not.toBe(a.listen.port);

    const seen = await who(`${a.env.OPENAI_BASE_URL}/models`);
    expect(seen).toMatchObject({ hostname: "cli-json", tags: ["tag:agent-a"], path: "/v1/models" });
    expect(await exchange(b.listen.port, "abc")).toMatch(/^3 ba7816bf/);
    expect(run.stderr()).toMatch(/meshguard connect: online as cli-json\./);

    run.stop();
    expect(await run.exit).toBe(0);
    expect(run.stderr()).toMatch(/meshguard connect: stopping \(abort\)\n$/);
    await expect.poll(async () => (await tn.control.listNodes()).some((n) => n.name === "cli-json")).toBe(false);
  });

  it("stopped while the node is joining: status 130, nothing left listening", async () => {
    const run = start(["service:80", "--listen", "127.0.0.1:0", "--control", tn.control.url, "--auth-key-file", keyFile, "--hostname", "cli-early"]);
    run.onStderr((s) => s.includes("loading") && run.stop());
    expect(await run.exit).toBe(130);
    expect((await tn.control.listNodes()).some((n) => n.name === "cli-early")).toBe(false);
  });

  it("usage errors exit 2; a non-loopback --listen exits 1 with MESHGUARD_INVALID_OPTIONS", async () => {
    const saved = process.env.TS_CONTROL_URL;
    delete process.env.TS_CONTROL_URL;
    try {
      const cases: [string[], RegExp][] = [
        [["--control", tn.control.url], /expected HOST:PORT, got none/],
        [["service:80"], /expected --control URL \(or TS_CONTROL_URL\)/],
        [["service:80", "--listen", "1", "--listen", "2", "--control", tn.control.url], /2 --listen for 1 target\(s\)/],
        [["service:80", "--control", tn.control.url, "--auth-key", "k", "--auth-key-file", keyFile], /give --auth-key or --auth-key-file, not both/],
      ];
      for (const [argv, re] of cases) {
        const run = start(argv);
        expect(await run.exit, argv.join(" ")).toBe(2);
        expect(run.stderr()).toMatch(re);
      }
    } finally {
      if (saved !== undefined) process.env.TS_CONTROL_URL = saved;
    }
    const run = start(["service:80", "--listen", "0.0.0.0:4000", "--control", tn.control.url, "--auth-key-file", keyFile, "--json"]);
    expect(await run.exit).toBe(1);
    const doc = JSON.parse((await run.lines.next()).value as string);
    expect(doc.error.code).toBe("MESHGUARD_INVALID_OPTIONS");
    expect(doc.error.message).toMatch(/forwards\.0\.listen: 0\.0\.0\.0 is not a loopback address/);
  });
});

describe("meshguard connect (the installed executable)", () => {
  it("prints the settings to use, serves through them, and leaves the tailnet on SIGINT", async () => {
    expect(existsSync(MAIN), "dist/cli/main.js is missing: run node test/build.mjs first").toBe(true);
    // The control URL and key from the environment, as TS_CONTROL_URL / TS_AUTHKEY.
    const child = spawn(process.execPath, [MAIN, "connect", "service:80", "--listen", "0", "--hostname", "cli-exe"], {
      env: { ...process.env, TS_CONTROL_URL: tn.control.url, TS_AUTHKEY: await tn.key(["tag:agent-a"]) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    try {
      let out = "";
      for await (const line of createInterface({ input: child.stdout! })) {
        out += line + "\n";
        if (line.startsWith("Connections reach the tailnet")) break;
      }
      const port = /^ {2}http:\/\/127\.0\.0\.1:(\d+) -> service:80$/m.exec(out)?.[1];
      expect(port, out + stderr).toBeDefined();
      expect(out).toMatch(/^connected as cli-exe\.\S+ \(100\.[\d.]+, fd7a:[0-9a-f:]+\); forwarding:$/m);
      expect(out).toContain(`      export OPENAI_BASE_URL=http://127.0.0.1:${port}/v1\n`);
      expect(out).toContain(`      export ANTHROPIC_BASE_URL=http://127.0.0.1:${port}\n`);
      expect(out).toContain(`      curl http://127.0.0.1:${port}/v1/models\n`);
      // The printed settings work, with the node's identity.
      expect(await who(`http://127.0.0.1:${port}/v1/models`)).toMatchObject({ hostname: "cli-exe", tags: ["tag:agent-a"] });
      expect(stderr).toMatch(/meshguard connect: online as cli-exe/);

      child.kill("SIGINT");
      const [code] = await once(child, "exit");
      expect(code, stderr).toBe(0);
      expect(stderr).toMatch(/stopping \(SIGINT\)/);
      expect((await tn.control.listNodes()).some((n) => n.name === "cli-exe")).toBe(false);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
