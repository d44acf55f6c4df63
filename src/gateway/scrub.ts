/**
 * KeyScrubber removes the provider keys from anything that leaves the
 * gateway towards a client or a log: upstream error bodies (providers echo
 * a key they refused), answers, stream chunks and messages. The check is a
 * byte search per key (memchr-fast), so clean data costs almost nothing.
 */

export const KEY_REDACTED = "[provider key redacted]";

/** Keys shorter than this are scrubbed too, but the gateway warns: they match ordinary text. */
export const SHORT_KEY = 8;

export class KeyScrubber {
  private keys: Buffer[];
  private strings: string[];
  private readonly replacement = Buffer.from(KEY_REDACTED);

  constructor(secrets: readonly string[]) {
    // Every key, however short: a key is a secret wherever it appears. (A very short
    // one also matches ordinary text, which is then replaced too; the gateway warns
    // about such keys at start, SHORT_KEY.) Longest first: a key containing another
    // is replaced whole.
    this.strings = [...new Set(secrets.filter((s) => typeof s === "string" && s.length > 0))].sort((a, b) => b.length - a.length);
    this.keys = this.strings.map((s) => Buffer.from(s));
  }

  get empty(): boolean {
    return this.keys.length === 0;
  }

  /** The longest secret's length in bytes (0 with none): a streamed scrub holds back one byte less. */
  get longest(): number {
    return this.keys[0]?.length ?? 0;
  }

  /** add makes this scrubber remove these secrets too (credentials read after it was made: the connectors'). */
  add(extra: readonly string[]): void {
    const next = new KeyScrubber([...this.strings, ...extra]);
    this.strings = next.strings;
    this.keys = next.keys;
  }

  /** with returns a scrubber that removes these secrets too (this one unchanged, or itself when they add none). */
  with(extra: readonly string[]): KeyScrubber {
    const have = new Set(this.strings);
    return extra.every((s) => s.length === 0 || have.has(s)) ? this : new KeyScrubber([...this.strings, ...extra]);
  }

  /** bytes returns `buf`, or a copy with every key replaced. */
  bytes(buf: Buffer): Buffer {
    let out = buf;
    for (const k of this.keys) {
      let at = out.indexOf(k);
      if (at < 0) continue;
      const parts: Buffer[] = [];
      let from = 0;
      while (at >= 0) {
        parts.push(out.subarray(from, at), this.replacement);
        from = at + k.length;
        at = out.indexOf(k, from);
      }
      parts.push(out.subarray(from));
      out = Buffer.concat(parts);
    }
    return out;
  }

  /** text returns `s` with every key replaced. */
  text(s: string): string {
    let out = s;
    for (const k of this.strings) if (out.includes(k)) out = out.split(k).join(KEY_REDACTED);
    return out;
  }
}

/**
 * StreamScrub removes secrets from a byte stream cut into chunks anywhere,
 * a secret split across two chunks included. Invariant: after each chunk,
 * every whole secret in what arrived is replaced, and the bytes held back
 * (at most the longest secret's length minus one, from the end of the
 * scrubbed text) are exactly the ones a secret still arriving could begin
 * in; they are scrubbed again with the next chunk.
 */
export class StreamScrub {
  private held: Buffer = Buffer.alloc(0);
  private readonly keep: number;
  private readonly scrub: KeyScrubber;

  constructor(scrub: KeyScrubber) {
    this.scrub = scrub;
    this.keep = Math.max(0, scrub.longest - 1);
  }

  /** push returns what may go out now. */
  push(chunk: Buffer): Buffer {
    if (this.scrub.empty) return chunk;
    const clean = this.scrub.bytes(this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]));
    const cut = Math.max(0, clean.length - this.keep);
    // A copy: the held bytes must not pin (or alias) the caller's chunk.
    this.held = Buffer.from(clean.subarray(cut));
    return clean.subarray(0, cut);
  }

  /** end returns the rest. */
  end(): Buffer {
    const out = this.held;
    this.held = Buffer.alloc(0);
    return out;
  }
}
