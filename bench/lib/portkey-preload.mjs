// Loaded into the Portkey gateway's process (node --import) by bench/gateway.
//
// Portkey 1.15.2 on Node cannot stream: it appends its x-portkey-* headers
// to the upstream fetch Response, whose headers are immutable, and answers
// {"status":"failure","message":"Something went wrong"} (Portkey-AI/gateway
// issues 1389 and 1550). This copies each upstream answer into a Response
// with mutable headers, the change their proposed fix makes, so the peer
// can be measured at all. It costs the peer one Response object a request.
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const r = await upstreamFetch(input, init);
  return new Response(r.body, { status: r.status, statusText: r.statusText, headers: new Headers(r.headers) });
};
