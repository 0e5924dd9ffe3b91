// How hard a webhook is tried, and when an endpoint is given up on (README, "Webhooks").
//
// Retries are pg-boss's own (retryLimit, retryDelay, retryBackoff, retryDelayMax on each job):
// an attempt that fails makes the job fail, and pg-boss schedules the next one. pg-boss 12
// computes the wait after the failure of the job's (k+1)-th attempt, with backoff, as
//
//   min(retryDelayMax, max(retryDelay, 1) × 2^min(16, k+1) / 2 × (1 + random()))
//
// (node_modules/pg-boss/dist/plans.js, failJobsBody), i.e. between d·2^k and d·2^(k+1),
// capped: random jitter keeps endpoints that fail together from being retried in lockstep.
// retryWaits() models that formula so the schedule's span can be stated and tested; a test also
// checks it against the waits pg-boss really sets.
//
// The default: 31 attempts (retryLimit 30), 30 s doubling, capped at 1 h. The shortest possible
// total wait is 30 × (2^7 − 1) = 3,810 s for the first 7 retries plus 23 × 3,600 s for the
// capped ones: 86,610 s, 24 h 3 min 30 s; the longest is 3,780 + 24 × 3,600 = 90,180 s, 25 h 3 min.
// So an event is delivered if its endpoint comes back within 24 hours, as the issue asks.

export interface RetryPolicy {
  /** Retries after the first attempt (attempts = retryLimit + 1). */
  retryLimit: number;
  /** Seconds; the first step of the backoff, or the fixed wait without backoff. */
  retryDelay: number;
  retryBackoff: boolean;
  /** Seconds; the longest wait between two attempts (backoff only). */
  retryDelayMax?: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { retryLimit: 30, retryDelay: 30, retryBackoff: true, retryDelayMax: 3600 };

/** The shortest and longest wait (seconds) before each retry, as pg-boss 12 computes it. */
export function retryWaits(policy: RetryPolicy): { min: number; max: number }[] {
  const waits: { min: number; max: number }[] = [];
  for (let k = 0; k < policy.retryLimit; k++) {
    if (!policy.retryBackoff) {
      waits.push({ min: policy.retryDelay, max: policy.retryDelay });
      continue;
    }
    const base = Math.max(policy.retryDelay, 1) * 2 ** (Math.min(16, k + 1) - 1);
    const cap = policy.retryDelayMax ?? Number.POSITIVE_INFINITY;
    waits.push({ min: Math.min(cap, base), max: Math.min(cap, 2 * base) });
  }
  return waits;
}

/** The whole schedule's shortest and longest span in seconds, attempts' own durations aside. */
export function retrySpan(policy: RetryPolicy): { attempts: number; minSeconds: number; maxSeconds: number } {
  const waits = retryWaits(policy);
  return {
    attempts: policy.retryLimit + 1,
    minSeconds: waits.reduce((s, w) => s + w.min, 0),
    maxSeconds: waits.reduce((s, w) => s + w.max, 0),
  };
}

/**
 * When an endpoint is disabled: after `failures` failed attempts in a row (any success resets
 * the count) that started at least `seconds` ago. Default: 10 failures over 24 hours. With the
 * default retry policy an endpoint that fails everything is disabled at the latest when its
 * first delivery exhausts its 31 attempts (over 24 h after the first), yet a day of occasional
 * failures with successes in between never disables it, nor do a few failures in a short outage.
 */
export interface DisablePolicy {
  failures: number;
  seconds: number;
}

export const DEFAULT_DISABLE_POLICY: DisablePolicy = { failures: 10, seconds: 24 * 3600 };

/** The one pg-boss queue of webhook deliveries (a job per delivery, its id the delivery's). */
export const WEBHOOK_QUEUE = 'webhooks';

/** pg-boss settings of a webhook job besides its retries. */
export const WEBHOOK_JOB_OPTIONS = {
  // One attempt takes at most the 10 s request timeout plus recording it; a worker that died
  // mid-attempt has its job retried (as one more attempt) after this long.
  expireInSeconds: 60,
  // pg-boss deletes a job still waiting this long after it was first due, and does not extend it
  // on retries. The retries span about 25 h; a week also covers workers down for days.
  retentionSeconds: 7 * 24 * 3600,
  // Finished jobs: the delivery log is in our own tables, pg-boss's rows are only plumbing.
  deleteAfterSeconds: 24 * 3600,
} as const;
