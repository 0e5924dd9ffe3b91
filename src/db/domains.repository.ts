import { sql } from 'kysely';
import type { Db, Executor } from './database.ts';
import { sendingConfigChanged } from './sending-cache.ts';
import type { DnsChecks, Domain } from './schema.ts';
import { isUuid } from './tenants.repository.ts';

export interface DomainInput {
  name: string;
  verification_token: string;
  verified?: boolean;
  verified_at?: Date | null;
  dkim_selector: string | null;
  dkim_public_key: string | null;
  dkim_private_key_enc: string | null;
}

export async function insertDomain(db: Executor, tenantId: string, input: DomainInput): Promise<Domain> {
  sendingConfigChanged();
  return await db.insertInto('domains').values({ tenant_id: tenantId, ...input }).returningAll().executeTakeFirstOrThrow();
}

export async function findDomain(db: Executor, tenantId: string, idOrName: string): Promise<Domain | undefined> {
  const q = db.selectFrom('domains').selectAll().where('tenant_id', '=', tenantId);
  return await (isUuid(idOrName) ? q.where('id', '=', idOrName) : q.where('name', '=', idOrName.toLowerCase())).executeTakeFirst();
}

export async function listDomains(db: Executor, tenantId: string): Promise<Domain[]> {
  return await db.selectFrom('domains').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
}

export async function setDomainVerified(db: Executor, tenantId: string, domainId: string, verified: boolean): Promise<Domain | undefined> {
  sendingConfigChanged();
  return await db
    .updateTable('domains')
    .set({ verified, verified_at: verified ? new Date() : null })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', domainId)
    .returningAll()
    .executeTakeFirst();
}

export async function deleteDomain(db: Executor, tenantId: string, domainId: string): Promise<boolean> {
  sendingConfigChanged();
  const r = await db.deleteFrom('domains').where('tenant_id', '=', tenantId).where('id', '=', domainId).executeTakeFirst();
  return r.numDeletedRows > 0n;
}

/** The tenant's verified domain for a sender's domain name, if any. */
export async function findVerifiedDomain(db: Executor, tenantId: string, name: string): Promise<Domain | undefined> {
  return await db
    .selectFrom('domains')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('name', '=', name.toLowerCase())
    .where('verified', '=', true)
    .executeTakeFirst();
}

export interface DomainCheck {
  checked_at: Date | null;
  dns_problem: string | null;
  dns_checks: DnsChecks | null;
}

/** Records the outcome of a DNS check of one domain. */
export async function recordDomainCheck(db: Executor, tenantId: string, domainId: string, check: DomainCheck): Promise<Domain | undefined> {
  return await db
    .updateTable('domains')
    .set({ checked_at: check.checked_at, dns_problem: check.dns_problem, dns_checks: check.dns_checks === null ? null : JSON.stringify(check.dns_checks) })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', domainId)
    .returningAll()
    .executeTakeFirst();
}

export type ClaimedDomain = Domain & { previous_checked_at: Date | null };

/**
 * Claims up to `limit` verified domains last checked before `olderThan` (never checked first)
 * by stamping checked_at, so that several processes re-checking at once never take the same
 * domain. Cross-tenant by design: this is the daily maintenance pass, not a tenant's query.
 * Each row carries its previous checked_at, to hand the claim back when the check could not
 * be made (DNS did not answer).
 */
export async function claimDomainsToCheck(db: Db, olderThan: Date, limit: number, now = new Date()): Promise<ClaimedDomain[]> {
  return await db.transaction().execute(async (trx) => {
    const due = await trx
      .selectFrom('domains')
      .select(['id', 'checked_at'])
      .where('verified', '=', true)
      .where((eb) => eb.or([eb('checked_at', 'is', null), eb('checked_at', '<', olderThan)]))
      .orderBy(sql`checked_at NULLS FIRST`)
      .limit(limit)
      .forUpdate()
      .skipLocked()
      .execute();
    if (due.length === 0) return [];
    const previous = new Map(due.map((d) => [d.id, d.checked_at]));
    const rows = await trx
      .updateTable('domains')
      .set({ checked_at: now })
      .where('id', 'in', [...previous.keys()])
      .returningAll()
      .execute();
    return rows.map((r) => ({ ...r, previous_checked_at: previous.get(r.id) ?? null }));
  });
}

/** Hands a claim back (checked_at as it was) unless someone has checked the domain since. */
export async function releaseDomainClaim(db: Executor, tenantId: string, domainId: string, claimedAt: Date, previous: Date | null): Promise<void> {
  await db
    .updateTable('domains')
    .set({ checked_at: previous })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', domainId)
    .where('checked_at', '=', claimedAt)
    .execute();
}
