// A message is accepted by one statement (messages.repository.ts, insertAcceptedMessages): its
// rows in every table and its delivery job, as data-modifying WITH queries. pg-boss's insert
// skips a job whose id is taken (ON CONFLICT DO NOTHING); the statement compares the rows each
// insert returned with the number it expected, and this function turns a difference into an
// error, so that the statement, and with it the message, does not commit without its job.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE FUNCTION txrelay_expect(got bigint, expected integer, what text) RETURNS boolean
    LANGUAGE plpgsql AS $$
    BEGIN
      IF got <> expected THEN
        RAISE EXCEPTION '% inserted % rows of %', what, got, expected USING ERRCODE = 'P0001';
      END IF;
      RETURN true;
    END
    $$;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION txrelay_expect(bigint, integer, text)`.execute(db);
}
