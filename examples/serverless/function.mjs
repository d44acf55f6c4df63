// A serverless function on the tailnet: what you deploy (AWS Lambda's
// shape: export an async function of the event; the same works for Google
// Cloud Functions, Vercel's Node functions or a container serving
// invocations). The node comes up on the first invocation of a warm
// instance, later ones reuse it, and it is logged out when the instance
// shuts down (SIGTERM). Ephemeral, state in memory, no addon needed
// (MESHGUARD_BACKEND=wasm runs the WebAssembly core). See docs/wasm.md.
import { handler } from "meshguard/serverless";

export const main = handler(
  () => ({
    controlUrl: process.env.MESHGUARD_CONTROL_URL,
    authKey: process.env.MESHGUARD_AUTH_KEY, // a reusable, ephemeral, tagged key
    hostname: process.env.MESHGUARD_HOSTNAME ?? "fn",
  }),
  async (event, node) => {
    // A tailnet service by name; it sees which node (and tag) is calling.
    const res = await node.fetch(`http://tools/search?q=${encodeURIComponent(event.q)}`);
    return { statusCode: res.status, body: await res.text(), node: node.name };
  },
);
