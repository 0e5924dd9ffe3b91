// Webhooks (SPEC §6, issue 6): a tenant's endpoints, one delivery per (event, endpoint) and
// one row per HTTP attempt, the delivery log the API shows.
//
// Events reach the endpoints asynchronously: the transactions that record events only insert
// them (src/db/messages.repository.ts), and a dispatcher in the worker processes claims the
// events not dispatched yet, creates their deliveries and queues a pg-boss job for each
// (src/webhooks/dispatcher.ts), the way the stats roll-up folds events into stats_hourly.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- Events recorded before this migration count as dispatched: no endpoint existed for them,
    -- and marking millions of old events one batch at a time would be work for nothing. Adding
    -- the column with DEFAULT true stores nothing per row (PostgreSQL 11+); the default then
    -- becomes false for the events recorded from now on.
    ALTER TABLE events ADD COLUMN webhooks_dispatched boolean NOT NULL DEFAULT true;
    ALTER TABLE events ALTER COLUMN webhooks_dispatched SET DEFAULT false;
    -- Small: only the events of the last second or so. The dispatcher claims them in id order.
    CREATE INDEX events_webhooks_pending ON events (id) WHERE NOT webhooks_dispatched;

    CREATE TABLE webhook_endpoints (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      url text NOT NULL,
      -- Sealed with TXRELAY_SECRET (src/crypto.ts SecretBox): we need the secret itself to sign.
      secret_enc text NOT NULL,
      -- Event types, or '*' for all of them.
      events text[] NOT NULL CHECK (cardinality(events) >= 1),
      status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
      disabled_at timestamptz,
      disabled_reason text,
      -- Failed attempts since the last success, and when the first of them was made.
      consecutive_failures integer NOT NULL DEFAULT 0,
      failing_since timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- The dispatcher's join (a tenant's active endpoints) and the API's list.
    CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at);

    CREATE TABLE webhook_deliveries (
      -- Also the id of the delivery's pg-boss job.
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      endpoint_id uuid NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      -- Null for a test event. No foreign key: the log outlives the events it reports.
      event_id bigint,
      event_type text NOT NULL,
      message_id uuid,
      -- The exact JSON body; each attempt signs it again with its own timestamp.
      payload text NOT NULL,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
      -- Why a delivery failed or was cancelled.
      reason text,
      attempts integer NOT NULL DEFAULT 0,
      last_attempt_at timestamptz,
      completed_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    -- One delivery per event and endpoint, however many dispatchers run (test events, whose
    -- event_id is null, are distinct from each other).
    CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (endpoint_id, event_id);
    -- The delivery log: an endpoint's deliveries, newest first, keyset-paginated.
    CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
    -- Disabling an endpoint cancels its pending deliveries.
    CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id) WHERE status = 'pending';

    CREATE TABLE webhook_attempts (
      id bigserial PRIMARY KEY,
      delivery_id uuid NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
      number integer NOT NULL,
      at timestamptz NOT NULL DEFAULT now(),
      -- The HTTP status, or null when there was no answer (then error says why).
      status_code integer,
      error text,
      -- The start of the answer (at most 1 KB), to see what the endpoint said.
      response text,
      duration_ms integer NOT NULL
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, number);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE webhook_attempts, webhook_deliveries, webhook_endpoints;
    DROP INDEX events_webhooks_pending;
    ALTER TABLE events DROP COLUMN webhooks_dispatched;
  `.execute(db);
}
