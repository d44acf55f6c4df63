// Small shared pieces: loading a resource from the API, and the views of
// its states (loading, an error, "admins only" when the API answered 403).
import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { html } from "./html.js";

/**
 * useApi loads `path` (with `query`) whenever `key` changes; `path`
 * undefined loads nothing. Returns { data, error, loading, reload }.
 */
export function useApi(path, query, key) {
  const [state, setState] = useState({ data: undefined, error: undefined, loading: path !== undefined });
  const [n, setN] = useState(0);
  useEffect(() => {
    if (path === undefined) return;
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    api(path, { query, signal: ctl.signal }).then(
      (data) => setState({ data, error: undefined, loading: false }),
      (error) => {
        if (error.name !== "AbortError") setState({ data: undefined, error, loading: false });
      },
    );
    return () => ctl.abort();
  }, [path, key, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { ...state, reload };
}

/**
 * Problem shows why a request failed. A 403 is the API's refusal, shown as
 * such: on an admin page (`admin`) as "Admins only".
 */
export function Problem({ error, what, admin }) {
  if (error.status === 403 && admin) {
    return html`<section class="denied" data-testid="denied">
      <h2>Admins only</h2>
      <p>The gateway refused ${what ?? "this"} to you: it needs the gateway's <b>admin</b> role, which the tailnet policy grants (the <code>meshguard.dev/cap/gateway</code> capability) or the policy's <code>gateway.roles</code>.</p>
      <p class="muted">The gateway said: ${error.message}</p>
    </section>`;
  }
  return html`<section class="problem" role="alert" data-testid="problem"><h2>${error.status === 403 ? "Not allowed" : `Could not load ${what ?? "this"}`}</h2><p>${error.message}</p>${error.status ? html`<p class="muted">HTTP ${error.status}</p>` : null}</section>`;
}

export function Loading() {
  return html`<p class="muted" aria-busy="true">Loading…</p>`;
}

/** Copy puts `text` on the clipboard. */
export function Copy({ text }) {
  const [done, setDone] = useState(false);
  const copy = () => navigator.clipboard?.writeText(text).then(() => {
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  });
  return html`<button type="button" class="copy" onClick=${copy}>${done ? "Copied" : "Copy"}</button>`;
}

/** Code is a block of text to copy. */
export function Code({ text, label }) {
  return html`<div class="code">${label ? html`<div class="code-label">${label}<${Copy} text=${text} /></div>` : null}<pre><code>${text}</code></pre></div>`;
}
