// The message log's `recipient=` filter: find a recipient's messages without scanning.
// Addresses are compared case-insensitively (local parts are case-sensitive in theory, never in
// practice, and support staff paste addresses as customers typed them).
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX recipients_address ON recipients (lower(address), message_id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX recipients_address`.execute(db);
}
