import { ErrorCode, MeshguardError } from "../errors.js";
import type { CoreErrorCode } from "./protocol.js";

/** Every core code has an entry: a code the core adds must be mapped here (the compiler and the protocol table test see to it). */
const byCoreCode: Record<CoreErrorCode, { code: ErrorCode; hint?: string }> = {
  BAD_ARGS: { code: ErrorCode.INVALID_OPTIONS },
  AUTH: { code: ErrorCode.AUTH_FAILED, hint: "pass a valid, unexpired auth key (headscale: `headscale preauthkeys create`); tags must be permitted by the policy's tagOwners" },
  CONTROL_UNREACHABLE: { code: ErrorCode.CONTROL_UNREACHABLE, hint: "check controlUrl and that the control server is running (`meshguard dev` starts a local one)" },
  TIMEOUT: { code: ErrorCode.TIMEOUT },
  NO_PEER: { code: ErrorCode.NO_PEER, hint: "check the name, and that the tailnet policy lets this node reach that peer" },
  DIAL: { code: ErrorCode.DIAL_FAILED },
  PORT_IN_USE: { code: ErrorCode.PORT_IN_USE, hint: "close the other listener first, or pick another port" },
  CLOSED: { code: ErrorCode.CLOSED },
  WHOIS_NOT_FOUND: { code: ErrorCode.WHOIS_NOT_FOUND },
  PANIC: { code: ErrorCode.CORE_PANIC, hint: "this is a bug in meshguard; please report it with the message" },
  INTERNAL: { code: ErrorCode.INTERNAL },
  UNKNOWN_METHOD: { code: ErrorCode.INTERNAL, hint: "the loaded addon does not know this method: it comes from another build of meshguard" },
};

/** errorFromCore maps a core error response to a MeshguardError with a stable code. */
export function errorFromCore(err: { code: string; message: string }, method: string): MeshguardError {
  const m: { code: ErrorCode; hint?: string } = Object.hasOwn(byCoreCode, err.code) ? byCoreCode[err.code as CoreErrorCode] : { code: ErrorCode.INTERNAL };
  return new MeshguardError(m.code, `${method}: ${err.message}`, m.hint ? { hint: m.hint } : {});
}
