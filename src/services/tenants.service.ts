// Tenants and their API keys: the operations the admin API and the CLI share.
import { z } from 'zod';
import { generateApiKey, hashApiKey, keyPrefix } from '../crypto.ts';
import type { Executor } from '../db/database.ts';
import * as keys from '../db/keys.repository.ts';
import type { ApiKey, Tenant } from '../db/schema.ts';
import * as tenants from '../db/tenants.repository.ts';
import { conflict, isUniqueViolation, notFound } from './errors.ts';

export const tenantName = z
  .string()
  .trim()
  .min(1)
  .max(100)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, dot, dash and underscore; starts with a letter or digit');

export const TenantCreate = z.object({
  name: tenantName,
  status: z.enum(['active', 'suspended']).optional(),
  rate_limit_per_minute: z.number().int().positive().nullable().optional(),
  track_opens: z.boolean().optional(),
  track_clicks: z.boolean().optional(),
});
export const TenantPatch = TenantCreate.partial();

export const TenantListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().min(1).optional(),
});

export const KeyCreate = z.object({
  scope: z.enum(['send', 'read', 'full']).default('send'),
  mode: z.enum(['live', 'test']).default('live'),
});

export function tenantView(t: Tenant) {
  return {
    id: t.id,
    name: t.name,
    status: t.status,
    rate_limit_per_minute: t.rate_limit_per_minute,
    track_opens: t.track_opens,
    track_clicks: t.track_clicks,
    created_at: t.created_at,
  };
}

export function keyView(k: ApiKey) {
  return {
    id: k.id,
    prefix: k.prefix,
    scope: k.scope,
    mode: k.mode,
    created_at: k.created_at,
    last_used_at: k.last_used_at,
    revoked_at: k.revoked_at,
  };
}

export async function createTenant(db: Executor, input: z.input<typeof TenantCreate>): Promise<Tenant> {
  const data = TenantCreate.parse(input);
  try {
    return await tenants.createTenant(db, data);
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a tenant named "${data.name}" already exists`);
    throw err;
  }
}

/** A page of tenants by name; `next_cursor` is the last name, opaque to callers. */
export async function listTenants(db: Executor, query: z.input<typeof TenantListQuery> = {}): Promise<{ items: Tenant[]; next_cursor: string | null }> {
  const { limit, cursor } = TenantListQuery.parse(query);
  const after = cursor === undefined ? undefined : Buffer.from(cursor, 'base64url').toString('utf8');
  const rows = await tenants.listTenants(db, { limit: limit + 1, after });
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { items: page, next_cursor: rows.length > limit && last ? Buffer.from(last.name, 'utf8').toString('base64url') : null };
}

export async function getTenant(db: Executor, idOrName: string): Promise<Tenant> {
  const t = await tenants.findTenant(db, idOrName);
  if (!t) throw notFound('tenant', idOrName);
  return t;
}

export async function updateTenant(db: Executor, idOrName: string, input: z.input<typeof TenantPatch>): Promise<Tenant> {
  const tenant = await getTenant(db, idOrName);
  try {
    const t = await tenants.updateTenant(db, tenant.id, TenantPatch.parse(input));
    if (!t) throw notFound('tenant', idOrName);
    return t;
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a tenant named "${String(input.name)}" already exists`);
    throw err;
  }
}

export async function deleteTenant(db: Executor, idOrName: string): Promise<void> {
  const tenant = await getTenant(db, idOrName);
  await tenants.deleteTenant(db, tenant.id);
}

/** Creates a key; the returned `key` is the only time the secret exists outside its hash. */
export async function createKey(db: Executor, tenantId: string, input: z.input<typeof KeyCreate> = {}) {
  const { scope, mode } = KeyCreate.parse(input);
  const key = generateApiKey(mode);
  const row = await keys.insertKey(db, tenantId, { prefix: keyPrefix(key), hash: hashApiKey(key), scope, mode });
  return { id: row.id, key, scope: row.scope, mode: row.mode, prefix: row.prefix, created_at: row.created_at };
}

/** Every key of the tenant, revoked ones included; never the secret (only its hash is stored). */
export async function listKeys(db: Executor, tenantId: string): Promise<ApiKey[]> {
  return await keys.listKeys(db, tenantId);
}

export async function revokeKey(db: Executor, tenantId: string, keyId: string): Promise<ApiKey> {
  if (!tenants.isUuid(keyId)) throw notFound('key', keyId);
  const k = await keys.revokeKey(db, tenantId, keyId);
  if (!k) throw notFound('key', keyId);
  return k;
}
