import { existsSync, mkdtempSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { StateMirror, fileStateStore, memoryStateStore, type StateStore } from "./state-store.js";

const bytes = (s: string) => new TextEncoder().encode(s);
const tmp = () => mkdtempSync(join(tmpdir(), "mg-state-"));

describe("state stores", () => {
  it("memory: set, get (a copy), delete", async () => {
    const m = memoryStateStore();
    const v = bytes("a");
    await m.set("n/tailscaled.state", v);
    v[0] = 0;
    expect(new TextDecoder().decode((await m.get("n/tailscaled.state"))!)).toBe("a");
    await m.delete!("n/tailscaled.state");
    expect(await m.get("n/tailscaled.state")).toBeUndefined();
    expect(m.size).toBe(0);
  });

  it("file: one file per key, 0600, and keys that would leave the directory are refused", async () => {
    const dir = tmp();
    const f = fileStateStore(dir);
    await f.set("fn/tailscaled.state", bytes("{}"));
    expect(readFileSync(join(dir, "fn", "tailscaled.state"), "utf8")).toBe("{}");
    expect(statSync(join(dir, "fn", "tailscaled.state")).mode & 0o777).toBe(0o600);
    expect(new TextDecoder().decode((await f.get("fn/tailscaled.state"))!)).toBe("{}");
    for (const bad of ["../x", "a/../../x", "/etc/passwd", "", "a//b"]) expect(() => f.get(bad), bad).toThrow(/not a relative path of simple names/);
    await f.delete!("fn/tailscaled.state");
    expect(await f.get("fn/tailscaled.state")).toBeUndefined();
    expect(() => fileStateStore("")).toThrow(/dir must be a directory path/);
  });
});

describe("StateMirror: the core's working copy and the store in step", () => {
  it("load writes the stored state; a change of the file (written and renamed, as Tailscale does) reaches the store; a logout deletes it", async () => {
    const dir = join(tmp(), "node");
    const store = memoryStateStore();
    await store.set("fn/tailscaled.state", bytes("v1"));
    const warnings: Error[] = [];
    const m = new StateMirror(store, "fn/tailscaled.state", dir, (e) => warnings.push(e));
    await m.load();
    expect(readFileSync(join(dir, "tailscaled.state"), "utf8")).toBe("v1");
    m.watch();
    writeFileSync(join(dir, "tailscaled.state.tmp"), "v2");
    renameSync(join(dir, "tailscaled.state.tmp"), join(dir, "tailscaled.state"));
    await expect.poll(async () => new TextDecoder().decode((await store.get("fn/tailscaled.state"))!)).toBe("v2");
    writeFileSync(join(dir, "tailscaled.state"), "v3");
    await m.close(false); // the last change is handed over at close, watched or not
    expect(new TextDecoder().decode((await store.get("fn/tailscaled.state"))!)).toBe("v3");
    await m.close(true);
    expect(await store.get("fn/tailscaled.state")).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  it("an empty store means a new node (no working copy); a store that fails to read fails the start; one that fails to write warns", async () => {
    const dir = tmp();
    writeFileSync(join(dir, "tailscaled.state"), "stale");
    await new StateMirror(memoryStateStore(), "k", dir, () => {}).load();
    expect(existsSync(join(dir, "tailscaled.state"))).toBe(false);

    const broken: StateStore = {
      get: () => Promise.reject(new Error("kv down")),
      set: () => {
        throw new Error("kv full");
      },
    };
    await expect(new StateMirror(broken, "k", dir, () => {}).load()).rejects.toThrow(/state: the store's get\("k"\) failed: kv down/);
    const warnings: Error[] = [];
    const m = new StateMirror({ ...broken, get: () => undefined }, "k", dir, (e) => warnings.push(e));
    await m.load();
    writeFileSync(join(dir, "tailscaled.state"), "v");
    await m.close(false);
    expect(warnings.map((w) => w.message)).toEqual([expect.stringMatching(/set\("k"\) failed .*kv full/)]);
    await expect(new StateMirror({ get: () => "text" as unknown as Uint8Array, set: () => {} }, "k", dir, () => {}).load()).rejects.toThrow(/returned string, not a Uint8Array/);
  });
});
