// The addon keeps resident only the read-only pages it uses (go/addon/pages.c,
// docs/core.md "Memory"): loading it reads the whole relocation table, and
// the runtime's start walks its tables, but those pages are released once
// the runtime runs.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MeshNode } from "../../src/index.js";
import { startTailnet, type Tailnet } from "./tailnet.js";

let tn: Tailnet;
let node: MeshNode;

beforeAll(async () => {
  tn = await startTailnet(false);
  node = await tn.start("memory", { tags: ["tag:agent-a"] });
});

afterAll(async () => {
  await node?.close();
  await tn?.control.close();
});

/** addonMappings are the addon's mappings in /proc/self/smaps: perms, file offset, size and resident KiB. */
function addonMappings(): { perms: string; offset: number; sizeKiB: number; rssKiB: number }[] {
  const out: { perms: string; offset: number; sizeKiB: number; rssKiB: number }[] = [];
  let cur: (typeof out)[number] | undefined;
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const m = line.match(/^[0-9a-f]+-[0-9a-f]+ (\S+) ([0-9a-f]+) \S+ \S+\s+(.*)$/);
    if (m) {
      cur = /meshguard(-testhooks)?\.node$/.test(m[3]!) ? { perms: m[1]!, offset: parseInt(m[2]!, 16), sizeKiB: 0, rssKiB: 0 } : undefined;
      if (cur) out.push(cur);
      continue;
    }
    const k = line.match(/^(Size|Rss):\s+(\d+) kB/);
    if (k && cur) cur[k[1] === "Size" ? "sizeKiB" : "rssKiB"] = Number(k[2]);
  }
  return out;
}

describe.runIf(process.platform === "linux" && process.env.MESHGUARD_BACKEND !== "wasm")("addon pages", () => {
  it("the relocation table the loader read once is no longer resident once a node is online", () => {
    const maps = addonMappings();
    expect(maps.length, "the addon is mapped in this process").toBeGreaterThan(0);
    // The first segment (file offset 0) holds the ELF headers, the dynamic
    // symbols and .rela.dyn (~2.5 MB): read whole by the dynamic linker,
    // never again.
    const first = maps.find((m) => m.offset === 0 && m.perms === "r--p");
    expect(first, "the addon's first read-only segment").toBeDefined();
    expect(first!.sizeKiB).toBeGreaterThan(1024);
    expect(first!.rssKiB, `resident ${first!.rssKiB} of ${first!.sizeKiB} KiB`).toBeLessThan(first!.sizeKiB / 4);
  });
});

describe("modules", () => {
  it("a node's start and first dial load no zod and no cluster module; a bad option still gets zod's message", async () => {
    const fixture = fileURLToPath(new URL("./fixtures/start-modules.mjs", import.meta.url));
    const child = spawn(process.execPath, [fixture, tn.control.url, await tn.key(["tag:agent-a"]), await tn.key(["tag:service"]), join(tn.stateDir, "modules")], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code).toBe(0);
    const r = JSON.parse(out.trim().split("\n").at(-1)!) as { got: string; afterDial: string[]; builtins: string[]; sockets: (string | null)[]; invalid: string; zodAfterInvalid: boolean };
    expect(r.got).toBe("bye");
    expect(r.afterDial.some((u) => u.endsWith("/dist/index.js"))).toBe(true);
    expect(r.afterDial.filter((u) => /\/zod\//.test(u))).toEqual([]);
    // Both nodes serve their control socket, and binding it loaded neither
    // cluster nor what cluster loads (net.Server.listen would: ~1 MB).
    expect(r.sockets.every((p) => typeof p === "string" && p.endsWith(".sock"))).toBe(true);
    expect(r.builtins).toContain("net");
    expect(r.builtins.filter((m) => /^(cluster|child_process|dgram)$/.test(m))).toEqual([]);
    expect(r.invalid).toMatch(/^invalid MeshNode.start options: hostname: must be a DNS label/);
    expect(r.zodAfterInvalid).toBe(true);
  }, 60_000);
});
