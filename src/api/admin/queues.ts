// Admin: what waits on every route (`?tenant=` narrows to one tenant's routes).
import { Router } from 'express';
import type { Context } from '../../context.ts';
import { listQueues } from '../../services/queue.service.ts';

export function queuesRouter(ctx: Context): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    res.json(await listQueues(ctx.db, req.query));
  });

  return router;
}
