/**
 * The PostgreSQL wire protocol (version 3) as the database gateway needs it:
 * the startup packet, and builders for the few messages a server sends.
 * pg-protocol (node-postgres' own) serializes what the gateway sends
 * upstream; ./relay.ts walks both streams in place.
 */

/** The startup packet's protocol codes (no type byte: length, then code). */
export const PROTOCOL_3 = 196608;
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** The largest frontend message the gateway frames (PostgreSQL's own limit for most messages is 1 GB; a statement beyond this is refused). */
export const MAX_FRONTEND_MESSAGE = 64 * 1024 * 1024;
/** The largest startup packet (PostgreSQL's MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10000;

export const MSG = {
  query: 0x51, // Q
  parse: 0x50, // P
  bind: 0x42, // B
  execute: 0x45, // E
  describe: 0x44, // D
  close: 0x43, // C
  sync: 0x53, // S
  flush: 0x48, // H
  terminate: 0x58, // X
  functionCall: 0x46, // F
  // backend
  errorResponse: 0x45, // E
  readyForQuery: 0x5a, // Z
} as const;

export class ProtocolError extends Error {}

/** readStartup reads a startup-phase packet (length-prefixed, no type byte) from the front of `buf`, or undefined when incomplete. */
export function readStartup(buf: Buffer): { code: number; body: Buffer; rest: Buffer } | undefined {
  if (buf.length < 8) return undefined;
  const len = buf.readInt32BE(0);
  if (len < 8 || len > MAX_STARTUP_PACKET) throw new ProtocolError(`malformed startup packet length ${len}`);
  if (buf.length < len) return undefined;
  return { code: buf.readInt32BE(4), body: buf.subarray(8, len), rest: buf.subarray(len) };
}

/** startupParameters reads a protocol-3 startup packet's name/value pairs. */
export function startupParameters(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const end = body.indexOf(0, off);
    const vend = end < 0 ? -1 : body.indexOf(0, end + 1);
    if (vend < 0) throw new ProtocolError("malformed startup packet: a parameter is not NUL-terminated");
    out.set(body.toString("utf8", off, end), body.toString("utf8", end + 1, vend));
    off = vend + 1;
  }
  return out;
}

function message(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

const cstr = (s: string) => Buffer.from(`${s}\0`, "utf8");

export interface ErrorFields {
  severity: "ERROR" | "FATAL";
  /** SQLSTATE. */
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** errorResponse builds a server ErrorResponse. */
export function errorResponse(e: ErrorFields): Buffer {
  const parts = [cstr(`S${e.severity}`), cstr(`V${e.severity}`), cstr(`C${e.code}`), cstr(`M${e.message}`)];
  if (e.detail) parts.push(cstr(`D${e.detail}`));
  if (e.hint) parts.push(cstr(`H${e.hint}`));
  parts.push(Buffer.from([0]));
  return message(MSG.errorResponse, Buffer.concat(parts));
}

/** errorMessageOf reads the M field of an ErrorResponse message (whole, with type and length). */
export function errorMessageOf(msg: Buffer): string | undefined {
  let off = 5;
  while (off < msg.length && msg[off] !== 0) {
    const field = msg[off]!;
    const end = msg.indexOf(0, off + 1);
    if (end < 0) return undefined;
    if (field === 0x4d) return msg.toString("utf8", off + 1, end);
    off = end + 1;
  }
  return undefined;
}

export const authenticationOk = (): Buffer => message(0x52, Buffer.from([0, 0, 0, 0]));
export const parameterStatus = (name: string, value: string): Buffer => message(0x53, Buffer.concat([cstr(name), cstr(value)]));
export function backendKeyData(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeInt32BE(pid, 0);
  b.writeInt32BE(secret, 4);
  return message(0x4b, b);
}
export const readyForQuery = (status: "I" | "T" | "E"): Buffer => message(MSG.readyForQuery, Buffer.from(status, "latin1"));
