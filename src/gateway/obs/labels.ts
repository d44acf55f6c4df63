/**
 * Label values that come from clients (a model name matched by a glob such
 * as "gpt-*", a model no provider serves) are unbounded: a caller sending a
 * new name with every request would grow the metrics registry without end.
 * LabelCap lets the first `max` distinct values through and folds the rest
 * into "other", so memory and scrape size stay bounded whatever clients send.
 */

export const OTHER = "other";

export class LabelCap {
  private readonly seen = new Set<string>();
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  /** of returns `value` if it is one of the first `max` distinct values seen, else "other". */
  of(value: string): string {
    if (this.seen.has(value)) return value;
    if (this.seen.size >= this.max) return OTHER;
    this.seen.add(value);
    return value;
  }
}
