/**
 * Counters and histograms for prom-client's registry whose update on the
 * request path is one addition on a child the caller already holds.
 *
 * prom-client's own Counter and Histogram hash their label set on every
 * inc/observe (several microseconds for a request's handful of updates);
 * these keep one plain object per label set, handed out once, and do the
 * formatting work only when the registry is scraped (`get()`, the shape the
 * registry expects of any metric). The registry, the exposition format and
 * the process metrics stay prom-client's.
 */

type Labels = Record<string, string>;

interface MetricValue {
  value: number;
  labels: Labels;
  metricName?: string;
}

/** The interface prom-client's Registry reads a metric through. */
export interface RegistryMetric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "histogram";
  readonly aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: "sum" }>;
}

export interface CounterChild {
  value: number;
}

/** FastCounter: `child(labels)` once per label set, then `child.value += n`. */
export class FastCounter implements RegistryMetric {
  readonly type = "counter" as const;
  readonly aggregator = "sum" as const;
  private readonly children = new Map<string, { labels: Labels; child: CounterChild }>();
  readonly name: string;
  readonly help: string;

  constructor(
    name: string,
    help: string,
  ) {
    this.name = name;
    this.help = help;
  }

  child(labels: Labels): CounterChild {
    const key = JSON.stringify(labels);
    let c = this.children.get(key);
    if (c === undefined) this.children.set(key, (c = { labels, child: { value: 0 } }));
    return c.child;
  }

  async get() {
    const values: MetricValue[] = [];
    // A label set shows once it has counted something (as prom-client does).
    for (const { labels, child } of this.children.values()) if (child.value !== 0) values.push({ value: child.value, labels });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export interface HistogramChild {
  observe(v: number): void;
}

class HistogramSeries implements HistogramChild {
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  private readonly bounds: readonly number[];

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

/** FastHistogram: `child(labels)` once per label set, then `child.observe(seconds)`. */
export class FastHistogram implements RegistryMetric {
  readonly type = "histogram" as const;
  readonly aggregator = "sum" as const;
  private readonly children = new Map<string, { labels: Labels; series: HistogramSeries }>();
  readonly name: string;
  readonly help: string;
  private readonly bounds: readonly number[];

  constructor(
    name: string,
    help: string,
    bounds: readonly number[],
  ) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
  }

  child(labels: Labels): HistogramChild {
    const key = JSON.stringify(labels);
    let c = this.children.get(key);
    if (c === undefined) this.children.set(key, (c = { labels, series: new HistogramSeries(this.bounds) }));
    return c.series;
  }

  async get() {
    const values: MetricValue[] = [];
    for (const { labels, series } of this.children.values()) {
      if (series.count === 0) continue;
      let acc = 0;
      this.bounds.forEach((b, i) => {
        acc += series.counts[i]!;
        values.push({ value: acc, labels: { le: String(b), ...labels }, metricName: `${this.name}_bucket` });
      });
      values.push({ value: series.count, labels: { le: "+Inf", ...labels }, metricName: `${this.name}_bucket` });
      values.push({ value: series.sum, labels, metricName: `${this.name}_sum` });
      values.push({ value: series.count, labels, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
