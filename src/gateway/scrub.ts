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
  private readonly keys: Buffer[];
  private readonly strings: string[];
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
