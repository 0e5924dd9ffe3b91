// Open and click tracking (SPEC §6): when a message was first opened and first clicked. The
// tracking endpoints set each with `UPDATE … WHERE first_opened_at IS NULL`, in the transaction
// that records the event, so exactly one open (one click) per message is the first, however many
// arrive at once; the stats roll-up counts unique opens and clicks from that event's
// `detail.first`. Plain nullable columns: adding them rewrites no rows.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE messages ADD COLUMN first_opened_at timestamptz;
    ALTER TABLE messages ADD COLUMN first_clicked_at timestamptz;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE messages DROP COLUMN first_clicked_at;
    ALTER TABLE messages DROP COLUMN first_opened_at;
  `.execute(db);
}
