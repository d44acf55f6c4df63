// Streamed answers of the three LLM APIs the gateway proxies, as the
// browser reads them: server-sent events (OpenAI, Anthropic, Gemini with
// alt=sse), and the text each event carries. The chat page reads a live
// stream with them; the request page assembles a stored one.

/** deltas returns the text deltas of one streamed event, in any of the APIs the gateway proxies. */
export function deltas(ev) {
  const out = [];
  for (const c of ev?.choices ?? []) if (typeof c?.delta?.content === "string") out.push(c.delta.content); // OpenAI chat
  if (ev?.type === "response.output_text.delta" && typeof ev.delta === "string") out.push(ev.delta); // OpenAI responses
  if (ev?.type === "content_block_delta" && typeof ev.delta?.text === "string") out.push(ev.delta.text); // Anthropic
  for (const c of ev?.candidates ?? []) for (const p of c?.content?.parts ?? []) if (typeof p?.text === "string" && !p.thought) out.push(p.text); // Gemini
  return out;
}

/** streamError is the message of an error an event carries (each API's in-stream error shape), or undefined. */
export function streamError(ev) {
  if (ev?.error) return ev.error.message ?? "the stream broke";
  if (ev?.type === "error" || ev?.type === "response.failed") return ev.error?.message ?? ev.response?.error?.message ?? "the stream broke";
  return undefined;
}

/**
 * sseEvents yields the data of each server-sent event of a response body,
 * parsed as JSON (OpenAI's closing "[DONE]" ends it; data that is not JSON
 * is skipped).
 */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let data = [];
  const take = function* (line) {
    if (line === "") {
      const d = data.join("\n");
      data = [];
      if (d === "") return;
      if (d === "[DONE]") return yield { done: true };
      try {
        yield { ev: JSON.parse(d) };
      } catch {
        // not JSON: nothing to show
      }
    } else if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      // A CR last in the buffer may be half of a CRLF: wait for the next piece.
      if (buf[nl] === "\r" && nl === buf.length - 1) break;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      for (const x of take(line)) {
        if (x.done) return reader.cancel();
        yield x.ev;
      }
    }
  }
  for (const x of take(buf)) if (!x.done) yield x.ev;
  for (const x of take("")) if (!x.done) yield x.ev;
}

/** readText yields the text deltas of a streamed answer, throwing the error an event carries. */
export async function* readText(body) {
  for await (const ev of sseEvents(body)) {
    const err = streamError(ev);
    if (err !== undefined) throw new Error(err);
    for (const d of deltas(ev)) if (d !== "") yield d;
  }
}
