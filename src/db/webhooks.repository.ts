// Webhook endpoints, deliveries and attempts. Every query the API makes takes the tenant id;
// the dispatcher and the sender work across tenants by the ids they created themselves.
import { sql } from 'kysely';
import { WEBHOOK_QUEUE } from '../webhooks/policy.ts';
import type { Executor } from './database.ts';
import type { WebhookAttempt, WebhookDeliveriesTable, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint } from './schema.ts';

// ---- Endpoints -------------------------------------------------------------------------------

/**
 * Serialises endpoint creation per tenant for the rest of the transaction, so the count under a
 * limit cannot be raced. An advisory lock, not a lock on the tenant row: that would make every
 * message commit of the tenant (their foreign keys share-lock the row) wait for it.
 */
export async function lockTenantEndpoints(db: Executor, tenantId: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtext('txrelay.webhook_endpoints'), hashtext(${tenantId}))`.execute(db);
}

export async function countEndpoints(db: Executor, tenantId: string): Promise<number> {
  const r = await db
    .selectFrom('webhook_endpoints')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant_id', '=', tenantId)
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function insertEndpoint(db: Executor, tenantId: string, e: { url: string; secret_enc: string; events: string[] }): Promise<WebhookEndpoint> {
  return await db
    .insertInto('webhook_endpoints')
    .values({ tenant_id: tenantId, url: e.url, secret_enc: e.secret_enc, events: sql<string[]>`${e.events}::text[]` })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function listEndpoints(db: Executor, tenantId: string): Promise<WebhookEndpoint[]> {
  return await db.selectFrom('webhook_endpoints').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at').orderBy('id').execute();
}

export async function findEndpoint(db: Executor, tenantId: string, id: string): Promise<WebhookEndpoint | undefined> {
  return await db.selectFrom('webhook_endpoints').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
}

export interface EndpointChange {
  url?: string;
  secret_enc?: string;
  events?: string[];
  /** true: active again, failures forgotten; false: disabled with `reason`. */
  enabled?: { on: true } | { on: false; reason: string };
}

export async function updateEndpoint(db: Executor, tenantId: string, id: string, change: EndpointChange): Promise<WebhookEndpoint | undefined> {
  let q = db
    .updateTable('webhook_endpoints')
    .set({ updated_at: new Date() })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id);
  if (change.url !== undefined) q = q.set({ url: change.url });
  if (change.secret_enc !== undefined) q = q.set({ secret_enc: change.secret_enc });
  if (change.events !== undefined) q = q.set({ events: sql<string[]>`${change.events}::text[]` });
  if (change.enabled?.on === true) {
    q = q.set({ status: 'active', disabled_at: null, disabled_reason: null, consecutive_failures: 0, failing_since: null });
  } else if (change.enabled?.on === false) {
    // An endpoint disabled already keeps the time and reason it was disabled with.
    q = q.set({
      status: 'disabled',
      disabled_at: sql<Date>`CASE WHEN status = 'disabled' THEN disabled_at ELSE now() END`,
      disabled_reason: sql<string>`CASE WHEN status = 'disabled' THEN disabled_reason ELSE ${change.enabled.reason} END`,
    });
  }
  return await q.returningAll().executeTakeFirst();
}

export async function deleteEndpoint(db: Executor, tenantId: string, id: string): Promise<boolean> {
  const r = await db.deleteFrom('webhook_endpoints').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return r.numDeletedRows > 0n;
}

// ---- Dispatch ----------------------------------------------------------------------------------

/** An event and one endpoint it goes to. */
export interface EventMatch {
  event_id: number;
  message_id: string;
  tenant_id: string;
  tenant_name: string;
  type: string;
  tag: string;
  at: string;
  detail: Record<string, unknown>;
  endpoint_id: string;
}

/**
 * Claims up to `batchSize` events not dispatched yet, marks them dispatched, and returns how many
 * it claimed and each (event, active endpoint of its tenant that wants its type) pair. One
 * statement: for tenants without endpoints (most events) that is all the dispatch costs.
 *
 * Exactly once across dispatchers, as in the stats roll-up: a second dispatcher skips the rows
 * this one locked, or, once this one committed, re-checks `NOT webhooks_dispatched` on the new
 * row version and leaves them. Meant to run in the transaction that creates the deliveries, so a
 * failure there leaves the events un-dispatched for the next pass.
 */
export async function claimEvents(db: Executor, batchSize: number, types: readonly string[]): Promise<{ claimed: number; matches: EventMatch[] }> {
  const r = await sql<{ claimed: number; matches: EventMatch[] }>`
    WITH claimed AS (
      SELECT id FROM events WHERE NOT webhooks_dispatched ORDER BY id LIMIT ${batchSize} FOR UPDATE SKIP LOCKED
    ), marked AS (
      UPDATE events e SET webhooks_dispatched = true FROM claimed WHERE e.id = claimed.id
      RETURNING e.id, e.message_id, e.tenant_id, e.type, e.tag, e.at, e.detail
    ), matched AS (
      SELECT m.id AS event_id, m.message_id, m.tenant_id, t.name AS tenant_name, m.type, m.tag,
             to_char(m.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at, m.detail, w.id AS endpoint_id
        FROM marked m
        JOIN webhook_endpoints w ON w.tenant_id = m.tenant_id AND w.status = 'active'
                                AND (m.type = ANY (w.events) OR '*' = ANY (w.events))
        JOIN tenants t ON t.id = m.tenant_id
       WHERE m.type IN (${sql.join(types)})
    )
    SELECT (SELECT count(*)::int FROM marked) AS claimed,
           (SELECT coalesce(json_agg(matched ORDER BY event_id, endpoint_id), '[]'::json) FROM matched) AS matches`.execute(db);
  const row = r.rows[0];
  return { claimed: row?.claimed ?? 0, matches: row?.matches ?? [] };
}

export type NewDelivery = Pick<WebhookDeliveriesTable, 'id' | 'endpoint_id' | 'tenant_id' | 'event_id' | 'event_type' | 'message_id' | 'payload'>;

/** Inserts deliveries; one that exists already for its (endpoint, event) is skipped. Returns those inserted. */
export async function insertDeliveries(db: Executor, rows: NewDelivery[]): Promise<{ id: string; endpoint_id: string }[]> {
  if (rows.length === 0) return [];
  return await db
    .insertInto('webhook_deliveries')
    .values(rows)
    .onConflict((oc) => oc.columns(['endpoint_id', 'event_id']).doNothing())
    .returning(['id', 'endpoint_id'])
    .execute();
}

// ---- Sending -----------------------------------------------------------------------------------

export interface DeliveryToSend {
  id: string;
  status: WebhookDeliveryStatus;
  attempts: number;
  payload: string;
  tenant_id: string;
  endpoint_id: string;
  url: string;
  secret_enc: string;
  endpoint_status: WebhookEndpoint['status'];
}

/** A delivery with its endpoint, by the id its job carries. */
export async function findDeliveryToSend(db: Executor, deliveryId: string): Promise<DeliveryToSend | undefined> {
  return await db
    .selectFrom('webhook_deliveries as d')
    .innerJoin('webhook_endpoints as w', 'w.id', 'd.endpoint_id')
    .select(['d.id', 'd.status', 'd.attempts', 'd.payload', 'd.tenant_id', 'd.endpoint_id', 'w.url', 'w.secret_enc', 'w.status as endpoint_status'])
    .where('d.id', '=', deliveryId)
    .executeTakeFirst();
}

export interface AttemptRecord {
  number: number;
  at: Date;
  status_code: number | null;
  error: string | null;
  response: string | null;
  duration_ms: number;
}

export async function insertAttempt(db: Executor, deliveryId: string, a: AttemptRecord): Promise<void> {
  await db.insertInto('webhook_attempts').values({ delivery_id: deliveryId, ...a }).execute();
}

/**
 * Counts an attempt on the delivery; a final status (not 'pending') also completes it. A delivery
 * finished meanwhile (cancelled when its endpoint was disabled during this attempt) keeps its
 * status: the attempt is counted, the cancellation stands.
 */
export async function noteDeliveryAttempt(db: Executor, deliveryId: string, at: Date, status: WebhookDeliveryStatus, reason: string | null): Promise<void> {
  const stillPending = sql<boolean>`status = 'pending'`;
  await db
    .updateTable('webhook_deliveries')
    .set((eb) => ({
      attempts: eb('attempts', '+', 1),
      last_attempt_at: at,
      status: sql<WebhookDeliveryStatus>`CASE WHEN ${stillPending} THEN ${status} ELSE status END`,
      reason: sql<string | null>`CASE WHEN ${stillPending} THEN ${reason}::text ELSE reason END`,
      completed_at: sql<Date | null>`CASE WHEN ${stillPending} THEN ${status === 'pending' ? null : new Date()}::timestamptz ELSE completed_at END`,
    }))
    .where('id', '=', deliveryId)
    .execute();
}

/** A test event's delivery: made and finished in one go. */
export async function insertFinishedDelivery(db: Executor, d: NewDelivery, status: WebhookDeliveryStatus, at: Date, reason: string | null): Promise<void> {
  await db
    .insertInto('webhook_deliveries')
    .values({ ...d, status, reason, attempts: 1, last_attempt_at: at, completed_at: new Date() })
    .execute();
}

/** Ends a pending delivery without another attempt: cancelled (endpoint disabled) or failed. */
export async function finishDelivery(db: Executor, deliveryId: string, status: 'cancelled' | 'failed', reason: string): Promise<void> {
  await db
    .updateTable('webhook_deliveries')
    .set({ status, reason, completed_at: new Date() })
    .where('id', '=', deliveryId)
    .where('status', '=', 'pending')
    .execute();
}

/** Every pending delivery of the endpoint becomes cancelled (their jobs then do nothing). */
export async function cancelPendingDeliveries(db: Executor, endpointId: string, reason: string): Promise<number> {
  const r = await db
    .updateTable('webhook_deliveries')
    .set({ status: 'cancelled', reason, completed_at: new Date() })
    .where('endpoint_id', '=', endpointId)
    .where('status', '=', 'pending')
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export async function noteEndpointSuccess(db: Executor, endpointId: string): Promise<void> {
  await db
    .updateTable('webhook_endpoints')
    .set({ consecutive_failures: 0, failing_since: null })
    .where('id', '=', endpointId)
    .where('consecutive_failures', '>', 0)
    .execute();
}

/**
 * Counts a failed attempt made at `at` and, when the endpoint has now failed `failures` times in
 * a row since at least `seconds` ago, disables it. Returns the endpoint when this call disabled it.
 * One statement: concurrent attempts count without losing updates, and only one disables.
 */
export async function noteEndpointFailure(
  db: Executor,
  endpointId: string,
  at: Date,
  rule: { failures: number; seconds: number },
  reason: (failures: number, since: Date) => string,
): Promise<WebhookEndpoint | undefined> {
  const counted = await db
    .updateTable('webhook_endpoints')
    .set((eb) => ({ consecutive_failures: eb('consecutive_failures', '+', 1), failing_since: sql<Date>`coalesce(failing_since, ${at})` }))
    .where('id', '=', endpointId)
    .returning(['consecutive_failures', 'failing_since', 'status'])
    .executeTakeFirst();
  if (!counted || counted.status !== 'active' || !counted.failing_since) return undefined;
  if (counted.consecutive_failures < rule.failures || at.getTime() - counted.failing_since.getTime() < rule.seconds * 1000) return undefined;
  return await db
    .updateTable('webhook_endpoints')
    .set({ status: 'disabled', disabled_at: new Date(), disabled_reason: reason(counted.consecutive_failures, counted.failing_since), updated_at: new Date() })
    .where('id', '=', endpointId)
    .where('status', '=', 'active')
    .returningAll()
    .executeTakeFirst();
}

// ---- The delivery log --------------------------------------------------------------------------

export interface DeliveryListFilter {
  tenantId: string;
  endpointId: string;
  status?: WebhookDeliveryStatus;
  /** Keyset: only rows after this (created_at, id) in descending order. */
  before?: { createdAt: string; id: string };
  limit: number;
}

export type DeliveryLogRow = Omit<WebhookDelivery, 'payload'> & { next_attempt_at: Date | null; cursor_at: string };

/**
 * A page of an endpoint's deliveries, newest first. `next_attempt_at` is when pg-boss will make
 * the next attempt of a pending delivery (its job's start_after; the job id is the delivery id).
 */
export async function listDeliveries(db: Executor, f: DeliveryListFilter): Promise<DeliveryLogRow[]> {
  let q = db
    .selectFrom('webhook_deliveries as d')
    .select([
      'd.id', 'd.endpoint_id', 'd.tenant_id', 'd.event_id', 'd.event_type', 'd.message_id', 'd.status', 'd.reason', 'd.attempts',
      'd.last_attempt_at', 'd.completed_at', 'd.created_at',
      sql<Date | null>`CASE WHEN d.status = 'pending' THEN (
        SELECT j.start_after FROM pgboss.job j
         WHERE j.name = ${WEBHOOK_QUEUE} AND j.id = d.id AND j.state IN ('created', 'retry')) END`.as('next_attempt_at'),
      sql<string>`to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as('cursor_at'),
    ])
    .where('d.tenant_id', '=', f.tenantId)
    .where('d.endpoint_id', '=', f.endpointId)
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc')
    .limit(f.limit);
  if (f.status !== undefined) q = q.where('d.status', '=', f.status);
  if (f.before) q = q.where(sql<boolean>`(d.created_at, d.id) < (${f.before.createdAt}::timestamptz, ${f.before.id}::uuid)`);
  return await q.execute();
}

export async function listAttemptsOf(db: Executor, deliveryIds: string[]): Promise<WebhookAttempt[]> {
  if (deliveryIds.length === 0) return [];
  return await db.selectFrom('webhook_attempts').selectAll().where('delivery_id', 'in', deliveryIds).orderBy('delivery_id').orderBy('number').orderBy('id').execute();
}
