/**
 * Relay: the database gateway's protocol engine once a session is handed
 * over (./session.ts does the start-up). It sits between the client's byte
 * stream and the server's, and is written for the allow path to cost
 * little more than a pipe:
 *
 *   - client → server: each chunk is walked message by message in place (no
 *     message objects, no copies); `Query` and `Parse` texts are judged
 *     (the judge caches decisions by text, ./decisions.ts), `Bind` and
 *     `Execute` checked against the statements and portals seen allowed,
 *     and when every message passes the chunk goes upstream as it came —
 *     one write per chunk. Only a message split across chunks is copied
 *     (held until whole).
 *   - server → client: chunks go to the client as they came; the walk only
 *     reads message headers to count ReadyForQuery (cycles answered: what
 *     close() waits for, and when a denial's probe can no longer come) and,
 *     only while a denial is pending, to cut out the probe's ErrorResponse
 *     for rewriting.
 *
 * A denial keeps the protocol's meaning by letting the server itself fail
 * in the denied message's place: a probe (a Query or Parse calling a
 * function that does not exist, named with a fresh nonce) goes upstream
 * instead, so inside a transaction block the transaction is aborted and in
 * a pipeline the server skips to Sync; the server's ErrorResponse for that
 * nonce is rewritten into the denial (SQLSTATE 42501). Messages after a
 * denied extended-protocol message are dropped up to Sync, as the server
 * would. A statement held for approval holds everything behind it, in
 * order.
 */

import { serialize } from "pg-protocol";
import { errorMessageOf, errorResponse, MAX_FRONTEND_MESSAGE, MSG, ProtocolError, type ErrorFields } from "./wire.js";

export type Verdict = { allow: true } | { allow: false; reason: string };
export const ALLOW: Verdict = Object.freeze({ allow: true });

/** What the relay asks of its session. */
export interface RelayHost {
  /** judge a statement text (Query, Parse): a verdict, or a promise of one while an approver decides. */
  judge(text: string): Verdict | Promise<Verdict>;
  /** refused records the refusal of a message that is not a statement (Bind, Execute, FunctionCall) and returns the reason. */
  refused(why: string): string;
  /** Write to the server / the client; false when the socket's buffer is full (the session handles backpressure). */
  toServer(b: Buffer): void;
  toClient(b: Buffer): void;
  /** A judge's promise failed: the session ends. */
  failed(err: Error): void;
  /** A statement held for approval was answered: the messages queued behind it are on their way (the session reads the client again). */
  released(): void;
}

const DENIED = "42501";
const DENIAL_HINT = "the database gateway judges every statement with the policy's sql rules (docs/database.md); inside a transaction block the transaction is aborted; the connection stays usable";

// judge outcomes of one client message
const PASS = 0;
const DROP = 1;
const DENY = 2;
const HELD = 3;

export class Relay {
  /** Bytes of a client message split across chunks. */
  private carry: Buffer | undefined;
  /** While a statement waits for an approver: what came after it. */
  private pending: Buffer[] | undefined;
  private pendingBytes = 0;
  /** After a denied extended-protocol message: drop messages up to Sync. */
  private skipping = false;
  private readonly statements = new Set<string>();
  private readonly portals = new Set<string>();
  /** Cycles sent upstream (Sync, Query, FunctionCall) and answered (ReadyForQuery). */
  private sent = 0;
  private answered = 0;
  private probes = 0;
  private readonly denials = new Map<string, { cycle: number; error: ErrorFields }>();
  /** Output of one walk when it is more than the chunk itself (a denial's probe, a dropped message). */
  private readonly out: Buffer[] = [];
  // What judge() leaves for scan() when it does not PASS.
  private denyReason = "";
  private denySimple = false;
  private heldPromise: Promise<Verdict> | undefined;
  private heldName = "";
  private closed = false;
  // Server side: bytes left of the current message, a header split across chunks, a message captured for rewriting.
  private left = 0;
  private readonly hdr = Buffer.alloc(5);
  private hdrLen = 0;
  private capture: Buffer[] | undefined;
  /** Called whenever no cycle is in flight any more (see idle). */
  onIdle: (() => void) | undefined;
  private readonly host: RelayHost;
  private readonly nonce: string;

  constructor(
    host: RelayHost,
    /** A per-session random string: probe names cannot be guessed or forged by a client. */
    nonce: string,
  ) {
    this.host = host;
    this.nonce = nonce;
  }

  /** Cycles sent upstream and not answered yet. */
  get inFlight(): number {
    return this.sent - this.answered;
  }

  /** idle: nothing in flight, nothing held for an approver, no partial message: closing now loses no statement. */
  get idle(): boolean {
    return this.sent === this.answered && this.pending === undefined && this.carry === undefined && this.left === 0 && this.hdrLen === 0;
  }

  /** Bytes queued behind a statement held for approval (the session stops reading the client past a bound). */
  get heldBytes(): number {
    return this.pending === undefined ? 0 : this.pendingBytes;
  }

  close(): void {
    this.closed = true;
  }

  // ---- client → server ----

  fromClient(chunk: Buffer): void {
    if (this.pending !== undefined) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      return;
    }
    let buf = chunk;
    if (this.carry !== undefined) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    this.scan(buf, 0);
  }

  private scan(buf: Buffer, start: number): void {
    const n = buf.length;
    let off = start;
    let from = start;
    while (n - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > MAX_FRONTEND_MESSAGE) throw new ProtocolError(len < 4 ? `malformed message length ${len}` : `a message of ${len} bytes is larger than the gateway frames (${MAX_FRONTEND_MESSAGE})`);
      const end = off + 1 + len;
      if (end > n) break;
      const r = this.skipping ? this.skip(buf[off]!) : this.judgeMessage(buf[off]!, buf, off + 5, end);
      if (r !== PASS) {
        if (off > from) this.out.push(buf.subarray(from, off));
        from = end;
        if (r === DENY) this.deny(this.denyReason, this.denySimple);
        else if (r === HELD) {
          this.flushOut();
          this.hold(buf.subarray(off, end), buf[off]!, end < n ? buf.subarray(end) : undefined);
          return;
        }
      }
      off = end;
    }
    if (off < n) this.carry = Buffer.from(buf.subarray(off));
    if (from === start && off === n && this.out.length === 0) {
      // The allow path: the chunk as it came.
      if (n > start) this.host.toServer(start === 0 ? buf : buf.subarray(start));
      return;
    }
    if (off > from) this.out.push(buf.subarray(from, off));
    this.flushOut();
  }

  private flushOut(): void {
    const o = this.out;
    if (o.length === 0) return;
    this.host.toServer(o.length === 1 ? o[0]! : Buffer.concat(o));
    o.length = 0;
  }

  /** skip: after a denied extended-protocol message, everything up to Sync is dropped (Flush and Terminate still pass). */
  private skip(type: number): number {
    if (type === MSG.sync) {
      this.skipping = false;
      this.sent++;
      return PASS;
    }
    return type === MSG.flush || type === MSG.terminate ? PASS : DROP;
  }

  /** judgeMessage decides one whole client message (type, body from s to e). */
  private judgeMessage(type: number, b: Buffer, s: number, e: number): number {
    switch (type) {
      case MSG.query: {
        const v = this.host.judge(cstring(b, s, e));
        if (v instanceof Promise) return this.held(v, "");
        if (v.allow) {
          this.sent++;
          return PASS;
        }
        return this.denied(v.reason, true);
      }
      case MSG.parse: {
        const z = b.indexOf(0, s);
        if (z < 0 || z >= e) throw new ProtocolError("malformed Parse message: its statement name is not NUL-terminated");
        const name = z === s ? "" : b.toString("utf8", s, z);
        const v = this.host.judge(cstring(b, z + 1, e));
        if (v instanceof Promise) return this.held(v, name);
        if (v.allow) {
          this.statements.add(name);
          return PASS;
        }
        this.statements.delete(name);
        return this.denied(v.reason, false);
      }
      case MSG.bind: {
        const z = b.indexOf(0, s);
        if (z < 0 || z >= e) throw new ProtocolError("malformed Bind message: its portal name is not NUL-terminated");
        const portal = z === s ? "" : b.toString("utf8", s, z);
        const statement = cstring(b, z + 1, e);
        if (!this.statements.has(statement)) {
          this.portals.delete(portal);
          return this.denied(this.host.refused(`Bind of the prepared statement ${JSON.stringify(statement)}, which this gateway did not see parsed and allowed in this session`), false);
        }
        this.portals.add(portal);
        return PASS;
      }
      case MSG.execute: {
        const portal = cstring(b, s, e);
        if (this.portals.has(portal)) return PASS;
        return this.denied(this.host.refused(`Execute of the portal ${JSON.stringify(portal)}, which was not bound to an allowed statement through this gateway`), false);
      }
      case MSG.close: {
        const name = cstring(b, s + 1, e);
        if (b[s] === 0x53 /* S */) this.statements.delete(name);
        else this.portals.delete(name);
        return PASS;
      }
      case MSG.functionCall:
        return this.denied(this.host.refused("the fast-path FunctionCall message calls a function by OID, which no policy can judge: use SELECT"), true);
      case MSG.sync:
        this.sent++;
        return PASS;
      default:
        // Describe, Flush, Terminate, CopyData/CopyDone/CopyFail: nothing to judge.
        return PASS;
    }
  }

  private denied(reason: string, simple: boolean): number {
    this.denyReason = reason;
    this.denySimple = simple;
    return DENY;
  }

  private held(v: Promise<Verdict>, name: string): number {
    this.heldPromise = v;
    this.heldName = name;
    return HELD;
  }

  /** hold waits for the approver's answer on `msg`; what follows it waits too, in order. */
  private hold(msg: Buffer, type: number, rest: Buffer | undefined): void {
    const p = this.heldPromise!;
    const name = this.heldName;
    this.heldPromise = undefined;
    this.pending = rest ? [rest] : [];
    this.pendingBytes = rest?.length ?? 0;
    p.then(
      (v) => {
        if (this.closed) return;
        if (type === MSG.query) {
          if (v.allow) {
            this.sent++;
            this.out.push(msg);
          } else this.deny(v.reason, true);
        } else if (v.allow) {
          this.statements.add(name);
          this.out.push(msg);
        } else {
          this.statements.delete(name);
          this.deny(v.reason, false);
        }
        const queued = this.pending!;
        this.pending = undefined;
        this.pendingBytes = 0;
        this.host.released();
        const next = queued.length === 0 ? undefined : queued.length === 1 ? queued[0]! : Buffer.concat(queued);
        if (next === undefined) this.flushOut();
        else this.scanOrFail(next);
      },
      (err: unknown) => this.host.failed(err as Error),
    );
  }

  private scanOrFail(buf: Buffer): void {
    try {
      // Output pending from the held message goes first, in one write with what follows.
      this.scan(buf, 0);
    } catch (err) {
      this.host.failed(err as Error);
    }
  }

  /** deny sends the probe that makes the server fail in the denied message's place. */
  private deny(reason: string, simple: boolean): void {
    const nonce = `mg_denied_${this.nonce}_${++this.probes}`;
    this.denials.set(nonce, { cycle: this.sent, error: { severity: "ERROR", code: DENIED, message: `meshguard: denied by policy: ${reason}`, hint: DENIAL_HINT } });
    const probe = `SELECT pg_catalog.${nonce}()`;
    if (simple) {
      this.sent++;
      this.out.push(serialize.query(probe));
    } else {
      this.skipping = true;
      this.out.push(serialize.parse({ name: "", text: probe }));
    }
  }

  // ---- server → client ----

  /** fromServer passes the server's chunk on; only a probe's ErrorResponse (while a denial is pending) is cut out and rewritten. */
  fromServer(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    let from = 0;
    let rewrote = false;
    while (i < n) {
      if (this.left > 0) {
        const k = Math.min(this.left, n - i);
        i += k;
        this.left -= k;
        if (this.capture !== undefined) {
          // Captured bytes are not passed on as they are.
          this.capture.push(chunk.subarray(i - k, i));
          from = i;
          rewrote = true;
        }
        if (this.left === 0 && this.capture !== undefined) {
          this.out.push(this.rewrite(Buffer.concat(this.capture)));
          this.capture = undefined;
          from = i;
        }
        continue;
      }
      let type: number;
      let len: number;
      const hStart = i;
      if (this.hdrLen === 0 && n - i >= 5) {
        // The common case: the whole header is in this chunk.
        type = chunk[i]!;
        len = chunk.readInt32BE(i + 1) - 4;
        i += 5;
      } else {
        const k = Math.min(5 - this.hdrLen, n - i);
        chunk.copy(this.hdr, this.hdrLen, i, i + k);
        this.hdrLen += k;
        i += k;
        if (this.hdrLen < 5) {
          // Hold the partial header back: it may start a message to rewrite.
          if (hStart > from) this.out.push(chunk.subarray(from, hStart));
          from = n;
          rewrote = true;
          break;
        }
        this.hdrLen = 0;
        type = this.hdr[0]!;
        len = this.hdr.readInt32BE(1) - 4;
        // The held-back header goes out first (or starts the capture).
        if (!(type === MSG.errorResponse && this.denials.size > 0)) {
          if (hStart > from) this.out.push(chunk.subarray(from, hStart));
          this.out.push(Buffer.from(this.hdr));
          from = i;
          rewrote = true;
        }
      }
      if (len < 0) throw new ProtocolError(`the server sent a malformed message length ${len + 4}`);
      if (type === MSG.readyForQuery) this.ready();
      if (type === MSG.errorResponse && this.denials.size > 0) {
        const hdrStart = i - 5 >= hStart ? i - 5 : hStart;
        if (hdrStart > from) this.out.push(chunk.subarray(from, hdrStart));
        this.capture = [i - 5 >= hStart ? chunk.subarray(i - 5, i) : Buffer.from(this.hdr)];
        from = n;
        rewrote = true;
        if (len === 0) {
          this.out.push(this.rewrite(Buffer.concat(this.capture)));
          this.capture = undefined;
          from = i;
        }
      }
      this.left = len;
    }
    if (!rewrote) {
      this.host.toClient(chunk);
      this.idleCheck();
      return;
    }
    if (this.capture === undefined && from < n) this.out.push(chunk.subarray(from));
    const o = this.out;
    if (o.length === 1) this.host.toClient(o[0]!);
    else if (o.length > 1) this.host.toClient(Buffer.concat(o));
    o.length = 0;
    this.idleCheck();
  }

  private idleCheck(): void {
    if (this.onIdle !== undefined && this.idle) this.onIdle();
  }

  /** ready: one more cycle answered; denials of earlier cycles the server skipped (an earlier error in the pipeline) are forgotten. */
  private ready(): void {
    this.answered++;
    if (this.denials.size > 0) for (const [k, d] of this.denials) if (d.cycle < this.answered) this.denials.delete(k);
  }

  private rewrite(msg: Buffer): Buffer {
    const text = errorMessageOf(msg);
    const m = text === undefined ? null : /mg_denied_[0-9a-f]+_\d+/.exec(text);
    const d = m ? this.denials.get(m[0]) : undefined;
    if (d === undefined) return msg;
    this.denials.delete(m![0]);
    return errorResponse(d.error);
  }
}

/** cstring reads a NUL-terminated UTF-8 string starting at s (not past e). */
function cstring(b: Buffer, s: number, e: number): string {
  if (b[s] === 0) return "";
  const z = b.indexOf(0, s);
  if (z < 0 || z >= e) throw new ProtocolError("malformed message: a string is not NUL-terminated");
  return b.toString("utf8", s, z);
}
