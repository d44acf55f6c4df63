// Hash routing: #/page/arg?key=value. The state of a page (its filters) is
// in the URL, so a view can be reloaded, bookmarked and shared.
import { useEffect, useState } from "preact/hooks";

/** parse splits a location hash into the page, its path arguments and its query. */
export function parse(hash) {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const parts = (q < 0 ? raw : raw.slice(0, q)).split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] ?? "", args: parts.slice(1), query: Object.fromEntries(new URLSearchParams(q < 0 ? "" : raw.slice(q + 1))) };
}

/** href builds a hash link; empty values are left out. */
export function href(page, query = {}, ...args) {
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== "" && v !== null)).toString();
  return `#/${[page, ...args.map(encodeURIComponent)].join("/")}${qs ? `?${qs}` : ""}`;
}

export function go(page, query, ...args) {
  location.hash = href(page, query, ...args);
}

/** useRoute follows the location hash. */
export function useRoute() {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const on = () => setRoute(parse(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}
