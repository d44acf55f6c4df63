// The PostgreSQL side of bench/gateway: one real server (Debian's
// postgresql, started by test/gateway/pg-server.ts, the tests' harness, so
// the bench and the tests start it one way), a fresh database per system,
// and the count of what the gateways logged there, read with SQL rather than
// through the gateway, so a record written twice or lost shows whatever the
// store's own reading would say.
//
// Node 24 strips the harness's types, so it is imported as is.

import { postgresUnavailable, startPostgres } from '../../test/gateway/pg-server.ts';

/** setupPostgres installs PostgreSQL when missing (bench/gateway --setup, outside the namespace); returns why it could not, or undefined. */
export const setupPostgres = () => postgresUnavailable();

/**
 * startBenchPostgres starts a server, or returns { skip } saying why it
 * cannot (not installed and not root, no network to install it, initdb
 * failing): the bench then reports the PostgreSQL rows as skipped.
 */
export async function startBenchPostgres() {
  const why = postgresUnavailable();
  if (why) return { skip: why };
  try {
    return { pg: await startPostgres() };
  } catch (err) {
    return { skip: `PostgreSQL did not start: ${err.message}` };
  }
}

/** logCounts is what the gateway's log table in `url`'s database holds: rows, distinct request ids, tokens. */
export async function logCounts(pg, url, schema = 'meshguard') {
  const db = new URL(url).pathname.slice(1);
  const [r] = await pg.sql(db, `SELECT count(*)::int AS rows, count(DISTINCT id)::int AS ids, coalesce(sum(input_tokens + output_tokens), 0)::float8 AS tokens FROM ${schema}.logs`);
  return { rows: r.rows, ids: r.ids, tokens: r.tokens };
}
