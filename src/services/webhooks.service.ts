// Webhook endpoints (SPEC §6, §7): a tenant's URLs with a secret and the event types they want,
// their delivery log, and a test event. Shared by the admin API and `/v1` (full scope).
//
// The secret signs every request, so it is stored sealed (SecretBox), not hashed; like an API
// key it leaves the relay once, in the creation answer, and is never shown or logged again.
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { SecretBox } from '../crypto.ts';
import type { Executor } from '../db/database.ts';
import type { WebhookAttempt, WebhookDelivery, WebhookEndpoint } from '../db/schema.ts';
import { isUuid } from '../db/tenants.repository.ts';
import * as webhooks from '../db/webhooks.repository.ts';
import { DEFAULT_TIMEOUT_MS, sendWebhook } from '../webhooks/send.ts';
import { generateWebhookSecret, WEBHOOK_EVENT_TYPES, type WebhookPayload } from '../webhooks/signature.ts';
import { checkWebhookUrl, TargetRefused, URL_MAX_LENGTH, type HostLookup, type TargetPolicy } from '../webhooks/target.ts';
import { ApiError, invalid, notFound } from './errors.ts';

/** Enough for every system a tenant feeds, few enough that one event fans out cheaply. */
export const MAX_ENDPOINTS_PER_TENANT = 20;

const url = z.string().trim().min(1).max(URL_MAX_LENGTH).describe('http(s) URL; see the README\'s URL rules');
const secret = z
  .string()
  .min(16, 'the secret must be at least 16 characters')
  .max(256, 'the secret must be at most 256 characters')
  .regex(/^[\x21-\x7e]+$/, 'the secret must be printable ASCII without spaces')
  .describe('HMAC key for X-Txrelay-Signature; generated (whsec_…) when left out. Returned only when generated here, in the creation answer');
const events = z
  .array(z.enum([...WEBHOOK_EVENT_TYPES, '*']))
  .min(1, 'name at least one event type, or "*" for all')
  .max(WEBHOOK_EVENT_TYPES.length + 1)
  .describe('event types to receive: accepted, sent, deferred, failed, opened, clicked, or "*" for all');

export const WebhookCreate = z.strictObject({ url, secret: secret.optional(), events });
export const WebhookPatch = z.strictObject({
  url: url.optional(),
  secret: secret.optional().describe('a new secret (rotation); not echoed back'),
  events: events.optional(),
  enabled: z.boolean().optional().describe('true re-enables a disabled endpoint and forgets its failures; false disables it'),
});
export const DeliveryListQuery = z.object({
  status: z.enum(['pending', 'succeeded', 'failed', 'cancelled']).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(25),
  cursor: z.string().min(1).optional(),
});

/** What creating and sending need besides the database. */
export interface WebhookDeps {
  db: Executor;
  box: SecretBox;
  target: TargetPolicy;
  /** Host name resolution for the test event's request (tests inject one). */
  lookup?: HostLookup;
  timeoutMs?: number;
}

export function webhookView(e: WebhookEndpoint) {
  return {
    id: e.id,
    url: e.url,
    events: e.events,
    status: e.status,
    disabled_at: e.disabled_at,
    disabled_reason: e.disabled_reason,
    consecutive_failures: e.consecutive_failures,
    failing_since: e.failing_since,
    created_at: e.created_at,
    updated_at: e.updated_at,
  };
}

function parse<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const r = schema.safeParse(input);
  if (!r.success) throw invalid('invalid webhook', r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
  return r.data;
}

function checkedUrl(raw: string, target: TargetPolicy): string {
  try {
    return checkWebhookUrl(raw, target);
  } catch (err) {
    if (err instanceof TargetRefused) throw invalid(`invalid webhook URL: ${err.message}`, [{ path: 'url', message: err.message }]);
    throw err;
  }
}

/** '*' covers every type, so a list holding it is just ['*']; otherwise each type once. */
const normaliseEvents = (types: string[]): string[] => (types.includes('*') ? ['*'] : [...new Set(types)]);

/** Creates an endpoint; the answer holds the secret, the only time it is shown. */
export async function createWebhook(deps: WebhookDeps, tenantId: string, input: unknown) {
  const w = parse(WebhookCreate, input);
  const target = checkedUrl(w.url, deps.target);
  const plain = w.secret ?? generateWebhookSecret();
  const sealed = deps.box.seal(plain);
  const created = await transaction(deps.db, async (trx) => {
    await webhooks.lockTenantEndpoints(trx, tenantId);
    if ((await webhooks.countEndpoints(trx, tenantId)) >= MAX_ENDPOINTS_PER_TENANT) {
      throw new ApiError(409, 'conflict', `a tenant may have at most ${MAX_ENDPOINTS_PER_TENANT} webhook endpoints`);
    }
    return await webhooks.insertEndpoint(trx, tenantId, { url: target, secret_enc: sealed, events: normaliseEvents(w.events) });
  });
  return { ...webhookView(created), secret: plain };
}

/** Runs fn in a transaction, or in the one `db` already is. */
async function transaction<T>(db: Executor, fn: (trx: Executor) => Promise<T>): Promise<T> {
  return db.isTransaction ? await fn(db) : await db.transaction().execute(fn);
}

export async function listWebhooks(db: Executor, tenantId: string): Promise<WebhookEndpoint[]> {
  return await webhooks.listEndpoints(db, tenantId);
}

export async function getWebhook(db: Executor, tenantId: string, id: string): Promise<WebhookEndpoint> {
  const e = isUuid(id) ? await webhooks.findEndpoint(db, tenantId, id) : undefined;
  if (!e) throw notFound('webhook', id);
  return e;
}

/**
 * Changes the URL, events or secret, or turns the endpoint off or back on. Turning it off
 * cancels its pending deliveries; turning it on forgets its failures (deliveries cancelled
 * meanwhile stay cancelled, events of the time it was off are not sent).
 */
export async function updateWebhook(deps: Omit<WebhookDeps, 'lookup'>, tenantId: string, id: string, input: unknown, disabledBy = 'disabled by request'): Promise<WebhookEndpoint> {
  const p = parse(WebhookPatch, input);
  if (Object.keys(p).length === 0) throw invalid('nothing to change: send url, secret, events or enabled');
  const change: webhooks.EndpointChange = {
    ...(p.url !== undefined ? { url: checkedUrl(p.url, deps.target) } : {}),
    ...(p.secret !== undefined ? { secret_enc: deps.box.seal(p.secret) } : {}),
    ...(p.events !== undefined ? { events: normaliseEvents(p.events) } : {}),
    ...(p.enabled !== undefined ? { enabled: p.enabled ? { on: true as const } : { on: false as const, reason: disabledBy } } : {}),
  };
  if (!isUuid(id)) throw notFound('webhook', id);
  return await transaction(deps.db, async (trx) => {
    const e = await webhooks.updateEndpoint(trx, tenantId, id, change);
    if (!e) throw notFound('webhook', id);
    if (e.status === 'disabled') await webhooks.cancelPendingDeliveries(trx, e.id, `endpoint disabled: ${e.disabled_reason ?? disabledBy}`);
    return e;
  });
}

/** Deletes the endpoint and its delivery log; jobs still queued for it find nothing to send. */
export async function deleteWebhook(db: Executor, tenantId: string, id: string): Promise<void> {
  if (!isUuid(id) || !(await webhooks.deleteEndpoint(db, tenantId, id))) throw notFound('webhook', id);
}

// ---- The delivery log ----------------------------------------------------------------------------

const CURSOR_AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

const encodeCursor = (createdAt: string, id: string): string => Buffer.from(`${createdAt}|${id}`, 'utf8').toString('base64url');

function decodeCursor(cursor: string): { createdAt: string; id: string } {
  const [createdAt, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  if (!createdAt || !id || !CURSOR_AT.test(createdAt) || !isUuid(id)) {
    throw invalid('invalid cursor', [{ path: 'cursor', message: 'use the next_cursor of a previous page' }]);
  }
  return { createdAt, id };
}

function attemptView(a: WebhookAttempt) {
  return { number: a.number, at: a.at, status_code: a.status_code, error: a.error, duration_ms: a.duration_ms, response: a.response };
}

function deliveryView(d: Omit<WebhookDelivery, 'payload'> & { next_attempt_at: Date | null }, attempts: WebhookAttempt[]) {
  return {
    id: d.id,
    event_id: d.event_id === null ? null : String(d.event_id),
    type: d.event_type,
    message_id: d.message_id,
    status: d.status,
    reason: d.reason,
    attempts: d.attempts,
    created_at: d.created_at,
    last_attempt_at: d.last_attempt_at,
    next_attempt_at: d.next_attempt_at,
    completed_at: d.completed_at,
    attempt_log: attempts.map(attemptView),
  };
}

/** A page of the endpoint's deliveries, newest first, each with its attempts. */
export async function listWebhookDeliveries(db: Executor, tenantId: string, endpointId: string, query: unknown) {
  const q = parse(DeliveryListQuery, Object.fromEntries(Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== '')));
  const endpoint = await getWebhook(db, tenantId, endpointId);
  const rows = await webhooks.listDeliveries(db, {
    tenantId,
    endpointId: endpoint.id,
    status: q.status,
    before: q.cursor !== undefined ? decodeCursor(q.cursor) : undefined,
    limit: q.limit + 1,
  });
  const page = rows.slice(0, q.limit);
  const byDelivery = new Map<string, WebhookAttempt[]>();
  for (const a of await webhooks.listAttemptsOf(db, page.map((d) => d.id))) byDelivery.set(a.delivery_id, [...(byDelivery.get(a.delivery_id) ?? []), a]);
  const last = page.at(-1);
  return {
    items: page.map((d) => deliveryView(d, byDelivery.get(d.id) ?? [])),
    next_cursor: rows.length > q.limit && last ? encodeCursor(last.cursor_at, last.id) : null,
  };
}

// ---- Test event ----------------------------------------------------------------------------------

/**
 * Sends a synthetic `test` event to the endpoint now: one attempt, no retry, whatever its
 * status (so a disabled endpoint can be checked before it is enabled again). The attempt is in
 * the delivery log; the endpoint's failure count is left alone: a test is not traffic.
 */
export async function sendTestEvent(deps: WebhookDeps, tenant: { id: string; name: string }, id: string) {
  const e = await getWebhook(deps.db, tenant.id, id);
  const deliveryId = randomUUID();
  const payload: WebhookPayload = {
    id: `test_${deliveryId}`,
    type: 'test',
    at: new Date().toISOString(),
    message_id: null,
    tenant: tenant.name,
    tag: null,
    detail: { test: true },
  };
  const body = JSON.stringify(payload);
  const result = await sendWebhook({
    url: e.url,
    body,
    secret: deps.box.open(e.secret_enc),
    deliveryId,
    target: deps.target,
    lookup: deps.lookup,
    timeoutMs: deps.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
  await transaction(deps.db, async (trx) => {
    const delivery = { id: deliveryId, endpoint_id: e.id, tenant_id: tenant.id, event_id: null, event_type: 'test', message_id: null, payload: body };
    await webhooks.insertFinishedDelivery(trx, delivery, result.ok ? 'succeeded' : 'failed', result.at, result.ok ? null : result.error);
    await webhooks.insertAttempt(trx, deliveryId, {
      number: 1,
      at: result.at,
      status_code: result.statusCode,
      error: result.error,
      response: result.response,
      duration_ms: result.durationMs,
    });
  });
  return { delivery_id: deliveryId, ok: result.ok, status_code: result.statusCode, error: result.error, duration_ms: result.durationMs, response: result.response };
}
