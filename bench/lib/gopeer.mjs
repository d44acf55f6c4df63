// The pure-Go peer: two `tsnetbench` processes (go/cmd/tsnetbench), a server
// node and a client node on the same local tailnet. Its figures are what
// tailscale.com/tsnet costs without Node or meshguard.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startJsonChild } from './child.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** GO_BENCH_BIN is where buildGoBench puts the binary. */
export const GO_BENCH_BIN = join(ROOT, 'build', 'tsnetbench');

/**
 * TAILSCALE_SAFE_ENV keeps a tsnet node off Tailscale's public services
 * (log upload, port mapping on the LAN gateway, public control) and lets it
 * use the local DERP over plain HTTP. Several of these are read during Go
 * package initialisation, so they go in the child's environment;
 * tsnetbench refuses to start without them.
 */
export const TAILSCALE_SAFE_ENV = Object.freeze({
  TS_NO_LOGS_NO_SUPPORT: 'true',
  TS_DISABLE_PORTMAPPER: '1',
  TS_DISABLE_UPNP: '1',
  TS_DEBUG_USE_DERP_HTTP: '1',
  TS_PANIC_IF_HIT_MAIN_CONTROL: '1',
});

/**
 * NETNS_ENV lets a node work in a network namespace that has only loopback
 * (how benches and tests run, DESIGN.md): without it the node sees no usable
 * interface, pauses its control client and never comes up. It changes
 * nothing where a real interface exists.
 */
export const NETNS_ENV = Object.freeze({ TS_ASSUME_NETWORK_UP_FOR_TEST: '1' });

/**
 * nodeEnv is the environment of a child process that runs tailnet nodes:
 * the safety and namespace knobs above, `extra`, and no TS_AUTHKEY /
 * TS_CONTROL_URL (the flags are authoritative; stray env fallbacks must not
 * change what is measured).
 */
export function nodeEnv(extra = {}) {
  const env = { ...process.env, ...TAILSCALE_SAFE_ENV, ...NETNS_ENV, ...extra };
  delete env.TS_AUTHKEY;
  delete env.TS_CONTROL_URL;
  return env;
}

/**
 * buildGoBench builds go/cmd/tsnetbench into build/tsnetbench with the
 * installed Go toolchain (GOTOOLCHAIN=local: never download another) and
 * returns the binary's path.
 *
 * @param {{ goBin?: string, out?: string }} [opts]
 */
export async function buildGoBench({ goBin = 'go', out = GO_BENCH_BIN } = {}) {
  const args = ['build', '-o', out, './cmd/tsnetbench'];
  const child = spawn(goBin, args, {
    cwd: join(ROOT, 'go'),
    env: { ...process.env, GOTOOLCHAIN: 'local' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => (err += s));
  const [code, spawnErr] = await new Promise((resolve) => {
    child.on('error', (e) => resolve([null, e]));
    child.on('close', (c) => resolve([c, null]));
  });
  if (spawnErr) throw new Error(`buildGoBench: cannot run ${goBin}: ${spawnErr.message}`, { cause: spawnErr });
  if (code !== 0) throw new Error(`buildGoBench: ${goBin} ${args.join(' ')} (in go/) failed with status ${code}:\n${err.trim()}`);
  return out;
}

/**
 * runGoPeer starts `tsnetbench serve` and, once it is online, `tsnetbench
 * client` aimed at the server's first tailnet IP; collects the client's
 * result, stops the server (which logs its ephemeral node out) and returns:
 *
 *   onlineMs          client: spawn → "online" line, seen from this process
 *                     (process start, Go init, tsnet Start, Up)
 *   serverOnlineMs    the same for the server
 *   inProcess         { server, client } each { ms, upMs } as the child
 *                     reports: from main() entry, and from Server.Start,
 *                     to Up returning
 *   dialMs[], rttUs[], throughputMiBps, bytes   the client's measurements
 *   cpuPerRttUs, cpuPerMiBMs   the client process's CPU time (all threads)
 *                     per round trip and per MiB sent (meshguard peers only)
 *   clientRssKiB, clientRssPeakKiB              client VmRSS / VmHWM after the run
 *   serverRssKiB, serverRssPeakKiB              server VmRSS / VmHWM after the run
 *   clientRssOnlineKiB, serverRssOnlineKiB      VmRSS when each came online
 *   path              how the client reached the server after the run:
 *                     "direct <ip:port>", "derp <region>", or ""
 *   serverIps         the server's tailnet addresses
 *
 * Both keys must be valid for the control server at `controlUrl` (an
 * IP-literal http URL); reusable ephemeral keys allow repeated runs. Run it
 * inside a network namespace that has only loopback (see DESIGN.md).
 *
 * @param {{ controlUrl: string, serverKey: string, clientKey: string,
 *           rtt: number, bytes: number, goBin?: string, dials?: number,
 *           port?: number, upTimeoutMs?: number, runTimeoutMs?: number }} opts
 */
export async function runGoPeer({
  controlUrl,
  serverKey,
  clientKey,
  rtt,
  bytes,
  goBin = GO_BENCH_BIN,
  dials = 5,
  port = 4242,
  upTimeoutMs = 45_000,
  runTimeoutMs = 300_000,
  prefixArgs = [],
  label = 'tsnetbench',
  hostPrefix = 'bench-go',
  extraEnv = {},
}) {
  if (typeof controlUrl !== 'string' || !/^https?:\/\/(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d+\/?$/.test(controlUrl)) {
    throw new TypeError(`runGoPeer: controlUrl must be http(s)://<IP literal>:<port>, got ${controlUrl}`);
  }
  for (const [k, v] of [['serverKey', serverKey], ['clientKey', clientKey]]) {
    if (typeof v !== 'string' || v === '') throw new TypeError(`runGoPeer: ${k} must be a non-empty string`);
  }
  for (const [k, v] of [['rtt', rtt], ['bytes', bytes], ['dials', dials], ['port', port]]) {
    if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`runGoPeer: ${k} must be a positive integer, got ${v}`);
  }

  const env = nodeEnv(extraEnv);
  const dir = await mkdtemp(join(tmpdir(), 'tsnetbench-'));
  const tag = `${process.pid}-${Date.now().toString(36)}`;
  const node = (role, key) => [
    '--control', controlUrl,
    '--authkey', key,
    '--dir', join(dir, role),
    '--hostname', `${hostPrefix}-${role}-${tag}`,
  ];

  let server;
  let client;
  try {
    server = startJsonChild(`${label} serve`, goBin, [...prefixArgs, 'serve', ...node('server', serverKey), '--port', String(port)], { env });
    const sOnline = await server.next('online', upTimeoutMs);
    if (!sOnline.ips?.length) throw new Error('tsnetbench serve: online without tailnet addresses');
    const host = sOnline.ips.find((ip) => !ip.includes(':')) ?? `[${sOnline.ips[0]}]`;

    client = startJsonChild(
      `${label} client`,
      goBin,
      [...prefixArgs, 'client', ...node('client', clientKey), '--target', `${host}:${port}`, '--rtt', String(rtt), '--bytes', String(bytes), '--dials', String(dials)],
      { env },
    );
    const cOnline = await client.next('online', upTimeoutMs);
    const result = await client.next('result', runTimeoutMs);
    await client.stop(15_000);
    const { lines } = await server.stop(15_000);
    const sStopped = lines.find((l) => l.event === 'stopped');

    return {
      onlineMs: cOnline.at - client.t0,
      serverOnlineMs: sOnline.at - server.t0,
      inProcess: {
        server: { ms: sOnline.ms, upMs: sOnline.upMs },
        client: { ms: cOnline.ms, upMs: cOnline.upMs },
      },
      dialMs: result.dialMs,
      firstByteMs: result.firstByteMs,
      rttUs: result.rttUs,
      cpuPerRttUs: result.cpuPerRttUs,
      throughputMiBps: result.throughputMiBps,
      cpuPerMiBMs: result.cpuPerMiBMs,
      bytes: result.bytes,
      clientRssKiB: result.rssKiB,
      clientRssPeakKiB: result.rssPeakKiB,
      serverRssKiB: sStopped?.rssKiB,
      serverRssPeakKiB: sStopped?.rssPeakKiB,
      clientRssOnlineKiB: cOnline.rssKiB,
      serverRssOnlineKiB: sOnline.rssKiB,
      path: result.path,
      serverIps: sOnline.ips,
      clientLoopDelayMs: result.loopDelayMs,
      serverLoopDelayMs: sStopped?.loopDelayMs,
    };
  } finally {
    // On the error path: ask politely first (stdin EOF → logout, close), so
    // the ephemeral nodes leave the control server now; stop() SIGKILLs a
    // child that does not exit in time. Children already stopped return at once.
    await client?.stop(8_000).catch(() => {});
    await server?.stop(8_000).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}
