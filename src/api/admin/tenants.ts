// Admin: tenants (`:tenant` is an id or a name). Sub-resources find the tenant in res.locals.
import { Router, type RequestHandler, type Response } from 'express';
import type { Context } from '../../context.ts';
import type { Tenant } from '../../db/schema.ts';
import { createTenant, deleteTenant, getTenant, listTenants, tenantView, updateTenant } from '../../services/tenants.service.ts';

/** Resolves `:tenant` once for every path below /tenants/:tenant; unknown → 404. */
export function loadTenant(ctx: Context): RequestHandler<{ tenant: string }> {
  return async (req, res, next) => {
    res.locals.tenant = await getTenant(ctx.db, req.params.tenant);
    next();
  };
}

export function tenantOf(res: Response): Tenant {
  const tenant = res.locals.tenant as Tenant | undefined;
  if (!tenant) throw new Error('tenant not loaded: mount loadTenant before this router');
  return tenant;
}

export function tenantsRouter(ctx: Context): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    res.status(201).json(tenantView(await createTenant(ctx.db, req.body ?? {})));
  });

  router.get('/', async (req, res) => {
    const page = await listTenants(ctx.db, req.query);
    res.json({ items: page.items.map(tenantView), next_cursor: page.next_cursor });
  });

  router.get('/:tenant', (_req, res) => {
    res.json(tenantView(tenantOf(res)));
  });

  router.patch('/:tenant', async (req, res) => {
    res.json(tenantView(await updateTenant(ctx.db, tenantOf(res).id, req.body ?? {})));
  });

  router.delete('/:tenant', async (_req, res) => {
    await deleteTenant(ctx.db, tenantOf(res).id);
    res.status(204).end();
  });

  return router;
}
