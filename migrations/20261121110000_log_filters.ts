// The message log's filters at scale (issue 6: the log's first page in under 100 ms over a
// million messages). messages_tenant_created serves the unfiltered log and time ranges, but a
// filter on a rare tag or status walks it newest first until it has a page — or to the end when
// nothing matches (0.5 s for an unknown tag over a million messages). These lead with the
// filtered column, so a page is a range scan; a tag and a status together combine both
// (bitmap AND), which stays small however rare the pair.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX messages_tenant_tag_created ON messages (tenant_id, tag, created_at DESC, id DESC);
    CREATE INDEX messages_tenant_status_created ON messages (tenant_id, status, created_at DESC, id DESC);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX messages_tenant_status_created;
    DROP INDEX messages_tenant_tag_created;
  `.execute(db);
}
