// Per-tenant sending rate limit (tenants.rate_limit_per_minute): one counter per tenant and
// calendar minute, kept in PostgreSQL so that every relay process counts against the same limit.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- window_start comes from the database clock (date_trunc('minute', now())), never a relay's,
    -- so processes with skewed clocks share one window. Old windows are dropped as a tenant
    -- opens its next one: at most a row or two per tenant.
    CREATE TABLE rate_counters (
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      window_start timestamptz NOT NULL,
      count integer NOT NULL CHECK (count >= 0),
      PRIMARY KEY (tenant_id, window_start)
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE rate_counters;`.execute(db);
}
