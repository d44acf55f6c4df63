// Quotas (admins): the configured buckets, every bucket instance with what
// is left and held, and refilling one. The gateway answers GET /quotas and
// the refill only to admins; anyone else sees why.
import { useState } from "preact/hooks";
import { api } from "../lib/api.js";
import { html } from "../lib/html.js";
import { amount } from "../lib/format.js";
import { Loading, Problem, useApi } from "../lib/ui.js";

function duration(s) {
  if (s === null || s === undefined) return "never by itself";
  if (s === 0) return "full";
  if (s < 3600) return `in ${Math.ceil(s / 60)} min`;
  if (s < 172_800) return `in ${(s / 3600).toFixed(1)} h`;
  return `in ${(s / 86_400).toFixed(1)} days`;
}

function Refill({ bucket, onDone }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(undefined);
  const submit = async (e) => {
    e.preventDefault();
    const v = new FormData(e.currentTarget).get("amount");
    setBusy(true);
    setError(undefined);
    try {
      const view = await api(`/buckets/${encodeURIComponent(bucket.key)}/refill`, { method: "POST", body: v ? { amount: Number(v) } : {} });
      onDone(view);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="refill" onSubmit=${submit}>
    <input name="amount" type="number" min="0" step="any" placeholder="to capacity" aria-label=${`amount to add to ${bucket.key}`} />
    <button type="submit" disabled=${busy}>Refill</button>
    ${error ? html`<span class="error" role="alert">${error.message}</span>` : null}
  </form>`;
}

export function QuotasPage() {
  const config = useApi("/quotas", undefined, "quotas");
  const [n, setN] = useState(0);
  const buckets = useApi(config.data ? "/buckets" : undefined, undefined, n);
  const [done, setDone] = useState(undefined);
  if (config.error) return html`<section><h1>Quotas</h1><${Problem} error=${config.error} what="the quota overview" admin=${true} /></section>`;
  if (!config.data) return html`<${Loading} />`;
  return html`<section>
    <h1>Quotas</h1>
    <h2>Configured buckets</h2>
    ${config.data.quotas.length === 0 ? html`<p class="muted">The gateway config defines no quota buckets.</p>` : html`
    <table class="list" data-testid="quota-config"><thead><tr><th>Bucket</th><th>Per</th><th>Unit</th><th class="num">Capacity</th><th>Refill</th><th>Overdraft</th></tr></thead><tbody>
      ${config.data.quotas.map((q) => html`<tr key=${q.name}><td>${q.name}</td><td>${q.per}</td><td>${q.unit}</td><td class="num">${amount(q.capacity, q.unit)}</td><td>${q.refill}</td><td>${q.overdraft ?? ""}</td></tr>`)}
    </tbody></table>`}
    <h2>Instances</h2>
    ${done ? html`<p class="notice" role="status" data-testid="refilled">Refilled ${done.key}: ${amount(done.level, done.unit)} left of ${amount(done.capacity, done.unit)}.</p>` : null}
    ${buckets.error ? html`<${Problem} error=${buckets.error} what="the buckets" admin=${true} />` : !buckets.data ? html`<${Loading} />` : html`
    <table class="list" data-testid="buckets"><thead><tr><th>Instance</th><th>Left</th><th class="num">Held by requests in flight</th><th>Full</th><th>Refill</th></tr></thead><tbody>
      ${buckets.data.buckets.length === 0 ? html`<tr><td colspan="5" class="muted">No bucket has been used yet.</td></tr>` : null}
      ${buckets.data.buckets.map((b) => html`<tr key=${b.key} data-key=${b.key}>
        <td>${b.key}</td>
        <td><meter min="0" max=${b.capacity} low=${b.capacity * 0.2} optimum=${b.capacity} value=${Math.max(0, b.level)}></meter> <span class="level">${amount(b.level, b.unit)}</span> / ${amount(b.capacity, b.unit)}</td>
        <td class="num">${amount(b.reserved, b.unit)}</td>
        <td>${duration(b.fullInS)}</td>
        <td><${Refill} bucket=${b} onDone=${(v) => (setDone(v), setN((x) => x + 1))} /></td>
      </tr>`)}
    </tbody></table>`}
  </section>`;
}
