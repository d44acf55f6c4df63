/**
 * The PostgreSQL wire protocol (version 3) as the database gateway needs it.
 * pg-protocol (node-postgres' own) serializes what the gateway sends
 * upstream and reads fields; what it lacks is a framer for the messages a
 * client sends and builders for the few messages a server sends, which are
 * here. Every frontend message is framed whole (the gateway judges `Query`,
 * `Parse`, `Bind`, `Execute` and `FunctionCall`); the backend stream passes
 * through untouched except for the ErrorResponse of a denial probe
 * (./session.ts), which BackendScanner cuts out for rewriting.
 */

import { BufferReader } from "pg-protocol/dist/buffer-reader.js";

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

export interface FrontendMessage {
  type: number;
  /** The message without its type and length. */
  body: Buffer;
  /** The whole message as the client sent it. */
  raw: Buffer;
}

export class ProtocolError extends Error {}

/** FrontendFramer cuts a client's byte stream into whole typed messages. */
export class FrontendFramer {
  private carry: Buffer | undefined;

  push(chunk: Buffer): FrontendMessage[] {
    const buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = undefined;
    const out: FrontendMessage[] = [];
    let off = 0;
    while (buf.length - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > MAX_FRONTEND_MESSAGE) throw new ProtocolError(len < 4 ? `malformed message length ${len}` : `a message of ${len} bytes is larger than the gateway frames (${MAX_FRONTEND_MESSAGE})`);
      if (buf.length - off < 1 + len) break;
      out.push({ type: buf[off]!, body: buf.subarray(off + 5, off + 1 + len), raw: buf.subarray(off, off + 1 + len) });
      off += 1 + len;
    }
    if (off < buf.length) this.carry = Buffer.from(buf.subarray(off));
    return out;
  }
}

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

/** reader reads a message body with pg-protocol's BufferReader (utf-8). */
export function reader(body: Buffer): BufferReader {
  const r = new BufferReader();
  r.setBuffer(0, body);
  return r;
}

/** Query: its text. */
export function queryText(body: Buffer): string {
  return reader(body).cstring();
}

/** Parse: the statement's name and text. */
export function parseMessage(body: Buffer): { name: string; text: string } {
  const r = reader(body);
  const name = r.cstring();
  return { name, text: r.cstring() };
}

/** Bind: the portal and the statement it binds. */
export function bindMessage(body: Buffer): { portal: string; statement: string } {
  const r = reader(body);
  const portal = r.cstring();
  return { portal, statement: r.cstring() };
}

/** Execute: its portal. Describe and Close: the kind ('S' statement, 'P' portal) and name. */
export function executePortal(body: Buffer): string {
  return reader(body).cstring();
}
export function describeTarget(body: Buffer): { kind: "S" | "P"; name: string } {
  const r = reader(body);
  const kind = String.fromCharCode(r.byte()) === "S" ? "S" : "P";
  return { kind, name: r.cstring() };
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
  const r = reader(msg.subarray(5));
  for (let i = 0; i < 64; i++) {
    const f = r.byte();
    if (f === 0) return undefined;
    const v = r.cstring();
    if (f === 0x4d) return v;
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

/**
 * BackendScanner follows the server's message stream without copying it:
 * chunks pass through as they are, except a message `wants` asks for, which
 * is gathered whole and replaced by what `rewrite` returns. It counts
 * ReadyForQuery messages (one per Sync, Query or FunctionCall answered).
 * A header split across chunks is held back until it is whole.
 */
export class BackendScanner {
  private readonly hdr = Buffer.alloc(5);
  private hdrLen = 0;
  private left = 0;
  private capture: Buffer[] | undefined;

  constructor(
    private readonly wants: (type: number) => boolean,
    private readonly rewrite: (msg: Buffer) => Buffer,
    private readonly onReady: () => void,
  ) {}

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    const n = chunk.length;
    let from = 0;
    let i = 0;
    while (i < n) {
      if (this.left > 0) {
        const k = Math.min(this.left, n - i);
        if (this.capture) this.capture.push(chunk.subarray(i, i + k));
        i += k;
        this.left -= k;
        if (this.left === 0 && this.capture) {
          out.push(this.rewrite(Buffer.concat(this.capture)));
          this.capture = undefined;
          from = i;
        }
        continue;
      }
      const hStart = i;
      const hadPart = this.hdrLen > 0;
      const k = Math.min(5 - this.hdrLen, n - i);
      chunk.copy(this.hdr, this.hdrLen, i, i + k);
      this.hdrLen += k;
      i += k;
      if (this.hdrLen < 5) {
        // Hold the partial header back: it may start a message to rewrite.
        if (hStart > from) out.push(chunk.subarray(from, hStart));
        return out;
      }
      this.hdrLen = 0;
      const type = this.hdr[0]!;
      const len = this.hdr.readInt32BE(1) - 4;
      if (len < 0) throw new ProtocolError(`the server sent a malformed message length ${len + 4}`);
      if (type === MSG.readyForQuery) this.onReady();
      if (this.wants(type)) {
        if (hStart > from) out.push(chunk.subarray(from, hStart));
        this.capture = [Buffer.from(this.hdr)];
        from = n;
        if (len === 0) {
          out.push(this.rewrite(Buffer.concat(this.capture)));
          this.capture = undefined;
          from = i;
        }
      } else if (hadPart) {
        if (hStart > from) out.push(chunk.subarray(from, hStart));
        out.push(Buffer.from(this.hdr));
        from = i;
      }
      this.left = len;
    }
    if (this.capture === undefined && from < n) out.push(chunk.subarray(from));
    return out;
  }
}
