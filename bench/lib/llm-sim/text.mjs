// Deterministic request → answer arithmetic shared by every wire format of
// the simulated provider (bench/lib/llm-sim.mjs).
//
// Invariants a test may rely on:
//   - inputTokens = max(1, ceil(chars / 4)) over the request's text (the
//     fields the format names as prompt text: messages, system, input, ...);
//   - outputTokens = min(maxTokens, N) where N is the configured answer
//     length (option `outputTokens`, or header x-sim-output-tokens); one
//     token is one word of the answer;
//   - the answer's words depend only on the prompt text, so the same request
//     always gets the same answer;
//   - the stream deltas concatenate to exactly the non-streamed text.

const VOCAB = [
  'mesh', 'guard', 'node', 'policy', 'tailnet', 'token', 'budget', 'agent', 'route', 'model',
  'quota', 'hook', 'stream', 'chunk', 'usage', 'owner', 'grant', 'allow', 'deny', 'audit',
  'session', 'gateway', 'signal', 'bucket', 'price', 'refill', 'client', 'server', 'packet', 'wire',
];

/** collectText appends every string found under `value` (strings, arrays, objects' values) to `out`. */
export function collectText(value, out) {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) collectText(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const k in value) {
      // Only text-bearing fields count: a role, a type or an image URL is not prompt text.
      if (k === 'text' || k === 'content' || k === 'parts' || k === 'input' || k === 'system' || k === 'instructions' || k === 'messages' || k === 'contents' || k === 'systemInstruction') {
        collectText(value[k], out);
      }
    }
  }
  return out;
}

/** countTokens is the simulator's tokenizer: four characters a token, at least one. */
export function countTokens(parts) {
  let chars = 0;
  for (const p of parts) chars += p.length;
  return Math.max(1, Math.ceil(chars / 4));
}

/** FNV-1a over the prompt text: the seed of the answer's words. */
function seedOf(parts) {
  let h = 0x811c9dc5;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) {
      h ^= p.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
  }
  return h;
}

/**
 * plan computes what the simulator answers to a prompt.
 *
 * @param {string[]} parts the prompt text (collectText of the request's text fields)
 * @param {number | undefined} maxTokens the request's output limit, if any
 * @param {number} answerTokens the configured answer length N
 * @param {number} chunks how many content chunks a stream carries
 * @returns {{ inputTokens: number, outputTokens: number, truncated: boolean, text: string, deltas: string[] }}
 *   `deltas` has min(chunks, outputTokens) entries (one word at least each).
 */
export function plan(parts, maxTokens, answerTokens, chunks) {
  const inputTokens = countTokens(parts);
  const limit = Number.isInteger(maxTokens) && maxTokens >= 0 ? maxTokens : Infinity;
  const outputTokens = Math.min(limit, answerTokens);
  const seed = seedOf(parts);
  const words = new Array(outputTokens);
  for (let i = 0; i < outputTokens; i++) words[i] = VOCAB[(seed + i * 7) % VOCAB.length];
  const n = Math.min(chunks, outputTokens);
  const deltas = new Array(n);
  let w = 0;
  for (let c = 0; c < n; c++) {
    // Spread the words evenly: chunk c ends at word floor((c+1)·len/n).
    const end = Math.floor(((c + 1) * outputTokens) / n);
    let s = '';
    for (; w < end; w++) s += (w === 0 ? '' : ' ') + words[w];
    deltas[c] = s;
  }
  return { inputTokens, outputTokens, truncated: outputTokens < answerTokens, text: words.join(' '), deltas };
}

/** embedding returns a deterministic unit-free vector of `dims` numbers for one input. */
export function embedding(input, dims) {
  const seed = seedOf([typeof input === 'string' ? input : JSON.stringify(input)]);
  const v = new Array(dims);
  for (let i = 0; i < dims; i++) v[i] = (((seed + i * 2654435761) >>> 0) % 2000) / 1000 - 1;
  return v;
}
