// A route's max_per_second and concurrency, shared by every worker process: send times reserved
// from route_throttle and delivery slots leased from route_slots. Times come from the database
// clock (clock_timestamp(), not now(): a statement that waited for a row lock must not reserve
// a time already past), so processes whose own clocks drift still agree.
import { sql } from 'kysely';
import type { Executor } from './database.ts';

export interface SendTime {
  /** The reserved send time (database clock). */
  at: Date;
  /** Milliseconds from now (database clock) until `at`; 0 when it is already due. */
  waitMs: number;
}

/**
 * Reserves the route's next send time at `perSecond` and moves the schedule on by 1/perSecond.
 * One statement: ON CONFLICT locks the route's row, so concurrent workers get successive times.
 * A route idle for a while starts from now: no credit builds up, so there is never a burst above
 * the rate. A changed rate starts a new schedule from now (times reserved under the old one are
 * not honoured any more, see delivery/limits.ts).
 */
export async function reserveSendTime(db: Executor, routeId: string, perSecond: number): Promise<SendTime> {
  const step = sql`make_interval(secs => ${1 / perSecond}::float8)`;
  const { rows } = await sql<{ at: Date; wait_ms: number }>`
    INSERT INTO route_throttle AS t (route_id, per_second, next_at)
    VALUES (${routeId}, ${perSecond}::float8, clock_timestamp() + ${step})
    ON CONFLICT (route_id) DO UPDATE
      SET next_at = CASE WHEN t.per_second = excluded.per_second THEN greatest(t.next_at, clock_timestamp()) ELSE clock_timestamp() END + ${step},
          per_second = excluded.per_second
    RETURNING t.next_at - ${step} AS at,
              greatest(0, extract(epoch FROM t.next_at - ${step} - clock_timestamp()) * 1000)::float8 AS wait_ms
  `.execute(db);
  return { at: rows[0].at, waitMs: rows[0].wait_ms };
}

/** Milliseconds from now until `at` on the database clock (negative when `at` is past). */
export async function msUntil(db: Executor, at: Date): Promise<number> {
  const { rows } = await sql<{ ms: number }>`SELECT (extract(epoch FROM ${at}::timestamptz - clock_timestamp()) * 1000)::float8 AS ms`.execute(db);
  return rows[0].ms;
}

/** Makes sure slots 0 .. count-1 exist for the route (free ones: no lease). */
export async function ensureRouteSlots(db: Executor, routeId: string, count: number): Promise<void> {
  await sql`
    INSERT INTO route_slots (route_id, slot)
    SELECT ${routeId}, s FROM generate_series(0, ${count - 1}::int) AS s
    ON CONFLICT (route_id, slot) DO NOTHING
  `.execute(db);
}

/**
 * Leases a free slot among the route's first `count` (a slot at or above `count` is left over
 * from a higher concurrency and is never handed out again). Free: no lease, or one that expired.
 * SKIP LOCKED passes over a slot another worker is claiming at this instant; one that worker
 * claimed since our snapshot is re-checked under its lock and passed over too. Undefined when
 * every slot is taken.
 */
export async function claimRouteSlot(db: Executor, routeId: string, count: number, lease: string, holder: string, ttlSeconds: number): Promise<number | undefined> {
  const { rows } = await sql<{ slot: number }>`
    UPDATE route_slots AS s
       SET lease = ${lease}, holder = ${holder}, expires_at = clock_timestamp() + make_interval(secs => ${ttlSeconds})
     WHERE (s.route_id, s.slot) = (
             SELECT f.route_id, f.slot FROM route_slots f
              WHERE f.route_id = ${routeId} AND f.slot < ${count}
                AND (f.lease IS NULL OR f.expires_at < clock_timestamp())
              ORDER BY f.slot
              LIMIT 1
                FOR UPDATE SKIP LOCKED)
    RETURNING s.slot
  `.execute(db);
  return rows[0]?.slot;
}

/** Frees the slot, if this lease still holds it (an expired lease may have been taken over). */
export async function releaseRouteSlot(db: Executor, routeId: string, slot: number, lease: string): Promise<void> {
  await db
    .updateTable('route_slots')
    .set({ lease: null, holder: null, expires_at: null })
    .where('route_id', '=', routeId)
    .where('slot', '=', slot)
    .where('lease', '=', lease)
    .execute();
}

/** Pushes the expiry of these leases on; returns the leases still held (the others were lost). */
export async function renewRouteSlots(db: Executor, leases: string[], ttlSeconds: number): Promise<string[]> {
  if (leases.length === 0) return [];
  const { rows } = await sql<{ lease: string }>`
    UPDATE route_slots
       SET expires_at = clock_timestamp() + make_interval(secs => ${ttlSeconds})
     WHERE lease = ANY(${leases}::uuid[])
    RETURNING lease
  `.execute(db);
  return rows.map((r) => r.lease);
}
