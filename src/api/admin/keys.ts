// Admin: a tenant's API keys. The key itself appears only in the creation reply.
import { Router } from 'express';
import type { Context } from '../../context.ts';
import { createKey, keyView, listKeys, revokeKey } from '../../services/tenants.service.ts';
import { tenantOf } from './tenants.ts';

export function keysRouter(ctx: Context): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    res.status(201).json(await createKey(ctx.db, tenantOf(res).id, req.body ?? {}));
  });

  router.get('/', async (_req, res) => {
    const rows = await listKeys(ctx.db, tenantOf(res).id);
    res.json({ items: rows.map(keyView), next_cursor: null });
  });

  router.delete('/:id', async (req, res) => {
    res.json(keyView(await revokeKey(ctx.db, tenantOf(res).id, req.params.id)));
  });

  return router;
}
