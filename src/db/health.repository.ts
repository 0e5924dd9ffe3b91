import { sql } from 'kysely';
import type { Db, Executor, Tx } from './database.ts';

/** A round trip to the database, for readiness checks. */
export async function ping(db: Executor): Promise<void> {
  await sql`SELECT 1`.execute(db);
}

/**
 * Runs `fn` in a read-only transaction whose statements PostgreSQL cancels after `ms`: a metrics
 * scrape must never pile queries up on a database that is already slow.
 */
export async function withStatementTimeout<T>(db: Db, ms: number, fn: (trx: Tx) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await sql`SET TRANSACTION READ ONLY`.execute(trx);
    await sql.raw(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(ms))}`).execute(trx);
    return fn(trx);
  });
}
