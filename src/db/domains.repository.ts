import type { Executor } from './database.ts';
import type { Domain } from './schema.ts';
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
  return await db
    .updateTable('domains')
    .set({ verified, verified_at: verified ? new Date() : null })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', domainId)
    .returningAll()
    .executeTakeFirst();
}

export async function deleteDomain(db: Executor, tenantId: string, domainId: string): Promise<boolean> {
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

/** The tenant's domain for a sender's domain (verified or not) that has a DKIM key. */
export async function findSigningDomain(db: Executor, tenantId: string, name: string): Promise<Domain | undefined> {
  return await db
    .selectFrom('domains')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('name', '=', name.toLowerCase())
    .where('dkim_private_key_enc', 'is not', null)
    .executeTakeFirst();
}
