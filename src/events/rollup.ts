// The stats roll-up loop, run by the worker role: every few seconds it folds the events recorded
// since into stats_hourly (src/db/stats.repository.ts), batch after batch while batches come back
// full. Safe to run in every worker process at once: each event is claimed by one of them.
import type { Context } from '../context.ts';
import { rollUp } from '../db/stats.repository.ts';
import { every, type Periodic } from '../every.ts';

export interface RollUpOptions {
  /** Pause between passes. Default 5 s: stats lag the events by about that much at most. */
  intervalMs?: number;
  /** Events per statement (one transaction each). Default 1000. */
  batchSize?: number;
}

export type RollUpLoop = Periodic;

export function startRollUp(ctx: Context, options: RollUpOptions = {}): RollUpLoop {
  const intervalMs = options.intervalMs ?? 5_000;
  const batchSize = options.batchSize ?? 1_000;

  async function pass(stopping: AbortSignal): Promise<void> {
    let total = 0;
    let batches = 0;
    for (;;) {
      const n = await rollUp(ctx.db, batchSize);
      total += n;
      batches++;
      // A short batch means the backlog is done (or another worker holds the rest).
      if (n < batchSize || stopping.aborted) break;
    }
    if (total > 0) ctx.log.debug({ events: total, batches }, 'stats roll-up');
  }

  // Nothing is lost on failure: the events stay un-rolled and the next pass takes them.
  return every(intervalMs, pass, (err) => ctx.log.warn({ err: (err as Error).message }, 'stats roll-up failed; retrying next pass'));
}
