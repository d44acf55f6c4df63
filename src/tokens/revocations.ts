/**
 * The revocation log: what the issuer has revoked, in the order it did, kept
 * until it no longer matters, and the source of the signed feed verifiers
 * follow (`GET <iss>/revocations?since=<seq>`).
 *
 * On disk, `<stateDir>/revocations.jsonl`, one JSON object a line:
 *   {"v":1,"seq":N}                                  the highest seq ever assigned (first line)
 *   {"seq":7,"jti":"…","until":1760000000}           a revoked token, kept until its exp
 *   {"seq":8,"sub":"…","before":1759990000,"until":…} every token of `sub` issued before `before`
 *   {"parent":"…","jti":"…","until":…}              a token obtained by exchanging `parent`
 * `until` (epoch seconds) is when the line stops mattering: the token's exp,
 * or `before` plus the longest token lifetime. Opening the log drops lines
 * past their `until` and rewrites the file (temporary file, then rename).
 *
 * Invariants: seq only grows, across restarts too (the first line keeps it
 * when every entry has been dropped), so a verifier's `since` never skips an
 * entry; a revocation is on disk (fsync) before the revoke call returns, so
 * it survives a crash; revoking a token also revokes every token exchanged
 * from it, transitively (they are derived from the same grant).
 */

import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { ErrorCode, MeshguardError } from "../errors.js";
import type { RevocationEntry, RevokeJtiEntry, RevokeSubjectEntry } from "./types.js";

interface Stored {
  entry: RevocationEntry;
  until: number;
}

function stateError(message: string, cause?: unknown): MeshguardError {
  return new MeshguardError(ErrorCode.TOKEN_STATE_FAILED, message, { hint: "check the issuer's state directory (space, permissions)", ...(cause === undefined ? {} : { cause }) });
}

export class RevocationLog {
  private seqNo = 0;
  private readonly entries: Stored[] = [];
  private readonly revokedJti = new Map<string, number>(); // jti → until
  private readonly subjects = new Map<string, number>(); // sub → latest `before`
  private readonly children = new Map<string, Array<{ jti: string; until: number }>>();
  private fd: number;
  private readonly file: string;
  private readonly nowS: () => number;


  private constructor(
    file: string,
    nowS: () => number,
  ) {
    this.file = file;
    this.nowS = nowS;
    this.fd = -1;
  }

  /** open reads the log (creating it), drops what no longer matters and rewrites it compacted. */
  static open(file: string, nowS: () => number): RevocationLog {
    const log = new RevocationLog(file, nowS);
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      if (existsSync(file)) log.load(readFileSync(file, "utf8"));
      log.compact();
      log.fd = openSync(file, "a", 0o600);
    } catch (err) {
      if (err instanceof MeshguardError) throw err;
      throw stateError(`cannot open the revocation log ${file}: ${(err as Error).message}`, err);
    }
    return log;
  }

  /** The highest seq assigned. */
  get seq(): number {
    return this.seqNo;
  }

  /** The entries with seq > since, oldest first. */
  since(since: number): RevocationEntry[] {
    const out: RevocationEntry[] = [];
    for (const s of this.entries) if (s.entry.seq > since) out.push(s.entry);
    return out;
  }

  /** isRevoked: is a token with this jti, subject and issue time (epoch s) revoked? */
  isRevoked(jti: string, sub: string, iat: number): boolean {
    if (this.revokedJti.has(jti)) return true;
    const before = this.subjects.get(sub);
    return before !== undefined && iat < before;
  }

  /** revokeJti revokes a token (kept until `until`, its exp) and every token exchanged from it. Returns the new entries. */
  revokeJti(jti: string, until: number): RevokeJtiEntry[] {
    const out: RevokeJtiEntry[] = [];
    const todo: Array<{ jti: string; until: number }> = [{ jti, until }];
    const seen = new Set<string>();
    const lines: string[] = [];
    while (todo.length) {
      const t = todo.pop()!;
      if (seen.has(t.jti)) continue;
      seen.add(t.jti);
      if (!this.revokedJti.has(t.jti)) {
        const entry: RevokeJtiEntry = { seq: ++this.seqNo, jti: t.jti };
        this.remember({ entry, until: t.until });
        lines.push(JSON.stringify({ ...entry, until: t.until }));
        out.push(entry);
      }
      for (const c of this.children.get(t.jti) ?? []) todo.push(c);
    }
    this.append(lines, true);
    return out;
  }

  /** revokeSubject revokes every token of `sub` issued before `before` (epoch s), kept until `until`. */
  revokeSubject(sub: string, before: number, until: number): RevokeSubjectEntry {
    const entry: RevokeSubjectEntry = { seq: ++this.seqNo, sub, before };
    this.remember({ entry, until });
    this.append([JSON.stringify({ ...entry, until })], true);
    return entry;
  }

  /** derived records that `jti` was obtained by exchanging `parent` (so revoking the parent revokes it). */
  derived(parent: string, jti: string, until: number): void {
    this.rememberChild(parent, jti, until);
    // Not synced: losing the last lines in a crash only loses a cascade; the parent's revocation itself is synced.
    this.append([JSON.stringify({ parent, jti, until })], false);
  }

  /** prune forgets (in memory) what no longer matters; the file is compacted at the next open. */
  prune(): void {
    const now = this.nowS();
    const keep = this.entries.filter((s) => s.until > now);
    if (keep.length !== this.entries.length) {
      this.entries.length = 0;
      this.revokedJti.clear();
      this.subjects.clear();
      for (const s of keep) this.remember(s);
    }
    for (const [parent, cs] of this.children) {
      const live = cs.filter((c) => c.until > now);
      if (live.length) this.children.set(parent, live);
      else this.children.delete(parent);
    }
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  private remember(s: Stored): void {
    this.entries.push(s);
    const e = s.entry;
    if ("jti" in e) this.revokedJti.set(e.jti, s.until);
    else this.subjects.set(e.sub, Math.max(this.subjects.get(e.sub) ?? -Infinity, e.before));
  }

  private rememberChild(parent: string, jti: string, until: number): void {
    const l = this.children.get(parent);
    if (l) l.push({ jti, until });
    else this.children.set(parent, [{ jti, until }]);
  }

  private load(text: string): void {
    const now = this.nowS();
    text.split("\n").forEach((line, i) => {
      if (line.trim() === "") return;
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch (err) {
        throw stateError(`the revocation log ${this.file} has a corrupt line ${i + 1}: ${(err as Error).message}`, err);
      }
      const seq = typeof o.seq === "number" ? o.seq : undefined;
      if (seq !== undefined) this.seqNo = Math.max(this.seqNo, seq);
      if (o.v !== undefined) return;
      const until = typeof o.until === "number" ? o.until : Infinity;
      if (until <= now) return;
      if (typeof o.parent === "string" && typeof o.jti === "string") this.rememberChild(o.parent, o.jti, until);
      else if (seq !== undefined && typeof o.jti === "string") this.remember({ entry: { seq, jti: o.jti }, until });
      else if (seq !== undefined && typeof o.sub === "string" && typeof o.before === "number") this.remember({ entry: { seq, sub: o.sub, before: o.before }, until });
      else throw stateError(`the revocation log ${this.file} has an unknown line ${i + 1}`);
    });
    this.entries.sort((a, b) => a.entry.seq - b.entry.seq);
  }

  private compact(): void {
    const lines = [JSON.stringify({ v: 1, seq: this.seqNo })];
    for (const s of this.entries) lines.push(JSON.stringify({ ...s.entry, until: s.until }));
    for (const [parent, cs] of this.children) for (const c of cs) lines.push(JSON.stringify({ parent, jti: c.jti, until: c.until }));
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${lines.join("\n")}\n`, { mode: 0o600 });
    const fd = openSync(tmp, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
  }

  private append(lines: string[], sync: boolean): void {
    if (!lines.length) return;
    try {
      writeSync(this.fd, `${lines.join("\n")}\n`);
      if (sync) fsyncSync(this.fd);
    } catch (err) {
      throw stateError(`cannot write the revocation log ${this.file}: ${(err as Error).message}`, err);
    }
  }
}
