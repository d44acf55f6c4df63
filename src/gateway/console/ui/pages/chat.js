// Chat: try the models one may use, as oneself. The page calls the
// gateway's own OpenAI-compatible /v1/chat/completions with stream: true,
// exactly as any client does: the policy, quotas, hooks and logs apply, and
// the answer links to its log record (x-meshguard-request-id).
import { useEffect, useRef, useState } from "preact/hooks";
import { answer, ROOT } from "../lib/api.js";
import { html } from "../lib/html.js";
import { href } from "../lib/route.js";
import { Problem } from "../lib/ui.js";

/** readStream yields the content deltas of an OpenAI chat stream (server-sent events). */
export async function* readStream(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const ev = JSON.parse(data);
      if (ev.error) throw new Error(ev.error.message ?? "the stream broke");
      const d = ev.choices?.[0]?.delta?.content;
      if (typeof d === "string" && d !== "") yield d;
    }
  }
}

export function ChatPage() {
  const [models, setModels] = useState(undefined);
  const [model, setModel] = useState("");
  const [messages, setMessages] = useState([]);
  const [busy, setBusy] = useState(undefined);
  const [error, setError] = useState(undefined);
  const log = useRef(null);

  useEffect(() => {
    fetch(new URL("v1/models", ROOT))
      .then(answer)
      .then((l) => {
        const ids = l.data.map((m) => m.id);
        setModels(ids);
        setModel(ids[0] ?? "");
      }, setError);
  }, []);
  useEffect(() => log.current?.scrollTo(0, log.current.scrollHeight), [messages]);

  const send = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const text = String(new FormData(form).get("prompt") ?? "").trim();
    if (!text || !model || busy) return;
    form.reset();
    const history = [...messages.map(({ role, content }) => ({ role, content })), { role: "user", content: text }];
    setMessages([...history, { role: "assistant", content: "", model, streaming: true }]);
    setError(undefined);
    const ctl = new AbortController();
    setBusy(ctl);
    const update = (f) => setMessages((ms) => [...ms.slice(0, -1), f(ms.at(-1))]);
    try {
      const res = await fetch(new URL("v1/chat/completions", ROOT), {
        method: "POST",
        signal: ctl.signal,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model, messages: history, stream: true }),
      });
      const id = res.headers.get("x-meshguard-request-id") ?? undefined;
      if (!res.ok) await answer(res);
      update((m) => ({ ...m, id }));
      for await (const d of readStream(res.body)) update((m) => ({ ...m, content: m.content + d }));
    } catch (err) {
      if (err.name !== "AbortError") setError(err);
    } finally {
      update((m) => ({ ...m, streaming: false }));
      setBusy(undefined);
    }
  };

  return html`<section class="chat">
    <h1>Chat</h1>
    <p class="muted">Calls the gateway's <code>/v1/chat/completions</code> as you, streamed: your policy and quotas apply, and each answer is logged like any call.</p>
    <div class="chat-bar">
      <label>Model <select name="model" value=${model} onChange=${(e) => setModel(e.currentTarget.value)} disabled=${!models || models.length === 0}>
        ${(models ?? []).map((m) => html`<option value=${m}>${m}</option>`)}
      </select></label>
      <button type="button" class="secondary" onClick=${() => (setMessages([]), setError(undefined))} disabled=${!!busy}>New chat</button>
    </div>
    ${models && models.length === 0 ? html`<p class="notice">The gateway's policy allows you no model of the OpenAI API (the chat page speaks it; Anthropic and Gemini models are reached with their own SDKs).</p>` : null}
    <div class="messages" ref=${log} data-testid="messages">
      ${messages.map((m, i) => html`<div key=${i} class=${`msg ${m.role}`} data-role=${m.role} data-streaming=${m.streaming ? "true" : "false"}>
        <div class="who">${m.role === "user" ? "You" : m.model}${m.id ? html` · <a href=${href("logs", {}, m.id)} data-testid="logged">logged</a>` : null}</div>
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
      ${busy ? html`<button type="button" onClick=${() => busy.abort()}>Stop</button>` : html`<button type="submit" disabled=${!model}>Send</button>`}
    </form>
  </section>`;
}
