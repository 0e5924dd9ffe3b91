// Queue operations (issue 5), shared by the admin API and the CLI: pause and resume a route,
// retry a waiting message now, cancel one, requeue a failed one (optionally on another route of
// its tenant), and what waits on each route.
//
// The messages table is the truth and pg-boss jobs only carry it out: every change here locks the
// message row, checks its state, moves `job_id` (which makes any older job stale: deliver.ts skips
// a job whose id is not the message's) and enqueues the new job, records an event, all in one
// transaction; then it is logged.
import { randomUUID } from 'node:crypto';
import type { PgBoss } from 'pg-boss';
import { z } from 'zod';
import type { Db, Executor } from '../db/database.ts';
import * as messages from '../db/messages.repository.ts';
import * as routes from '../db/routes.repository.ts';
import type { MessageStatus, Route } from '../db/schema.ts';
import { isUuid } from '../db/tenants.repository.ts';
import type { Logger } from '../log.ts';
import { enqueueDelivery, ensureQueue } from '../queue.ts';
import { conflict, invalid, notFound } from './errors.ts';
import { getRoute } from './routes.service.ts';
import { getTenant } from './tenants.service.ts';

export interface QueueDeps {
  db: Db;
  /** Only sends jobs (through the caller's transaction) and creates queues: need not be started. */
  boss: PgBoss;
  log: Logger;
  /** Who asked, for the event and the log line. */
  via: 'api' | 'cli';
}

const WAITING: readonly MessageStatus[] = ['queued', 'deferred'];

// ---- routes -----------------------------------------------------------------------------

async function setPaused(deps: QueueDeps, tenantId: string, ref: string, paused: boolean): Promise<Route> {
  const route = await getRoute(deps.db, tenantId, ref);
  const changed = await routes.setRoutePaused(deps.db, tenantId, route.id, paused);
  if (!changed) return route.paused === paused ? route : await getRoute(deps.db, tenantId, route.id);
  deps.log.info({ tenant: tenantId, route: route.name, route_id: route.id, via: deps.via }, paused ? 'route paused' : 'route resumed');
  return changed;
}

/**
 * Pauses a route: its messages are still accepted and wait in its queue. Every worker process
 * stops its consumer at its next route poll (every 5 s by default); a job fetched before that is
 * put back unsent by the delivery job guard (deliver.ts), to be taken again after the resume. An attempt already talking to the upstream finishes.
 * Pausing a paused route changes nothing.
 */
export async function pauseRoute(deps: QueueDeps, tenantId: string, ref: string): Promise<Route> {
  return await setPaused(deps, tenantId, ref, true);
}

/** Resumes a paused route: workers start its consumer again at their next route poll. */
export async function resumeRoute(deps: QueueDeps, tenantId: string, ref: string): Promise<Route> {
  return await setPaused(deps, tenantId, ref, false);
}

/** A route's queue: the depth row, with the tenant and route by name. */
export type QueueView = { tenant: string; route: string } & Omit<messages.QueueDepthRow, 'tenant_id' | 'tenant_name' | 'route_name'>;

function queueView(r: messages.QueueDepthRow): QueueView {
  const { tenant_id: _id, tenant_name, route_name, ...depth } = r;
  return { tenant: tenant_name, route: route_name, ...depth };
}

/** What waits on one route of a tenant. */
export async function routeQueue(db: Db, tenantId: string, ref: string): Promise<QueueView> {
  const route = await getRoute(db, tenantId, ref);
  const [row] = await messages.queueDepths(db, { tenantId, routeId: route.id });
  if (!row) throw notFound('route', ref);
  return queueView(row);
}

export const QueueListQuery = z.object({ tenant: z.string().trim().min(1).optional().describe('tenant id or name') });

/** What waits on every route (`?tenant=` narrows to one tenant's), by tenant and route name. */
export async function listQueues(db: Db, query: unknown): Promise<{ items: QueueView[]; next_cursor: null }> {
  const raw = Object.fromEntries(Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== ''));
  const q = QueueListQuery.parse(raw);
  const tenantId = q.tenant === undefined ? undefined : (await getTenant(db, q.tenant)).id;
  const rows = await messages.queueDepths(db, { tenantId });
  return { items: rows.map(queueView), next_cursor: null };
}

// ---- messages ---------------------------------------------------------------------------

async function findMeta(db: Db, id: string): Promise<messages.MessageMeta> {
  const m = isUuid(id) ? await messages.findMessageMeta(db, id) : undefined;
  if (!m) throw notFound('message', id);
  return m;
}

/**
 * A job a worker holds may be mid-delivery: replacing or cancelling it then could send the
 * message twice, or report a delivered message as cancelled. Such a change waits for the
 * attempt to be recorded (seconds; a dead worker's job is released after its 10 s heartbeat).
 */
async function refuseWhileInFlight(db: Executor, m: messages.MessageMeta): Promise<void> {
  if (m.route_id && m.job_id && (await messages.isJobActive(db, m.route_id, m.job_id))) {
    throw conflict(`message ${m.id} has a delivery attempt in progress; try again once it is recorded`);
  }
}

/**
 * Retries a queued or deferred message now: a new job without delay replaces the waiting one
 * (which becomes stale). The attempt counts as the next of the route's max_attempts. On a paused
 * route the new job waits for the resume like every other.
 */
export async function retryMessage(deps: QueueDeps, id: string): Promise<void> {
  const meta = await findMeta(deps.db, id);
  if (meta.route_id) await ensureQueue(deps.boss, meta.route_id);
  const jobId = randomUUID();
  let route = '';
  await deps.db.transaction().execute(async (trx) => {
    const m = await messages.lockMessage(trx, meta.id);
    if (!m) throw notFound('message', id);
    if (!WAITING.includes(m.status)) throw conflict(`message ${m.id} is ${m.status}: only a queued or deferred message can be retried`);
    if (!m.route_id) throw conflict(`message ${m.id} has no route any more: requeue it to one`);
    await refuseWhileInFlight(trx, m);
    if (m.route_id !== meta.route_id) await ensureQueue(deps.boss, m.route_id);
    await enqueueDelivery(deps.boss, trx, { routeId: m.route_id, messageId: m.id, jobId });
    await messages.updateMessage(trx, m.id, { job_id: jobId, next_attempt_at: m.status === 'deferred' ? new Date() : null });
    await messages.insertEvent(trx, m, {
      type: 'retried',
      detail: { by: 'admin', via: deps.via, route: m.route_name, attempt: m.attempts + 1, was_due_at: m.next_attempt_at?.toISOString() ?? null },
    });
    route = m.route_name;
  });
  deps.log.info({ tenant: meta.tenant_id, message: meta.id, route, job: jobId, via: deps.via }, 'message retry requested');
}

/**
 * Cancels a queued or deferred message: it fails with the event's reason "cancelled by admin",
 * its waiting recipients fail with the response "cancelled", and its job becomes stale.
 */
export async function cancelMessage(deps: QueueDeps, id: string): Promise<void> {
  const meta = await findMeta(deps.db, id);
  let cancelled: string[] = [];
  await deps.db.transaction().execute(async (trx) => {
    const m = await messages.lockMessage(trx, meta.id);
    if (!m) throw notFound('message', id);
    if (!WAITING.includes(m.status)) throw conflict(`message ${m.id} is already ${m.status}: only a queued or deferred message can be cancelled`);
    await refuseWhileInFlight(trx, m);
    cancelled = await messages.setRecipientsStatus(trx, m.id, [...WAITING], 'failed', 'cancelled');
    await messages.updateMessage(trx, m.id, { status: 'failed', next_attempt_at: null, job_id: null });
    await messages.insertEvent(trx, m, {
      type: 'failed',
      detail: { reason: 'cancelled by admin', by: 'admin', via: deps.via, route: m.route_name, attempt: m.attempts, recipients: cancelled },
    });
  });
  deps.log.info({ tenant: meta.tenant_id, message: meta.id, route: meta.route_name, recipients: cancelled.length, via: deps.via }, 'message cancelled');
}

export const RequeueBody = z.strictObject({
  route: z.string().trim().min(1).max(100).optional().describe("a route of the message's tenant (name or id); default: the message's own route"),
});

/**
 * Requeues a failed message, on its own route or another of its tenant's: the recipients that
 * failed are queued again (their last reply stays visible), delivered ones are left alone.
 * Attempts start again from 0: the route's whole retry policy applies, as for a fallback
 * handoff; the attempt log keeps the earlier ones.
 */
export async function requeueMessage(deps: QueueDeps, id: string, input: unknown): Promise<void> {
  const body = RequeueBody.parse(input ?? {});
  const meta = await findMeta(deps.db, id);
  let target: Route | undefined;
  if (body.route !== undefined) {
    target = await routes.findRoute(deps.db, meta.tenant_id, body.route);
    if (!target) throw invalid(`route "${body.route}" does not exist for the message's tenant`, [{ path: 'route', message: 'unknown route' }]);
  } else if (meta.route_id) {
    target = await routes.findRouteById(deps.db, meta.tenant_id, meta.route_id);
  }
  if (!target) throw invalid(`the message's route "${meta.route_name}" no longer exists: name another`, [{ path: 'route', message: 'required' }]);
  const route = target;
  await ensureQueue(deps.boss, route.id);

  const jobId = randomUUID();
  let requeued: string[] = [];
  let from = '';
  await deps.db.transaction().execute(async (trx) => {
    const m = await messages.lockMessage(trx, meta.id);
    if (!m) throw notFound('message', id);
    if (m.status !== 'failed') throw conflict(`message ${m.id} is ${m.status}: only a failed message can be requeued`);
    requeued = await messages.setRecipientsStatus(trx, m.id, ['failed'], 'queued');
    if (requeued.length === 0) throw conflict(`message ${m.id} has no failed recipient to deliver again`);
    await enqueueDelivery(deps.boss, trx, { routeId: route.id, messageId: m.id, jobId });
    await messages.updateMessage(trx, m.id, { status: 'queued', route_id: route.id, route_name: route.name, attempts: 0, next_attempt_at: null, job_id: jobId });
    await messages.insertEvent(trx, m, {
      type: 'requeued',
      detail: { by: 'admin', via: deps.via, route: route.name, route_id: route.id, from_route: m.route_name, previous_attempts: m.attempts, recipients: requeued },
    });
    from = m.route_name;
  });
  deps.log.info(
    { tenant: meta.tenant_id, message: meta.id, route: route.name, from_route: from, recipients: requeued.length, job: jobId, via: deps.via },
    'message requeued',
  );
}
