// The Kysely instance over a pg pool. Repositories are the only users of it.
import { Kysely, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;
/** Either the pool or an open transaction: repositories accept both. */
export type Executor = Db | Tx;

// bigserial ids and counts come back as strings by default; they stay well inside 2^53 here.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export interface DbHandle {
  db: Db;
  pool: pg.Pool;
  url: string;
  close(): Promise<void>;
}

export function openDatabase(url: string, options: { max?: number; applicationName?: string } = {}): DbHandle {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 20,
    application_name: options.applicationName ?? 'txrelay',
    // Fail fast when the database is unreachable: the caller answers 451 4.3.0.
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // A client losing its connection (database restart, crash) must not crash the process. pg-pool
  // listens for that only while a client is idle: one checked out between two statements of a
  // transaction would emit 'error' to nobody, an uncaught exception. Its next statement fails
  // instead (the caller answers 451), and the pool drops the dead client when it comes back.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    pool,
    url,
    async close() {
      await db.destroy();
    },
  };
}
