import { executePrepared, type Executor } from './database.ts';
import type { ApiKey, KeyMode, KeyScope, Tenant } from './schema.ts';
import { sendingConfigChanged } from './sending-cache.ts';

export async function insertKey(
  db: Executor,
  tenantId: string,
  key: { prefix: string; hash: Buffer; scope: KeyScope; mode: KeyMode },
): Promise<ApiKey> {
  const row = await db
    .insertInto('api_keys')
    .values({ tenant_id: tenantId, ...key })
    .returningAll()
    .executeTakeFirstOrThrow();
  // After the write: a lookup that ran meanwhile must not keep the state before it.
  sendingConfigChanged();
  return row;
}

export interface KeyWithTenant {
  key: ApiKey;
  tenant: Tenant;
}

/** The live (not revoked) key with this hash, and its tenant. */
export async function findKeyByHash(db: Executor, hash: Buffer): Promise<KeyWithTenant | undefined> {
  const query = db
    .selectFrom('api_keys as k')
    .innerJoin('tenants as t', 't.id', 'k.tenant_id')
    .select([
      'k.id', 'k.tenant_id', 'k.prefix', 'k.hash', 'k.scope', 'k.mode', 'k.created_at', 'k.last_used_at', 'k.revoked_at',
      't.name as t_name', 't.status as t_status', 't.rate_limit_per_minute as t_rate',
      't.track_opens as t_opens', 't.track_clicks as t_clicks', 't.created_at as t_created',
    ])
    .where('k.hash', '=', hash)
    .where('k.revoked_at', 'is', null)
    .compile();
  // Prepared (database.ts): once per SMTP session or HTTP request, planned once per connection.
  const [row] = (await executePrepared(db, 'find_key_by_hash', query)).rows;
  if (!row) return undefined;
  return {
    key: {
      id: row.id, tenant_id: row.tenant_id, prefix: row.prefix, hash: row.hash, scope: row.scope, mode: row.mode,
      created_at: row.created_at, last_used_at: row.last_used_at, revoked_at: row.revoked_at,
    },
    tenant: {
      id: row.tenant_id, name: row.t_name, status: row.t_status, rate_limit_per_minute: row.t_rate,
      track_opens: row.t_opens, track_clicks: row.t_clicks, created_at: row.t_created,
    },
  };
}

/** last_used_at is informational: written at most once a minute per key to spare the hot path. */
export async function touchKey(db: Executor, keyId: string): Promise<void> {
  await db
    .updateTable('api_keys')
    .set({ last_used_at: new Date() })
    .where('id', '=', keyId)
    .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', new Date(Date.now() - 60_000))]))
    .execute();
}

export async function listKeys(db: Executor, tenantId: string): Promise<ApiKey[]> {
  return await db.selectFrom('api_keys').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at').execute();
}

export async function revokeKey(db: Executor, tenantId: string, keyId: string): Promise<ApiKey | undefined> {
  const row = await db
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', keyId)
    .where('revoked_at', 'is', null)
    .returningAll()
    .executeTakeFirst();
  // After the write: the cached key (pipeline/authenticate.ts) is dropped; this process refuses it at once.
  sendingConfigChanged();
  return row;
}
