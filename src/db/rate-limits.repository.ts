// Per-tenant message counters for the sending rate limit, one row per tenant and calendar
// minute. Windows follow the database clock (now()), never a relay's: every process counts
// into the same row however far its own clock drifts.
import { sql } from 'kysely';
import { executePrepared, type Executor } from './database.ts';

export interface RateWindow {
  /** Messages counted in the current window. */
  count: number;
  /** Start of the current one-minute window. */
  windowStart: Date;
  /** Whole seconds until the window ends: 1 to 60. */
  retryAfterSeconds: number;
}

export interface Consumed extends RateWindow {
  /** False when the window already held `limit` messages: nothing was counted. */
  counted: boolean;
}

interface WindowRow {
  count: number | null;
  window_start: Date;
  retry_after: number;
}

const toWindow = (row: WindowRow): RateWindow => ({
  count: row.count ?? 0,
  windowStart: row.window_start,
  retryAfterSeconds: row.retry_after,
});

/**
 * Counts one message in the tenant's current window unless the window already holds `limit`:
 * consumeGroups with a group of one. One statement, so concurrent relays cannot both take the
 * last slot: ON CONFLICT locks the row, and the conditional update leaves a full window untouched
 * (a refused attempt is not counted, so a client that keeps retrying is not locked out beyond the
 * window).
 */
export async function consume(db: Executor, tenantId: string, limit: number): Promise<Consumed> {
  const window = (await consumeGroups(db, [{ tenantId, limit, n: 1 }])).get(tenantId)!;
  return { ...window, count: window.counted ? window.count : limit };
}

/** A tenant's messages to count together (consumeGroups). */
export interface GroupRequest {
  tenantId: string;
  limit: number;
  /** Messages to count. */
  n: number;
}

/**
 * Counts several tenants' messages in one statement: for each tenant, all `n` of its messages,
 * or none when its window has no room for them all (the caller then counts those one by one
 * with consume, which takes what room there is). Returns each tenant's window and its count
 * after the increment (`counted` false, and count 0, when nothing was counted). At most one
 * request per tenant. The same statement drops the tenants' earlier windows, so each tenant
 * keeps a row or two.
 *
 * The counter's commit does not wait for the WAL to reach the disk (synchronous_commit off for
 * this statement's transaction alone): a PostgreSQL crash can forget the last fraction of a
 * second of counting, which lets a tenant send a few messages more in that minute. The messages
 * themselves are committed durably by their own statement. So this statement must run in a
 * transaction of its own (the pool's autocommit), never inside another's.
 */
export async function consumeGroups(db: Executor, requests: readonly GroupRequest[]): Promise<Map<string, Consumed>> {
  const query = sql<WindowRow & { tenant_id: string }>`
    WITH input AS (
      SELECT * FROM unnest(${requests.map((r) => r.tenantId)}::uuid[], ${requests.map((r) => r.n)}::int[], ${requests.map((r) => r.limit)}::int[]) AS x (tenant_id, n, lim)
    ),
    relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    w AS (SELECT date_trunc('minute', now()) AS start),
    dropped AS (
      DELETE FROM rate_counters r USING input i WHERE r.tenant_id = i.tenant_id AND r.window_start < (SELECT start FROM w)
    ),
    counted AS (
      INSERT INTO rate_counters AS c (tenant_id, window_start, count)
      SELECT tenant_id, (SELECT start FROM w), n FROM input WHERE n <= lim
      ON CONFLICT (tenant_id, window_start) DO UPDATE SET count = c.count + EXCLUDED.count
        WHERE c.count + EXCLUDED.count <= (SELECT lim FROM input WHERE input.tenant_id = c.tenant_id)
      RETURNING c.tenant_id, c.count
    )
    SELECT i.tenant_id, k.count, w.start AS window_start,
           ceil(extract(epoch FROM w.start + interval '1 minute' - now()))::int AS retry_after
    FROM input i CROSS JOIN w CROSS JOIN relaxed LEFT JOIN counted k ON k.tenant_id = i.tenant_id
  `;
  // Prepared (database.ts executePrepared): one per group of messages of rate-limited tenants.
  const { rows } = await executePrepared(db, 'rate_consume_groups', query.compile(db));
  return new Map(rows.map((row) => [row.tenant_id, { ...toWindow(row), counted: row.count !== null }]));
}

/** The tenant's count in the current window, counting nothing. */
export async function peek(db: Executor, tenantId: string): Promise<RateWindow> {
  const { rows } = await sql<WindowRow>`
    WITH w AS (SELECT date_trunc('minute', now()) AS start)
    SELECT (SELECT count FROM rate_counters WHERE tenant_id = ${tenantId} AND window_start = w.start) AS count,
           w.start AS window_start,
           ceil(extract(epoch FROM w.start + interval '1 minute' - now()))::int AS retry_after
    FROM w
  `.execute(db);
  return toWindow(rows[0]);
}

/**
 * Gives back one message counted in `windowStart` (a message refused after it was counted).
 * Once that window has ended there is nothing to give back, and nothing changes.
 */
export async function release(db: Executor, tenantId: string, windowStart: Date): Promise<void> {
  await db
    .updateTable('rate_counters')
    .set((eb) => ({ count: eb('count', '-', 1) }))
    .where('tenant_id', '=', tenantId)
    .where('window_start', '=', windowStart)
    .where('count', '>', 0)
    .execute();
}
