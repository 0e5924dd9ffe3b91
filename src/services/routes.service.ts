// Routes: each transport's config validated by its own schema; credentials split off,
// encrypted at rest with TXRELAY_SECRET, and never returned.
import { z } from 'zod';
import type { SecretBox } from '../crypto.ts';
import type { Executor } from '../db/database.ts';
import { countPendingOnRoute } from '../db/messages.repository.ts';
import * as routes from '../db/routes.repository.ts';
import type { Route, Transport } from '../db/schema.ts';
import { conflict, invalid, isUniqueViolation, notFound } from './errors.ts';

const SmtpConfig = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(25),
  secure: z.boolean().default(false),
  require_tls: z.boolean().default(false),
  auth: z.strictObject({ user: z.string().min(1), pass: z.string() }).optional(),
  pool: z.union([z.boolean(), z.number().int().min(1).max(100)]).default(true),
  tls_reject_unauthorized: z.boolean().default(true),
  connection_timeout_seconds: z.number().int().min(1).max(300).default(30),
  socket_timeout_seconds: z.number().int().min(1).max(600).default(300),
});
const PostalConfig = z.strictObject({ url: z.url({ protocol: /^https?$/ }), server_key: z.string().min(1) });
const HttpConfig = z.strictObject({ url: z.url({ protocol: /^https?$/ }), headers: z.record(z.string(), z.string()).default({}) });
const CaptureConfig = z.strictObject({});

export const TRANSPORT_CONFIG = { smtp: SmtpConfig, postal: PostalConfig, http: HttpConfig, capture: CaptureConfig } as const;

/** Which config fields are credentials: stored encrypted, never returned. */
const SECRET_FIELDS: Record<Transport, string[]> = { smtp: ['auth'], postal: ['server_key'], http: ['headers'], capture: [] };

const routeName = z.string().trim().min(1).max(100).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, dot, dash and underscore');

const routeFields = {
  name: routeName,
  transport: z.enum(['smtp', 'postal', 'http', 'capture']),
  config: z.record(z.string(), z.unknown()),
  fallback: routeName.nullable(),
  max_per_second: z.number().positive().nullable(),
  concurrency: z.number().int().positive().max(1000).nullable(),
  max_attempts: z.number().int().min(1).max(100),
  retry_delay_seconds: z.number().int().min(1).max(86400),
  enabled: z.boolean(),
};

/** The first backoff step of a route that names none (the migration's column default too). */
export const DEFAULT_RETRY_DELAY_SECONDS = 180;

export const RouteCreate = z.object({
  ...routeFields,
  config: routeFields.config.default({}),
  fallback: routeFields.fallback.optional(),
  max_per_second: routeFields.max_per_second.optional(),
  concurrency: routeFields.concurrency.optional(),
  max_attempts: routeFields.max_attempts.default(8),
  // 180 s doubling over 8 attempts: 180 × (2^7 − 1) s ≈ 6 h 21 min of retries (SPEC §5, "about 6 hours").
  retry_delay_seconds: routeFields.retry_delay_seconds.default(DEFAULT_RETRY_DELAY_SECONDS),
  enabled: routeFields.enabled.default(true),
});
// No defaults here: a PATCH changes only the fields it names (zod keeps defaults under .partial()).
export const RoutePatch = z.object(routeFields).partial();

export interface RouteView {
  id: string;
  name: string;
  transport: Transport;
  config: Record<string, unknown>;
  fallback: string | null;
  max_per_second: number | null;
  concurrency: number | null;
  max_attempts: number;
  retry_delay_seconds: number;
  enabled: boolean;
  /** Messages are accepted and wait; no worker takes the route's jobs (POST …/pause, …/resume). */
  paused: boolean;
  created_at: Date;
  updated_at: Date;
}

function parseConfig(transport: Transport, config: unknown): Record<string, unknown> {
  const r = TRANSPORT_CONFIG[transport].safeParse(config);
  if (!r.success) {
    throw invalid(`invalid config for transport ${transport}`, r.error.issues.map((i) => ({ path: ['config', ...i.path].join('.'), message: i.message })));
  }
  return r.data as Record<string, unknown>;
}

function split(transport: Transport, config: Record<string, unknown>, box: SecretBox) {
  const open: Record<string, unknown> = {};
  const secret: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) (SECRET_FIELDS[transport].includes(k) ? secret : open)[k] = v;
  return { config: open, secrets_enc: Object.keys(secret).length ? box.seal(JSON.stringify(secret)) : null };
}

/** The full config with credentials, for transports. */
export function routeConfig(route: Route, box: SecretBox): Record<string, unknown> {
  const secret = route.secrets_enc ? (JSON.parse(box.open(route.secrets_enc)) as Record<string, unknown>) : {};
  return { ...route.config, ...secret };
}

export async function routeView(db: Executor, route: Route): Promise<RouteView> {
  let fallback: string | null = null;
  if (route.fallback_route_id) fallback = (await routes.findRouteById(db, route.tenant_id, route.fallback_route_id))?.name ?? null;
  const config: Record<string, unknown> = { ...route.config };
  if (route.transport === 'smtp' && route.secrets_enc) config.auth = { user: '(set)', pass: '(set)' };
  return {
    id: route.id,
    name: route.name,
    transport: route.transport,
    config,
    fallback,
    max_per_second: route.max_per_second,
    concurrency: route.concurrency,
    max_attempts: route.max_attempts,
    retry_delay_seconds: route.retry_delay_seconds,
    enabled: route.enabled,
    paused: route.paused,
    created_at: route.created_at,
    updated_at: route.updated_at,
  };
}

async function resolveFallback(db: Executor, tenantId: string, name: string | null | undefined, self?: string): Promise<string | null> {
  if (!name) return null;
  const target = await routes.findRoute(db, tenantId, name);
  if (!target) throw invalid(`fallback route "${name}" does not exist`, [{ path: 'fallback', message: 'unknown route' }]);
  if (self && target.id === self) throw invalid('a route cannot be its own fallback', [{ path: 'fallback', message: 'same route' }]);
  return target.id;
}

export async function createRoute(db: Executor, box: SecretBox, tenantId: string, input: unknown): Promise<Route> {
  const parsed = RouteCreate.safeParse(input);
  if (!parsed.success) throw invalid('invalid route', parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
  const r = parsed.data;
  const { config, secrets_enc } = split(r.transport, parseConfig(r.transport, r.config), box);
  try {
    return await routes.insertRoute(db, tenantId, {
      name: r.name,
      transport: r.transport,
      config,
      secrets_enc,
      fallback_route_id: await resolveFallback(db, tenantId, r.fallback),
      max_per_second: r.max_per_second ?? null,
      concurrency: r.concurrency ?? null,
      max_attempts: r.max_attempts,
      retry_delay_seconds: r.retry_delay_seconds,
      enabled: r.enabled,
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a route named "${r.name}" already exists`);
    throw err;
  }
}

export async function listRoutes(db: Executor, tenantId: string): Promise<Route[]> {
  return await routes.listRoutes(db, tenantId);
}

export async function getRoute(db: Executor, tenantId: string, idOrName: string): Promise<Route> {
  const route = await routes.findRoute(db, tenantId, idOrName);
  if (!route) throw notFound('route', idOrName);
  return route;
}

export async function updateRoute(db: Executor, box: SecretBox, tenantId: string, idOrName: string, input: unknown): Promise<Route> {
  const route = await getRoute(db, tenantId, idOrName);
  const parsed = RoutePatch.safeParse(input);
  if (!parsed.success) throw invalid('invalid route', parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
  const p = parsed.data;
  const patch: Partial<routes.RouteRow> = {};
  const transport = p.transport ?? route.transport;
  if (p.config !== undefined || p.transport !== undefined) {
    // A new config replaces the old one whole, credentials included.
    Object.assign(patch, { transport }, split(transport, parseConfig(transport, p.config ?? {}), box));
  }
  if (p.name !== undefined) patch.name = p.name;
  if (p.fallback !== undefined) patch.fallback_route_id = await resolveFallback(db, tenantId, p.fallback, route.id);
  for (const k of ['max_per_second', 'concurrency', 'max_attempts', 'retry_delay_seconds', 'enabled'] as const) {
    if (p[k] !== undefined) (patch as Record<string, unknown>)[k] = p[k];
  }
  try {
    const updated = await routes.updateRoute(db, tenantId, route.id, patch);
    if (!updated) throw notFound('route', idOrName);
    return updated;
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a route named "${String(p.name)}" already exists`);
    throw err;
  }
}

export async function deleteRoute(db: Executor, tenantId: string, idOrName: string): Promise<void> {
  const route = await getRoute(db, tenantId, idOrName);
  // Deleting a route under waiting mail would strand it: nothing would consume its queue.
  const pending = await countPendingOnRoute(db, tenantId, route.id);
  if (pending > 0) {
    throw conflict(`route "${route.name}" still has ${pending} queued or deferred message(s); disable it and let them drain, or wait`);
  }
  await routes.deleteRoute(db, tenantId, route.id);
}
