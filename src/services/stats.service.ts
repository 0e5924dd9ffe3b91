// Message statistics per tag (SPEC §7 `GET /admin/stats`, `GET /v1/stats`; §8 dashboard):
// accepted, sent, deferred, failed, unique opens and clicks, with totals and a time series, read
// from the hourly roll-up (src/db/stats.repository.ts). Shared by the admin and tenant APIs.
import { z } from 'zod';
import type { Executor } from '../db/database.ts';
import * as stats from '../db/stats.repository.ts';
import { invalid } from './errors.ts';
import { dateParam } from './messages.service.ts';
import { getTenant } from './tenants.service.ts';

const BUCKET_MS = { hour: 3_600_000, day: 86_400_000 } as const;
/** The default period when `from` is not given: the 7 days before `to`. */
const DEFAULT_PERIOD_MS = 7 * BUCKET_MS.day;
/** Enough for 83 days by the hour or 5 years by the day; keeps one answer a bounded size. */
export const MAX_STATS_BUCKETS = 2000;

/** The query of `GET /admin/stats`; `GET /v1/stats` takes TenantStatsQuery (no `tenant`). */
export const StatsQuery = z.object({
  tenant: z.string().trim().min(1).optional().describe('tenant id or name; every tenant when absent'),
  from: dateParam.optional().describe('start, rounded down to its UTC hour or day; default: 7 days before `to`'),
  to: dateParam.optional().describe('end (exclusive), rounded up to its UTC hour or day; default: now'),
  interval: z.enum(['hour', 'day']).default('day').describe('bucket size of the series, in UTC'),
  tag: z.string().trim().min(1).max(100).optional().describe('only this tag'),
  route: z.string().trim().min(1).max(200).optional().describe('only events of this route (by name: delivery outcomes count on the route that made the attempt)'),
});
export const TenantStatsQuery = StatsQuery.omit({ tenant: true });

export type StatsCounts = Omit<stats.StatsRow, 'tag' | 'bucket'>;

export interface StatsReport {
  /** The period actually covered: whole buckets, `to` exclusive, ISO 8601 in UTC. */
  from: string;
  to: string;
  interval: stats.StatsInterval;
  tags: {
    tag: string;
    /** delivery_rate = sent / (sent + failed); null before anything was sent or failed. */
    totals: StatsCounts & { delivery_rate: number | null };
    /** Buckets with at least one event, oldest first; `at` is the bucket's start. */
    series: (StatsCounts & { at: string })[];
  }[];
}

const floorTo = (d: Date, ms: number): Date => new Date(Math.floor(d.getTime() / ms) * ms);
const ceilTo = (d: Date, ms: number): Date => new Date(Math.ceil(d.getTime() / ms) * ms);

const zero = (): StatsCounts => ({ accepted: 0, sent: 0, deferred: 0, failed: 0, unique_opens: 0, unique_clicks: 0 });

/**
 * Statistics per tag over whole buckets: `from` rounds down and `to` up to the interval (UTC
 * days and hours: epoch milliseconds are UTC, so plain arithmetic rounds them). Counts are of
 * events, bucketed by when each happened: a message accepted at 23:59 and sent at 00:01 counts
 * in two days, and one deferred three times adds 3 to `deferred`.
 *
 * `tenantId` scopes a tenant's own view (its query's `tenant` is ignored); admins pass undefined
 * and may narrow with `?tenant=` (id or name, 404 when unknown).
 */
export async function getStats(db: Executor, query: unknown, tenantId?: string): Promise<StatsReport> {
  // Empty parameters (a cleared form field) mean "use the default".
  const raw = Object.fromEntries(Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== ''));
  const q = (tenantId !== undefined ? TenantStatsQuery : StatsQuery).parse(raw) as z.output<typeof StatsQuery>;
  const ms = BUCKET_MS[q.interval];
  const end = q.to ?? new Date();
  const start = q.from ?? new Date(end.getTime() - DEFAULT_PERIOD_MS);
  if (start > end) throw invalid('invalid period', [{ path: 'from', message: 'must not be after `to` (default: now)' }]);
  const from = floorTo(start, ms);
  const to = ceilTo(end, ms);
  if ((to.getTime() - from.getTime()) / ms > MAX_STATS_BUCKETS) {
    throw invalid('period too long', [{ path: 'from', message: `at most ${MAX_STATS_BUCKETS} ${q.interval}s per query: shorten the period or use a larger interval` }]);
  }
  const scope = tenantId ?? (q.tenant !== undefined ? (await getTenant(db, q.tenant)).id : undefined);

  const rows = await stats.queryStats(db, { tenantId: scope, from, to, interval: q.interval, tag: q.tag, route: q.route });
  const byTag = new Map<string, StatsReport['tags'][number]>();
  for (const r of rows) {
    let entry = byTag.get(r.tag);
    if (!entry) {
      entry = { tag: r.tag, totals: { ...zero(), delivery_rate: null }, series: [] };
      byTag.set(r.tag, entry);
    }
    const counts: StatsCounts = {
      accepted: r.accepted,
      sent: r.sent,
      deferred: r.deferred,
      failed: r.failed,
      unique_opens: r.unique_opens,
      unique_clicks: r.unique_clicks,
    };
    entry.series.push({ at: r.bucket.toISOString(), ...counts });
    for (const k of Object.keys(counts) as (keyof StatsCounts)[]) entry.totals[k] += counts[k];
  }
  for (const { totals } of byTag.values()) {
    const settled = totals.sent + totals.failed;
    totals.delivery_rate = settled > 0 ? Math.round((totals.sent / settled) * 10_000) / 10_000 : null;
  }
  return { from: from.toISOString(), to: to.toISOString(), interval: q.interval, tags: [...byTag.values()] };
}
