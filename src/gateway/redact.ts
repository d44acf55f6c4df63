/**
 * Credentials never reach a log record, a log line or a response: the
 * headers that carry them are dropped by name, and any configured provider
 * key is removed wherever it occurs (a header value, a body, an upstream
 * error message that echoes the key back).
 */

/**
 * Header names that carry credentials in the APIs the gateway proxies
 * (OpenAI/compatible: authorization; Azure OpenAI: api-key; Anthropic:
 * x-api-key; Gemini: x-goog-api-key) and in browsers (cookies).
 */
export const CREDENTIAL_HEADERS: ReadonlySet<string> = new Set([
  "authorization",
  "proxy-authorization",
  "x-api-key",
  "api-key",
  "x-goog-api-key",
  "cookie",
  "set-cookie",
]);

/** What a removed secret is replaced with. */
export const REDACTED = "[REDACTED]";

/** Headers in any of the shapes Node hands them out: IncomingHttpHeaders, a fetch Headers, or name/value pairs. */
export type HeadersLike =
  | Record<string, string | string[] | number | undefined>
  | Headers
  | Iterable<readonly [string, string]>;

function entries(headers: HeadersLike): Iterable<readonly [string, unknown]> {
  if (headers instanceof Headers) {
    const out: [string, string][] = [];
    headers.forEach((value, name) => out.push([name, value]));
    return out;
  }
  if (Symbol.iterator in headers) return headers as Iterable<readonly [string, string]>;
  return Object.entries(headers);
}

/** The secrets worth searching for, longest first (so a key that contains another is removed whole). */
function usable(secrets: readonly string[]): string[] {
  return [...new Set(secrets.filter((s) => typeof s === "string" && s.length > 0))].sort((a, b) => b.length - a.length);
}

/**
 * redactHeaders returns the headers as a plain object with lower-case names,
 * minus the credential headers and minus any header whose value contains
 * one of `secrets`. Multi-valued headers are joined with ", ".
 */
export function redactHeaders(headers: HeadersLike, secrets: readonly string[]): Record<string, string> {
  return redactHeadersWith(headers, usable(secrets));
}

/** redactHeadersWith is redactHeaders for secrets already cleaned and sorted once (prepareSecrets), for a caller that redacts many records. */
export function redactHeadersWith(headers: HeadersLike, keys: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [rawName, rawValue] of entries(headers)) {
    if (rawValue === undefined) continue;
    const name = rawName.toLowerCase();
    if (CREDENTIAL_HEADERS.has(name)) continue;
    const value = Array.isArray(rawValue) ? rawValue.map(String).join(", ") : String(rawValue);
    if (keys.some((k) => value.includes(k) || name.includes(k))) continue;
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  }
  return out;
}

/** scrubSecrets returns `text` with every occurrence of every secret replaced by "[REDACTED]". */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  return scrubber(secrets)(text);
}

/**
 * scrubber prepares scrubSecrets for one list of secrets, for a caller that
 * scrubs many strings (the store, once per record field): the list is
 * cleaned and sorted once, and a string holding no secret is returned as
 * it is after one substring search per secret.
 */
export function scrubber(secrets: readonly string[]): (text: string) => string {
  const keys = usable(secrets);
  if (keys.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const k of keys) if (out.includes(k)) out = out.split(k).join(REDACTED);
    return out;
  };
}
