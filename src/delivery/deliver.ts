// One delivery attempt for one job: load the message, send its stored bytes to the recipients
// still pending, and record the attempt, the recipients' results, the message's new status, its
// event and (when due) the next job, all in one transaction.
import { randomUUID } from 'node:crypto';
import type { Context } from '../context.ts';
import * as messages from '../db/messages.repository.ts';
import { findRouteById } from '../db/routes.repository.ts';
import { messageBytes } from '../db/stored-mime.ts';
import type { Message, MessageStatus, Route } from '../db/schema.ts';
import { enqueueDelivery, ensureQueue, type DeliveryJobData, type SendReservation } from '../queue.ts';
import type { FinalRecords } from './final-records.ts';
import type { RouteLimiter } from './limits.ts';
import { decide, type Decision } from './outcome.ts';
import { CaptureTransport } from './transports/capture.ts';
import type { TransportCache } from './transports/index.ts';
import { DeliveryError, type DeliveryResult } from './transports/transport.ts';

/** Statuses in which a message waits for a delivery attempt. */
const PENDING: ReadonlySet<MessageStatus> = new Set(['queued', 'deferred']);

export interface DeliveryJob {
  id: string;
  data: DeliveryJobData;
  /** pg-boss aborts it when the job's claim is lost or its expiry passes. */
  signal?: AbortSignal;
}

export interface DeliveryDeps {
  ctx: Context;
  transports: TransportCache;
  /** The most one attempt may take, whatever the upstream does; below the job's expiry. */
  deadlineMs: number;
  /** Aborted when a stopping worker's grace period is over: deliveries still running give up. */
  shutdown: AbortSignal;
  /**
   * The routes' concurrency and max_per_second across every worker process. Absent (tests that
   * drive one job by hand): deliveries are not held back.
   */
  limits?: RouteLimiter;
  /** Aborted as soon as the worker starts stopping: jobs still waiting on a route's limits go back unsent. */
  stopping?: AbortSignal;
  /** Groups the final attempts that end together into one statement. Absent: each is written alone. */
  finals?: FinalRecords;
  /** How long writing an attempt down is retried before the job fails. Default RECORD_RETRY_LIMIT_MS. */
  recordRetryLimitMs?: number;
}

/** Test-key messages never leave the relay (SPEC §2), whatever route they name. */
const testCapture = new CaptureTransport();

/** Sends the message; never throws: every failure becomes a DeliveryError to classify. */
async function attempt(deps: DeliveryDeps, message: Message, route: Route | undefined, pending: string[], signal: AbortSignal): Promise<DeliveryResult | DeliveryError> {
  if (pending.length === 0) return { recipients: [] };
  if (!route) return new DeliveryError({ response: `route "${message.route_name}" no longer exists`, errorCode: 'ENOROUTE' });
  let lease;
  try {
    lease = message.test_mode ? { transport: testCapture, release() {} } : deps.transports.acquire(route);
  } catch (err) {
    return err instanceof DeliveryError ? err : new DeliveryError({ response: `route "${route.name}" cannot be used: ${(err as Error).message}`, errorCode: 'ECONFIG' });
  }
  try {
    return await lease.transport.deliver({ messageId: message.id, mime: messageBytes(message), mailFrom: message.mail_from, recipients: pending, signal });
  } catch (err) {
    if (err instanceof DeliveryError) return err;
    // A fault of ours (a bug, not the upstream): retried like a transient failure, never permanent.
    return new DeliveryError({ response: `internal error: ${(err as Error).message}`, errorCode: 'EINTERNAL' });
  } finally {
    lease.release();
  }
}

/** Fallback routes already tried for this message, from its handoff events: a loop ends here. */
async function triedRoutes(deps: DeliveryDeps, messageId: string): Promise<Set<string>> {
  const tried = new Set<string>();
  for (const e of await messages.listEvents(deps.ctx.db, messageId)) {
    const d = e.detail as { from_route_id?: unknown; fallback_route_id?: unknown };
    // An admin's requeue (queue.service.ts) starts the message afresh, fallbacks included.
    if (e.type === 'requeued') tried.clear();
    if (e.type === 'deferred' && typeof d.fallback_route_id === 'string') {
      tried.add(d.fallback_route_id);
      if (typeof d.from_route_id === 'string') tried.add(d.from_route_id);
    }
  }
  return tried;
}

/** The route to hand an exhausted message to, if it has one not tried before. */
async function fallbackFor(deps: DeliveryDeps, message: Message, route: Route | undefined): Promise<Route | undefined> {
  if (!route?.fallback_route_id) return undefined;
  const tried = await triedRoutes(deps, message.id);
  if (tried.has(route.fallback_route_id) || route.fallback_route_id === route.id) return undefined;
  const fallback = await findRouteById(deps.ctx.db, message.tenant_id, route.fallback_route_id);
  if (fallback) await ensureQueue(deps.ctx.boss, fallback.id);
  return fallback;
}

type Outcome = 'sent' | 'deferred' | 'fallback' | 'failed';

/**
 * Writes the attempt down. Returns false when the message moved on meanwhile (another worker
 * recorded this job's attempt first): then nothing is written.
 */
async function record(
  deps: DeliveryDeps,
  job: DeliveryJob,
  message: Message,
  route: Route | undefined,
  decision: Decision,
  fallback: Route | undefined,
  attemptNo: number,
  durationMs: number,
  lastResponses: Map<string, string | null>,
): Promise<{ recorded: boolean; outcome: Outcome; nextAttemptAt?: Date }> {
  const { boss, db } = deps.ctx;
  const outcome: Outcome = decision.kind === 'exhausted' ? (fallback ? 'fallback' : 'failed') : decision.kind;
  const routeName = route?.name ?? message.route_name;
  // Outcomes count on the route that made the attempt, also when a fallback takes over.
  const ref = { id: message.id, tenant_id: message.tenant_id, tag: message.tag, route_name: routeName };
  const attemptRow = { route_id: route?.id ?? null, route_name: routeName, number: attemptNo, response: decision.response, duration_ms: durationMs };

  // The common case, a message that ends here, is one statement: no new job to send.
  if (outcome === 'sent' || outcome === 'failed') {
    const event: messages.EventInput =
      decision.kind === 'exhausted'
        ? { type: 'failed', detail: { attempt: attemptNo, route: routeName, response: decision.response, reason: decision.reason } }
        : { type: 'sent', detail: { attempt: attemptNo, route: routeName, response: decision.response, delivered: decision.delivered } };
    const final: messages.FinalAttempt = { jobId: job.id, message: ref, status: outcome, attempt: attemptRow, recipients: decision.updates, event };
    const recorded = await (deps.finals ? deps.finals.record(final) : messages.recordFinalAttempt(db, final));
    return { recorded, outcome };
  }

  let recorded = false;
  let nextAttemptAt: Date | undefined;

  await db.transaction().execute(async (trx) => {
    // The lock serialises us with any other worker holding the same job (a pg-boss retry after a
    // lost heartbeat): whoever records first moves job_id or status on, and the other stops here.
    const locked = await messages.lockMessage(trx, message.id);
    if (!locked || locked.job_id !== job.id || !PENDING.has(locked.status)) return;
    recorded = true;

    await messages.insertAttempt(trx, { message_id: message.id, ...attemptRow, outcome: outcome === 'deferred' ? 'deferred' : 'failed' });
    const handoff = new Set(outcome === 'fallback' && decision.kind === 'exhausted' ? decision.handoff : []);
    for (const u of decision.updates) {
      if (!handoff.has(u.address)) await messages.updateRecipient(trx, message.id, u.address, u.status, u.response);
    }
    // Recipients the fallback takes over start afresh there; their last reply stays visible.
    for (const address of handoff) {
      const u = decision.updates.find((x) => x.address === address);
      await messages.updateRecipient(trx, message.id, address, 'queued', u?.response ?? lastResponses.get(address) ?? null);
    }

    switch (outcome) {
      case 'deferred': {
        if (decision.kind !== 'deferred' || !route) throw new Error('unreachable: deferred without a schedule');
        const jobId = randomUUID();
        nextAttemptAt = decision.nextAttemptAt;
        await enqueueDelivery(boss, trx, { routeId: route.id, messageId: message.id, jobId, startAfter: nextAttemptAt });
        await messages.updateMessage(trx, message.id, { status: 'deferred', attempts: attemptNo, next_attempt_at: nextAttemptAt, job_id: jobId });
        await messages.insertEvent(trx, ref, {
          type: 'deferred',
          detail: { attempt: attemptNo, route: routeName, response: decision.response, next_attempt_at: nextAttemptAt.toISOString(), reason: decision.reason, ...(decision.throttled ? { throttled: true } : {}) },
        });
        break;
      }
      case 'fallback': {
        if (!fallback || decision.kind !== 'exhausted') throw new Error('unreachable: fallback without a route');
        const jobId = randomUUID();
        await enqueueDelivery(boss, trx, { routeId: fallback.id, messageId: message.id, jobId });
        // Attempts count per route: the fallback gets its own max_attempts.
        await messages.updateMessage(trx, message.id, { status: 'queued', route_id: fallback.id, route_name: fallback.name, attempts: 0, next_attempt_at: null, job_id: jobId });
        await messages.insertEvent(trx, ref, {
          type: 'deferred',
          detail: {
            attempt: attemptNo,
            route: routeName,
            response: decision.response,
            reason: decision.reason,
            fallback: fallback.name,
            fallback_route_id: fallback.id,
            from_route_id: route?.id ?? null,
          },
        });
        break;
      }
    }
  });
  return { recorded, outcome, ...(nextAttemptAt ? { nextAttemptAt } : {}) };
}

/** A job that waited longer than this for the route's limits checks the pause flag again. */
const PAUSE_RECHECK_AFTER_MS = 1_000;

/** How long a job of a paused route waits when put back (see putBack). */
export const PAUSED_PUT_BACK_SECONDS = 15;

/**
 * Puts the job back in the queue unsent, as a new job due at `startAfter` (a time, or seconds
 * from now; none: at once); the old one completes and is stale. Attempts and status are
 * untouched: nothing was tried. Returns the new job's id, or undefined when the message moved
 * on meanwhile.
 *
 * A paused route's consumers stop at their process's next route poll (worker.ts), so a job may
 * still be fetched in the seconds after the pause: it goes back PAUSED_PUT_BACK_SECONDS later; by
 * then no consumer of the paused route is left, so it waits for the resume. A job the route's
 * limits hold back (limits.ts) goes back until its send time, keeping that time (`reserved`).
 */
async function putBack(deps: DeliveryDeps, job: DeliveryJob, messageId: string, route: Route, startAfter?: Date | number, reserved?: SendReservation): Promise<string | undefined> {
  const { ctx } = deps;
  const jobId = randomUUID();
  let moved = false;
  await ctx.db.transaction().execute(async (trx) => {
    const locked = await messages.lockMessage(trx, messageId);
    if (!locked || locked.job_id !== job.id || !PENDING.has(locked.status) || locked.route_id !== route.id) return;
    await enqueueDelivery(ctx.boss, trx, { routeId: route.id, messageId, jobId, ...(startAfter !== undefined ? { startAfter } : {}), ...(reserved ? { reserved } : {}) });
    await messages.updateMessage(trx, messageId, { job_id: jobId });
    moved = true;
  });
  return moved ? jobId : undefined;
}

/** The send time an earlier run of the job reserved, if it carries a valid one. */
function reservedSendTime(job: DeliveryJob): SendReservation | undefined {
  const { sendAt, sendPerSecond } = job.data;
  const at = sendAt ? new Date(sendAt) : undefined;
  if (!at || Number.isNaN(at.getTime()) || typeof sendPerSecond !== 'number') return undefined;
  return { at, perSecond: sendPerSecond };
}

/** How long a record is retried before its job fails (DeliveryDeps.recordRetryLimitMs). */
export const RECORD_RETRY_LIMIT_MS = 60_000;

/**
 * The upstream exchange already happened: if the database is briefly away, keep trying to write
 * it down rather than throwing (pg-boss would retry the job and send the message again). Safe to
 * repeat: the job guard under the row lock lets only the first writer record.
 */
async function recordWithRetry<T>(deps: DeliveryDeps, write: () => Promise<T>): Promise<T> {
  const { ctx } = deps;
  const deadline = Date.now() + (deps.recordRetryLimitMs ?? RECORD_RETRY_LIMIT_MS);
  for (let delay = 500; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await write();
    } catch (err) {
      if (Date.now() + delay > deadline) throw err;
      ctx.log.warn({ err: (err as Error).message, retry_in_ms: delay }, 'recording a delivery attempt failed; retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * A message loaded with its batch is used only this soon after; later, it is loaded again. A
 * batch (worker.ts FETCH_BATCH, 25) to a responsive upstream is through in well under this; a
 * pause of the route reaches a worker only at its next route poll (5 s) anyway.
 */
const BATCH_LOAD_FRESH_MS = 1_000;
/** Larger messages are not loaded with their batch (a batch's would be held together). */
const BATCH_LOAD_MAX_BYTES = 256 * 1024;

/**
 * The messages of a fetched batch of jobs, loaded in one round trip as the batch starts. Each
 * job takes its own once, and only while the load is fresh: the jobs of a batch run one after
 * another, and a message loaded long before its turn may have moved on (an admin's requeue, a
 * paused route), so it is loaded again, as every message used to be. Whatever is used, the
 * record's job guard still decides. A failed batch load leaves each job to load its own.
 */
export class BatchLoad {
  readonly #startedAt = performance.now();
  readonly #loads: Promise<Map<string, messages.DeliveryLoad>>;
  readonly #freshMs: number;

  constructor(ctx: Context, messageIds: readonly string[], freshMs = BATCH_LOAD_FRESH_MS) {
    this.#freshMs = freshMs;
    this.#loads = messages.loadManyForDelivery(ctx.db, messageIds, BATCH_LOAD_MAX_BYTES).catch(() => new Map());
  }

  /** The message as loaded with the batch, once, if that is fresh; else undefined. */
  async take(messageId: string): Promise<messages.DeliveryLoad | undefined> {
    const loads = await this.#loads;
    const load = loads.get(messageId);
    loads.delete(messageId);
    return performance.now() - this.#startedAt <= this.#freshMs ? load : undefined;
  }
}

/**
 * Handles one delivery job. Returns normally for a job that has nothing to do (stale or
 * duplicate); throws only when the outcome could not be recorded, so pg-boss retries the job
 * and the job guard makes that retry safe.
 */
export async function processJob(deps: DeliveryDeps, job: DeliveryJob, batch?: BatchLoad): Promise<void> {
  await (await sendJob(deps, job, batch)).recorded;
}

/** A job whose upstream exchange is over; `recorded` settles as processJob does. */
export interface SentJob {
  recorded: Promise<void>;
}

const NOTHING_TO_RECORD: SentJob = { recorded: Promise.resolve() };

/**
 * processJob in two steps: resolves as soon as the upstream exchange is over (or the job needs
 * none), while the outcome is still being recorded, so that the worker's slot can start its
 * next message meanwhile (worker.ts). Throws, as processJob, when the job could not even start.
 */
export async function sendJob(deps: DeliveryDeps, job: DeliveryJob, batch?: BatchLoad): Promise<SentJob> {
  const { ctx } = deps;
  const messageId = job.data.messageId;
  if (!messageId) return NOTHING_TO_RECORD;
  // Jobs of a fetched batch run one after another; one whose claim pg-boss already took back
  // (expiry while earlier ones ran) belongs to whoever runs it again.
  if (job.signal?.aborted) return NOTHING_TO_RECORD;
  const loaded = (await batch?.take(messageId)) ?? (await messages.loadForDelivery(ctx.db, messageId));
  // Gone (its tenant was deleted), already finished, or superseded by a newer job: the job is
  // a leftover (a reconciler duplicate, a pg-boss retry after we recorded). Nothing to do.
  if (!loaded || loaded.message.job_id !== job.id || !PENDING.has(loaded.message.status)) {
    ctx.log.debug({ message: messageId, job: job.id }, 'stale delivery job skipped');
    return NOTHING_TO_RECORD;
  }
  const { message, route, recipients } = loaded;
  if (route?.paused) {
    const jobId = await putBack(deps, job, message.id, route, PAUSED_PUT_BACK_SECONDS);
    if (jobId) ctx.log.info({ tenant: route.tenant_id, message: message.id, route: route.name, job: jobId }, 'route paused: delivery job put back unsent');
    return NOTHING_TO_RECORD;
  }
  const pending = recipients.filter((r) => PENDING.has(r.status)).map((r) => r.address);
  const attemptNo = message.attempts + 1;

  // The route's concurrency and rate across every worker process. Waits here hold no database
  // connection; test-mode messages and attempts with nothing to send never reach the upstream.
  let release = async () => {};
  if (deps.limits && route && !message.test_mode && pending.length > 0) {
    const waiting = AbortSignal.any([deps.shutdown, ...(deps.stopping ? [deps.stopping] : []), ...(job.signal ? [job.signal] : [])]);
    const askedAt = performance.now();
    const admission = await deps.limits.admit(route, waiting, reservedSendTime(job));
    if (admission.kind === 'later') {
      // pg-boss took the job back (lost claim, expiry) and runs it again: nothing to put back.
      if (job.signal?.aborted) return NOTHING_TO_RECORD;
      const jobId = await putBack(deps, job, message.id, route, admission.startAfter, admission.reserved);
      if (jobId) {
        const held = { tenant: message.tenant_id, message: message.id, route: route.name, job: jobId, why: admission.why, send_at: admission.reserved?.at.toISOString() };
        ctx.log.debug(held, 'delivery held back by the route limits: job put back unsent');
      }
      return NOTHING_TO_RECORD;
    }
    release = admission.release;
    // A pause that landed while this job waited for its slot or send time still holds.
    if (performance.now() - askedAt > PAUSE_RECHECK_AFTER_MS && (await findRouteById(ctx.db, route.tenant_id, route.id))?.paused) {
      await release();
      const jobId = await putBack(deps, job, message.id, route, PAUSED_PUT_BACK_SECONDS);
      if (jobId) ctx.log.info({ tenant: route.tenant_id, message: message.id, route: route.name, job: jobId }, 'route paused: delivery job put back unsent');
      return NOTHING_TO_RECORD;
    }
  }

  const signal = AbortSignal.any([AbortSignal.timeout(deps.deadlineMs), deps.shutdown, ...(job.signal ? [job.signal] : [])]);
  const started = performance.now();
  let result: DeliveryResult | DeliveryError;
  try {
    result = await attempt(deps, message, route, pending, signal);
  } finally {
    // The upstream exchange is over: the slot is free for the next delivery, in any process.
    await release();
  }
  const durationMs = Math.round(performance.now() - started);
  return { recorded: recordOutcome(deps, job, loaded, pending, attemptNo, result, durationMs) };
}

/** What sendJob leaves to do once the upstream exchange is over: write its outcome down. */
async function recordOutcome(
  deps: DeliveryDeps,
  job: DeliveryJob,
  { message, route, recipients }: messages.DeliveryLoad,
  pending: string[],
  attemptNo: number,
  result: DeliveryResult | DeliveryError,
  durationMs: number,
): Promise<void> {
  const { ctx } = deps;
  const log = { tenant: message.tenant_id, message: message.id, route: route?.name ?? message.route_name, attempt: attemptNo, duration_ms: durationMs };
  const count = (result: Outcome | 'abandoned' | 'superseded' | 'interrupted') => ctx.metrics?.deliveryAttempts.inc({ tenant: log.tenant, route: log.route, result });
  if (job.signal?.aborted) {
    count('abandoned');
    // pg-boss took the job back (lost claim, expiry, shutdown) and will run it again: what we
    // saw is not ours to record. If the upstream took the message just before, it may go out
    // twice — the one window SPEC §3 allows.
    ctx.log.warn({ ...log, outcome: 'abandoned' }, 'delivery attempt abandoned: job no longer held');
    return;
  }

  if (deps.shutdown.aborted && result instanceof DeliveryError && route) {
    // The stopping worker's grace ran out mid-attempt (SPEC §9): the cut was ours, not the
    // upstream's doing, so the message goes back to the queue with its attempt not counted. Had
    // the upstream taken it just before the cut, it goes out twice: the window SPEC §3 allows.
    const jobId = await recordWithRetry(deps, () => putBack(deps, job, message.id, route));
    count('interrupted');
    ctx.log.warn({ ...log, outcome: 'interrupted', job: jobId }, 'delivery attempt interrupted by shutdown: put back, attempt not counted');
    return;
  }

  const decision = decide({
    recipients,
    pending,
    result,
    attempt: attemptNo,
    maxAttempts: route?.max_attempts ?? 1,
    retryDelaySeconds: route?.retry_delay_seconds ?? 60,
    now: new Date(),
  });
  const fallback = decision.kind === 'exhausted' ? await fallbackFor(deps, message, route) : undefined;
  const lastResponses = new Map(recipients.map((x) => [x.address, x.response]));
  const r = await recordWithRetry(deps, () => record(deps, job, message, route, decision, fallback, attemptNo, durationMs, lastResponses));

  if (!r.recorded) {
    count('superseded');
    ctx.log.warn({ ...log, outcome: 'superseded' }, 'delivery attempt not recorded: message already moved on');
    return;
  }
  const fields = {
    ...log,
    outcome: r.outcome,
    delivered: decision.updates.filter((u) => u.status === 'sent').length,
    refused: decision.updates.filter((u) => u.status === 'failed').length,
    deferred: decision.updates.filter((u) => u.status === 'deferred').length,
    response: decision.response.slice(0, 300),
    ...(r.nextAttemptAt ? { next_attempt_at: r.nextAttemptAt.toISOString() } : {}),
    ...(fallback ? { fallback: fallback.name } : {}),
  };
  count(r.outcome);
  // End to end, acceptance to the upstream's 250 (retries, pauses and fallbacks included).
  if (r.outcome === 'sent') ctx.metrics?.deliveryLatency.observe(Math.max(0, Date.now() - message.created_at.getTime()) / 1000);
  if (r.outcome === 'sent') ctx.log.info(fields, 'delivery attempt');
  else ctx.log.warn(fields, 'delivery attempt');
}
