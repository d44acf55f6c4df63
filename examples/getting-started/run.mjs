#!/usr/bin/env node
// Getting started, in one command: a local tailnet (headscale on 127.0.0.1)
// with the policy in tailnet.hujson, a token issuer, the billing service
// (service.mjs) and an agent (agent.mjs), each in its own process as they
// would be on separate machines. What `meshguard dev` and an admin would set
// up by hand is done here; docs/getting-started.md walks through each file.
//
// Run: node examples/getting-started/run.mjs   (as root: node test/netns.mjs node examples/getting-started/run.mjs)
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MeshNode } from "meshguard";
import { ensureHeadscale, LocalControl } from "meshguard/control";
import { tailnetPart } from "meshguard/policy";
import { startTokenIssuer } from "meshguard/tokens";

const here = (f) => fileURLToPath(new URL(f, import.meta.url));
const policyFile = here("tailnet.hujson");

await ensureHeadscale({ onProgress: (e) => console.log(`[setup] ${e.message}`) });
const control = await LocalControl.start();
/** @type {import("node:child_process").ChildProcess[]} */
const children = [];
let issuerNode;
let issuer;
try {
  await control.createUser("dev");
  // The admin's part: the tailnet policy (without the meshguard key) goes to the control server.
  await control.setPolicy(tailnetPart(readFileSync(policyFile, "utf8")));
  const key = (tag) => control.createAuthKey({ tags: [tag], ephemeral: true, expiration: "10m" });

  // The token issuer (`meshguard tokens serve` does the same): token rules from the same file.
  issuerNode = await MeshNode.start({ controlUrl: control.url, authKey: await key("tag:tokens"), hostname: "tokens", ephemeral: true });
  issuer = await startTokenIssuer({ node: issuerNode, policyFile });

  /** Starts one of the example programs with its control URL and auth key; resolves when `ready` is printed (or at exit). */
  const launch = (file, tag, ready) =>
    key(tag).then(
      (authKey) =>
        new Promise((resolve, reject) => {
          const child = spawn(process.execPath, [here(file)], {
            env: { ...process.env, MESHGUARD_CONTROL_URL: control.url, MESHGUARD_AUTH_KEY: authKey },
            stdio: ["ignore", "pipe", "inherit"],
          });
          children.push(child);
          let seen = false;
          child.stdout.setEncoding("utf8").on("data", (text) => {
            process.stdout.write(text);
            if (!seen && ready && text.includes(ready)) (seen = true), resolve(child);
          });
          child.on("error", reject);
          child.on("exit", (code) => (seen ? undefined : code === 0 ? resolve(child) : reject(new Error(`${file} exited with ${code}`))));
        }),
    );

  await launch("service.mjs", "tag:service", "listening");
  const agent = await launch("agent.mjs", "tag:agent");
  process.exitCode = agent.exitCode ?? 1;
} finally {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  await issuer?.close();
  await issuerNode?.close();
  await control.close();
}
