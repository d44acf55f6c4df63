/**
 * What the gateway accepts from web browsers. The gateway trusts the network
 * for identity (tailnet whois, or the node of a `meshguard connect` forward
 * on 127.0.0.1): there is no login, so a browser's requests carry the
 * caller's identity whatever page sends them. Two attacks follow, and are
 * refused here for every path (console, API, LLM calls):
 *
 * - cross-site requests (CSRF): a page on another site posting to
 *   http://127.0.0.1:4000/v1/chat/completions or to a refill route. Only a
 *   top-level navigation to the console may come from another site (a link
 *   to it in a wiki); anything else a browser marks as cross-site or
 *   same-site (Sec-Fetch-Site), or whose Origin is not the Host it was sent
 *   to, is refused. An OAuth provider's redirect back to a connector's
 *   callback (and a link to its consent page) is such a navigation too: the
 *   callback is safe to reach from anywhere, as its `state` is bound to the
 *   identity that started the consent (../credentials/oauth.ts);
 * - DNS rebinding: a page whose own name resolves to the gateway (or to the
 *   forward's 127.0.0.1) is same-origin with itself. The Host header then
 *   holds its name, so a browser request must name the gateway: an IP
 *   address, `localhost`, the gateway node's name (short or MagicDNS), or a
 *   name the config lists in `console.hosts`.
 *
 * Requests that are not a browser's (SDKs, curl, Node's fetch: no
 * Sec-Fetch-Site and no Origin header) are not concerned.
 */
import { isIP } from "node:net";
import type { IncomingMessage } from "node:http";
import { isOAuthNavigation } from "../credentials/oauth-routes.js";

/** hostOf returns the host name of a Host header or URL authority, lower-case, without port or IPv6 brackets. */
function hostOf(authority: string): string {
  const a = authority.trim().toLowerCase();
  if (a.startsWith("[")) return a.slice(1, a.indexOf("]") < 0 ? undefined : a.indexOf("]"));
  const colon = a.lastIndexOf(":");
  return (colon < 0 ? a : a.slice(0, colon)).replace(/\.$/, "");
}

/**
 * browserRefusal says why a browser's request must be refused (403), or
 * undefined to serve it. `names` are the gateway's own names (lower-case).
 */
export function browserRefusal(req: IncomingMessage, path: string, names: ReadonlySet<string>): string | undefined {
  const site = req.headers["sec-fetch-site"];
  const origin = req.headers.origin;
  if (site === undefined && origin === undefined) return undefined;
  const hostHeader = req.headers.host ?? "";
  const host = hostOf(hostHeader);
  if (!(isIP(host) !== 0 || host === "localhost" || names.has(host))) {
    return `a browser reached this gateway by the name ${JSON.stringify(host)}, which is not one of its own (an IP address, localhost, ${[...names].join(", ")}): refused, as a page on another site could resolve its own name to the gateway. Add the name to the gateway config's console.hosts if it is an alias of the gateway`;
  }
  const navigation = (req.method === "GET" || req.method === "HEAD") && req.headers["sec-fetch-mode"] === "navigate" && (path === "/console" || path.startsWith("/console/") || isOAuthNavigation(path));
  if (navigation) return undefined;
  if (site === "cross-site" || site === "same-site") return `a request from another site's page (Sec-Fetch-Site: ${site}) is refused: the gateway acts with the identity of the machine the browser runs on`;
  if (origin !== undefined && origin !== "null") {
    let o: string;
    try {
      o = new URL(origin).host;
    } catch {
      return `the Origin header ${JSON.stringify(origin)} is not a URL`;
    }
    if (o.toLowerCase() !== hostHeader.toLowerCase()) return `a request from the page of ${origin} to ${hostHeader} is refused: only the gateway's own pages may call it from a browser`;
  } else if (origin === "null") return "a request from an opaque origin (a sandboxed frame, a file: page) is refused";
  return undefined;
}
