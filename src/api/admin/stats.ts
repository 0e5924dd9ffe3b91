// Admin: message statistics per tag across tenants (`?tenant=` narrows to one), SPEC §7.
import { Router } from 'express';
import type { Context } from '../../context.ts';
import { getStats } from '../../services/stats.service.ts';

export function statsRouter(ctx: Context): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    res.json(await getStats(ctx.db, req.query));
  });

  return router;
}
