// The OpenAPI 3.1 document served at /openapi.json. Request bodies and query strings come from
// the same zod schemas the services validate with (one source of truth); answers are described
// by the view schemas below. test/api/openapi.test.ts checks that the document validates and
// lists exactly the routes the app serves.
import { z } from 'zod';
import { MessageSend } from '../pipeline/http-submission.ts';
import { DomainCreate } from '../services/domains.service.ts';
import { MessageListQuery } from '../services/messages.service.ts';
import { QueueListQuery, RequeueBody } from '../services/queue.service.ts';
import { RouteCreate, RoutePatch, TRANSPORT_CONFIG } from '../services/routes.service.ts';
import { StatsQuery, TenantStatsQuery } from '../services/stats.service.ts';
import { TemplateCreate, TemplateRender, TemplateReplace } from '../services/templates.service.ts';
import { KeyCreate, TenantCreate, TenantListQuery, TenantPatch } from '../services/tenants.service.ts';
import { DeliveryListQuery, WebhookCreate, WebhookPatch } from '../services/webhooks.service.ts';
import { VerifyBody } from './admin/domains.ts';

// ---- Answers -------------------------------------------------------------------------------

const timestamp = z.iso.datetime();
const nullableTimestamp = timestamp.nullable();
const uuid = z.uuid();

const Tenant = z.object({
  id: uuid,
  name: z.string(),
  status: z.enum(['active', 'suspended']),
  rate_limit_per_minute: z.number().int().nullable(),
  track_opens: z.boolean(),
  track_clicks: z.boolean(),
  created_at: timestamp,
});

const Key = z.object({
  id: uuid,
  prefix: z.string().describe('the first characters of the key, to recognise it'),
  scope: z.enum(['send', 'read', 'full']),
  mode: z.enum(['live', 'test']),
  created_at: timestamp,
  last_used_at: nullableTimestamp,
  revoked_at: nullableTimestamp,
});
const KeyCreated = Key.pick({ id: true, prefix: true, scope: true, mode: true, created_at: true }).extend({
  key: z.string().describe('the API key itself: shown in this answer only, never again'),
});

const DnsRecord = z.object({
  type: z.literal('TXT'),
  name: z.string(),
  value: z.string(),
  purpose: z.enum(['verification', 'dkim', 'spf']),
  status: z.string().describe('unchecked, valid, missing, mismatch or unknown (DNS did not answer)'),
});
const Domain = z.object({
  id: uuid,
  name: z.string(),
  verified: z.boolean(),
  verified_at: nullableTimestamp,
  dns_records: z.array(DnsRecord).describe('the records to publish'),
  checked_at: nullableTimestamp.describe('last DNS check (verification or the daily re-check)'),
  dns_problem: z.string().nullable().describe('set when a verified domain\'s records vanished'),
  created_at: timestamp,
});

const Route = z.object({
  id: uuid,
  name: z.string(),
  transport: z.enum(['smtp', 'postal', 'http', 'capture']),
  config: z.record(z.string(), z.unknown()).describe('credentials are never returned'),
  fallback: z.string().nullable(),
  max_per_second: z.number().nullable(),
  concurrency: z.number().int().nullable(),
  max_attempts: z.number().int(),
  retry_delay_seconds: z.number().int(),
  enabled: z.boolean(),
  paused: z.boolean().describe('messages are accepted and wait; no worker delivers them until the route is resumed'),
  created_at: timestamp,
  updated_at: timestamp,
});

const Queue = z.object({
  tenant: z.string(),
  route: z.string(),
  route_id: uuid,
  paused: z.boolean(),
  enabled: z.boolean(),
  queued: z.number().int().describe('messages waiting for their first attempt on this route'),
  deferred: z.number().int().describe('messages waiting for a retry'),
  oldest_queued_at: nullableTimestamp.describe('when the oldest waiting message (queued or deferred) was accepted'),
  oldest_age_seconds: z.number().int().nullable().describe('its age, in seconds'),
  next_attempt_at: nullableTimestamp.describe('the earliest retry due among the deferred messages'),
});

const Template = z.object({
  id: uuid,
  name: z.string(),
  subject: z.string(),
  html: z.string(),
  version: z.number().int(),
  created_at: timestamp,
  updated_at: timestamp,
});
const Rendered = z.object({ subject: z.string(), html: z.string() });

const Webhook = z.object({
  id: uuid,
  url: z.string(),
  events: z.array(z.string()).describe('event types, or ["*"] for all'),
  status: z.enum(['active', 'disabled']),
  disabled_at: nullableTimestamp,
  disabled_reason: z.string().nullable().describe('why it was disabled: persistent failure (with the last error) or by request'),
  consecutive_failures: z.number().int().describe('failed attempts since the last success'),
  failing_since: nullableTimestamp.describe('when the first of them was made'),
  created_at: timestamp,
  updated_at: timestamp,
});
const WebhookCreated = Webhook.extend({ secret: z.string().describe('the signing secret: in this answer only, never again') });
const WebhookAttempt = z.object({
  number: z.number().int(),
  at: timestamp,
  status_code: z.number().int().nullable().describe('the HTTP status; null when there was no answer'),
  error: z.string().nullable().describe('why it failed: HTTP status, timeout, connection error, refused URL'),
  duration_ms: z.number().int(),
  response: z.string().nullable().describe('the first 1 KB of the answer'),
});
const WebhookDelivery = z.object({
  id: uuid.describe('also sent as X-Txrelay-Delivery'),
  event_id: z.string().nullable().describe('the payload\'s id; null for a test event'),
  type: z.string(),
  message_id: uuid.nullable(),
  status: z.enum(['pending', 'succeeded', 'failed', 'cancelled']),
  reason: z.string().nullable().describe('why it failed (retries exhausted) or was cancelled (endpoint disabled)'),
  attempts: z.number().int(),
  created_at: timestamp,
  last_attempt_at: nullableTimestamp,
  next_attempt_at: nullableTimestamp.describe('when a pending delivery is tried next'),
  completed_at: nullableTimestamp,
  attempt_log: z.array(WebhookAttempt),
});
const WebhookTestResult = z.object({
  delivery_id: uuid,
  ok: z.boolean().describe('the endpoint answered 2xx'),
  status_code: z.number().int().nullable(),
  error: z.string().nullable(),
  duration_ms: z.number().int(),
  response: z.string().nullable(),
});

const Recipient = z.object({ address: z.string(), status: z.enum(['queued', 'deferred', 'sent', 'failed']), response: z.string().nullable() });
const MessageSummary = z.object({
  id: uuid,
  tenant: z.string(),
  status: z.enum(['queued', 'deferred', 'sent', 'failed']),
  tag: z.string(),
  route: z.string().nullable(),
  template: z.string().nullable(),
  from: z.string(),
  subject: z.string(),
  recipients: z.array(Recipient),
  attempts: z.number().int(),
  created_at: timestamp,
  sent_at: nullableTimestamp,
  next_attempt_at: nullableTimestamp,
  size: z.number().int(),
  test_mode: z.boolean(),
});
const Message = MessageSummary.extend({
  attempt_log: z.array(
    z.object({ number: z.number().int(), route: z.string(), outcome: z.string(), response: z.string().nullable(), at: timestamp, duration_ms: z.number().nullable() }),
  ),
  events: z.array(z.object({ type: z.string(), at: timestamp, detail: z.unknown() })),
  verdicts: z.array(z.object({ rule: z.string(), action: z.string(), detail: z.string().optional() })).describe('what the header and body rules did'),
  attachments: z.array(z.object({ filename: z.string().nullable(), content_type: z.string(), size: z.number().int() })),
});

const Preview = z.object({
  subject: z.string(),
  html: z.string().nullable().describe('the HTML part as stored (tracking pixel and links included); null when the message has none'),
});

const Counts = z.object({
  accepted: z.number().int(),
  sent: z.number().int(),
  deferred: z.number().int(),
  failed: z.number().int(),
  unique_opens: z.number().int(),
  unique_clicks: z.number().int(),
});
const Stats = z.object({
  from: timestamp,
  to: timestamp,
  interval: z.enum(['hour', 'day']),
  tags: z.array(
    z.object({
      tag: z.string(),
      totals: Counts.extend({ delivery_rate: z.number().nullable() }),
      series: z.array(Counts.extend({ at: timestamp })),
    }),
  ),
});

const SmtpInfo = z.object({
  host: z.string(),
  ports: z.object({ starttls: z.array(z.number().int()), implicit_tls: z.array(z.number().int()) }),
  tls: z.object({ starttls: z.boolean(), implicit: z.boolean(), required: z.boolean() }),
  auth: z.array(z.string()),
  username: z.string(),
  password: z.string(),
  smtp_url: z.string().describe('with the key left as the placeholder <api key>'),
});

const Accepted = z.object({ id: uuid.describe('the message id, as in "250 2.0.0 Ok: queued as <id>"') });

const ErrorBody = z.object({
  error: z.object({
    code: z.string().describe('machine-readable, e.g. validation_error, not_found, domain_not_verified'),
    message: z.string(),
    details: z.unknown().optional().describe('validation errors: {fields: [{path, message}]}; pipeline refusals: {smtp: "550 5.7.1 …"}'),
  }),
});

const page = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), next_cursor: z.string().nullable() });

// ---- Operations ----------------------------------------------------------------------------

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
type Auth = 'admin' | 'key' | 'none';

interface Answer {
  status: number;
  description: string;
  schema?: z.ZodType;
  /** Default application/json. */
  contentType?: string;
}

export interface Operation {
  method: Method;
  /** OpenAPI form: /admin/tenants/{tenant}. */
  path: string;
  summary: string;
  tag: string;
  auth: Auth;
  /** For key auth: the scope that grants it. */
  scope?: 'send' | 'read' | 'full';
  query?: z.ZodObject;
  body?: z.ZodType;
  ok: Answer;
  /** Error statuses besides the ones every authenticated call can answer. */
  errors?: number[];
}

const PARAMS: Record<string, string> = {
  tenant: 'tenant id or name',
  id: 'id',
  domain: 'domain id or name',
  route: 'route id or name',
  template: 'template id or name',
  token: 'the signed tracking token from the message',
};

const list = <T extends z.ZodType>(item: T, description: string): Answer => ({ status: 200, description, schema: page(item) });
const one = (schema: z.ZodType, description: string, status = 200): Answer => ({ status, description, schema });
const none = (description: string): Answer => ({ status: 204, description });

/** A route config per transport, from the schemas that validate it. */
const RouteCreateBody = z.union(
  (Object.keys(TRANSPORT_CONFIG) as (keyof typeof TRANSPORT_CONFIG)[]).map((t) =>
    RouteCreate.extend({ transport: z.literal(t), config: TRANSPORT_CONFIG[t] }),
  ),
);

/** Templates and domains: the same operations for admins (under a tenant) and `full` keys. */
function tenantResources(prefix: string, auth: Auth, tag: string): Operation[] {
  const scope = auth === 'key' ? ('full' as const) : undefined;
  const t = `${prefix}/templates/{template}`;
  const d = `${prefix}/domains/{domain}`;
  return [
    { method: 'post', path: `${prefix}/templates`, summary: 'Create a template (refused with the line when it does not compile)', tag, auth, scope, body: TemplateCreate, ok: one(Template, 'the template', 201), errors: [409, 422] },
    { method: 'get', path: `${prefix}/templates`, summary: 'List templates', tag, auth, scope, ok: list(Template, 'the templates') },
    { method: 'get', path: t, summary: 'Get a template', tag, auth, scope, ok: one(Template, 'the template'), errors: [404] },
    { method: 'put', path: t, summary: 'Replace a template', tag, auth, scope, body: TemplateReplace, ok: one(Template, 'the template'), errors: [404, 409, 422] },
    { method: 'delete', path: t, summary: 'Delete a template', tag, auth, scope, ok: none('deleted'), errors: [404] },
    { method: 'post', path: `${t}/render`, summary: 'Render a template with variables (preview)', tag, auth, scope, body: TemplateRender, ok: one(Rendered, 'the rendered subject and HTML'), errors: [404, 422] },
    {
      method: 'post', path: `${prefix}/domains`, tag, auth, scope, body: DomainCreate, ok: one(Domain, 'the domain with the DNS records to publish', 201), errors: [409, 422],
      summary: auth === 'admin' ? 'Add a sending domain (`verified: true` marks it verified)' : 'Add a sending domain; publish its DNS records, then verify',
    },
    { method: 'get', path: `${prefix}/domains`, summary: 'List domains', tag, auth, scope, ok: list(Domain, 'the domains') },
    { method: 'get', path: d, summary: 'Get a domain and its DNS records', tag, auth, scope, ok: one(Domain, 'the domain'), errors: [404] },
    { method: 'delete', path: d, summary: 'Delete a domain', tag, auth, scope, ok: none('deleted'), errors: [404] },
    {
      method: 'post', path: `${d}/verify`, tag, auth, scope, ok: one(Domain, 'the verified domain'), errors: [404, 422, 502],
      ...(auth === 'admin'
        ? { summary: 'Verify by DNS, or set the state by hand with {"verified": true|false}', body: VerifyBody }
        : { summary: 'Verify by DNS: the verification TXT and DKIM records must be published' }),
    },
  ];
}

/** Webhook endpoints: the same operations for admins (under a tenant) and `full` keys. */
function webhookResources(prefix: string, auth: Auth, tag: string): Operation[] {
  const scope = auth === 'key' ? ('full' as const) : undefined;
  const w = `${prefix}/webhooks/{id}`;
  return [
    { method: 'post', path: `${prefix}/webhooks`, summary: 'Register a webhook endpoint (the secret is in this answer only)', tag, auth, scope, body: WebhookCreate, ok: one(WebhookCreated, 'the endpoint and its secret', 201), errors: [404, 409, 422] },
    { method: 'get', path: `${prefix}/webhooks`, summary: 'List webhook endpoints (never their secrets)', tag, auth, scope, ok: list(Webhook, 'the endpoints'), errors: [404] },
    { method: 'get', path: w, summary: 'Get a webhook endpoint: its status, and why it was disabled', tag, auth, scope, ok: one(Webhook, 'the endpoint'), errors: [404] },
    { method: 'patch', path: w, summary: 'Change the URL, events or secret; `enabled: true` re-enables a disabled endpoint', tag, auth, scope, body: WebhookPatch, ok: one(Webhook, 'the endpoint'), errors: [404, 422] },
    { method: 'delete', path: w, summary: 'Delete a webhook endpoint and its delivery log', tag, auth, scope, ok: none('deleted'), errors: [404] },
    { method: 'get', path: `${w}/deliveries`, summary: 'The delivery log, newest first, with every attempt', tag, auth, scope, query: DeliveryListQuery, ok: list(WebhookDelivery, 'a page of deliveries'), errors: [404, 422] },
    { method: 'post', path: `${w}/test`, summary: 'Send a `test` event now: one attempt, no retry, recorded in the log', tag, auth, scope, ok: one(WebhookTestResult, 'what the endpoint answered'), errors: [404] },
  ];
}

const ADMIN_TENANT = '/admin/tenants/{tenant}';

export const OPERATIONS: Operation[] = [
  { method: 'get', path: '/healthz', summary: 'Liveness', tag: 'health', auth: 'none', ok: one(z.object({ status: z.literal('ok') }), 'alive') },
  {
    method: 'get', path: '/readyz', summary: 'Readiness: database and queue reachable', tag: 'health', auth: 'none',
    ok: one(z.object({ status: z.string(), checks: z.record(z.string(), z.string()) }), 'ready'), errors: [503],
  },
  {
    method: 'get', path: '/metrics', tag: 'health', auth: 'none', ok: { status: 200, description: 'Prometheus text exposition format', contentType: 'text/plain' }, errors: [401, 404],
    summary: 'Prometheus metrics (txrelay_* and Node process metrics; docs/metrics.md). Asks for `Authorization: Bearer <TXRELAY_METRICS_TOKEN>` when that is set, open otherwise',
  },
  { method: 'get', path: '/openapi.json', summary: 'This document', tag: 'health', auth: 'none', ok: { status: 200, description: 'the OpenAPI 3.1 document' } },
  { method: 'get', path: '/docs', summary: 'This document as a readable page', tag: 'health', auth: 'none', ok: { status: 200, description: 'HTML', contentType: 'text/html' } },
  {
    method: 'get', path: '/t/o/{token}.gif', tag: 'tracking', auth: 'none', ok: { status: 200, description: 'a 1×1 transparent GIF', contentType: 'image/gif' }, errors: [404],
    summary: 'Open pixel: records an `opened` event (HEAD records nothing); 404 for a token we did not sign',
  },
  {
    method: 'get', path: '/t/c/{token}', tag: 'tracking', auth: 'none', ok: { status: 302, description: 'redirect (Location) to the link as written in the message' }, errors: [404],
    summary: 'Click redirector: records a `clicked` event (HEAD records nothing); 404 for a token we did not sign, so never an open redirect',
  },
  {
    method: 'get', path: '/dashboard', tag: 'health', auth: 'none', ok: { status: 200, description: 'HTML', contentType: 'text/html' },
    summary: 'The dashboard: stats per tag, message log, capture inbox. Sign in on the page with a `read` or `full` key, or the admin token; its scripts and styles are under /dashboard/assets/',
  },

  { method: 'post', path: '/admin/tenants', summary: 'Create a tenant', tag: 'admin: tenants', auth: 'admin', body: TenantCreate, ok: one(Tenant, 'the tenant', 201), errors: [409, 422] },
  { method: 'get', path: '/admin/tenants', summary: 'List tenants by name', tag: 'admin: tenants', auth: 'admin', query: TenantListQuery, ok: list(Tenant, 'a page of tenants') },
  { method: 'get', path: ADMIN_TENANT, summary: 'Get a tenant', tag: 'admin: tenants', auth: 'admin', ok: one(Tenant, 'the tenant'), errors: [404] },
  { method: 'patch', path: ADMIN_TENANT, summary: 'Change a tenant (status, rate limit, tracking defaults, name)', tag: 'admin: tenants', auth: 'admin', body: TenantPatch, ok: one(Tenant, 'the tenant'), errors: [404, 409, 422] },
  { method: 'delete', path: ADMIN_TENANT, summary: 'Delete a tenant and everything it owns', tag: 'admin: tenants', auth: 'admin', ok: none('deleted'), errors: [404] },

  { method: 'post', path: `${ADMIN_TENANT}/keys`, summary: 'Create an API key (the key is in this answer only)', tag: 'admin: keys', auth: 'admin', body: KeyCreate, ok: one(KeyCreated, 'the key', 201), errors: [404, 422] },
  { method: 'get', path: `${ADMIN_TENANT}/keys`, summary: 'List a tenant\'s keys (never the keys themselves)', tag: 'admin: keys', auth: 'admin', ok: list(Key, 'the keys'), errors: [404] },
  { method: 'delete', path: `${ADMIN_TENANT}/keys/{id}`, summary: 'Revoke a key', tag: 'admin: keys', auth: 'admin', ok: one(Key, 'the revoked key'), errors: [404] },

  ...tenantResources(ADMIN_TENANT, 'admin', 'admin: templates and domains'),
  ...webhookResources(ADMIN_TENANT, 'admin', 'admin: webhooks'),

  { method: 'post', path: `${ADMIN_TENANT}/routes`, summary: 'Create a route; config is checked by its transport\'s schema', tag: 'admin: routes', auth: 'admin', body: RouteCreateBody, ok: one(Route, 'the route', 201), errors: [404, 409, 422] },
  { method: 'get', path: `${ADMIN_TENANT}/routes`, summary: 'List routes', tag: 'admin: routes', auth: 'admin', ok: list(Route, 'the routes'), errors: [404] },
  { method: 'get', path: `${ADMIN_TENANT}/routes/{route}`, summary: 'Get a route', tag: 'admin: routes', auth: 'admin', ok: one(Route, 'the route'), errors: [404] },
  { method: 'patch', path: `${ADMIN_TENANT}/routes/{route}`, summary: 'Change a route (named fields only)', tag: 'admin: routes', auth: 'admin', body: RoutePatch, ok: one(Route, 'the route'), errors: [404, 409, 422] },
  { method: 'delete', path: `${ADMIN_TENANT}/routes/{route}`, summary: 'Delete a route (409 while mail waits on it)', tag: 'admin: routes', auth: 'admin', ok: none('deleted'), errors: [404, 409] },
  {
    method: 'post', path: `${ADMIN_TENANT}/routes/{route}/pause`, tag: 'admin: queues', auth: 'admin', ok: one(Route, 'the paused route'), errors: [404],
    summary: 'Pause a route: messages are still accepted and wait; workers stop delivering within their route poll (5 s)',
  },
  { method: 'post', path: `${ADMIN_TENANT}/routes/{route}/resume`, summary: 'Resume a paused route (workers start again within 5 s)', tag: 'admin: queues', auth: 'admin', ok: one(Route, 'the route'), errors: [404] },
  { method: 'get', path: `${ADMIN_TENANT}/routes/{route}/queue`, summary: 'What waits on a route: counts, oldest age, next retry', tag: 'admin: queues', auth: 'admin', ok: one(Queue, 'the route\'s queue'), errors: [404] },
  { method: 'get', path: '/admin/queues', summary: 'What waits on every route', tag: 'admin: queues', auth: 'admin', query: QueueListQuery, ok: list(Queue, 'every route\'s queue'), errors: [404, 422] },

  { method: 'get', path: '/admin/messages', summary: 'The message log, newest first', tag: 'admin: messages', auth: 'admin', query: MessageListQuery, ok: list(MessageSummary, 'a page of messages'), errors: [404, 422] },
  { method: 'get', path: '/admin/messages/{id}', summary: 'One message with recipients, attempts, events and rule verdicts', tag: 'admin: messages', auth: 'admin', ok: one(Message, 'the message'), errors: [404] },
  { method: 'get', path: '/admin/messages/{id}/mime', summary: 'The final MIME as delivered or captured', tag: 'admin: messages', auth: 'admin', ok: { status: 200, description: 'the message', contentType: 'message/rfc822' }, errors: [404] },
  { method: 'get', path: '/admin/messages/{id}/html', summary: 'Its subject and HTML part, for a preview', tag: 'admin: messages', auth: 'admin', ok: one(Preview, 'the subject and HTML'), errors: [404] },
  { method: 'post', path: '/admin/messages/{id}/retry', summary: 'Retry a queued or deferred message now (409 otherwise)', tag: 'admin: queues', auth: 'admin', ok: one(Message, 'the message'), errors: [404, 409] },
  {
    method: 'post', path: '/admin/messages/{id}/cancel', tag: 'admin: queues', auth: 'admin', ok: one(Message, 'the failed message'), errors: [404, 409],
    summary: 'Cancel a queued or deferred message: it fails, reason "cancelled by admin" (409 otherwise)',
  },
  {
    method: 'post', path: '/admin/messages/{id}/requeue', tag: 'admin: queues', auth: 'admin', body: RequeueBody, ok: one(Message, 'the queued message'), errors: [404, 409, 422],
    summary: 'Requeue a failed message, optionally on another route of its tenant: its failed recipients are delivered again (409 unless failed)',
  },
  { method: 'get', path: '/admin/stats', summary: 'Counts per tag over time', tag: 'admin: messages', auth: 'admin', query: StatsQuery, ok: one(Stats, 'the statistics'), errors: [404, 422] },

  { method: 'get', path: '/v1/smtp/info', summary: 'How to connect over SMTP', tag: 'tenant', auth: 'key', scope: 'read', ok: one(SmtpInfo, 'connection settings') },
  {
    method: 'post', path: '/v1/messages', tag: 'tenant', auth: 'key', scope: 'send', body: MessageSend, ok: one(Accepted, 'accepted and queued', 202),
    summary: 'Send a message through the SMTP pipeline (same rules and errors; an Idempotency-Key header works as X-Transactional-Idempotency-Key)',
    errors: [413, 415, 422, 429, 503],
  },
  { method: 'get', path: '/v1/messages', summary: 'The tenant\'s message log', tag: 'tenant', auth: 'key', scope: 'read', query: MessageListQuery.omit({ tenant: true }), ok: list(MessageSummary, 'a page of messages'), errors: [422] },
  { method: 'get', path: '/v1/messages/{id}', summary: 'One of the tenant\'s messages', tag: 'tenant', auth: 'key', scope: 'read', ok: one(Message, 'the message'), errors: [404] },
  { method: 'get', path: '/v1/messages/{id}/mime', summary: 'Its final MIME', tag: 'tenant', auth: 'key', scope: 'read', ok: { status: 200, description: 'the message', contentType: 'message/rfc822' }, errors: [404] },
  { method: 'get', path: '/v1/messages/{id}/html', summary: 'Its subject and HTML part, for a preview', tag: 'tenant', auth: 'key', scope: 'read', ok: one(Preview, 'the subject and HTML'), errors: [404] },
  { method: 'get', path: '/v1/stats', summary: 'The tenant\'s counts per tag', tag: 'tenant', auth: 'key', scope: 'read', query: TenantStatsQuery, ok: one(Stats, 'the statistics'), errors: [422] },
  ...tenantResources('/v1', 'key', 'tenant: templates and domains (full scope)'),
  ...webhookResources('/v1', 'key', 'tenant: webhooks (full scope)'),
];

// ---- The document --------------------------------------------------------------------------

type JsonSchema = Record<string, unknown>;

function schemaOf(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _dialect, ...json } = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
  return json;
}

const ERROR_TEXT: Record<number, string> = {
  401: 'missing or invalid credentials',
  403: 'the key\'s scope or the tenant\'s state forbids it',
  404: 'not found (another tenant\'s resource is not found either)',
  409: 'conflicts with an existing resource or its current state',
  413: 'too large',
  415: 'the body is not JSON',
  422: 'invalid: details.fields lists the problems',
  429: 'rate limit reached: see Retry-After',
  502: 'DNS did not answer',
  503: 'temporarily unavailable: see Retry-After',
};

function operationObject(op: Operation): JsonSchema {
  const params = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
    name: m[1], in: 'path', required: true, description: PARAMS[m[1]] ?? m[1], schema: { type: 'string' },
  }));
  if (op.query) {
    const shape = schemaOf(op.query, 'input') as { properties?: Record<string, JsonSchema>; required?: string[] };
    for (const [name, schema] of Object.entries(shape.properties ?? {})) {
      const { description, ...rest } = schema;
      params.push({ name, in: 'query', required: shape.required?.includes(name) ?? false, description: (description as string) ?? name, schema: rest as { type: string } });
    }
  }
  const responses: Record<string, JsonSchema> = {
    [op.ok.status]: {
      description: op.ok.description,
      ...(op.ok.schema ? { content: { [op.ok.contentType ?? 'application/json']: { schema: schemaOf(op.ok.schema, 'output') } } } : op.ok.contentType ? { content: { [op.ok.contentType]: {} } } : {}),
    },
  };
  const errors = new Set([...(op.auth === 'none' ? [] : [401]), ...(op.auth === 'key' ? [403] : []), ...(op.body ? [400, 422] : []), ...(op.errors ?? [])]);
  for (const status of [...errors].sort()) {
    responses[status] = { $ref: `#/components/responses/${status === 400 ? 'BadRequest' : `E${status}`}` };
  }
  const scopeNote = op.scope ? ` Needs an API key with the \`${op.scope}\` scope${op.scope === 'full' ? '' : ' (or `full`)'}.` : '';
  return {
    operationId: `${op.method}${op.path.replace(/\{(\w+)\}/g, 'By_$1').replace(/[^A-Za-z0-9_]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
    summary: op.summary,
    ...(scopeNote ? { description: scopeNote.trim() } : {}),
    tags: [op.tag],
    security: op.auth === 'admin' ? [{ adminToken: [] }] : op.auth === 'key' ? [{ apiKey: [] }] : [],
    ...(params.length ? { parameters: params } : {}),
    ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: schemaOf(op.body, 'input') } } } } : {}),
    responses,
  };
}

export function openApiDocument(options: { serverUrl: string; version: string }): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const op of OPERATIONS) (paths[op.path] ??= {})[op.method] = operationObject(op);
  const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: schemaOf(ErrorBody, 'output') } } });
  return {
    openapi: '3.1.0',
    info: {
      title: 'txrelay API',
      version: options.version,
      description:
        'Admin API (`Authorization: Bearer <TXRELAY_ADMIN_TOKEN>`) under /admin, and the tenant API (`Authorization: Bearer <api key>`) under /v1. ' +
        'Errors are `{"error": {"code", "message", "details?"}}`. Lists answer `{items, next_cursor}`; pass `cursor=<next_cursor>` for the next page.',
    },
    servers: [{ url: options.serverUrl }],
    paths,
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'TXRELAY_ADMIN_TOKEN' },
        apiKey: { type: 'http', scheme: 'bearer', description: 'a tenant API key, txr_live_… or txr_test_…' },
      },
      responses: {
        BadRequest: errorResponse('malformed JSON'),
        ...Object.fromEntries(Object.entries(ERROR_TEXT).map(([status, text]) => [`E${status}`, errorResponse(text)])),
      },
    },
  };
}
