// The Python side of test/connect/python-openai.test.ts: a virtual
// environment holding the official `openai` package from PyPI at a pinned
// version, in the user cache, reused while the pin holds. PyPI is out of
// reach inside the tests' network namespace, so test/build.mjs prepares it
// (step "py-openai") before the tests run; the test prepares it itself when
// it runs outside a namespace.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** PY_OPENAI_VERSION is the `openai` release from PyPI the test drives (the newest when pinned). */
export const PY_OPENAI_VERSION = '3.51.0';
export const PY_OPENAI_DIR = join(homedir(), '.cache', 'meshguard', 'py-openai');
export const PY_OPENAI_PYTHON = join(PY_OPENAI_DIR, 'bin', 'python');

const sh = (cmd, args, timeout = 10 * 60_000) => spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout });
const tail = (r) => `${r.error?.message ?? `status ${r.status}`}: ${(r.stderr || r.stdout || '').trim().split('\n').slice(-4).join(' | ')}`;

/** installedVersion is the `openai` version in the environment, or undefined when there is none. */
export function installedVersion() {
  if (!existsSync(PY_OPENAI_PYTHON)) return undefined;
  const r = sh(PY_OPENAI_PYTHON, ['-c', 'import importlib.metadata as m; print(m.version("openai"))']);
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** ready tells whether the environment holds the pinned version. */
export const ready = () => installedVersion() === PY_OPENAI_VERSION;

/**
 * venvUnavailable says why `python3 -m venv` (with pip) cannot work on this
 * machine, or undefined when it can. As root on Debian it first installs
 * python3-venv, which is what is missing on a bare install.
 */
export function venvUnavailable(log = () => {}) {
  if (sh('python3', ['--version']).status !== 0) return 'python3 is not installed';
  const probe = () => sh('python3', ['-c', 'import venv, ensurepip']).status === 0;
  if (probe()) return undefined;
  if (process.getuid?.() === 0 && sh('apt-get', ['--version']).status === 0) {
    log('installing python3-venv (apt-get)');
    sh('apt-get', ['update', '-qq']);
    const r = sh('apt-get', ['install', '-y', '-qq', 'python3-venv']);
    if (r.status === 0 && probe()) return undefined;
    return `python3 has no venv/ensurepip module and apt-get install python3-venv failed (${tail(r)})`;
  }
  return 'python3 has no venv/ensurepip module (Debian: apt-get install python3-venv)';
}

/**
 * ensure makes the environment hold the pinned `openai`; returns false when
 * it already did. Throws with pip's last lines when PyPI cannot be reached.
 */
export function ensure(log = () => {}) {
  if (ready()) return false;
  const why = venvUnavailable(log);
  if (why) throw new Error(why);
  if (!existsSync(join(PY_OPENAI_DIR, 'bin', 'pip'))) {
    rmSync(PY_OPENAI_DIR, { recursive: true, force: true });
    mkdirSync(join(PY_OPENAI_DIR, '..'), { recursive: true });
    log(`python3 -m venv ${PY_OPENAI_DIR}`);
    const r = sh('python3', ['-m', 'venv', PY_OPENAI_DIR]);
    if (r.status !== 0) throw new Error(`python3 -m venv failed (${tail(r)})`);
  }
  log(`pip install openai==${PY_OPENAI_VERSION} (PyPI)`);
  const r = sh(join(PY_OPENAI_DIR, 'bin', 'pip'), ['install', '-q', '--disable-pip-version-check', `openai==${PY_OPENAI_VERSION}`]);
  if (r.status !== 0) throw new Error(`pip install openai==${PY_OPENAI_VERSION} failed (${tail(r)})`);
  if (!ready()) throw new Error(`pip installed openai ${installedVersion() ?? '(none)'}, not ${PY_OPENAI_VERSION}`);
  return true;
}
