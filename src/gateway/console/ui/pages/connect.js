// Connect a client: the exact settings for each client, for a machine that
// is a tailnet node (the gateway's MagicDNS name) and for one that is not
// (through `meshguard connect`, a local forward run by a node of its own).
import { useEffect, useState } from "preact/hooks";
import { html } from "../lib/html.js";
import { Code, Loading, Problem, useApi } from "../lib/ui.js";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;
const LOCAL_PORT = 4000;

/** clients returns each client's settings for the gateway at `base` (no trailing slash). */
export function clients(base, model) {
  return [
    { name: "Claude Code", text: `export ANTHROPIC_BASE_URL=${base}\nexport ANTHROPIC_API_KEY=unused   # any value: the gateway drops it\nclaude` },
    {
      name: "Codex CLI (~/.codex/config.toml)",
      text: `model_provider = "meshguard"\nmodel = "${model.openai}"\n\n[model_providers.meshguard]\nname = "meshguard"\nbase_url = "${base}/v1"\nenv_key = "MESHGUARD_KEY"   # export MESHGUARD_KEY=unused: any value, the gateway drops it\nwire_api = "responses"`,
    },
    { name: "OpenAI SDK (Node)", text: `import OpenAI from "openai";\n\nconst client = new OpenAI({ baseURL: "${base}/v1", apiKey: "unused" });\nconst r = await client.chat.completions.create({ model: "${model.openai}", messages: [{ role: "user", content: "Hello" }] });` },
    { name: "OpenAI SDK (Python)", text: `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key="unused")\nr = client.chat.completions.create(model="${model.openai}", messages=[{"role": "user", "content": "Hello"}])` },
    { name: "Anthropic SDK (Node)", text: `import Anthropic from "@anthropic-ai/sdk";\n\nconst client = new Anthropic({ baseURL: "${base}", apiKey: "unused" });\nconst m = await client.messages.create({ model: "${model.anthropic}", max_tokens: 1024, messages: [{ role: "user", content: "Hello" }] });` },
    { name: "Anthropic SDK (Python)", text: `from anthropic import Anthropic\n\nclient = Anthropic(base_url="${base}", api_key="unused")\nm = client.messages.create(model="${model.anthropic}", max_tokens=1024, messages=[{"role": "user", "content": "Hello"}])` },
    { name: "Gemini SDK (@google/genai)", text: `import { GoogleGenAI } from "@google/genai";\n\nconst ai = new GoogleGenAI({ apiKey: "unused", httpOptions: { baseUrl: "${base}" } });\nconst r = await ai.models.generateContent({ model: "${model.gemini}", contents: "Hello" });` },
    { name: "Gemini SDK (Python google-genai)", text: `from google import genai\nfrom google.genai import types\n\nclient = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url="${base}"))\nr = client.models.generate_content(model="${model.gemini}", contents="Hello")` },
    { name: "curl", text: `curl ${base}/v1/chat/completions \\\n  -H 'content-type: application/json' \\\n  -d '{"model": "${model.openai}", "messages": [{"role": "user", "content": "Hello"}]}'` },
    { name: "Any OpenAI-compatible tool", text: `export OPENAI_BASE_URL=${base}/v1\nexport OPENAI_API_KEY=unused` },
  ];
}

/** listModels reads a model listing of the gateway (only what the caller may use); nothing when it fails. */
function listModels(path, headers) {
  return fetch(new URL(path, new URL("../", document.baseURI)), { headers }).then((r) => (r.ok ? r.json() : {}), () => ({}));
}

export function ConnectPage({ me }) {
  const info = useApi("/gateway", undefined, "gateway");
  const [models, setModels] = useState({ openai: [], anthropic: [], gemini: [] });
  useEffect(() => {
    Promise.all([listModels("v1/models", {}), listModels("v1/models", { "anthropic-version": "2023-06-01" }), listModels("v1beta/models", {})]).then(([o, a, g]) =>
      setModels({ openai: (o.data ?? []).map((m) => m.id), anthropic: (a.data ?? []).map((m) => m.id), gemini: (g.models ?? []).map((m) => String(m.name).replace(/^models\//, "")) }),
    );
  }, []);
  if (info.error) return html`<${Problem} error=${info.error} what="the gateway's address" />`;
  if (!info.data) return html`<${Loading} />`;
  const g = info.data;
  const viaForward = LOOPBACK.test(location.hostname);
  // A gateway listening on loopback only (no tailnet node) is reached at this page's own address.
  const tailnetBase = g.url;
  const localBase = viaForward || !g.url ? location.origin : `http://127.0.0.1:${LOCAL_PORT}`;
  const model = { openai: models.openai[0] ?? "gpt-4o-mini", anthropic: models.anthropic[0] ?? "claude-sonnet-4-5", gemini: models.gemini[0] ?? "gemini-2.5-flash" };
  const target = g.hostname ? `${g.hostname}:${g.port ?? 80}` : "ai-gateway:80";
  const connectCmd = `meshguard connect ${target} --listen 127.0.0.1:${LOCAL_PORT} \\\n  --control ${g.controlUrl ?? "https://YOUR-CONTROL-SERVER"} --auth-key-file ~/.config/meshguard/laptop.key`;
  const all = [...models.openai.map((m) => `${m} (OpenAI API)`), ...models.anthropic.map((m) => `${m} (Anthropic API)`), ...models.gemini.map((m) => `${m} (Gemini API)`)];
  return html`<section data-testid="connect">
    <h1>Connect a client</h1>
    <p>Clients need only a base URL. Any API key works: the gateway drops it and uses the provider's key, which never leaves it. Who you are comes from the tailnet: you are <b>${me.user || me.node}</b> (node ${me.node}${me.tags.length ? `, ${me.tags.join(", ")}` : ""}).</p>
    ${viaForward ? html`<p class="notice">This page came through a local forward (${location.origin}): the settings below for a machine that is not a node already point at it.</p>` : null}
    <h2>Models you may use</h2>
    ${all.length === 0 ? html`<p class="muted">None: the gateway's policy allows you no model.</p>` : html`<ul class="models" data-testid="models">${all.map((m) => html`<li>${m}</li>`)}</ul>`}
    ${!g.url ? html`<p class="notice">This gateway is not on a tailnet: it listens on loopback only, at ${location.origin}, for programs on its own machine.</p>` : html`<div class="grid2">
      <div>
        <h2>On a tailnet node</h2>
        <p>The machine is a node of the tailnet (Tailscale, or a meshguard node): use the gateway's name.</p>
        <${Code} label="Base URL" text=${tailnetBase} />
      </div>
      <div>
        <h2>On a machine that is not a node</h2>
        <p>Run <code>meshguard connect</code> with an auth key of your own (ask an admin for one; it makes this machine a node with its own identity), then use the local address.</p>
        <${Code} label="Forward" text=${connectCmd} />
        <${Code} label="Base URL" text=${localBase} />
      </div>
    </div>`}
    <h2>Settings per client</h2>
    <p class="muted">Shown for ${viaForward || !g.url ? location.origin : `a machine that is not a node (through the forward above); on a node, use ${tailnetBase} instead`}.</p>
    ${clients(localBase, model).map((c) => html`<${Code} key=${c.name} label=${c.name} text=${c.text} />`)}
  </section>`;
}
