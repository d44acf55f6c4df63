// Connections: the HTTP connectors and, for those that act for users (the
// OAuth 2.0 authorization code grant), each user's own connection and the
// delegations of it to tags they own. A client of the gateway's routes
// (docs/connectors.md, "Authorization code with PKCE"):
//
//   GET    /connectors                            the connectors, their credential's kind, the tags the caller owns
//   GET    /connectors/:name/oauth/tokens         a user's own row, an admin every row (never a token)
//   DELETE /connectors/:name/oauth/tokens/:user   that user or an admin
//   GET    /connectors/:name/oauth/delegations    a user's own, an admin all
//   POST   /connectors/:name/oauth/delegations    a user, for a tag they own
//   DELETE /connectors/:name/oauth/delegations/:tag  the user who granted it or an admin
//
// Connecting is a navigation to the gateway's consent page
// (/connectors/:name/oauth/start), which sends the browser on to the
// provider and back. What a caller sees and may do is the API's decision.
import { useState } from "preact/hooks";
import { api, ROOT } from "../lib/api.js";
import { html } from "../lib/html.js";
import { time } from "../lib/format.js";
import { Loading, Problem, useApi } from "../lib/ui.js";

/** normalize spells a user as the token rows do ("alice@" → "alice"). */
const normalize = (u) => String(u ?? "").toLowerCase().replace(/@$/, "");

/** expiry says when an access token expires, and whether the gateway renews it. */
function expiry(row) {
  if (row.readable === false) return html`<span class="pill bad">unreadable: its key left the keyring; connect again</span>`;
  const renew = row.renewable ? " (renewed on use)" : "";
  if (row.expiresAt === undefined) return `no expiry given${renew}`;
  return row.expiresAt <= Date.now() ? html`<span class="pill warn">expired ${time(row.expiresAt)}</span>${renew}` : `${time(row.expiresAt)}${renew}`;
}

const scopes = (row) => (row.scopes?.length ? row.scopes.map((s) => html`<span class="tag" key=${s}>${s}</span> `) : html`<span class="muted">not given</span>`);

/** Act runs one change through the API and reloads the lists; its error is shown beside it. */
function useAct(reload) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(undefined);
  const [done, setDone] = useState(undefined);
  const run = async (what, f) => {
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    try {
      await f();
      setDone(what);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
      reload();
    }
  };
  return { busy, error, done, run };
}

function Delegate({ connector, candidates, held, act }) {
  const free = candidates.filter((t) => !held.includes(t));
  const submit = (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const tag = String(new FormData(form).get("tag") ?? "").trim();
    act.run(`Delegated ${connector} to ${tag}.`, async () => {
      await api(`/connectors/${encodeURIComponent(connector)}/oauth/delegations`, { method: "POST", body: { tag } });
      form.reset();
    });
  };
  const list = `tags-${connector}`;
  return html`<form class="delegate" onSubmit=${submit} data-testid="delegate">
    <label>Delegate to tag…
      <input name="tag" list=${list} required placeholder=${free[0] ?? "tag:name"} aria-label=${`tag to delegate ${connector} to`} autocomplete="off" />
    </label>
    <datalist id=${list}>${free.map((t) => html`<option key=${t} value=${t} />`)}</datalist>
    <button type="submit" disabled=${act.busy}>Delegate</button>
    <span class="muted">${candidates.length ? html`Tags you own: ${candidates.map((t) => html`<code key=${t} class="candidate">${t}</code> `)}` : "The gateway's policy names you as the owner of no tag."}</span>
  </form>`;
}

/** One connector that acts for users: the caller's connection and delegations; for an admin, everyone's. */
function UserConnector({ c, me, owned }) {
  const [n, setN] = useState(0);
  const reload = () => setN((x) => x + 1);
  const admin = me.role === "admin";
  const self = me.tags.length === 0 && me.user ? normalize(me.user) : undefined;
  // A tagged node that is not an admin has no user: the API refuses it the listings, so they are not asked for.
  const may = self !== undefined || admin;
  const base = `/connectors/${encodeURIComponent(c.name)}/oauth`;
  const tokens = useApi(may ? `${base}/tokens` : undefined, undefined, n);
  const delegations = useApi(may ? `${base}/delegations` : undefined, undefined, n);
  const act = useAct(reload);
  if (!may) {
    return html`<p class="notice" data-testid="no-user">This node (${me.node}) is tagged: it has no user, so it connects no account. Its agents use a user's token only when an owner of its tag delegates it to them, from their own device.</p>`;
  }
  if (tokens.error) return html`<${Problem} error=${tokens.error} what=${`the connections of ${c.name}`} />`;
  if (delegations.error) return html`<${Problem} error=${delegations.error} what=${`the delegations of ${c.name}`} />`;
  if (!tokens.data || !delegations.data) return html`<${Loading} />`;
  const rows = tokens.data.tokens;
  const dels = delegations.data.delegations;
  const mine = self === undefined ? undefined : rows.find((r) => r.user === self);
  const myDels = self === undefined ? [] : dels.filter((d) => normalize(d.user) === self);
  const start = new URL(`meshguard/v1${base}/start`, ROOT).toString();
  const revokeToken = (user) => act.run(`Disconnected ${user} from ${c.name}.`, () => api(`${base}/tokens/${encodeURIComponent(user)}`, { method: "DELETE" }));
  const revokeDel = (d) => act.run(`Revoked the delegation of ${c.name} to ${d.tag}.`, () => api(`${base}/delegations/${encodeURIComponent(d.tag)}`, { method: "DELETE" }));
  return html`<div>
    ${act.error ? html`<p class="problem" role="alert" data-testid="action-error">${act.error.message}${act.error.status ? html` <span class="muted">(HTTP ${act.error.status})</span>` : null}</p>` : null}
    ${act.done ? html`<p class="notice" role="status" data-testid="action-done">${act.done}</p>` : null}
    ${self === undefined ? null : html`
      <h3>Your account</h3>
      ${mine
        ? html`<table class="facts" data-testid="my-connection"><tbody>
            <tr><th>Status</th><td><span class="pill ok" data-testid="status">connected</span> as ${me.user}</td></tr>
            <tr><th>Granted</th><td>${time(mine.grantedAt ?? mine.updatedAt)}</td></tr>
            <tr><th>Expires</th><td data-testid="expires">${expiry(mine)}</td></tr>
            <tr><th>Scopes</th><td data-testid="scopes">${scopes(mine)}</td></tr>
          </tbody></table>
          <p><button type="button" class="secondary" data-testid="disconnect" disabled=${act.busy} onClick=${() => revokeToken(mine.user)}>Disconnect</button> <a class="button secondary" href=${start} data-testid="reconnect">Connect again</a></p>`
        : html`<p><span class="pill" data-testid="status">not connected</span> Calls to ${c.name} made as you are refused until you connect your account.</p>
          <p><a class="button" href=${start} data-testid="connect">Connect</a></p>`}
      <h3>Your delegations</h3>
      <p class="muted">Agents on a tag you own use your token when you delegate it to the tag (one user per tag and connector).</p>
      <table class="list" data-testid="my-delegations"><thead><tr><th>Tag</th><th>Connector</th><th>Granted</th><th></th></tr></thead><tbody>
        ${myDels.length === 0 ? html`<tr><td colspan="4" class="muted">None.</td></tr>` : null}
        ${myDels.map((d) => html`<tr key=${d.tag} data-tag=${d.tag}><td>${d.tag}</td><td>${c.name}</td><td>${time(d.grantedAt)}</td><td><button type="button" class="secondary" disabled=${act.busy} onClick=${() => revokeDel(d)}>Revoke</button></td></tr>`)}
      </tbody></table>
      <${Delegate} connector=${c.name} candidates=${owned} held=${myDels.map((d) => d.tag)} act=${act} />`}
    ${!admin ? null : html`
      <h3>Every user's connection <small class="tag">admin</small></h3>
      <table class="list" data-testid="all-connections"><thead><tr><th>User</th><th>Granted</th><th>Expires</th><th>Scopes</th><th>Key</th><th></th></tr></thead><tbody>
        ${rows.length === 0 ? html`<tr><td colspan="6" class="muted">No user has connected.</td></tr>` : null}
        ${rows.map((r) => html`<tr key=${r.user} data-user=${r.user}><td>${r.user}</td><td>${time(r.grantedAt ?? r.updatedAt)}</td><td>${expiry(r)}</td><td>${scopes(r)}</td><td>${r.keyId}</td><td><button type="button" class="secondary" disabled=${act.busy} onClick=${() => revokeToken(r.user)}>Revoke</button></td></tr>`)}
      </tbody></table>
      <h3>Every delegation <small class="tag">admin</small></h3>
      <table class="list" data-testid="all-delegations"><thead><tr><th>Tag</th><th>User</th><th>Granted</th><th></th></tr></thead><tbody>
        ${dels.length === 0 ? html`<tr><td colspan="4" class="muted">None.</td></tr>` : null}
        ${dels.map((d) => html`<tr key=${d.tag} data-tag=${d.tag}><td>${d.tag}</td><td>${d.user}</td><td>${time(d.grantedAt)}</td><td><button type="button" class="secondary" disabled=${act.busy} onClick=${() => revokeDel(d)}>Revoke</button></td></tr>`)}
      </tbody></table>`}
  </div>`;
}

export function ConnectionsPage({ me }) {
  const list = useApi("/connectors", undefined, "connectors");
  if (list.error?.status === 404) {
    return html`<section data-testid="connections"><h1>Connections</h1><p class="muted">This gateway has no HTTP connectors (the config's <code>connectors</code> section).</p></section>`;
  }
  if (list.error) return html`<section><h1>Connections</h1><${Problem} error=${list.error} what="the connectors" /></section>`;
  if (!list.data) return html`<${Loading} />`;
  const { connectors, delegableTags } = list.data;
  return html`<section data-testid="connections">
    <h1>Connections</h1>
    <p>The HTTP APIs this gateway calls for agents. A <b>shared</b> connector uses one credential the gateway holds for every caller the policy allows; one that <b>acts for users</b> calls with each user's own account, which they connect here. A tagged agent has no user: it uses a user's token only when an owner of its tag delegates it.</p>
    ${connectors.length === 0 ? html`<p class="muted">No connector is configured.</p>` : null}
    ${connectors.map((c) => html`<article class="connector" key=${c.name} data-connector=${c.name}>
      <h2>${c.name} <span class=${`pill ${c.actsForUsers ? "warn" : "ok"}`} data-testid="kind">${c.actsForUsers ? "acts for users" : "shared credential"}</span></h2>
      <p class="muted">Agents call <code>${c.path}/…</code>; the gateway sends it to ${c.upstream} with ${c.actsForUsers ? html`the caller's own OAuth 2.0 token (authorization code grant${c.auth.scopes ? `, scopes ${c.auth.scopes.join(" ")}` : ""})` : html`its ${c.auth.type}${c.auth.grant ? ` (${c.auth.grant})` : ""} credential: nothing to connect`}.</p>
      ${c.actsForUsers ? html`<${UserConnector} c=${c} me=${me} owned=${delegableTags} />` : null}
    </article>`)}
  </section>`;
}
