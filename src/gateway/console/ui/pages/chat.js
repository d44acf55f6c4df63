// Chat: try the models one may use, as oneself, in every API the gateway
// proxies. The page lists the models of each API format as the gateway's
// own listings show them to the caller (OpenAI /v1/models, Anthropic's
// /v1/models, Gemini /v1beta/models), and calls the model in its own API,
// streamed, exactly as any client does: OpenAI /v1/chat/completions,
// Anthropic /v1/messages, Gemini :streamGenerateContent?alt=sse. The
// gateway knows the caller from the network (no key is sent); the policy,
// quotas, hooks and logs apply, and each answer links to its log record
// (x-meshguard-request-id).
import { useEffect, useRef, useState } from "preact/hooks";
import { answer, ROOT } from "../lib/api.js";
import { html } from "../lib/html.js";
import { href } from "../lib/route.js";
import { readText } from "../lib/stream.js";
import { Problem } from "../lib/ui.js";

/** The Anthropic API version the page speaks. */
const ANTHROPIC_VERSION = "2023-06-01";
/** Anthropic needs max_tokens: what the page asks for. */
const ANTHROPIC_MAX_TOKENS = 1024;

/** Each API format: its name in the page, how to list its models, and how to ask one of them for a streamed answer. */
const FORMATS = {
  openai: {
    label: "OpenAI API",
    list: () => fetch(new URL("v1/models", ROOT)).then(answer).then((l) => l.data.map((m) => m.id)),
    request: (model, history) => ({
      url: new URL("v1/chat/completions", ROOT),
      headers: { "content-type": "application/json" },
      body: { model, messages: history, stream: true },
    }),
  },
  anthropic: {
    label: "Anthropic API",
    list: () => fetch(new URL("v1/models", ROOT), { headers: { "anthropic-version": ANTHROPIC_VERSION } }).then(answer).then((l) => l.data.map((m) => m.id)),
    request: (model, history) => ({
      url: new URL("v1/messages", ROOT),
      headers: { "content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION },
      // Anthropic wants turns that alternate and are not empty: a failed answer's empty turn is left out.
      body: { model, max_tokens: ANTHROPIC_MAX_TOKENS, messages: history.filter((m) => m.content !== ""), stream: true },
    }),
  },
  gemini: {
    label: "Gemini API",
    list: () => fetch(new URL("v1beta/models", ROOT)).then(answer).then((l) => (l.models ?? []).map((m) => m.name.replace(/^models\//, ""))),
    request: (model, history) => ({
      url: new URL(`v1beta/models/${encodeURIComponent(model)}:streamGenerateContent?alt=sse`, ROOT),
      headers: { "content-type": "application/json" },
      body: { contents: history.filter((m) => m.content !== "").map((m) => ({ role: m.role === "assistant" ? "model" : "user", parts: [{ text: m.content }] })) },
    }),
  },
};

/** listModels lists every model the caller may use, each with its API format; a format whose listing fails is left out (its error kept). */
async function listModels() {
  const lists = await Promise.allSettled(Object.entries(FORMATS).map(([format, f]) => f.list().then((ids) => ids.map((id) => ({ format, id })))));
  const failed = lists.find((l) => l.status === "rejected");
  const models = lists.flatMap((l) => (l.status === "fulfilled" ? l.value : []));
  if (models.length === 0 && failed) throw failed.reason;
  return models;
}

export function ChatPage() {
  const [models, setModels] = useState(undefined);
  const [pick, setPick] = useState(0);
  const [messages, setMessages] = useState([]);
  const [busy, setBusy] = useState(undefined);
  const [error, setError] = useState(undefined);
  const log = useRef(null);

  useEffect(() => {
    listModels().then((ms) => {
      setModels(ms);
      setPick(0);
    }, setError);
  }, []);
  useEffect(() => log.current?.scrollTo(0, log.current.scrollHeight), [messages]);

  const chosen = models?.[pick];
  const send = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const text = String(new FormData(form).get("prompt") ?? "").trim();
    if (!text || !chosen || busy) return;
    form.reset();
    const asked = [...messages, { role: "user", content: text }];
    // What the API is sent: the turns as role and text, whichever model answered each.
    const history = asked.map(({ role, content }) => ({ role, content }));
    setMessages([...asked, { role: "assistant", content: "", model: chosen.id, format: chosen.format, streaming: true }]);
    setError(undefined);
    const ctl = new AbortController();
    setBusy(ctl);
    const update = (f) => setMessages((ms) => [...ms.slice(0, -1), f(ms.at(-1))]);
    try {
      const r = FORMATS[chosen.format].request(chosen.id, history);
      const res = await fetch(r.url, { method: "POST", signal: ctl.signal, headers: r.headers, body: JSON.stringify(r.body) });
      const id = res.headers.get("x-meshguard-request-id") ?? undefined;
      update((m) => ({ ...m, id }));
      if (!res.ok) await answer(res);
      for await (const d of readText(res.body)) update((m) => ({ ...m, content: m.content + d }));
    } catch (err) {
      if (err.name !== "AbortError") setError(err);
    } finally {
      update((m) => ({ ...m, streaming: false }));
      setBusy(undefined);
    }
  };

  const groups = Object.entries(FORMATS)
    .map(([format, f]) => ({ format, label: f.label, options: (models ?? []).map((m, i) => ({ ...m, i })).filter((m) => m.format === format) }))
    .filter((g) => g.options.length > 0);
  return html`<section class="chat">
    <h1>Chat</h1>
    <p class="muted">Calls the model in its own API (OpenAI, Anthropic or Gemini) as you, streamed: your policy and quotas apply, and each answer is logged like any call.</p>
    <div class="chat-bar">
      <label>Model <select name="model" value=${String(pick)} onChange=${(e) => setPick(Number(e.currentTarget.value))} disabled=${!models || models.length === 0}>
        ${groups.map((g) => html`<optgroup label=${g.label} data-format=${g.format}>${g.options.map((m) => html`<option value=${String(m.i)} data-format=${m.format}>${m.id}</option>`)}</optgroup>`)}
      </select></label>
      <button type="button" class="secondary" onClick=${() => (setMessages([]), setError(undefined))} disabled=${!!busy}>New chat</button>
    </div>
    ${models && models.length === 0 ? html`<p class="notice">The gateway's policy allows you no model.</p>` : null}
    <div class="messages" ref=${log} data-testid="messages">
      ${messages.map((m, i) => html`<div key=${i} class=${`msg ${m.role}`} data-role=${m.role} data-format=${m.format} data-streaming=${m.streaming ? "true" : "false"}>
        <div class="who">${m.role === "user" ? "You" : `${m.model} (${FORMATS[m.format]?.label ?? m.format})`}${m.id ? html` · <a href=${href("logs", {}, m.id)} data-testid="logged">logged</a>` : null}</div>
        <div class="text">${m.content}${m.streaming ? html`<span class="cursor">▍</span>` : null}</div>
      </div>`)}
    </div>
    ${error ? html`<${Problem} error=${error} what="the answer" />` : null}
    <form class="prompt" onSubmit=${send}>
      <textarea name="prompt" rows="3" placeholder="Ask something…" aria-label="message" onKeyDown=${(e) => {
        if (e.key === "Enter" && !e.shiftKey) {
          e.preventDefault();
          e.currentTarget.form.requestSubmit();
        }
      }}></textarea>
      ${busy ? html`<button type="button" onClick=${() => busy.abort()}>Stop</button>` : html`<button type="submit" disabled=${!chosen}>Send</button>`}
    </form>
  </section>`;
}
