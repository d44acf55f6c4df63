// Installing a Debian package the build, the tests or a benchmark needs
// (binaryen, postgresql, chromium, pgbouncer): apt-get, non-interactive,
// without recommends. The callers decide whether they may (root, outside the
// tests' network namespace) and what to say when they may not.

import { spawnSync } from 'node:child_process';

/**
 * aptInstall installs `pkg` with apt-get; undefined when it did, else why not.
 * `update: 'first'` refreshes the package lists before installing; the default,
 * `'on-failure'`, tries the install first and refreshes the lists only when
 * it fails (they may be missing or stale), then tries once more.
 */
export function aptInstall(pkg, { update = 'on-failure' } = {}) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
    return r.status === 0 ? undefined : `apt-get ${args.join(' ')} failed (exit ${r.status ?? r.signal ?? r.error?.message})`;
  };
  const install = () => run(['install', '-y', '--no-install-recommends', pkg]);
  if (update === 'first') return run(['update']) ?? install();
  if (install() === undefined) return undefined;
  return run(['update']) ?? install();
}
