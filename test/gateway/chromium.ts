// Headless Chromium for the console tests: Debian's `chromium`, driven by
// playwright-core (which downloads no browser of its own).
//
//   - installChromium() runs `apt-get install -y chromium` when it is
//     missing (root only, and only outside the tests' network namespace,
//     which has no network: `npm test` runs `node test/gateway/chromium.ts
//     install` before entering it);
//   - chromiumUnavailable() says why the browser tests cannot run here.
//
// This file imports only node: built-ins and bench/lib/apt.mjs (plain
// JavaScript), so Node runs it as is.
import { existsSync } from "node:fs";
import { aptInstall } from "../../bench/lib/apt.mjs";

/** Where Debian's package puts the browser (what the tests launch). */
export const CHROMIUM = process.env.MESHGUARD_CHROMIUM ?? "/usr/bin/chromium";

const progress = (m: string) => process.stderr.write(`[chromium] ${m}\n`);
const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;
const inNetns = () => process.env.MESHGUARD_NETNS === "1";

/** installChromium installs Debian's chromium when it is missing; undefined when it is there, else why it is not. */
export function installChromium(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  if (!isRoot()) return `Chromium is not installed (${CHROMIUM}) and this process is not root: install Debian's chromium (apt-get install chromium) to run the console's browser tests`;
  if (inNetns()) return "Chromium is not installed, and this network namespace has no network to install it: run `node test/gateway/chromium.ts install` (npm test does) first";
  progress("Chromium is not installed: apt-get install -y chromium (a minute or two)");
  // The package lists may be missing or stale: aptInstall updates them once and tries again.
  const failed = aptInstall("chromium");
  if (failed) return `${failed}: install Debian's chromium by hand`;
  return existsSync(CHROMIUM) ? undefined : `apt-get installed chromium, but there is no ${CHROMIUM}`;
}

/** Why the browser tests cannot run here, or undefined when they can. */
export function chromiumUnavailable(): string | undefined {
  return installChromium();
}

if (process.argv[1]?.endsWith("chromium.ts") && process.argv[2] === "install") {
  const why = installChromium();
  if (why) {
    progress(`not available: ${why} (the console's browser tests will be skipped)`);
  } else progress(`Chromium at ${CHROMIUM}`);
}
