// The invariants every fault test judges the relay by (issue 7): no acknowledged message lost,
// duplicates only in the two windows no relay can close, no message delivered by two workers at
// once, and every message waiting for delivery backed by a live queue job.
import { sql } from 'kysely';
import type { Executor } from '../../src/db/database.ts';

export interface Orphan {
  id: string;
  status: string;
  job_id: string | null;
  job_state: string | null;
}

/**
 * Waiting messages (queued, deferred) whose job is missing or dead. pg-boss's live states are
 * created, retry and active (an active job of a killed process is live: its heartbeat lapses
 * and pg-boss hands it out again).
 */
export async function messagesWithoutLiveJob(db: Executor): Promise<Orphan[]> {
  const r = await sql<Orphan>`
    SELECT m.id, m.status, m.job_id, j.state::text AS job_state
      FROM messages m LEFT JOIN pgboss.job j ON j.id = m.job_id
     WHERE m.status IN ('queued', 'deferred')
       AND (j.id IS NULL OR j.state NOT IN ('created', 'retry', 'active'))`.execute(db);
  return r.rows;
}

/** Messages and delivery jobs not finished yet: 0 once the relay has nothing left to do. */
export async function pendingWork(db: Executor): Promise<number> {
  const r = await sql<{ n: number }>`
    SELECT (SELECT count(*) FROM messages WHERE status IN ('queued', 'deferred'))
         + (SELECT count(*) FROM pgboss.job WHERE name LIKE 'route.%' AND state IN ('created', 'retry', 'active')) AS n`.execute(db);
  return Number(r.rows[0].n);
}

export async function statusOf(db: Executor, id: string): Promise<{ status: string; attempts: number } | undefined> {
  const r = await sql<{ status: string; attempts: number }>`SELECT status, attempts FROM messages WHERE id = ${id}`.execute(db);
  return r.rows[0];
}

/** How many copies of each message id are in `ids`. */
export function copiesById(ids: (string | undefined)[]): Map<string, number> {
  const copies = new Map<string, number>();
  for (const id of ids) if (id) copies.set(id, (copies.get(id) ?? 0) + 1);
  return copies;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 200 ms until it returns a value, or fails naming `what` after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, detail?: () => Promise<string> | string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `: ${await detail()}` : ''}`);
    await sleep(200);
  }
}
