// bench/tailnet --nodes: many nodes in one process. One run starts a fresh
// local headscale with the run's policy, a service node in a process of its
// own (mesh-peer.mjs serve: the bench protocol on port 4242), then one child
// process holding N nodes of one system — mesh-nodes.mjs (meshguard) or
// `tsnetbench nodes` (pure Go tsnet, go/cmd/tsnetbench/nodes.go) — each of
// which reaches the service with one echo round trip.
//
// Policies (headscale trims each node's netmap to the peers policy lets it
// talk to, in either direction):
//   trimmed     agents may reach the service only: an agent's netmap holds
//               one peer (the service's holds every agent)
//   all-to-all  every node may reach every node: every netmap holds N peers
//
// headscale's share is measured too: its CPU time (user + system, from
// /proc/<pid>/stat) and resident memory while the N nodes come up.

import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalControl } from '../../dist/control/index.js';
import { startJsonChild } from './child.mjs';
import { GO_BENCH_BIN, nodeEnv } from './gopeer.mjs';

const MESH_NODES = fileURLToPath(new URL('./mesh-nodes.mjs', import.meta.url));
const MESH_PEER = fileURLToPath(new URL('./mesh-peer.mjs', import.meta.url));
const SERVICE_PORT = 4242;

/** MODES are the policies a --nodes run is measured under. */
export const MODES = Object.freeze(['trimmed', 'all-to-all']);

/** policyFor returns the tailnet policy of a mode (tags owned by the bench user). */
export function policyFor(mode) {
  const tagOwners = { 'tag:agent': ['bench@'], 'tag:service': ['bench@'] };
  if (mode === 'trimmed') return { tagOwners, grants: [{ src: ['tag:agent'], dst: ['tag:service'], ip: [`tcp:${SERVICE_PORT}`] }] };
  if (mode === 'all-to-all') return { tagOwners, grants: [{ src: ['tag:agent', 'tag:service'], dst: ['tag:agent', 'tag:service'], ip: ['*'] }] };
  throw new TypeError(`policyFor: mode must be one of ${MODES.join(', ')}, got ${mode}`);
}

/** procStat reads a process's CPU time (s) and resident memory (MB) from /proc; zeros off Linux. */
function procStat(pid) {
  try {
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th (clock ticks, 100/s on Linux).
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    const cpuS = (Number(f[11]) + Number(f[12])) / 100;
    const rssKiB = Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0);
    return { cpuS, rssMB: rssKiB / 1024 };
  } catch {
    return { cpuS: 0, rssMB: 0 };
  }
}

/**
 * runManyNodes runs one measurement and returns what the child reported
 * (NodesResult: n, concurrency, firstMs, allOnlineMs, allReachedMs, upMs[],
 * reachMs[], rss1KiB, rssAllKiB, rssSettledKiB, rssPeakKiB, loopDelayMs,
 * loadedKiB) plus { perNodeMB, closeMs, headscale: { cpuS, rssMB }, nodesCpuS,
 * serviceCpuS }.
 * perNodeMB is (settled RSS with N nodes − RSS with 1 node) / (N − 1).
 *
 * keys: 'unhashed' (default) registers the nodes with pre-auth keys headscale
 * compares as they are, 'hashed' with headscale's own bcrypt-hashed keys
 * (~60 ms of headscale CPU per registering node; LocalControl.createAuthKey's
 * `hashed` option, docs/core.md "Where the limit is").
 *
 * @param {{ system: 'meshguard'|'go-tsnet', mode: 'trimmed'|'all-to-all', n: number,
 *           concurrency: number, keys?: 'hashed'|'unhashed', progress?: (m: string) => void, timeoutMs?: number }} opts
 */
export async function runManyNodes({ system, mode, n, concurrency, keys = 'unhashed', progress = () => {}, timeoutMs = 600_000 }) {
  if (keys !== 'hashed' && keys !== 'unhashed') throw new TypeError(`runManyNodes: keys must be hashed or unhashed, got ${keys}`);
  if (system !== 'meshguard' && system !== 'go-tsnet') throw new TypeError(`runManyNodes: system must be meshguard or go-tsnet, got ${system}`);
  if (!Number.isSafeInteger(n) || n < 2) throw new TypeError(`runManyNodes: n must be an integer ≥ 2, got ${n}`);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new TypeError(`runManyNodes: concurrency must be a positive integer, got ${concurrency}`);
  const env = nodeEnv();
  const dir = await mkdtemp(join(tmpdir(), 'manynodes-'));
  const tag = `${process.pid}-${Date.now().toString(36)}`;
  let control, service, child;
  try {
    control = await LocalControl.start({ policy: policyFor(mode) });
    await control.createUser('bench');
    const key = (t) => control.createAuthKey({ tags: [t], reusable: true, ephemeral: true, expiration: '1h', hashed: keys === 'hashed' });
    const [serviceKey, agentKey] = [await key('tag:service'), await key('tag:agent')];
    service = startJsonChild('service (mesh-peer serve)', process.execPath, [MESH_PEER, 'serve', '--control', control.url, '--authkey', serviceKey, '--dir', join(dir, 'service'), '--hostname', `svc-${tag}`, '--port', String(SERVICE_PORT)], { env });
    const svc = await service.next('online', 60_000);
    const svcIp = svc.ips.find((ip) => !ip.includes(':')) ?? `[${svc.ips[0]}]`;

    const [cmd, prefix] = system === 'meshguard' ? [process.execPath, [MESH_NODES]] : [GO_BENCH_BIN, []];
    const args = [...prefix, 'nodes', '--control', control.url, '--authkey', agentKey, '--dir', join(dir, 'agents'), '--hostname', `${system === 'meshguard' ? 'mg' : 'go'}-${tag}`, '--n', String(n), '--concurrency', String(concurrency), '--target', `${svcIp}:${SERVICE_PORT}`];
    const hs0 = procStat(control.pid);
    const svc0 = procStat(service.pid);
    child = startJsonChild(`${system} nodes`, cmd, args, { env });
    const loaded = await child.next('loaded', 60_000);
    const first = await child.next('first', 120_000);
    progress(`  ${system} ${mode}: node 1 reached the service in ${first.ms.toFixed(0)} ms; starting ${n - 1} more, ${concurrency} at a time`);
    const r = await child.next('result', timeoutMs);
    const hs1 = procStat(control.pid);
    const svc1 = procStat(service.pid);
    const nodes1 = procStat(child.pid);
    const { lines } = await child.stop(120_000);
    const stopped = lines.find((l) => l.event === 'stopped');
    return {
      ...r,
      loadedKiB: loaded.rssKiB,
      perNodeMB: (r.rssSettledKiB - r.rss1KiB) / 1024 / (n - 1),
      closeMs: stopped?.closeMs,
      headscale: { cpuS: hs1.cpuS - hs0.cpuS, rssMB: hs1.rssMB },
      // CPU time of the process holding the N nodes (from its start to the
      // result, 2 s of settling included) and of the service node meanwhile.
      nodesCpuS: nodes1.cpuS,
      serviceCpuS: svc1.cpuS - svc0.cpuS,
    };
  } finally {
    await child?.stop(60_000).catch(() => {});
    await service?.stop(15_000).catch(() => {});
    await control?.close();
    await rm(dir, { recursive: true, force: true });
  }
}
