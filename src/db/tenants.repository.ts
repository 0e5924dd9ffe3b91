import { sql } from 'kysely';
import type { Executor } from './database.ts';
import type { Tenant, TenantStatus } from './schema.ts';
import { sendingConfigChanged } from './sending-cache.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string): boolean => UUID.test(value);

export interface TenantInput {
  name: string;
  status?: TenantStatus;
  rate_limit_per_minute?: number | null;
  track_opens?: boolean;
  track_clicks?: boolean;
}

export async function createTenant(db: Executor, input: TenantInput): Promise<Tenant> {
  return await db.insertInto('tenants').values(input).returningAll().executeTakeFirstOrThrow();
}

/** By id or by name (SPEC §7: `:tenant` is either). */
export async function findTenant(db: Executor, idOrName: string): Promise<Tenant | undefined> {
  const q = db.selectFrom('tenants').selectAll();
  return await (isUuid(idOrName) ? q.where('id', '=', idOrName) : q.where('name', '=', idOrName)).executeTakeFirst();
}

export async function listTenants(db: Executor, options: { limit: number; after?: string }): Promise<Tenant[]> {
  let q = db.selectFrom('tenants').selectAll().orderBy('name').limit(options.limit);
  if (options.after !== undefined) q = q.where('name', '>', options.after);
  return await q.execute();
}

export async function updateTenant(db: Executor, tenantId: string, patch: Partial<TenantInput>): Promise<Tenant | undefined> {
  if (Object.keys(patch).length === 0) return await findTenant(db, tenantId);
  const row = await db.updateTable('tenants').set(patch).where('id', '=', tenantId).returningAll().executeTakeFirst();
  // After the write: keys are cached with their tenant (status, rate limit, tracking defaults).
  sendingConfigChanged();
  return row;
}

export async function deleteTenant(db: Executor, tenantId: string): Promise<boolean> {
  const r = await db.deleteFrom('tenants').where('id', '=', tenantId).executeTakeFirst();
  sendingConfigChanged();
  return r.numDeletedRows > 0n;
}

export async function countTenants(db: Executor): Promise<number> {
  const r = await db.selectFrom('tenants').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

/** Serialises first-start seeding across processes, for the rest of the transaction. */
export async function lockSeeding(db: Executor): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(7460221)`.execute(db);
}
