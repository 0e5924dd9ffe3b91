import type { Executor } from './database.ts';
import type { Template } from './schema.ts';
import { isUuid } from './tenants.repository.ts';

/** By name or id, within the tenant. */
export async function findTemplate(db: Executor, tenantId: string, ref: string): Promise<Template | undefined> {
  return await db
    .selectFrom('templates')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where((eb) => (isUuid(ref) ? eb.or([eb('id', '=', ref), eb('name', '=', ref)]) : eb('name', '=', ref)))
    .executeTakeFirst();
}
