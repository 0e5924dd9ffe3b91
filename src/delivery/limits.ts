// A route's concurrency and max_per_second, held across every worker process (issue 5): before a
// delivery leaves, it leases one of the route's slots and reserves a send time, both in
// PostgreSQL (db/route-limits.repository.ts). pg-boss's localConcurrency still bounds what one
// process takes on; these bound the route as a whole, however many processes run.
//
// Waiting holds no database connection (each step is one short statement) and nothing another
// route needs: a throttled or saturated route only keeps its own consumer's slots busy. A wait
// that would be long is not sat out: the job is put back for later (deliver.ts putBack), so jobs
// of a slow route never hold a worker slot or pg-boss's job expiry for minutes.
//
// Not pg-boss 12's groupConcurrency: its fetch counts a group's active jobs without a lock, so
// two processes fetching at the same moment can both see room and overshoot; and it counts jobs
// fetched in a batch and still waiting their turn as running.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Db } from '../db/database.ts';
import * as limits from '../db/route-limits.repository.ts';
import type { Route } from '../db/schema.ts';
import type { Logger } from '../log.ts';
import type { SendReservation } from '../queue.ts';

/** What admit() decided. */
export type Admission =
  | {
      kind: 'go';
      /** Frees the concurrency slot; call once the upstream exchange is over. Never throws. */
      release(): Promise<void>;
    }
  | {
      kind: 'later';
      why: 'concurrency' | 'rate' | 'stopping';
      /** When the job should run again: a send time (database clock) or seconds from now; none: at once. */
      startAfter?: Date | number;
      /** A send time reserved for this message, for its next job to use instead of reserving again. */
      reserved?: SendReservation;
    };

/** A lease outlives a process that died by at most this long (its slot is then free again). */
const LEASE_TTL_SECONDS = 30;
/** Held leases are renewed this often, well inside their TTL. */
const LEASE_RENEW_MS = 10_000;
/** A delivery waits at most this long for a free slot before its job is put back. */
const SLOT_WAIT_MAX_MS = 30_000;
/** Put back after a slot wait ran out: runs again this many seconds later. */
const SLOT_RETRY_SECONDS = 2;
/** Looking for a free slot again: from MIN doubling to MAX, with jitter (no busy loop). */
const SLOT_POLL_MIN_MS = 20;
const SLOT_POLL_MAX_MS = 500;
/** A reserved send time further away than this is not slept on: the job runs again at that time. */
const RATE_SLEEP_MAX_MS = 5_000;
/**
 * A job put back until its send time is due this much earlier and sleeps the rest, so that
 * pg-boss's polling does not make it late.
 */
const RERUN_EARLY_MS = 1_000;
/**
 * A send time reserved by an earlier run of the job still counts this long after it passed
 * (pg-boss polls, so a job runs a little after its start time). Older: reserved again, so jobs
 * that waited out an outage do not all go out at once. One reserved under another rate (the
 * route's max_per_second changed since) is reserved again too.
 */
const SEND_TIME_GRACE_MS = 2_000;

/** Sleeps ms; false when the signal aborted the wait. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (slept: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(slept);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

interface Held {
  routeId: string;
  slot: number;
}

export class RouteLimiter {
  readonly #db: Db;
  readonly #log: Logger;
  readonly #holder = `${os.hostname()}:${process.pid}`;
  /** Leases this process holds, by lease id: renewed until released. */
  readonly #held = new Map<string, Held>();
  /** Slot rows known to exist, per route: how many. */
  readonly #ensured = new Map<string, number>();
  #renewTimer: NodeJS.Timeout | undefined;

  constructor(db: Db, log: Logger) {
    this.#db = db;
    this.#log = log;
  }

  /**
   * Waits until the route allows one more delivery: a free slot (when it sets concurrency), then
   * its send time (when it sets max_per_second). The slot comes first, so a send time is only
   * reserved by a delivery that can use it at once. `signal` ends the waits (shutdown, lost
   * job); `reserved` is a send time an earlier run of this job reserved.
   */
  async admit(route: Pick<Route, 'id' | 'concurrency' | 'max_per_second'>, signal: AbortSignal, reserved?: SendReservation): Promise<Admission> {
    const keep = reserved ? { startAfter: new Date(reserved.at.getTime() - RERUN_EARLY_MS), reserved } : {};
    if (signal.aborted) return { kind: 'later', why: 'stopping', ...keep };
    let release = async () => {};
    if (route.concurrency) {
      const slot = await this.#acquire(route.id, route.concurrency, signal);
      if (!slot) {
        if (signal.aborted) return { kind: 'later', why: 'stopping', ...keep };
        return { kind: 'later', why: 'concurrency', startAfter: SLOT_RETRY_SECONDS };
      }
      release = slot;
    }
    if (route.max_per_second) {
      const perSecond = route.max_per_second;
      let time: limits.SendTime | undefined;
      try {
        time = await this.#sendTime(route.id, perSecond, reserved);
      } catch (err) {
        await release();
        throw err;
      }
      // Either way the job keeps its send time: the next run uses it instead of reserving another.
      const kept = { startAfter: new Date(time.at.getTime() - RERUN_EARLY_MS), reserved: { at: time.at, perSecond } };
      if (time.waitMs > RATE_SLEEP_MAX_MS) {
        await release();
        return { kind: 'later', why: 'rate', ...kept };
      }
      if (!(await sleep(time.waitMs, signal))) {
        await release();
        return { kind: 'later', why: 'stopping', ...kept };
      }
    }
    return { kind: 'go', release };
  }

  /** Stops renewing. Call once no delivery runs: leases still held then expire on their own. */
  close(): void {
    clearInterval(this.#renewTimer);
    this.#renewTimer = undefined;
  }

  async #sendTime(routeId: string, perSecond: number, reserved: SendReservation | undefined): Promise<limits.SendTime> {
    if (reserved && reserved.perSecond === perSecond) {
      const ms = await limits.msUntil(this.#db, reserved.at);
      if (ms > -SEND_TIME_GRACE_MS) return { at: reserved.at, waitMs: Math.max(0, ms) };
    }
    return await limits.reserveSendTime(this.#db, routeId, perSecond);
  }

  /** A slot of the route, or undefined when none came free in time or the signal aborted. */
  async #acquire(routeId: string, count: number, signal: AbortSignal): Promise<(() => Promise<void>) | undefined> {
    if ((this.#ensured.get(routeId) ?? 0) < count) {
      await limits.ensureRouteSlots(this.#db, routeId, count);
      this.#ensured.set(routeId, count);
    }
    const lease = randomUUID();
    const deadline = Date.now() + SLOT_WAIT_MAX_MS;
    for (let pause = SLOT_POLL_MIN_MS; ; pause = Math.min(pause * 2, SLOT_POLL_MAX_MS)) {
      const slot = await limits.claimRouteSlot(this.#db, routeId, count, lease, this.#holder, LEASE_TTL_SECONDS);
      if (slot !== undefined) {
        this.#hold(lease, { routeId, slot });
        return () => this.#release(lease);
      }
      if (Date.now() + pause > deadline) return undefined;
      if (!(await sleep(pause * (0.5 + Math.random() / 2), signal))) return undefined;
    }
  }

  #hold(lease: string, held: Held): void {
    this.#held.set(lease, held);
    this.#renewTimer ??= setInterval(() => void this.#renew(), LEASE_RENEW_MS);
    // Renewing must not keep a process alive that is otherwise done.
    this.#renewTimer.unref();
  }

  async #release(lease: string): Promise<void> {
    const held = this.#held.get(lease);
    if (!held) return;
    this.#held.delete(lease);
    if (this.#held.size === 0) this.close();
    try {
      await limits.releaseRouteSlot(this.#db, held.routeId, held.slot, lease);
    } catch (err) {
      // Not renewed any more: the slot frees itself when the lease expires.
      this.#log.warn({ err: (err as Error).message, route_id: held.routeId, slot: held.slot }, 'releasing a route slot failed; it frees itself within the lease TTL');
    }
  }

  async #renew(): Promise<void> {
    const leases = [...this.#held.keys()];
    try {
      const kept = new Set(await limits.renewRouteSlots(this.#db, leases, LEASE_TTL_SECONDS));
      for (const lease of leases) {
        const held = this.#held.get(lease);
        if (held && !kept.has(lease)) {
          // Expired (the database was out of reach longer than the TTL) and taken by another
          // delivery, or the route was deleted: the route may run one over its concurrency until
          // this delivery ends. Nothing of ours to renew or release any more.
          this.#held.delete(lease);
          this.#log.warn({ route_id: held.routeId, slot: held.slot }, 'route slot lease lost while delivering');
        }
      }
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'renewing route slot leases failed; retrying');
    }
    if (this.#held.size === 0) this.close();
  }
}
