// What a relay has left to deliver, for a failure message when a test's wait for its queue to
// drain (test/faults/invariants.ts pendingWork) runs out.
import { sql } from 'kysely';
import type { Db } from '../../src/db/database.ts';

/** Messages by status and delivery jobs by state. */
export async function queueStates(db: Db): Promise<string> {
  const states = await sql<{ status: string; n: number }>`SELECT status, count(*)::int AS n FROM messages GROUP BY status`.execute(db);
  const jobs = await sql<{ state: string; n: number }>`SELECT state, count(*)::int AS n FROM pgboss.job WHERE name LIKE 'route.%' GROUP BY state`.execute(db);
  return `messages by status ${JSON.stringify(states.rows)}, jobs by state ${JSON.stringify(jobs.rows)}`;
}
