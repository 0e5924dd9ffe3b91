// Stats per route as well as per tag (issue 6: roll-ups per tenant, tag, route and hour), so the
// dashboard and `GET …/stats?route=` answer from stats_hourly alone.
//
// Events name their route in a column of their own: for delivery outcomes the route that made
// the attempt (a fallback's hand-off is counted on the route that gave up), for everything else
// the message's route at the time. Test-key messages, which have no route, use ''.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE events ADD COLUMN route text NOT NULL DEFAULT '';
    -- Earlier events carried their route in detail only.
    UPDATE events SET route = detail->>'route' WHERE detail ? 'route';

    ALTER TABLE stats_hourly ADD COLUMN route text NOT NULL DEFAULT '';
    ALTER TABLE stats_hourly DROP CONSTRAINT stats_hourly_pkey;
    ALTER TABLE stats_hourly ADD PRIMARY KEY (tenant_id, hour, tag, route);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- Rows differing only by route fold back into one per tenant, hour and tag.
    CREATE TEMP TABLE stats_merged AS
      SELECT tenant_id, hour, tag,
             sum(accepted) AS accepted, sum(sent) AS sent, sum(deferred) AS deferred, sum(failed) AS failed,
             sum(opened) AS opened, sum(clicked) AS clicked, sum(unique_opened) AS unique_opened, sum(unique_clicked) AS unique_clicked
        FROM stats_hourly GROUP BY 1, 2, 3;
    DELETE FROM stats_hourly;
    ALTER TABLE stats_hourly DROP CONSTRAINT stats_hourly_pkey;
    ALTER TABLE stats_hourly DROP COLUMN route;
    INSERT INTO stats_hourly (tenant_id, hour, tag, accepted, sent, deferred, failed, opened, clicked, unique_opened, unique_clicked)
      SELECT * FROM stats_merged;
    DROP TABLE stats_merged;
    ALTER TABLE stats_hourly ADD PRIMARY KEY (tenant_id, hour, tag);
    ALTER TABLE events DROP COLUMN route;
  `.execute(db);
}
