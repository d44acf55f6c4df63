// Usage over time: requests, tokens or cost per hour or day, one line per
// user or per model (GET /usage: a user's own, an admin's of everyone),
// drawn with uPlot; the totals beside it; and the caller's quota buckets.
import { useEffect, useRef } from "preact/hooks";
import { html } from "../lib/html.js";
import { amount, int, time, usd } from "../lib/format.js";
import { go } from "../lib/route.js";
import { Loading, Problem, useApi } from "../lib/ui.js";

const SPANS = { "24h": 24 * 3600_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000, "90d": 90 * 86_400_000 };
const STEP = { hour: 3600_000, day: 86_400_000 };
const METRICS = {
  cost: { label: "Cost (USD)", of: (r) => r.costUsd, fmt: usd },
  tokens: { label: "Tokens (in + out)", of: (r) => r.inputTokens + r.outputTokens, fmt: int },
  requests: { label: "Requests", of: (r) => r.requests, fmt: int },
};
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

/** series turns usage rows into uPlot's columns: every bucket of the range on x (empty ones are 0), one column per key. */
export function series(rows, since, until, bucket, metric) {
  const step = STEP[bucket];
  const xs = [];
  for (let t = Math.floor(since / step) * step; t < until; t += step) xs.push(t);
  const keys = [...new Set(rows.map((r) => r.key))].sort();
  const index = new Map(xs.map((t, i) => [t, i]));
  const cols = keys.map(() => xs.map(() => 0));
  for (const r of rows) {
    const i = index.get(r.start);
    if (i !== undefined) cols[keys.indexOf(r.key)][i] += METRICS[metric].of(r);
  }
  return { keys, data: [xs.map((t) => t / 1000), ...cols] };
}

function Chart({ keys, data, metric }) {
  const el = useRef(null);
  useEffect(() => {
    const uPlot = window.uPlot;
    if (!el.current || !uPlot) return;
    const plot = new uPlot(
      {
        width: Math.max(320, el.current.clientWidth),
        height: 320,
        series: [{}, ...keys.map((k, i) => ({ label: k || "(none)", stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 5 }, value: (_u, v) => (v === null ? "" : METRICS[metric].fmt(v)) }))],
        axes: [{}, { size: 80, values: (_u, ticks) => ticks.map((v) => METRICS[metric].fmt(v)) }],
        scales: { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      },
      data,
      el.current,
    );
    return () => plot.destroy();
  }, [keys, data, metric]);
  return html`<div class="chart" ref=${el} data-testid="usage-chart"></div>`;
}

function Buckets({ admin }) {
  const { data, error } = useApi("/buckets", undefined, "buckets");
  if (error) return error.status === 404 ? null : html`<${Problem} error=${error} what="your quota buckets" />`;
  if (!data || data.buckets.length === 0) return null;
  return html`<h2>${admin ? html`Quota buckets <span class="muted">(everyone's: refill them on the <a href="#/quotas">Quotas</a> page)</span>` : "Your quota buckets"}</h2>
    <table class="list" data-testid="my-buckets"><thead><tr><th>Bucket</th><th>Left</th><th class="num">Capacity</th><th>Refill</th></tr></thead><tbody>
    ${data.buckets.map((b) => html`<tr key=${b.key}><td>${b.key}</td><td><meter min="0" max=${b.capacity} value=${Math.max(0, b.level)}></meter> ${amount(b.level, b.unit)}</td><td class="num">${amount(b.capacity, b.unit)}</td><td>${b.refill}</td></tr>`)}
    </tbody></table>`;
}

export function UsagePage({ query, me }) {
  const span = SPANS[query.span] ? query.span : "7d";
  const bucket = query.bucket === "hour" || query.bucket === "day" ? query.bucket : span === "24h" ? "hour" : "day";
  const by = query.by === "model" ? "model" : "user";
  const metric = METRICS[query.metric] ? query.metric : "cost";
  // The range ends at the next whole hour, so the current bucket is drawn.
  const until = Math.ceil(Date.now() / 3600_000) * 3600_000;
  const since = until - SPANS[span];
  const q = { since, until, bucket, by };
  const { data, error, loading } = useApi("/usage", q, `${span}/${bucket}/${by}`);
  const set = (k, v) => go("usage", { span, bucket, by, metric, [k]: v });
  const select = (k, value, options) => html`<label>${k[0].toUpperCase() + k.slice(1)}<select name=${k} value=${value} onChange=${(e) => set(k, e.currentTarget.value)}>${options.map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select></label>`;
  const s = data && series(data.rows, data.since, data.until, data.bucket, metric);
  const totals = s ? s.keys.map((k, i) => ({ key: k, total: s.data[i + 1].reduce((a, b) => a + b, 0) })).sort((a, b) => b.total - a.total) : [];
  return html`<section>
    <h1>Usage</h1>
    <p class="muted">${me.role === "admin" ? "Everyone's requests (you are an admin)." : "Your own requests."} Buckets are UTC hours or days.</p>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      ${select("span", span, Object.keys(SPANS).map((k) => [k, `last ${k}`]))}
      ${select("bucket", bucket, [["hour", "per hour"], ["day", "per day"]])}
      ${select("by", by, [["user", "by user"], ["model", "by model"]])}
      ${select("metric", metric, Object.entries(METRICS).map(([k, m]) => [k, m.label]))}
    </form>
    ${error ? html`<${Problem} error=${error} what="usage" />` : loading && !data ? html`<${Loading} />` : html`
      <${Chart} keys=${s.keys} data=${s.data} metric=${metric} />
      <p class="muted">${time(data.since)} – ${time(data.until)}</p>
      <table class="list" data-testid="usage-totals"><thead><tr><th>${by === "user" ? "User" : "Model"}</th><th class="num">${METRICS[metric].label}</th></tr></thead><tbody>
        ${totals.length === 0 ? html`<tr><td colspan="2" class="muted">No requests in this range.</td></tr>` : null}
        ${totals.map((t) => html`<tr key=${t.key}><td>${t.key || "(none)"}</td><td class="num">${METRICS[metric].fmt(t.total)}</td></tr>`)}
      </tbody></table>`}
    <${Buckets} admin=${me.role === "admin"} />
  </section>`;
}
