// How numbers and times are shown.

const dtf = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });

export const time = (ms) => (ms === undefined || ms === null ? "" : dtf.format(new Date(ms)));
export const int = (n) => (n === undefined || n === null ? "" : Math.round(n).toLocaleString());
export const usd = (n) => (n === undefined || n === null ? "" : n === 0 ? "$0" : n < 0.01 ? `$${n.toFixed(6)}` : `$${n.toFixed(2)}`);
export const ms = (n) => (n === undefined || n === null ? "" : n < 10 ? `${n.toFixed(2)} ms` : n < 10_000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`);

/** amount shows a bucket amount in its unit. */
export const amount = (n, unit) => (unit === "usd" ? usd(n) : `${int(n)} tokens`);

/** toLocalInput / fromLocalInput convert epoch ms to and from a datetime-local input's value. */
export function toLocalInput(t) {
  if (t === undefined || t === "" || t === null) return "";
  const d = new Date(Number(t));
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
export function fromLocalInput(v) {
  if (!v) return undefined;
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? t : undefined;
}

/** pretty indents a JSON text; anything else is returned as it is. */
export function pretty(text) {
  if (text === undefined) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
