// The relay's core tables. Tenant-owned rows carry tenant_id so every query can be scoped.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE tenants (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      name text NOT NULL UNIQUE,
      status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
      rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0),
      track_opens boolean NOT NULL DEFAULT false,
      track_clicks boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE api_keys (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      prefix text NOT NULL,
      hash bytea NOT NULL UNIQUE,
      scope text NOT NULL CHECK (scope IN ('send', 'read', 'full')),
      mode text NOT NULL CHECK (mode IN ('live', 'test')),
      created_at timestamptz NOT NULL DEFAULT now(),
      last_used_at timestamptz,
      revoked_at timestamptz
    );
    CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

    CREATE TABLE domains (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      name text NOT NULL,
      verified boolean NOT NULL DEFAULT false,
      verified_at timestamptz,
      verification_token text NOT NULL,
      dkim_selector text,
      dkim_public_key text,
      dkim_private_key_enc text,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (tenant_id, name)
    );
    CREATE INDEX domains_name ON domains (name);

    CREATE TABLE routes (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      name text NOT NULL,
      transport text NOT NULL CHECK (transport IN ('smtp', 'postal', 'http', 'capture')),
      config jsonb NOT NULL DEFAULT '{}',
      secrets_enc text,
      fallback_route_id uuid REFERENCES routes(id) ON DELETE SET NULL,
      max_per_second real CHECK (max_per_second > 0),
      concurrency integer CHECK (concurrency > 0),
      max_attempts integer NOT NULL DEFAULT 8 CHECK (max_attempts > 0),
      retry_delay_seconds integer NOT NULL DEFAULT 60 CHECK (retry_delay_seconds > 0),
      enabled boolean NOT NULL DEFAULT true,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (tenant_id, name)
    );

    CREATE TABLE templates (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      name text NOT NULL,
      subject text NOT NULL DEFAULT '',
      html text NOT NULL DEFAULT '',
      version integer NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (tenant_id, name)
    );

    -- One row per accepted message. mime holds the final message as built at acceptance
    -- (headers rewritten, body filtered, DKIM-signed): delivery sends these bytes unchanged.
    CREATE TABLE messages (
      id uuid PRIMARY KEY,
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      api_key_id uuid REFERENCES api_keys(id) ON DELETE SET NULL,
      status text NOT NULL CHECK (status IN ('queued', 'deferred', 'sent', 'failed')),
      tag text NOT NULL DEFAULT 'untagged',
      route_id uuid REFERENCES routes(id) ON DELETE SET NULL,
      route_name text NOT NULL,
      template_id uuid REFERENCES templates(id) ON DELETE SET NULL,
      template_name text,
      test_mode boolean NOT NULL DEFAULT false,
      mail_from text NOT NULL,
      from_address text NOT NULL,
      subject text NOT NULL DEFAULT '',
      message_id_header text NOT NULL,
      size integer NOT NULL,
      mime bytea NOT NULL,
      verdicts jsonb NOT NULL DEFAULT '[]',
      attempts integer NOT NULL DEFAULT 0,
      job_id uuid,
      next_attempt_at timestamptz,
      idempotency_key text,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      sent_at timestamptz
    );
    CREATE INDEX messages_tenant_created ON messages (tenant_id, created_at DESC, id DESC);
    CREATE INDEX messages_created ON messages (created_at DESC, id DESC);
    CREATE INDEX messages_pending ON messages (status, updated_at) WHERE status IN ('queued', 'deferred');
    CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

    CREATE TABLE recipients (
      id bigserial PRIMARY KEY,
      message_id uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
      address text NOT NULL,
      status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'deferred', 'sent', 'failed')),
      response text,
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX recipients_message ON recipients (message_id);

    -- Attachments kept for delivery (their bytes live inside messages.mime).
    CREATE TABLE attachments (
      id bigserial PRIMARY KEY,
      message_id uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
      filename text,
      content_type text NOT NULL,
      size integer NOT NULL
    );
    CREATE INDEX attachments_message ON attachments (message_id);

    CREATE TABLE attempts (
      id bigserial PRIMARY KEY,
      message_id uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
      route_id uuid REFERENCES routes(id) ON DELETE SET NULL,
      route_name text NOT NULL,
      number integer NOT NULL,
      outcome text NOT NULL CHECK (outcome IN ('sent', 'deferred', 'failed')),
      response text,
      duration_ms integer NOT NULL,
      at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX attempts_message ON attempts (message_id);

    CREATE TABLE events (
      id bigserial PRIMARY KEY,
      message_id uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      type text NOT NULL,
      tag text NOT NULL,
      at timestamptz NOT NULL DEFAULT now(),
      detail jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_message ON events (message_id);
    CREATE INDEX events_tenant_at ON events (tenant_id, at);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE events, attempts, attachments, recipients, messages, templates, routes, domains, api_keys, tenants;
  `.execute(db);
}
