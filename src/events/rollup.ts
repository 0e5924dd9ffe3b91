// The stats roll-up loop, run by the worker role: every few seconds it folds the events recorded
// since into stats_hourly (src/db/stats.repository.ts), batch after batch while batches come back
// full. Safe to run in every worker process at once: each event is claimed by one of them.
import type { Context } from '../context.ts';
import { rollUp } from '../db/stats.repository.ts';

export interface RollUpOptions {
  /** Pause between passes. Default 5 s: stats lag the events by about that much at most. */
  intervalMs?: number;
  /** Events per statement (one transaction each). Default 1000. */
  batchSize?: number;
}

export interface RollUpLoop {
  /** Stops scheduling passes and waits for the batch in progress (one short statement). */
  stop(): Promise<void>;
}

export function startRollUp(ctx: Context, options: RollUpOptions = {}): RollUpLoop {
  const intervalMs = options.intervalMs ?? 5_000;
  const batchSize = options.batchSize ?? 1_000;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;

  async function pass(): Promise<void> {
    let total = 0;
    let batches = 0;
    for (;;) {
      const n = await rollUp(ctx.db, batchSize);
      total += n;
      batches++;
      // A short batch means the backlog is done (or another worker holds the rest).
      if (n < batchSize || stopped) break;
    }
    if (total > 0) ctx.log.debug({ events: total, batches }, 'stats roll-up');
  }

  const schedule = () => {
    timer = setTimeout(() => {
      running = pass()
        // Nothing is lost: the events stay un-rolled and the next pass takes them.
        .catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, 'stats roll-up failed; retrying next pass'))
        .finally(() => {
          running = undefined;
          if (!stopped) schedule();
        });
    }, intervalMs);
    // A forgotten stop() must not keep the process alive.
    timer.unref();
  };
  schedule();

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
