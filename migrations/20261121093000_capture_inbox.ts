// The dashboard's capture inbox lists a tenant's messages held by capture: sent with a test key,
// or routed through a `capture` route (GET …/messages?captured=true). Without these indexes that
// list walks every message of the tenant, newest first, to find the few it wants.
//
// - messages_test_mode holds test-key messages only, so it costs live traffic nothing.
// - messages_route_created finds a route's messages, newest first. It also serves the foreign
//   key: deleting a route sets route_id to null on its messages, which otherwise scans them all.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX messages_test_mode ON messages (tenant_id, created_at DESC, id DESC) WHERE test_mode;
    CREATE INDEX messages_route_created ON messages (route_id, created_at DESC, id DESC);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX messages_route_created;
    DROP INDEX messages_test_mode;
  `.execute(db);
}
