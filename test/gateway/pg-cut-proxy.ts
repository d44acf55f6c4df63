// A TCP proxy in front of PostgreSQL that can lose one answer: armed with a
// piece of SQL, it forwards the statement that holds it, lets the server run
// and commit it, and then closes the connection instead of passing the
// server's "INSERT 0 n" back. The client sees a broken connection and cannot
// know that its write was stored — the case a retried log batch must
// survive without storing anything twice.
//
// (The server runs the statement and commits at the Sync that the client
// sent with it, whatever happens to the socket afterwards: what reaches the
// proxy after it is only the answer.)
import { createServer, connect, type Server, type Socket } from "node:net";

export interface CutProxy {
  readonly port: number;
  /** Arms the proxy for the next statement containing `sql`; resolves once an answer was dropped. */
  cutAnswerTo(sql: string): Promise<void>;
  close(): Promise<void>;
}

export async function startCutProxy(targetPort: number): Promise<CutProxy> {
  let armed: { sql: string; done: () => void } | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    sockets.add(client).add(upstream);
    let pending: (() => void) | undefined;
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (d: Buffer) => {
      if (armed && d.includes(armed.sql)) {
        pending = armed.done;
        armed = undefined;
      }
      upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      if (pending && d.includes("INSERT 0 ")) {
        const done = pending;
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
    cutAnswerTo: (sql) => new Promise<void>((done) => (armed = { sql, done })),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
