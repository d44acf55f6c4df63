// pgbouncer for bench/database: Debian's package (installed when missing,
// as test/gateway/pg-server.ts installs PostgreSQL: root only, outside the
// network namespace), run in session mode on loopback in front of the
// bench's PostgreSQL, as the `postgres` system user when this process is
// root (pgbouncer refuses to run as root). Clients are trusted (the
// meshguard gateway checks no password either: whois names the caller);
// pgbouncer logs in upstream with the password in its auth file.

import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptInstall } from './apt.mjs';
import { freePort } from './gateway-peers.mjs';

const BIN = '/usr/sbin/pgbouncer';
const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** installPgbouncer returns undefined when pgbouncer is there (installing it if it can), else why not. */
export function installPgbouncer() {
  if (existsSync(BIN)) return undefined;
  if (!isRoot()) return 'pgbouncer is not installed and this process is not root: apt-get install pgbouncer';
  if (process.env.MESHGUARD_NETNS === '1') return 'pgbouncer is not installed, and this network namespace has no network to install it: run `node bench/database.mjs --setup` first';
  const failed = aptInstall('pgbouncer', { update: 'first' });
  if (failed) return failed;
  return existsSync(BIN) ? undefined : 'apt-get installed pgbouncer, but there is no /usr/sbin/pgbouncer';
}

function ids(name) {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no "${name}" system user to run pgbouncer as`);
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** startPgbouncer: session mode, one database `db` → 127.0.0.1:pgPort, user/password for the upstream login. Returns { port, stop() }. */
export async function startPgbouncer({ pgPort, db, user, password }) {
  const dir = mkdtempSync(join(tmpdir(), 'mg-pgbouncer-'));
  const port = await freePort();
  const ini = join(dir, 'pgbouncer.ini');
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" "${password}"\n`, { mode: 0o600 });
  writeFileSync(
    ini,
    [
      '[databases]',
      `${db} = host=127.0.0.1 port=${pgPort} dbname=${db}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      `unix_socket_dir = ${dir}`,
      'auth_type = trust',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      'pool_mode = session',
      'max_client_conn = 200',
      'default_pool_size = 20',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n'),
  );
  let cmd = BIN;
  let args = [ini];
  if (isRoot()) {
    const { uid, gid } = ids('postgres');
    for (const f of [dir, ini, join(dir, 'userlist.txt')]) chownSync(f, uid, gid);
    cmd = 'setpriv';
    args = ['--reuid=postgres', '--regid=postgres', '--init-groups', '--pdeathsig', 'SIGTERM', '--', BIN, ini];
  }
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  // Ready once it accepts a TCP connection.
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}): ${err}${existsSync(join(dir, 'pgbouncer.log')) ? readFileSync(join(dir, 'pgbouncer.log'), 'utf8') : ''}`);
    const ok = await new Promise((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) break;
    if (Date.now() - t0 > 15_000) throw new Error(`pgbouncer did not listen within 15 s: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

