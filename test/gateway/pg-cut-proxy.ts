// A TCP proxy in front of PostgreSQL that can lose one answer: armed with a
// piece of what the client sends (SQL, or a prepared statement's name), it
// forwards the message that holds it, lets the server run it, and then
// closes the connection instead of passing the server's answer (its command
// tag, e.g. "INSERT 0 n", "COMMIT") back. The client sees a broken
// connection and cannot know what happened — the case a retried log batch
// must survive without storing anything twice, and a bucket transaction
// must report rather than run again.
//
// (The server runs the statement and commits at the Sync that the client
// sent with it, whatever happens to the socket afterwards: what reaches the
// proxy after it is only the answer.)
import { createServer, connect, type Server, type Socket } from "node:net";

export interface CutProxy {
  readonly port: number;
  /** Arms the proxy for the next message containing `sent`; the first server data after it containing `answer` is dropped with the connection. Resolves then. */
  cutAnswerTo(sent: string, answer?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startCutProxy(targetPort: number): Promise<CutProxy> {
  let armed: { sent: string; answer: string; done: () => void } | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    sockets.add(client).add(upstream);
    let pending: { answer: string; done: () => void } | undefined;
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (d: Buffer) => {
      if (armed && d.includes(armed.sent)) {
        pending = armed;
        armed = undefined;
      }
      upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      if (pending && d.includes(pending.answer)) {
        const { done } = pending;
        pending = undefined;
        drop();
        done();
        return;
      }
      client.write(d);
    });
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    cutAnswerTo: (sent, answer = "INSERT 0 ") => new Promise<void>((done) => (armed = { sent, answer, done })),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
