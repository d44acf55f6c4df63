// A serverless function on the tailnet: what you deploy, in the shape of
// AWS Lambda's Node handlers (an exported async function of the event).
// The node comes up on the first invocation of a warm instance, later ones
// reuse it, and it is logged out when the instance shuts down (SIGTERM).
// Ephemeral, state in memory, no addon needed (MESHGUARD_BACKEND=wasm runs
// the WebAssembly core). Run locally by run.mjs (`npm run
// example:serverless`); not run on a function platform here. docs/wasm.md.
import { handler } from "meshguard/serverless";

/** @param {string} name */
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: the function's configuration must name it`);
  return v;
};

export const main = handler(
  () => ({
    controlUrl: env("MESHGUARD_CONTROL_URL"),
    authKey: env("MESHGUARD_AUTH_KEY"), // a reusable, ephemeral, tagged key
    hostname: process.env.MESHGUARD_HOSTNAME ?? "fn",
  }),
  /** @param {{ q: string }} event */
  async (event, node) => {
    // A tailnet service by name; it sees which node (and tag) is calling.
    const res = await node.fetch(`http://tools/search?q=${encodeURIComponent(event.q)}`);
    return { statusCode: res.status, body: await res.text(), node: node.name };
  },
);
