// Message statistics from roll-ups (SPEC §8: "counts come from roll-ups, not scans").
//
// Events are the source of truth. The transactions that record them (commit, delivery outcome,
// tracking) only insert the event; they never touch a counter row, which would serialise a
// tenant's commits on one row lock. The roll-up folds events into stats_hourly later, and a
// stats query adds the few events not folded in yet, so answers are both cheap and fresh.
//
// Every hour and day here is a UTC one: date_trunc gets the zone explicitly, so the session's
// TimeZone setting never moves a bucket.
import { sql } from 'kysely';
import type { Executor } from './database.ts';

/** The event types stats count. Others (webhook bookkeeping, future types) are marked rolled up and skipped. */
const COUNTED_TYPES = ['accepted', 'sent', 'deferred', 'failed', 'opened', 'clicked'] as const;

/**
 * The contract with open and click tracking: the event of a message's first open (first click)
 * carries `detail.first = true`; later ones carry `first: false` or nothing. Unique opens and
 * clicks count only the first ones, so they need no per-message state at roll-up time.
 */
const FIRST = sql`(detail->>'first') = 'true'`;

/**
 * Folds up to `batchSize` events not yet counted into stats_hourly; returns how many it took.
 *
 * One statement, so one transaction: the events are claimed (row locks, skipping those another
 * roll-up holds), marked rolled_up and added to their hour's counters together. An event is
 * counted exactly once however many workers run this at once: a second roll-up either skips the
 * locked row or, once the first committed, re-checks `NOT rolled_up` on the new row version
 * (READ COMMITTED's re-check after a lock wait) and leaves it. A failure rolls back both the
 * marks and the counts. Upserts touch counter rows in key order, so two roll-ups adding to the
 * same hours wait for each other instead of deadlocking.
 */
export async function rollUp(db: Executor, batchSize: number): Promise<number> {
  const r = await sql<{ n: number }>`
    WITH claimed AS (
      SELECT id FROM events WHERE NOT rolled_up ORDER BY id LIMIT ${batchSize} FOR UPDATE SKIP LOCKED
    ), marked AS (
      UPDATE events e SET rolled_up = true FROM claimed WHERE e.id = claimed.id
      RETURNING e.tenant_id, e.tag, e.route, e.type, e.at, e.detail
    ), counted AS (
      INSERT INTO stats_hourly AS s (tenant_id, hour, tag, route, accepted, sent, deferred, failed, opened, clicked, unique_opened, unique_clicked)
      SELECT tenant_id, date_trunc('hour', at, 'UTC'), tag, route,
             count(*) FILTER (WHERE type = 'accepted'),
             count(*) FILTER (WHERE type = 'sent'),
             count(*) FILTER (WHERE type = 'deferred'),
             count(*) FILTER (WHERE type = 'failed'),
             count(*) FILTER (WHERE type = 'opened'),
             count(*) FILTER (WHERE type = 'clicked'),
             count(*) FILTER (WHERE type = 'opened' AND ${FIRST}),
             count(*) FILTER (WHERE type = 'clicked' AND ${FIRST})
        FROM marked
       WHERE type IN (${sql.join(COUNTED_TYPES)})
       GROUP BY 1, 2, 3, 4
       ORDER BY 1, 2, 3, 4
      ON CONFLICT (tenant_id, hour, tag, route) DO UPDATE SET
        accepted = s.accepted + excluded.accepted,
        sent = s.sent + excluded.sent,
        deferred = s.deferred + excluded.deferred,
        failed = s.failed + excluded.failed,
        opened = s.opened + excluded.opened,
        clicked = s.clicked + excluded.clicked,
        unique_opened = s.unique_opened + excluded.unique_opened,
        unique_clicked = s.unique_clicked + excluded.unique_clicked
      RETURNING 1
    )
    SELECT count(*)::int AS n FROM marked`.execute(db);
  return r.rows[0]?.n ?? 0;
}

export type StatsInterval = 'hour' | 'day';

export interface StatsFilter {
  /** Undefined only for admin callers: every tenant, tags of the same name added together. */
  tenantId?: string;
  /** Inclusive; events count by the UTC hour they happened in, from this hour's start. */
  from: Date;
  /** Exclusive: hours starting at or after it are left out. */
  to: Date;
  interval: StatsInterval;
  /** Only this tag. */
  tag?: string;
  /** Only events of this route (by name; '' for test-key messages, which have none). */
  route?: string;
}

export interface StatsRow {
  tag: string;
  /** The bucket's start: a UTC hour or UTC midnight. */
  bucket: Date;
  accepted: number;
  sent: number;
  deferred: number;
  failed: number;
  unique_opens: number;
  unique_clicks: number;
}

/**
 * Counts per tag and bucket over the hours starting in [from, to), buckets without events left
 * out. One statement reads stats_hourly and the events not rolled up yet in one snapshot: the
 * roll-up moves an event from one side to the other in a single commit, so each event counts
 * exactly once. The second half is small while the roll-up keeps up (the partial index holds
 * only un-rolled events); if no worker runs it, answers stay right but get slower.
 */
export async function queryStats(db: Executor, f: StatsFilter): Promise<StatsRow[]> {
  const tenant = f.tenantId !== undefined ? sql`AND tenant_id = ${f.tenantId}` : sql``;
  const narrow = sql.join(
    [f.tag !== undefined ? sql`AND tag = ${f.tag}` : sql``, f.route !== undefined ? sql`AND route = ${f.route}` : sql``],
    sql` `,
  );
  const eventHour = sql`date_trunc('hour', at, 'UTC')`;
  const r = await sql<StatsRow>`
    WITH counts AS (
      SELECT tag, hour, accepted, sent, deferred, failed, unique_opened, unique_clicked
        FROM stats_hourly
       WHERE hour >= ${f.from} AND hour < ${f.to} ${tenant} ${narrow}
      UNION ALL
      SELECT tag, ${eventHour},
             (type = 'accepted')::int, (type = 'sent')::int, (type = 'deferred')::int, (type = 'failed')::int,
             (type = 'opened' AND ${FIRST})::int, (type = 'clicked' AND ${FIRST})::int
        FROM events
       WHERE NOT rolled_up AND type IN (${sql.join(COUNTED_TYPES)})
         AND ${eventHour} >= ${f.from} AND ${eventHour} < ${f.to} ${tenant} ${narrow}
    )
    SELECT tag, date_trunc(${f.interval}, hour, 'UTC') AS bucket,
           sum(accepted)::bigint AS accepted, sum(sent)::bigint AS sent,
           sum(deferred)::bigint AS deferred, sum(failed)::bigint AS failed,
           sum(unique_opened)::bigint AS unique_opens, sum(unique_clicked)::bigint AS unique_clicks
      FROM counts
     GROUP BY tag, bucket
    HAVING sum(accepted) + sum(sent) + sum(deferred) + sum(failed) + sum(unique_opened) + sum(unique_clicked) > 0
     ORDER BY tag, bucket`.execute(db);
  return r.rows;
}
