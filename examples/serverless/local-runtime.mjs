// A minimal local stand-in for a function runtime: it loads function.mjs
// once (one warm instance) and runs each event it is sent over IPC through
// the exported handler, answering with the result and how long it took.
// SIGTERM ends the instance as a platform does; the handler logs the node
// out first.
const { main } = await import("./function.mjs");

process.on("message", async ({ id, event }) => {
  const t0 = performance.now();
  try {
    const result = await main(event);
    process.send({ id, result, ms: performance.now() - t0 });
  } catch (err) {
    process.send({ id, error: `${err.code ?? ""} ${err.message}`, ms: performance.now() - t0 });
  }
});
process.send({ ready: true });
