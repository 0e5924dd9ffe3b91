import { sql } from 'kysely';
import type { Executor } from './database.ts';

/** A round trip to the database, for readiness checks. */
export async function ping(db: Executor): Promise<void> {
  await sql`SELECT 1`.execute(db);
}
