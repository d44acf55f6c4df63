// The first-dial stall probe of bench/tailnet --first-dial: one child process
// per system starts fresh node pairs again and again on the local headscale
// and times each client's first dial to its server, made the moment the
// client is online. The Go child is `tsnetbench firstdial`
// (go/cmd/tsnetbench/firstdial.go), the meshguard child mesh-first-dial.mjs;
// both print the same JSON lines.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startJsonChild } from './child.mjs';
import { GO_BENCH_BIN, nodeEnv } from './gopeer.mjs';

const MESH_FIRST_DIAL = fileURLToPath(new URL('./mesh-first-dial.mjs', import.meta.url));

/**
 * runFirstDial runs `pairs` fresh pairs of `system` ("meshguard" or
 * "go-tsnet") and returns { dialMs[], serverUpMs[], clientUpMs[] }, one entry
 * per pair in order. `onPair(line)` sees each pair as it completes.
 * `warmup` ("none" | "netmap") is passed to the Go child (see firstdial.go).
 *
 * @param {{ system: 'meshguard'|'go-tsnet', controlUrl: string, authKey: string,
 *           pairs: number, port?: number, warmup?: string, verbose?: boolean,
 *           pairTimeoutMs?: number, onPair?: (line: object) => void }} opts
 */
export async function runFirstDial({ system, controlUrl, authKey, pairs, port = 4243, warmup = 'none', verbose = false, pairTimeoutMs = 90_000, onPair = () => {} }) {
  if (system !== 'meshguard' && system !== 'go-tsnet') throw new TypeError(`runFirstDial: system must be meshguard or go-tsnet, got ${system}`);
  if (!Number.isSafeInteger(pairs) || pairs < 1) throw new TypeError(`runFirstDial: pairs must be a positive integer, got ${pairs}`);
  const env = nodeEnv();
  const dir = await mkdtemp(join(tmpdir(), 'firstdial-'));
  const tag = `${process.pid}-${Date.now().toString(36)}`;
  const [cmd, prefix, host] = system === 'meshguard' ? [process.execPath, [MESH_FIRST_DIAL], `fd-mg-${tag}`] : [GO_BENCH_BIN, [], `fd-go-${tag}`];
  const args = [...prefix, 'firstdial', '--control', controlUrl, '--authkey', authKey, '--dir', dir, '--hostname', host, '--pairs', String(pairs), '--port', String(port), '--warmup', warmup];
  if (verbose) args.push('--verbose');
  const child = startJsonChild(`${system} firstdial`, cmd, args, { env });
  const out = { dialMs: [], serverUpMs: [], clientUpMs: [] };
  try {
    for (let i = 0; i < pairs; i++) {
      const p = await child.next('pair', pairTimeoutMs);
      out.dialMs.push(p.dialMs);
      out.serverUpMs.push(p.serverUpMs);
      out.clientUpMs.push(p.clientUpMs);
      onPair(p);
    }
    await child.next('result', 30_000);
    await child.stop(15_000);
    return out;
  } finally {
    await child.stop(8_000).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}
