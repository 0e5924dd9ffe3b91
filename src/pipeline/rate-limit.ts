// Stage, right after authenticate: the tenant's sending rate limit (SPEC §2, §3: over it,
// 451 4.7.1). Counted per calendar minute in PostgreSQL, so the limit holds across every relay
// process. Messages sent with test keys count too: the limit is on what a tenant submits, and a
// test key must not be a way to flood the relay (their messages are stored like any other).
import type { Executor } from '../db/database.ts';
import { consume, peek, release } from '../db/rate-limits.repository.ts';
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

export function rateLimit(db: Executor) {
  return async function rateLimitStage(sub: Submission): Promise<Submission> {
    const { tenant } = sub.principal!;
    const limit = tenant.rate_limit_per_minute;
    if (limit === null) return sub; // unlimited tenants cost no query
    const window = await consume(db, tenant.id, limit);
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
  const window = await peek(db, tenant.id);
  return window.count >= limit ? new RateLimitedError(limit, window.retryAfterSeconds) : undefined;
}
