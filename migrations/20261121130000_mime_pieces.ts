// A large message's bytes on their way into messages.mime (issue 8: a 25 MiB message accepted
// with RSS growth under twice its size). Sent as one bytea parameter, a message is held whole by
// the relay and copied once more by the driver; instead each piece of about a megabyte is
// written here and joined into messages.mime by one UPDATE, in the transaction that accepts the
// message, which also deletes them. Rows never outlive that transaction, so the table is
// UNLOGGED: its pieces are not written to the WAL twice (messages.mime is).
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE UNLOGGED TABLE mime_pieces (
      message_id uuid NOT NULL,
      seq integer NOT NULL,
      bytes bytea NOT NULL,
      PRIMARY KEY (message_id, seq)
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE mime_pieces`.execute(db);
}
