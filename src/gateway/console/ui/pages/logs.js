// Logs: every request the caller may read (a user's own; an admin's of
// everyone), filtered by user, agent (node), model, session and time, newest
// first, a page at a time (the API's cursor).
import { useState } from "preact/hooks";
import { html } from "../lib/html.js";
import { fromLocalInput, int, ms, time, toLocalInput, usd } from "../lib/format.js";
import { go, href } from "../lib/route.js";
import { Loading, Problem, useApi } from "../lib/ui.js";

const FILTERS = ["user", "node", "model", "session", "since", "until"];

/** Filters is the form of a list's filters; it writes them to the URL. */
export function Filters({ page, query, admin, keys = FILTERS }) {
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const q = {};
    for (const k of keys) {
      const v = String(f.get(k) ?? "").trim();
      if (!v) continue;
      q[k] = k === "since" || k === "until" ? fromLocalInput(v) : v;
    }
    go(page, q);
  };
  const field = (k, label, type = "text", placeholder = "") => html`<label>${label}
    <input name=${k} type=${type} value=${type === "datetime-local" ? toLocalInput(query[k]) : query[k] ?? ""} placeholder=${placeholder} /></label>`;
  return html`<form class="filters" onSubmit=${submit} data-testid="filters">
    ${keys.includes("user") ? (admin ? field("user", "User", "text", "anyone") : html`<label>User<input value="you" disabled title="users see only their own" /></label>`) : null}
    ${keys.includes("node") ? field("node", "Agent (node)", "text", "any") : null}
    ${keys.includes("model") ? field("model", "Model", "text", "any") : null}
    ${keys.includes("session") ? field("session", "Session", "text", "any") : null}
    ${field("since", "Since", "datetime-local")}
    ${field("until", "Until", "datetime-local")}
    <div class="actions"><button type="submit">Apply</button> <a class="button secondary" href=${href(page)}>Clear</a></div>
  </form>`;
}

const OUTCOME = { ok: "ok", denied: "bad", quota: "warn", blocked: "bad", upstream_error: "bad", upstream_unreachable: "bad", client_aborted: "warn", bad_request: "bad" };

export function LogsPage({ query, me }) {
  // The cursors of the pages before this one, to go back.
  const [cursors, setCursors] = useState([]);
  const before = cursors.at(-1);
  const q = { ...Object.fromEntries(FILTERS.map((k) => [k, query[k]])), limit: 50, before };
  const { data, error, loading } = useApi("/logs", q, JSON.stringify(q));
  return html`<section>
    <h1>Logs</h1>
    <p class="muted">${me.role === "admin" ? "Every caller's requests (you are an admin)." : "Your own requests."} Newest first; select one for its detail.</p>
    <${Filters} page="logs" query=${query} admin=${me.role === "admin"} />
    ${error ? html`<${Problem} error=${error} what="the logs" />` : loading && !data ? html`<${Loading} />` : html`
      <table class="list" data-testid="logs">
        <thead><tr><th>Time</th><th>User</th><th>Agent</th><th>Model</th><th>API</th><th>Outcome</th><th class="num">Tokens in / out</th><th class="num">Cost</th><th class="num">Duration</th></tr></thead>
        <tbody>
          ${data.records.length === 0 ? html`<tr><td colspan="9" class="muted">No requests match.</td></tr>` : null}
          ${data.records.map((r) => html`<tr key=${r.id} data-id=${r.id}>
            <td><a href=${href("logs", {}, r.id)}>${time(r.time)}</a></td>
            <td>${r.caller.user || html`<span class="muted">none</span>`}</td>
            <td>${r.caller.node}</td>
            <td>${r.model}${r.stream ? html` <span class="tag">stream</span>` : null}</td>
            <td>${r.operation}</td>
            <td><span class=${`pill ${OUTCOME[r.outcome] ?? ""}`}>${r.status} ${r.outcome}</span></td>
            <td class="num">${int(r.usage?.inputTokens)} / ${int(r.usage?.outputTokens)}${r.usage?.estimated ? "*" : ""}</td>
            <td class="num">${usd(r.costUsd)}</td>
            <td class="num">${ms(r.durationMs)}</td>
          </tr>`)}
        </tbody>
      </table>
      <div class="pager">
        <button type="button" disabled=${cursors.length === 0} onClick=${() => setCursors(cursors.slice(0, -1))}>← Newer</button>
        <span class="muted">page ${cursors.length + 1}</span>
        <button type="button" disabled=${!data.next} onClick=${() => setCursors([...cursors, data.next])}>Older →</button>
      </div>`}
  </section>`;
}
