/**
 * The one error reporter of every command. A failure is printed to stderr as
 * `meshguard NAME: message` plus the hint, and with --json also as one JSON
 * document on stdout, so a script reading stdout always gets a document:
 *
 *   { "error": { "code": "MESHGUARD_...", "message": "...", "hint": "..." } }
 *
 * (`hint` when there is one; `issues` for MESHGUARD_POLICY_INVALID and
 * `failures` for MESHGUARD_POLICY_TESTS_FAILED carry the details.) The exit
 * status is 2 for MESHGUARD_USAGE and 1 for everything else.
 */

import { ErrorCode, isMeshguardError, type MeshguardError } from "../index.js";

/** ErrorDocument is what --json prints on failure. */
export interface ErrorDocument {
  error: { code: ErrorCode; message: string; hint?: string; issues?: unknown[]; failures?: unknown[] };
}

/** exitStatus is the status a failure ends the command with. */
export function exitStatus(err: unknown): number {
  return isMeshguardError(err, ErrorCode.USAGE) ? 2 : 1;
}

/**
 * errorDocument renders a failure. Anything that is not a MeshguardError is
 * a bug in meshguard and is reported as MESHGUARD_INTERNAL.
 */
export function errorDocument(err: unknown): ErrorDocument {
  if (!isMeshguardError(err)) {
    return { error: { code: ErrorCode.INTERNAL, message: `internal error: ${(err as Error)?.message ?? String(err)}`, hint: "this is a bug in meshguard; please report it with the command and its output" } };
  }
  const details = err as MeshguardError & { issues?: unknown[]; failures?: unknown[] };
  return {
    error: {
      code: err.code,
      message: bareMessage(err),
      ...(err.hint !== undefined ? { hint: err.hint } : {}),
      ...(Array.isArray(details.issues) ? { issues: details.issues } : {}),
      ...(Array.isArray(details.failures) ? { failures: details.failures } : {}),
    },
  };
}

/** reportError prints a failure of `who` ("meshguard policy test") and returns the exit status. */
export function reportError(who: string, err: unknown, json: boolean, io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): number {
  const doc = errorDocument(err);
  const { message, hint, code } = doc.error;
  if (code === ErrorCode.USAGE) {
    // The hint of a usage error is the usage line and where the help is: not indented, it reads as help.
    io.stderr.write(`${who}: ${message}\n${hint ?? ""}\n`);
  } else {
    // An internal error keeps its stack: it is what a bug report needs.
    const body = isMeshguardError(err) ? message : ((err as Error)?.stack ?? message);
    io.stderr.write(`${who}: ${body}${hint ? `\n  hint: ${hint}` : ""}\n`);
  }
  if (json) io.stdout.write(JSON.stringify(doc) + "\n");
  return exitStatus(err);
}

/** bareMessage is the message without the "\n  hint: ..." that MeshguardError appends (the hint is its own field). */
function bareMessage(err: MeshguardError): string {
  const suffix = err.hint !== undefined ? `\n  hint: ${err.hint}` : "";
  return suffix && err.message.endsWith(suffix) ? err.message.slice(0, -suffix.length) : err.message;
}
