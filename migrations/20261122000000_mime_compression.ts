// How messages.mime is stored (issue 8: 100 KB messages accepted at Postfix's rate or better).
// PostgreSQL compresses a stored value over about 2 KB with pglz, in the backend that writes it:
// measured, inserting a 100 KB message cost its backend 0.62-0.74 ms of CPU, against 0.125 ms
// for the same message compressed by the relay with zstd (0.03-0.04 ms there). 'zstd': mime holds
// one zstd frame of the message (src/db/stored-mime.ts); 'none': the message as it is. A column
// rather than a sniff of the bytes: a message may start with anything.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE messages ADD COLUMN mime_compression text NOT NULL DEFAULT 'none'
      CONSTRAINT messages_mime_compression CHECK (mime_compression IN ('none', 'zstd'))
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE messages DROP COLUMN mime_compression`.execute(db);
}
