import { sql } from 'kysely';
import type { Executor } from './database.ts';
import type { Template } from './schema.ts';
import { isUuid } from './tenants.repository.ts';

export interface TemplateRow {
  name: string;
  subject: string;
  html: string;
}

/** By name or id, within the tenant. */
export async function findTemplate(db: Executor, tenantId: string, ref: string): Promise<Template | undefined> {
  return await db
    .selectFrom('templates')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where((eb) => (isUuid(ref) ? eb.or([eb('id', '=', ref), eb('name', '=', ref)]) : eb('name', '=', ref)))
    .executeTakeFirst();
}

/** By name only: what `extends`/`include`/`import` resolve to, within the tenant. */
export async function findTemplatesByName(db: Executor, tenantId: string, names: string[]): Promise<Template[]> {
  if (names.length === 0) return [];
  return await db.selectFrom('templates').selectAll().where('tenant_id', '=', tenantId).where('name', 'in', names).execute();
}

export async function listTemplates(db: Executor, tenantId: string): Promise<Template[]> {
  return await db.selectFrom('templates').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
}

export async function insertTemplate(db: Executor, tenantId: string, row: TemplateRow): Promise<Template> {
  return await db
    .insertInto('templates')
    .values({ ...row, tenant_id: tenantId })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Replaces name, subject and HTML; the version goes up, which retires cached compilations. */
export async function replaceTemplate(db: Executor, tenantId: string, templateId: string, row: TemplateRow): Promise<Template | undefined> {
  return await db
    .updateTable('templates')
    .set({ ...row, version: sql<number>`version + 1`, updated_at: new Date() })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', templateId)
    .returningAll()
    .executeTakeFirst();
}

export async function deleteTemplate(db: Executor, tenantId: string, templateId: string): Promise<boolean> {
  const r = await db.deleteFrom('templates').where('tenant_id', '=', tenantId).where('id', '=', templateId).executeTakeFirst();
  return r.numDeletedRows > 0n;
}
