// Admin: a tenant's delivery routes. Credentials are never returned (routeView masks them).
import { Router } from 'express';
import type { Context } from '../../context.ts';
import { ensureQueue } from '../../queue.ts';
import { pauseRoute, resumeRoute, routeQueue } from '../../services/queue.service.ts';
import { createRoute, deleteRoute, getRoute, listRoutes, routeView, updateRoute } from '../../services/routes.service.ts';
import { tenantOf } from './tenants.ts';

export function routesRouter(ctx: Context): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    const route = await createRoute(ctx.db, ctx.box, tenantOf(res).id, req.body ?? {});
    // Workers consume one queue per route; it must exist before the first message is sent.
    await ensureQueue(ctx.boss, route.id);
    res.status(201).json(await routeView(ctx.db, route));
  });

  router.get('/', async (_req, res) => {
    const rows = await listRoutes(ctx.db, tenantOf(res).id);
    res.json({ items: await Promise.all(rows.map((r) => routeView(ctx.db, r))), next_cursor: null });
  });

  router.get('/:route', async (req, res) => {
    res.json(await routeView(ctx.db, await getRoute(ctx.db, tenantOf(res).id, req.params.route)));
  });

  router.patch('/:route', async (req, res) => {
    res.json(await routeView(ctx.db, await updateRoute(ctx.db, ctx.box, tenantOf(res).id, req.params.route, req.body ?? {})));
  });

  router.delete('/:route', async (req, res) => {
    await deleteRoute(ctx.db, tenantOf(res).id, req.params.route);
    res.status(204).end();
  });

  // Queue operations (services/queue.service.ts): messages keep being accepted while paused.
  const deps = { db: ctx.db, boss: ctx.boss, log: ctx.log, via: 'api' as const };

  router.post('/:route/pause', async (req, res) => {
    res.json(await routeView(ctx.db, await pauseRoute(deps, tenantOf(res).id, req.params.route)));
  });

  router.post('/:route/resume', async (req, res) => {
    res.json(await routeView(ctx.db, await resumeRoute(deps, tenantOf(res).id, req.params.route)));
  });

  router.get('/:route/queue', async (req, res) => {
    res.json(await routeQueue(ctx.db, tenantOf(res).id, req.params.route));
  });

  return router;
}
