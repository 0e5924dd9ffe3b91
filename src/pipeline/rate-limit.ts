// Stage, right after authenticate: the tenant's sending rate limit (SPEC §2, §3: over it,
// 451 4.7.1). Counted per calendar minute in PostgreSQL, so the limit holds across every relay
// process. Messages sent with test keys count too: the limit is on what a tenant submits, and a
// test key must not be a way to flood the relay (their messages are stored like any other).
import type { Executor } from '../db/database.ts';
import { GroupedWrites } from '../db/grouped-writes.ts';
import { consume, consumeGroups, peek, release, type Consumed, type RateWindow } from '../db/rate-limits.repository.ts';
import type { Tenant } from '../db/schema.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import type { Submission } from './submission.ts';

/** 451 4.7.1; the HTTP API answers 429 with `Retry-After: retryAfterSeconds`. */
export class RateLimitedError extends SmtpError {
  readonly retryAfterSeconds: number;

  constructor(limit: number, retryAfterSeconds: number) {
    super(
      451,
      '4.7.1',
      `Rate limit of ${limit} message${limit === 1 ? '' : 's'} per minute exceeded for this tenant, try again in ${retryAfterSeconds} seconds`,
      'rate_limited',
    );
    this.name = 'RateLimitedError';
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/**
 * What this process last learned of each tenant's window, from counting or peeking: the early
 * check at MAIL FROM answers from it for WINDOW_FRESH_MS instead of asking PostgreSQL for every
 * message. The count at the end of DATA still decides.
 */
const WINDOW_FRESH_MS = 1_000;
const MAX_KNOWN_WINDOWS = 10_000;
const knownWindows = new Map<string, { count: number; seenAt: number; endsAt: number }>();

function learn(tenantId: string, window: RateWindow): void {
  if (knownWindows.size >= MAX_KNOWN_WINDOWS) knownWindows.clear();
  const now = Date.now();
  knownWindows.set(tenantId, { count: window.count, seenAt: now, endsAt: now + window.retryAfterSeconds * 1000 });
}

/** Groups of messages counted together: at most this many in one statement. */
const MAX_COUNTED_TOGETHER = 256;

interface Counting {
  tenantId: string;
  limit: number;
}

/**
 * Counts messages against their tenants' limits as the commit groups them (db/grouped-writes.ts):
 * those that reach the count while another count runs go together in one statement, each
 * tenant's all at once when its window has room for them all (consumeGroups), one by one
 * otherwise, so that the last slots of a window go to some of them and the rest are refused. A
 * count per message was a round trip and a durable commit each: a rate-limited tenant's messages
 * were accepted at less than half the rate of an unlimited one's.
 */
function groupedCounter(db: Executor): (c: Counting) => Promise<Consumed> {
  const writes = new GroupedWrites<Counting, Consumed>({
    maxGroup: MAX_COUNTED_TOGETHER,
    writeOne: (c) => consume(db, c.tenantId, c.limit),
    async writeMany(items) {
      const byTenant = Map.groupBy(items.keys(), (i) => items[i].tenantId);
      const windows = await consumeGroups(
        db,
        [...byTenant].map(([tenantId, indexes]) => ({ tenantId, limit: items[indexes[0]].limit, n: indexes.length })),
      );
      const results: Consumed[] = new Array(items.length);
      await Promise.all(
        [...byTenant].map(async ([tenantId, indexes]) => {
          const w = windows.get(tenantId);
          if (w?.counted) {
            // The tenant's messages took the last `indexes.length` places of the window, in order.
            indexes.forEach((index, k) => (results[index] = { ...w, count: w.count - indexes.length + 1 + k, counted: true }));
          } else {
            for (const index of indexes) results[index] = await consume(db, tenantId, items[index].limit);
          }
        }),
      );
      return results;
    },
  });
  return (c) => writes.write(c);
}

export function rateLimit(db: Executor) {
  const count = groupedCounter(db);
  return async function rateLimitStage(sub: Submission): Promise<Submission> {
    const { tenant } = sub.principal!;
    const limit = tenant.rate_limit_per_minute;
    if (limit === null) return sub; // unlimited tenants cost no query
    const window = await count({ tenantId: tenant.id, limit });
    learn(tenant.id, window);
    if (!window.counted) throw new RateLimitedError(limit, window.retryAfterSeconds);
    sub.rateWindow = window.windowStart;
    return sub;
  };
}

/**
 * Gives back the slot of a message that was counted but not accepted as new: refused by a
 * later stage, failed to commit, or answered as an idempotent duplicate. Only accepted
 * messages use up the limit.
 */
export async function releaseRateSlot(db: Executor, sub: Submission): Promise<void> {
  const window = sub.rateWindow;
  if (!window) return;
  sub.rateWindow = undefined;
  await release(db, sub.principal!.tenant.id, window);
}

/**
 * The early check at MAIL FROM for sessions that authenticated with SMTP AUTH: the refusal
 * when the tenant's window is already full, so the client does not upload DATA for nothing.
 * Counts nothing; the stage above, at the end of DATA, decides.
 */
export async function rateLimitedNow(db: Executor, tenant: Tenant): Promise<RateLimitedError | undefined> {
  const limit = tenant.rate_limit_per_minute;
  if (limit === null) return undefined;
  const now = Date.now();
  const known = knownWindows.get(tenant.id);
  if (known && now - known.seenAt < WINDOW_FRESH_MS && now < known.endsAt) {
    return known.count >= limit ? new RateLimitedError(limit, Math.max(1, Math.ceil((known.endsAt - now) / 1000))) : undefined;
  }
  const window = await peek(db, tenant.id);
  learn(tenant.id, window);
  return window.count >= limit ? new RateLimitedError(limit, window.retryAfterSeconds) : undefined;
}
