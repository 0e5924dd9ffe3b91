// Kysely's view of the tables in migrations/. Keep in step with the migrations.
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

type CreatedAt = ColumnType<Date, Date | string | undefined, never>;
type UpdatedAt = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export type TenantStatus = 'active' | 'suspended';
export type KeyScope = 'send' | 'read' | 'full';
export type KeyMode = 'live' | 'test';
export type Transport = 'smtp' | 'postal' | 'http' | 'capture';
export type MessageStatus = 'queued' | 'deferred' | 'sent' | 'failed';

export interface TenantsTable {
  id: Generated<string>;
  name: string;
  status: ColumnType<TenantStatus, TenantStatus | undefined, TenantStatus>;
  rate_limit_per_minute: number | null;
  track_opens: ColumnType<boolean, boolean | undefined, boolean>;
  track_clicks: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: CreatedAt;
}

export interface ApiKeysTable {
  id: Generated<string>;
  tenant_id: string;
  prefix: string;
  hash: Buffer;
  scope: KeyScope;
  mode: KeyMode;
  created_at: CreatedAt;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

export interface DomainsTable {
  id: Generated<string>;
  tenant_id: string;
  name: string;
  verified: ColumnType<boolean, boolean | undefined, boolean>;
  verified_at: Date | null;
  verification_token: string;
  dkim_selector: string | null;
  dkim_public_key: string | null;
  dkim_private_key_enc: string | null;
  /** Last DNS look at the published records (verification or daily re-check); null: never. */
  checked_at: Date | null;
  /** What the last check found missing, e.g. "TXT _txrelay.example.com missing"; null: fine. */
  dns_problem: string | null;
  /** Each published record's status at the last check, by purpose. */
  dns_checks: ColumnType<DnsChecks | null, string | null | undefined, string | null>;
  created_at: CreatedAt;
}

export type DnsRecordStatus = 'valid' | 'missing' | 'mismatch' | 'unknown';
export type DnsChecks = Partial<Record<'verification' | 'dkim' | 'spf', DnsRecordStatus>>;

export interface RoutesTable {
  id: Generated<string>;
  tenant_id: string;
  name: string;
  transport: Transport;
  config: Json<Record<string, unknown>>;
  secrets_enc: string | null;
  fallback_route_id: string | null;
  max_per_second: number | null;
  concurrency: number | null;
  max_attempts: ColumnType<number, number | undefined, number>;
  retry_delay_seconds: ColumnType<number, number | undefined, number>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  /** Paused: messages are accepted and wait; no worker takes the route's jobs. */
  paused: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

export interface TemplatesTable {
  id: Generated<string>;
  tenant_id: string;
  name: string;
  subject: string;
  html: string;
  version: ColumnType<number, number | undefined, number>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

export interface Verdict {
  rule: string;
  action: string;
  detail?: string;
}

export type MimeCompression = 'none' | 'zstd';

export interface MessagesTable {
  id: string;
  tenant_id: string;
  api_key_id: string | null;
  status: MessageStatus;
  tag: string;
  route_id: string | null;
  route_name: string;
  template_id: string | null;
  template_name: string | null;
  test_mode: boolean;
  mail_from: string;
  from_address: string;
  subject: string;
  message_id_header: string;
  size: number;
  /** The message as stored: see mime_compression (src/db/stored-mime.ts reads it back). */
  mime: Buffer;
  /** 'zstd': mime is one zstd frame of the message's `size` bytes; 'none': the bytes themselves. */
  mime_compression: ColumnType<MimeCompression, MimeCompression | undefined, MimeCompression>;
  verdicts: Json<Verdict[]>;
  attempts: ColumnType<number, number | undefined, number>;
  job_id: string | null;
  next_attempt_at: Date | null;
  idempotency_key: string | null;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
  sent_at: Date | null;
  /** The first open (click) the tracking endpoints recorded; null: none yet. */
  first_opened_at: Date | null;
  first_clicked_at: Date | null;
}

export interface RecipientsTable {
  id: Generated<string>;
  message_id: string;
  address: string;
  status: ColumnType<MessageStatus, MessageStatus | undefined, MessageStatus>;
  response: string | null;
  updated_at: UpdatedAt;
}

export interface AttachmentsTable {
  id: Generated<string>;
  message_id: string;
  filename: string | null;
  content_type: string;
  size: number;
}

export interface AttemptsTable {
  id: Generated<string>;
  message_id: string;
  route_id: string | null;
  route_name: string;
  number: number;
  outcome: 'sent' | 'deferred' | 'failed';
  response: string | null;
  duration_ms: number;
  at: CreatedAt;
}

export interface EventsTable {
  id: Generated<string>;
  message_id: string;
  tenant_id: string;
  type: string;
  tag: string;
  at: CreatedAt;
  detail: Json<Record<string, unknown>>;
  /** The route the event concerns (the attempting route for delivery outcomes); '' for none. */
  route: ColumnType<string, string | undefined, string>;
  /** Set by the stats roll-up once the event is counted in stats_hourly. */
  rolled_up: ColumnType<boolean, boolean | undefined, boolean>;
  /** Set by the webhook dispatcher once the event's deliveries exist (src/webhooks/dispatcher.ts). */
  webhooks_dispatched: ColumnType<boolean, boolean | undefined, boolean>;
}

/** Event counts per tenant, tag, route and UTC hour, folded in from events by the roll-up. */
export interface StatsHourlyTable {
  tenant_id: string;
  hour: Date;
  tag: string;
  route: ColumnType<string, string | undefined, string>;
  accepted: ColumnType<number, number | undefined, number>;
  sent: ColumnType<number, number | undefined, number>;
  deferred: ColumnType<number, number | undefined, number>;
  failed: ColumnType<number, number | undefined, number>;
  opened: ColumnType<number, number | undefined, number>;
  clicked: ColumnType<number, number | undefined, number>;
  unique_opened: ColumnType<number, number | undefined, number>;
  unique_clicked: ColumnType<number, number | undefined, number>;
}

/** A large message's bytes while its accepting transaction writes them (writeMimePieces). */
export interface MimePiecesTable {
  message_id: string;
  seq: number;
  bytes: Buffer;
}

export interface RateCountersTable {
  tenant_id: string;
  window_start: Date;
  count: number;
}

/** A route's next free send time under its max_per_second, shared by every worker process. */
export interface RouteThrottleTable {
  route_id: string;
  /** The max_per_second the schedule was made for. */
  per_second: number;
  next_at: Date;
}

/** One of a route's `concurrency` delivery slots; free when lease is null or expires_at passed. */
export interface RouteSlotsTable {
  route_id: string;
  slot: number;
  lease: string | null;
  holder: string | null;
  expires_at: Date | null;
}

export type WebhookEndpointStatus = 'active' | 'disabled';
export type WebhookDeliveryStatus = 'pending' | 'succeeded' | 'failed' | 'cancelled';

/** A tenant's webhook endpoint (SPEC §6). */
export interface WebhookEndpointsTable {
  id: Generated<string>;
  tenant_id: string;
  url: string;
  /** Sealed by SecretBox: the secret signs every request, so it is kept, not hashed. */
  secret_enc: string;
  /** Event types, or ['*'] for every type. */
  events: string[];
  status: ColumnType<WebhookEndpointStatus, WebhookEndpointStatus | undefined, WebhookEndpointStatus>;
  disabled_at: Date | null;
  disabled_reason: string | null;
  /** Failed attempts since the last success; failing_since: when the first of them was made. */
  consecutive_failures: ColumnType<number, number | undefined, number>;
  failing_since: Date | null;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

/** One event (or test event) for one endpoint; its id is also its pg-boss job's id. */
export interface WebhookDeliveriesTable {
  id: string;
  endpoint_id: string;
  tenant_id: string;
  event_id: number | null;
  event_type: string;
  message_id: string | null;
  /** The exact JSON body sent. */
  payload: string;
  status: ColumnType<WebhookDeliveryStatus, WebhookDeliveryStatus | undefined, WebhookDeliveryStatus>;
  reason: string | null;
  attempts: ColumnType<number, number | undefined, number>;
  last_attempt_at: Date | null;
  completed_at: Date | null;
  created_at: CreatedAt;
}

/** One HTTP attempt of a delivery. */
export interface WebhookAttemptsTable {
  id: Generated<number>;
  delivery_id: string;
  number: number;
  at: ColumnType<Date, Date | string | undefined, never>;
  status_code: number | null;
  error: string | null;
  response: string | null;
  duration_ms: number;
}

export interface Database {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  domains: DomainsTable;
  routes: RoutesTable;
  templates: TemplatesTable;
  messages: MessagesTable;
  recipients: RecipientsTable;
  attachments: AttachmentsTable;
  mime_pieces: MimePiecesTable;
  attempts: AttemptsTable;
  events: EventsTable;
  stats_hourly: StatsHourlyTable;
  rate_counters: RateCountersTable;
  route_throttle: RouteThrottleTable;
  route_slots: RouteSlotsTable;
  webhook_endpoints: WebhookEndpointsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_attempts: WebhookAttemptsTable;
}

export type Tenant = Selectable<TenantsTable>;
export type ApiKey = Selectable<ApiKeysTable>;
export type Domain = Selectable<DomainsTable>;
export type Route = Selectable<RoutesTable>;
export type Template = Selectable<TemplatesTable>;
export type Message = Selectable<MessagesTable>;
export type Recipient = Selectable<RecipientsTable>;
export type NewMessage = Insertable<MessagesTable>;
export type WebhookEndpoint = Selectable<WebhookEndpointsTable>;
export type WebhookDelivery = Selectable<WebhookDeliveriesTable>;
export type WebhookAttempt = Selectable<WebhookAttemptsTable>;
