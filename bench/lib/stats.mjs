// Summary statistics and output for the benchmarks.
//
// The JSON produced by toJson is a published interface (DESIGN.md,
// "Interfaces that must stay stable"): { bench, rows: [ { system, metric,
// unit, p50, p99, mean, n } ] }. Change it only with a version bump.

/** Column order of a row, shared by the table and the JSON. */
export const COLUMNS = Object.freeze(['system', 'metric', 'unit', 'p50', 'p99', 'mean', 'n']);

/**
 * summarize returns the nearest-rank p50 and p99, the mean and the count of
 * `samples`. Nearest rank: the p-th percentile is the smallest sample such
 * that at least p% of samples are ≤ it, i.e. sorted[ceil(p/100 · n) − 1], so
 * it is always an observed value (never interpolated). With n < 100 the p99
 * is the maximum. The input is not modified.
 *
 * @param {number[]} samples finite numbers, at least one
 * @returns {{ p50: number, p99: number, mean: number, n: number }}
 */
export function summarize(samples) {
  if (!Array.isArray(samples)) {
    throw new TypeError(`summarize: samples must be an array of numbers, got ${typeof samples}`);
  }
  if (samples.length === 0) {
    throw new RangeError('summarize: no samples (a run that measured nothing must not produce a row)');
  }
  const bad = samples.findIndex((x) => typeof x !== 'number' || !Number.isFinite(x));
  if (bad !== -1) {
    throw new TypeError(`summarize: samples[${bad}] is ${String(samples[bad])}, not a finite number`);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const rank = (p) => sorted[Math.max(1, Math.ceil((p / 100) * n)) - 1];
  let sum = 0;
  for (const x of sorted) sum += x;
  return { p50: rank(50), p99: rank(99), mean: sum / n, n };
}

/**
 * row builds one output row from raw samples: the system and metric names,
 * the unit, and summarize(samples). A single measurement (e.g. a throughput
 * run) is passed as a one-element array and yields n = 1.
 *
 * @param {string} system e.g. "meshguard (native)", "tsnet (Go)", "loopback TCP (Node)"
 * @param {string} metric e.g. "rtt", "dial", "throughput"
 * @param {string} unit e.g. "us", "ms", "MiB/s", "KiB"
 * @param {number[] | number} samples
 */
export function row(system, metric, unit, samples) {
  for (const [k, v] of [['system', system], ['metric', metric], ['unit', unit]]) {
    if (typeof v !== 'string' || v === '') throw new TypeError(`row: ${k} must be a non-empty string`);
  }
  return { system, metric, unit, ...summarize(Array.isArray(samples) ? samples : [samples]) };
}

/**
 * toJson returns the published benchmark document: exactly the keys
 * `bench` and `rows`, each row exactly COLUMNS (extra keys are dropped).
 *
 * @param {string} bench benchmark name, e.g. "tailnet"
 * @param {Array<{system:string,metric:string,unit:string,p50:number,p99:number,mean:number,n:number}>} rows
 */
export function toJson(bench, rows) {
  if (typeof bench !== 'string' || bench === '') throw new TypeError('toJson: bench must be a non-empty string');
  if (!Array.isArray(rows)) throw new TypeError('toJson: rows must be an array');
  return {
    bench,
    rows: rows.map((r, i) => {
      const out = {};
      for (const k of COLUMNS) {
        if (!(k in r)) throw new TypeError(`toJson: rows[${i}] has no "${k}"`);
        out[k] = r[k];
      }
      return out;
    }),
  };
}

/**
 * formatTable returns the rows as an aligned plain-text table with a header
 * (text columns left-aligned, numbers right-aligned), ready to print.
 */
export function formatTable(rows) {
  const header = COLUMNS;
  const body = rows.map((r) => [r.system, r.metric, r.unit, fmt(r.p50), fmt(r.p99), fmt(r.mean), String(r.n)]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i].length)));
  const numeric = (i) => i >= 3;
  const line = (cells) =>
    cells
      .map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), rule, ...body.map(line)].join('\n');
}

// fmt keeps about four significant figures without exponent notation:
// 12345 → "12345", 123.456 → "123.5", 1.23456 → "1.235", 0.012345 → "0.0123".
function fmt(x) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (Number.isInteger(x) || a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  if (a >= 1) return x.toFixed(3);
  return x.toPrecision(3);
}
