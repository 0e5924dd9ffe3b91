// Daily DNS re-check of verified domains: when each was last looked at, what (if anything) is
// missing, and the last result per published record (shown beside dns_records in the API).
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE domains
      ADD COLUMN checked_at timestamptz,
      ADD COLUMN dns_problem text,
      ADD COLUMN dns_checks jsonb;
    -- The re-check claims the verified domains checked longest ago (never checked first).
    CREATE INDEX domains_recheck ON domains (checked_at NULLS FIRST) WHERE verified;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX domains_recheck;
    ALTER TABLE domains DROP COLUMN checked_at, DROP COLUMN dns_problem, DROP COLUMN dns_checks;
  `.execute(db);
}
