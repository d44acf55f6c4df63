// The console is a client of the gateway's API like any other: every call
// goes to /meshguard/v1 (or the LLM endpoints) with the browser's identity,
// which the gateway takes from the network. What a caller may see is
// decided there; a 403 here is shown as such, never worked around.

/** ApiError is an answer that was not 2xx: its status and the gateway's message. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The gateway's root, relative to the page (/console/), so the console works behind any prefix-less forward. */
export const ROOT = new URL("../", document.baseURI);

/** api calls the gateway's API: `path` after /meshguard/v1, `query` an object of parameters (undefined and "" left out). */
export async function api(path, { method = "GET", query, body, signal } = {}) {
  const url = new URL(`meshguard/v1${path}`, ROOT);
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
  const res = await fetch(url, {
    method,
    signal,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answer(res);
}

/** answer reads a JSON answer, throwing ApiError for anything but 2xx. Errors of the LLM APIs have the same `error.message`. */
export async function answer(res) {
  let data;
  try {
    data = await res.json();
  } catch {
    data = undefined;
  }
  if (!res.ok) throw new ApiError(res.status, data?.error?.message ?? `the gateway answered HTTP ${res.status}`, data?.error?.code ?? data?.error?.type);
  return data;
}
