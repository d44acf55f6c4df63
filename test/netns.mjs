#!/usr/bin/env node
// Runs a command inside a fresh network namespace that holds only loopback,
// when this process may create one (root on Linux). Nothing started inside
// can reach any network but 127.0.0.1 — the guarantee every test, demo and
// benchmark of meshguard relies on. Elsewhere the command runs as is, with a
// warning (and under CI=true, an error).
//
//   node test/netns.mjs <command> [args...]
import { spawn, spawnSync } from "node:child_process";

const argv = process.argv.slice(2);
if (argv.length === 0) {
  process.stderr.write("usage: node test/netns.mjs <command> [args...]\n");
  process.exit(2);
}

const inside = process.env.MESHGUARD_NETNS === "1";
const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
let cmd = argv[0], args = argv.slice(1);
const env = { ...process.env };

if (!inside && isRoot && process.platform === "linux") {
  const probe = spawnSync("unshare", ["-n", "true"]);
  if (probe.status !== 0) {
    process.stderr.write(`[netns] cannot create a network namespace (unshare -n failed: ${probe.stderr}); install util-linux and run as root\n`);
    process.exit(1);
  }
  env.MESHGUARD_NETNS = "1";
  // `ip link set lo up` needs iproute2; fall back to no-op check below.
  const script = 'ip link set lo up || { echo "[netns] ip link set lo up failed: install iproute2" >&2; exit 1; }; exec "$@"';
  args = ["-n", "sh", "-c", script, "sh", cmd, ...args];
  cmd = "unshare";
} else if (!inside) {
  const msg = "[netns] not root: running without a fresh network namespace (tests still use only 127.0.0.1)";
  if (process.env.CI === "true") {
    process.stderr.write(msg.replace("running", "refusing to run") + "\n");
    process.exit(1);
  }
  process.stderr.write(msg + "\n");
}

const child = spawn(cmd, args, { stdio: "inherit", env });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
