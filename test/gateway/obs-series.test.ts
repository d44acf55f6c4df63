// The gateway's fast counters and histograms (src/gateway/obs/series.ts)
// must expose exactly what prom-client's own Counter and Histogram expose
// for the same updates: prom-client is the reference here.
import { Counter, Histogram, Registry, type Metric } from "prom-client";
import { expect, it } from "vitest";
import { FastCounter, FastHistogram } from "../../src/gateway/obs/series.js";

const BOUNDS = [0.001, 0.01, 0.1, 1];

it("the same observations give the same exposition text as prom-client's Counter and Histogram", async () => {
  const ref = new Registry();
  const fast = new Registry();
  const rc = new Counter({ name: "x_total", help: "h", labelNames: ["a", "b"], registers: [ref] });
  const rh = new Histogram({ name: "y_seconds", help: "h", labelNames: ["p"], buckets: BOUNDS, registers: [ref] });
  const fc = new FastCounter("x_total", "h");
  const fh = new FastHistogram("y_seconds", "h", BOUNDS);
  fast.registerMetric(fc as unknown as Metric);
  fast.registerMetric(fh as unknown as Metric);
  // Label values that need escaping, a label set that never counts (hidden in both), values on bucket bounds and past the last.
  fc.child({ a: "never", b: "counted" });
  const samples: Array<[string, number]> = [["x", 0.001], ["x", 0.0005], ["x", 0.5], ["x", 7], ['q"uo\\te\n', 0.01], ["x", 1]];
  for (const [p, v] of samples) {
    rh.labels(p).observe(v);
    fh.child({ p }).observe(v);
    rc.labels("1", p).inc(v * 10);
    fc.child({ a: "1", b: p }).value += v * 10;
  }
  expect((await fast.metrics()).split("\n")).toEqual((await ref.metrics()).split("\n"));
  expect(await fast.metrics()).toContain('y_seconds_bucket{le="+Inf",p="x"} 5');
});
