// Admin: the message log across tenants (`?tenant=` narrows it), one message, its MIME.
import { Router } from 'express';
import type { Context } from '../../context.ts';
import { getMessageMime, getMessageView, listMessages } from '../../services/messages.service.ts';

export function messagesRouter(ctx: Context): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    res.json(await listMessages(ctx.db, req.query));
  });

  router.get('/:id', async (req, res) => {
    res.json(await getMessageView(ctx.db, req.params.id));
  });

  router.get('/:id/mime', async (req, res) => {
    const mime = await getMessageMime(ctx.db, req.params.id);
    res.set('Content-Disposition', `inline; filename="${req.params.id}.eml"`);
    res.type('message/rfc822').send(mime);
  });

  return router;
}
