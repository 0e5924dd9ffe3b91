// A periodic background task (route polls, the reconciler, the stats roll-up, the daily domain
// re-check): runs fn every intervalMs, never two at once, and stops cleanly.

export interface Periodic {
  /** Stops scheduling, aborts `signal` for the run in progress, and waits for it to end. */
  stop(): Promise<void>;
}

/**
 * Runs `fn` after `firstDelayMs` (default: intervalMs), then intervalMs after each run ends.
 * `signal` aborts when stop() is called, so a run looping over batches can end early.
 */
export function every(
  intervalMs: number,
  fn: (signal: AbortSignal) => Promise<void>,
  onError: (err: unknown) => void,
  options: { firstDelayMs?: number } = {},
): Periodic {
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const arm = (ms: number) => {
    timer = setTimeout(() => {
      running = fn(stopping.signal)
        .catch(onError)
        .finally(() => {
          running = undefined;
          if (!stopping.signal.aborted) arm(intervalMs);
        });
    }, ms);
    // A forgotten stop() must not keep the process alive.
    timer.unref();
  };
  arm(options.firstDelayMs ?? intervalMs);
  return {
    async stop() {
      stopping.abort();
      clearTimeout(timer);
      await running;
    },
  };
}
