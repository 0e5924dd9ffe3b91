// Message statistics per tenant, tag and hour (SPEC §7 stats, §8: "counts come from roll-ups,
// not scans"). Events stay the source of truth; a worker folds them into stats_hourly
// asynchronously (src/db/stats.repository.ts), so the transactions that record events never
// touch a shared counter row.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- Adding a column with a constant default rewrites nothing (PostgreSQL 11+). Events recorded
    -- before this migration start un-rolled, so the first roll-ups backfill their history.
    ALTER TABLE events ADD COLUMN rolled_up boolean NOT NULL DEFAULT false;
    -- Small: it holds only the events of the last few seconds. The roll-up claims them in id
    -- order and the stats query adds them to the roll-up for a fresh answer.
    CREATE INDEX events_not_rolled_up ON events (id) WHERE NOT rolled_up;

    -- One row per tenant, tag and UTC hour that saw an event. Every query is "one tenant (or
    -- all), a range of hours", so the hour comes before the tag in the key. The counters are
    -- counts of events (a message deferred three times adds 3 to deferred); unique_* count
    -- only a message's first open or click.
    CREATE TABLE stats_hourly (
      tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
      hour timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour, 'UTC')),
      tag text NOT NULL,
      accepted bigint NOT NULL DEFAULT 0,
      sent bigint NOT NULL DEFAULT 0,
      deferred bigint NOT NULL DEFAULT 0,
      failed bigint NOT NULL DEFAULT 0,
      opened bigint NOT NULL DEFAULT 0,
      clicked bigint NOT NULL DEFAULT 0,
      unique_opened bigint NOT NULL DEFAULT 0,
      unique_clicked bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (tenant_id, hour, tag)
    );
    -- The admin's all-tenants view reads by hour alone.
    CREATE INDEX stats_hourly_hour ON stats_hourly (hour);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE stats_hourly;
    DROP INDEX events_not_rolled_up;
    ALTER TABLE events DROP COLUMN rolled_up;
  `.execute(db);
}
