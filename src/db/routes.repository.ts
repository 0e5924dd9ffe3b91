import type { Executor } from './database.ts';
import { sendingConfigChanged } from './sending-cache.ts';
import type { Route, Transport } from './schema.ts';
import { isUuid } from './tenants.repository.ts';

export interface RouteRow {
  name: string;
  transport: Transport;
  config: Record<string, unknown>;
  secrets_enc: string | null;
  fallback_route_id: string | null;
  max_per_second: number | null;
  concurrency: number | null;
  max_attempts: number;
  retry_delay_seconds: number;
  enabled: boolean;
}

export async function insertRoute(db: Executor, tenantId: string, row: RouteRow): Promise<Route> {
  sendingConfigChanged();
  return await db
    .insertInto('routes')
    .values({ ...row, tenant_id: tenantId, config: JSON.stringify(row.config) })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function updateRoute(db: Executor, tenantId: string, routeId: string, patch: Partial<RouteRow>): Promise<Route | undefined> {
  sendingConfigChanged();
  const { config, ...rest } = patch;
  return await db
    .updateTable('routes')
    .set({ ...rest, ...(config ? { config: JSON.stringify(config) } : {}), updated_at: new Date() })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', routeId)
    .returningAll()
    .executeTakeFirst();
}

/** By id or name, within the tenant. */
export async function findRoute(db: Executor, tenantId: string, idOrName: string): Promise<Route | undefined> {
  const q = db.selectFrom('routes').selectAll().where('tenant_id', '=', tenantId);
  return await (isUuid(idOrName) ? q.where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)])) : q.where('name', '=', idOrName)).executeTakeFirst();
}

export async function findRouteById(db: Executor, tenantId: string, routeId: string): Promise<Route | undefined> {
  return await db.selectFrom('routes').selectAll().where('tenant_id', '=', tenantId).where('id', '=', routeId).executeTakeFirst();
}

/** A routes row as PostgreSQL's to_jsonb writes it: timestamps are strings. */
export type RouteJson = Omit<Route, 'created_at' | 'updated_at'> & { created_at: string; updated_at: string };

/** The Route a to_jsonb(routes row) stands for (a route read beside other rows in one query). */
export function routeFromJson(row: RouteJson): Route {
  return { ...row, created_at: new Date(row.created_at), updated_at: new Date(row.updated_at) };
}

export async function listRoutes(db: Executor, tenantId: string): Promise<Route[]> {
  return await db.selectFrom('routes').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
}

/** At most two: enough to tell "none", "exactly one" and "more than one". */
export async function firstTwoRoutes(db: Executor, tenantId: string): Promise<Route[]> {
  return await db.selectFrom('routes').selectAll().where('tenant_id', '=', tenantId).orderBy('name').limit(2).execute();
}

export async function deleteRoute(db: Executor, tenantId: string, routeId: string): Promise<boolean> {
  sendingConfigChanged();
  const r = await db.deleteFrom('routes').where('tenant_id', '=', tenantId).where('id', '=', routeId).executeTakeFirst();
  return r.numDeletedRows > 0n;
}

/** Every route of every tenant: the worker starts one queue consumer per route. */
export async function listAllRoutes(db: Executor): Promise<Route[]> {
  return await db.selectFrom('routes').selectAll().orderBy('created_at').execute();
}

/** Sets the paused flag; undefined when the route is gone or already in that state. */
export async function setRoutePaused(db: Executor, tenantId: string, routeId: string, paused: boolean): Promise<Route | undefined> {
  sendingConfigChanged();
  return await db
    .updateTable('routes')
    .set({ paused, updated_at: new Date() })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', routeId)
    .where('paused', '<>', paused)
    .returningAll()
    .executeTakeFirst();
}
