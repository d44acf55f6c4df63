#!/usr/bin/env node
// The serverless example, locally, with one command: `npm run example:serverless`.
//
// A local control server (headscale on 127.0.0.1), a `tools` service on the
// tailnet, and function.mjs in a separate process (local-runtime.mjs: one
// warm instance, on the wasm core unless MESHGUARD_BACKEND says otherwise). It invokes the function three times —
// one cold start, then two concurrent warm invocations on the same node —
// then sends the instance SIGTERM and shows that its ephemeral node left
// the tailnet.
import { fork } from "node:child_process";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { MeshNode } from "meshguard";
import { LocalControl } from "meshguard/control";

const policy = {
  tagOwners: { "tag:tools": ["alice@"], "tag:fn": ["alice@"] },
  grants: [{ src: ["tag:fn"], dst: ["tag:tools"], ip: ["tcp:80"] }],
};
const log = (m) => console.log(`[serverless] ${m}`);

const control = await LocalControl.start({ policy });
let tools;
let instance;
try {
  await control.createUser("alice");
  tools = await MeshNode.start({
    controlUrl: control.url,
    authKey: await control.createAuthKey({ tags: ["tag:tools"], ephemeral: true, expiration: "10m" }),
    hostname: "tools",
    ephemeral: true,
    controlSocket: false,
  });
  const app = http.createServer(async (req, res) => {
    const who = await tools.whois(req.socket.remoteAddress);
    res.end(`tools saw ${req.method} ${req.url} from ${who.node.name.split(".")[0]} (${who.node.tags.join(",")})`);
  });
  (await tools.listen(80)).on("connection", (s) => app.emit("connection", s));
  log(`control at ${control.url}; tools is up`);

  const env = {
    ...process.env,
    MESHGUARD_CONTROL_URL: control.url,
    MESHGUARD_AUTH_KEY: await control.createAuthKey({ tags: ["tag:fn"], reusable: true, ephemeral: true, expiration: "10m" }),
    // Where no addon loads, as on many function platforms (MESHGUARD_BACKEND=native compares).
    MESHGUARD_BACKEND: process.env.MESHGUARD_BACKEND ?? "wasm",
  };
  const t0 = performance.now();
  instance = fork(fileURLToPath(new URL("./local-runtime.mjs", import.meta.url)), { env });
  const exited = new Promise((r) => instance.once("exit", (code, signal) => r(signal ?? code)));
  const waiting = new Map();
  let nextId = 0;
  instance.on("message", (m) => waiting.get(m.id ?? "ready")?.(m));
  await new Promise((r) => waiting.set("ready", r));
  const invoke = (event) =>
    new Promise((resolve, reject) => {
      const id = ++nextId;
      waiting.set(id, (m) => (m.error ? reject(new Error(m.error)) : resolve(m)));
      instance.send({ id, event });
    });

  const cold = await invoke({ q: "cold" });
  log(`cold invocation: ${cold.result.statusCode} "${cold.result.body}" in ${cold.ms.toFixed(0)} ms (${(performance.now() - t0).toFixed(0)} ms from process start)`);
  const warm = await Promise.all([invoke({ q: "warm-1" }), invoke({ q: "warm-2" })]);
  for (const w of warm) log(`warm invocation: ${w.result.statusCode} "${w.result.body}" in ${w.ms.toFixed(0)} ms`);
  const fns = (await control.listNodes()).filter((n) => n.tags.includes("tag:fn"));
  log(`nodes of tag:fn on the tailnet: ${fns.length} (one per warm instance: ${new Set([cold, ...warm].map((x) => x.result.node)).size} node name(s) seen)`);

  instance.kill("SIGTERM");
  log(`instance ended by ${await exited}`);
  const left = (await control.listNodes()).filter((n) => n.tags.includes("tag:fn"));
  log(`nodes of tag:fn after shutdown: ${left.length}${left.length === 0 ? " (the handler logged its ephemeral node out)" : ""}`);
  if (left.length !== 0 || fns.length !== 1) process.exitCode = 1;
} finally {
  instance?.kill("SIGKILL");
  await tools?.close();
  await control.close();
}
