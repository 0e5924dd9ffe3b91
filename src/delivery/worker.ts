// The delivery role: one pg-boss consumer per route (every route of every tenant, new routes
// picked up by polling), and a reconciler that gives a new job to any waiting message whose
// job was lost. What one job does is in deliver.ts.
import { randomUUID } from 'node:crypto';
import type { Job } from 'pg-boss';
import type { Context } from '../context.ts';
import { findOrphans, lockMessage, updateMessage } from '../db/messages.repository.ts';
import { listAllRoutes } from '../db/routes.repository.ts';
import { every } from '../every.ts';
import { DELIVERY_QUEUE_OPTIONS, enqueueDelivery, ensureQueue, queueName, type DeliveryJobData } from '../queue.ts';
import { BatchLoad, sendJob, type DeliveryDeps } from './deliver.ts';
import { FinalRecords } from './final-records.ts';
import { RouteLimiter } from './limits.ts';
import { createTransport, DEFAULT_ROUTE_CONCURRENCY, TransportCache } from './transports/index.ts';

export interface DeliveryOptions {
  /** How often the reconciler looks for messages without a live job. Default 30 s. */
  reconcileIntervalMs?: number;
  /**
   * How often the route list is read to start consumers for new and resumed routes and stop
   * those of deleted and paused ones: how long a pause or resume takes to reach this process.
   * Default 5 s.
   */
  routePollMs?: number;
  /**
   * A waiting message counts as orphaned only when untouched this long. Default 60 s: it keeps
   * two processes' reconcilers from both replacing the same message's job.
   */
  orphanAfterSeconds?: number;
  /** The most one delivery attempt may take. Default 10 min, below the job expiry. */
  deliveryDeadlineMs?: number;
  /** How long writing an attempt down is retried before its job fails (deliver.ts). Default 60 s. */
  recordRetryLimitMs?: number;
}

export interface DeliveryWorker {
  /**
   * Stops taking jobs, lets deliveries in flight finish and record their outcome, then closes
   * connections. With `graceMs`, deliveries still running after that long are aborted and
   * recorded as deferred (retried later) so shutdown stays bounded (SPEC §9: up to 30 s).
   */
  stop(graceMs?: number): Promise<void>;
}

/** Orphans handled per reconciler pass; the next pass takes the rest. */
const RECONCILE_BATCH = 100;
/**
 * pg-boss polls each consumer's queue this often when idle. Half a second keeps the time from
 * `250` to the upstream short; it costs one cheap indexed query per consumer slot and tick.
 */
const POLLING_INTERVAL_SECONDS = 0.5;
/**
 * Jobs per fetch for each consumer slot (each slot still delivers one message at a time). pg-boss
 * fetches and completes a batch in one statement each, and the batch's messages load in one
 * (npm run bench: 4 → 10 took a backlog's drain from about 680 to 800 messages/s; 10 → 25, with
 * the batch load kept fresh for a second, 1,053-1,142 → 1,182-1,301/s and end to end 658-666 →
 * 721-742/s, alternately, when PostgreSQL's CPU was what the drain waited on). Jobs of a batch
 * wait their turn: with a pathologically slow upstream the last ones may pass their expiry and be
 * skipped here, pg-boss running them again (sendJob checks job.signal).
 *
 * A route with a max_per_second or a concurrency fetches FETCH_BATCH_LIMITED: its jobs wait on
 * the route's limits (limits.ts), and a process that fetched a large batch would hold jobs the
 * other worker processes could be sending.
 */
const FETCH_BATCH = 25;
const FETCH_BATCH_LIMITED = 10;

const fetchBatch = (route: { max_per_second: number | null; concurrency: number | null }): number =>
  route.max_per_second || route.concurrency ? FETCH_BATCH_LIMITED : FETCH_BATCH;

/**
 * Outcomes a slot may still be recording when it starts its next message. A record waits for
 * the group commit before it (final-records.ts); a slot that waited for it between messages
 * left the upstream idle meanwhile (npm run bench, alternately against the code before this and
 * the final record's plan by key, which alone moved neither figure: backlog drain 1,389-1,415
 * -> 1,650-1,691/s, end to end at 50 clients 734-753 -> 864-894/s, with 4 records ahead; 4 -> 8,
 * later: drain 1,827-1,902 -> 1,945-2,021/s, end to end 914-926 -> 949-967/s, in both rounds
 * though within the machine's noise).
 */
export const RECORDS_AHEAD = 8;

interface Consumer {
  workId: string;
  concurrency: number;
  batch: number;
}

export async function startDelivery(ctx: Context, options: DeliveryOptions = {}): Promise<DeliveryWorker> {
  const reconcileIntervalMs = options.reconcileIntervalMs ?? 30_000;
  const routePollMs = options.routePollMs ?? 5_000;
  const orphanAfterSeconds = options.orphanAfterSeconds ?? 60;
  // Leave a minute between our own deadline and pg-boss's expiry, for recording the outcome.
  const deadlineMs = Math.min(options.deliveryDeadlineMs ?? 10 * 60_000, (DELIVERY_QUEUE_OPTIONS.expireInSeconds - 60) * 1000);

  const transports = new TransportCache((route) => createTransport(route, { box: ctx.box, hostname: ctx.config.hostname }));
  const shutdown = new AbortController();
  // Aborted when stop() begins: jobs still waiting on their route's limits go back unsent.
  const halting = new AbortController();
  const limits = new RouteLimiter(ctx.db, ctx.log);
  const finals = new FinalRecords(ctx.db);
  const deps: DeliveryDeps = { ctx, transports, deadlineMs, shutdown: shutdown.signal, limits, stopping: halting.signal, finals, recordRetryLimitMs: options.recordRetryLimitMs };
  const consumers = new Map<string, Consumer>();
  /** Consumers replaced after a concurrency change, finishing their jobs. */
  const draining = new Set<Promise<void>>();
  let stopping = false;
  let stopped: Promise<void> | undefined;

  // Each job settles on its own: one that could not be recorded is failed here (pg-boss retries
  // it; the job guard makes that safe) without re-running the others of its batch, which pg-boss
  // then completes together (its completion skips a job no longer active). A slot sends its
  // batch's messages one after another, each starting as soon as the one before is through with
  // the upstream, while that one's outcome is still being recorded (at most RECORDS_AHEAD of them).
  //
  // Not pg-boss's perJobResults, which would settle them the same way: it completes a batch
  // through a JSON recordset the planner takes for a hundred rows, and joined it to a seq scan of
  // the route's whole queue (6,581 jobs read to complete 25, in pg_stat_statements and
  // auto_explain, end to end at 50 clients); its plain completion looks the jobs up by key.
  const handler = async (jobs: Job<DeliveryJobData>[]): Promise<void> => {
    const batch = new BatchLoad(ctx, jobs.flatMap((j) => (j.data.messageId ? [j.data.messageId] : [])));
    // Each settles without rejecting, so that none is left unhandled while the loop waits on
    // another; a job that could not even be failed fails the batch once all have settled.
    const settled: Promise<void>[] = [];
    let unfailed: unknown;
    for (const [i, job] of jobs.entries()) {
      if (i >= RECORDS_AHEAD) await settled[i - RECORDS_AHEAD];
      const sent = sendJob(deps, job, batch);
      settled.push(
        sent
          .then((s) => s.recorded)
          .catch((err: unknown) => failJob(job, err))
          .catch((err: unknown) => void (unfailed ??= err)),
      );
      // The next job waits for this one's upstream exchange, not for its record.
      await sent.catch(() => {});
    }
    await Promise.all(settled);
    if (unfailed !== undefined) throw unfailed;
  };

  /** A job whose attempt could not be recorded goes back to pg-boss as failed, to be retried. */
  async function failJob(job: Job<DeliveryJobData>, err: unknown): Promise<void> {
    const error = (err as Error).message;
    ctx.log.error({ err: error, job: job.id, message: job.data.messageId }, 'delivery job failed; pg-boss will retry it');
    try {
      // Fenced to this attempt (its retryCount), as pg-boss's own settling.
      await ctx.boss.fail(job.name, { id: job.id, retryCount: job.retryCount }, { error });
    } catch (failErr) {
      // Still active, it must not be completed with the batch: the handler throws once the
      // batch has settled, and pg-boss fails the whole batch instead (or, with PostgreSQL gone,
      // the claims lapse). A job of it whose attempt was recorded then runs again only to find
      // its message no longer waiting.
      ctx.log.error({ err: (failErr as Error).message, job: job.id }, 'failing a delivery job failed; its batch is failed');
      throw failErr;
    }
  }

  async function startConsumer(routeId: string, concurrency: number, batch: number, existing: Consumer | undefined): Promise<void> {
    const name = queueName(routeId);
    await ensureQueue(ctx.boss, routeId);
    // pg-boss waits out the polling interval after every fetch unless the batch came back full
    // (burstWhenBatchFull, ignored with batchSize 1): with one job per fetch a slot would take
    // at most 2 jobs/s. Batches of FETCH_BATCH keep each slot busy while a backlog lasts.
    const workId = await ctx.boss.work(
      name,
      { localConcurrency: concurrency, pollingIntervalSeconds: POLLING_INTERVAL_SECONDS, batchSize: batch, burstWhenBatchFull: true },
      handler,
    );
    consumers.set(routeId, { workId, concurrency, batch });
    if (existing) {
      // The old consumer finishes its jobs in the background; stop() waits for it.
      const p = ctx.boss.offWork(name, { id: existing.workId, wait: true }).catch((err: unknown) => ctx.log.error({ err, route_id: routeId }, 'stopping a route consumer failed'));
      draining.add(p);
      void p.finally(() => draining.delete(p));
    }
  }

  async function syncRoutes(): Promise<void> {
    const routes = await listAllRoutes(ctx.db);
    const present = new Set<string>();
    const paused = new Set<string>();
    for (const route of routes) {
      if (stopping) return;
      // A paused route is left without a consumer, like a deleted one (below); the next poll
      // after its resume starts one again. Its messages wait in its queue meanwhile.
      if (route.paused) {
        paused.add(route.id);
        continue;
      }
      present.add(route.id);
      const concurrency = route.concurrency ?? DEFAULT_ROUTE_CONCURRENCY;
      const batch = fetchBatch(route);
      const existing = consumers.get(route.id);
      if (existing?.concurrency === concurrency && existing.batch === batch) continue;
      try {
        await startConsumer(route.id, concurrency, batch, existing);
        ctx.log.info({ route: route.name, route_id: route.id, tenant: route.tenant_id, concurrency, batch }, existing ? 'route consumer resized' : 'route consumer started');
      } catch (err) {
        // One route's queue trouble must not keep the others from being served; next poll retries.
        ctx.log.error({ err, route: route.name, route_id: route.id }, 'starting a route consumer failed');
      }
    }
    // Deleted and paused routes: stop their consumers (in flight jobs finish; deliver.ts puts a
    // paused route's fetched jobs back unsent) and drop their connections.
    for (const [routeId, consumer] of consumers) {
      if (present.has(routeId)) continue;
      consumers.delete(routeId);
      const p = ctx.boss.offWork(queueName(routeId), { id: consumer.workId, wait: true }).then(
        () => transports.forget(routeId),
        (err: unknown) => ctx.log.error({ err, route: routeId }, 'stopping a route consumer failed'),
      );
      draining.add(p);
      void p.finally(() => draining.delete(p));
      ctx.log.info({ route_id: routeId }, paused.has(routeId) ? 'route consumer stopped: route paused' : 'route consumer stopped: route deleted');
    }
  }

  async function reconcile(): Promise<void> {
    const orphans = await findOrphans(ctx.db, orphanAfterSeconds, RECONCILE_BATCH);
    for (const orphan of orphans) {
      if (stopping) return;
      await requeue(orphan).catch((err: unknown) => ctx.log.error({ err, message: orphan.id }, 're-enqueueing an orphaned message failed'));
    }
  }

  async function requeue(orphan: { id: string; route_id: string }): Promise<void> {
    await ensureQueue(ctx.boss, orphan.route_id);
    const jobId = randomUUID();
    let requeued = false;
    await ctx.db.transaction().execute(async (trx) => {
      // Re-check under the lock: a handler or another process's reconciler may have moved the
      // message on since the scan; both touch updated_at.
      const m = await lockMessage(trx, orphan.id);
      if (!m || (m.status !== 'queued' && m.status !== 'deferred') || m.route_id !== orphan.route_id) return;
      if (m.updated_at.getTime() > Date.now() - orphanAfterSeconds * 1000) return;
      const startAfter = m.next_attempt_at && m.next_attempt_at.getTime() > Date.now() ? m.next_attempt_at : undefined;
      await enqueueDelivery(ctx.boss, trx, { routeId: orphan.route_id, messageId: m.id, jobId, ...(startAfter ? { startAfter } : {}) });
      await updateMessage(trx, m.id, { job_id: jobId });
      requeued = true;
    });
    if (requeued) ctx.log.warn({ message: orphan.id, route_id: orphan.route_id, job: jobId }, 'orphaned message given a new delivery job');
  }

  await syncRoutes();
  const routeLoop = every(routePollMs, syncRoutes, (err) => ctx.log.error({ err }, 'route poll failed'));
  // A first pass right away picks up what a crashed process left behind.
  await reconcile().catch((err: unknown) => ctx.log.error({ err }, 'reconcile failed'));
  const reconcileLoop = every(reconcileIntervalMs, reconcile, (err) => ctx.log.error({ err }, 'reconcile failed'));

  return {
    stop(graceMs?: number) {
      stopped ??= (async () => {
        stopping = true;
        const grace = graceMs === undefined ? undefined : setTimeout(() => shutdown.abort(), graceMs);
        await Promise.all([routeLoop.stop(), reconcileLoop.stop()]);
        // offWork with wait: pg-boss lets each consumer finish the job it holds before returning.
        const offs = [...consumers].map(([routeId, c]) => ctx.boss.offWork(queueName(routeId), { id: c.workId, wait: true }));
        // Once no consumer fetches any more (offWork stops their polling at once), jobs waiting on
        // their route's limits go back unsent instead of holding the shutdown up.
        halting.abort();
        await Promise.allSettled(offs);
        consumers.clear();
        await Promise.allSettled([...draining]);
        clearTimeout(grace);
        limits.close();
        await transports.closeAll();
      })();
      return stopped;
    },
  };
}
