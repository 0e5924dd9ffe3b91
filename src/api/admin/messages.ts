// Admin: the message log across tenants (`?tenant=` narrows it), one message, its MIME, its HTML
// part (the dashboard's preview), and the queue operations on one message (retry now, cancel,
// requeue), which answer its new view.
import { Router } from 'express';
import type { Context } from '../../context.ts';
import { getMessageHtml, getMessageMime, getMessageView, listMessages } from '../../services/messages.service.ts';
import { cancelMessage, requeueMessage, retryMessage } from '../../services/queue.service.ts';

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

  // The dashboard's preview: the HTML part as JSON, so the browser never parses MIME.
  router.get('/:id/html', async (req, res) => {
    res.json(await getMessageHtml(ctx.db, req.params.id));
  });

  const deps = { db: ctx.db, boss: ctx.boss, log: ctx.log, via: 'api' as const };

  router.post('/:id/retry', async (req, res) => {
    await retryMessage(deps, req.params.id);
    res.json(await getMessageView(ctx.db, req.params.id));
  });

  router.post('/:id/cancel', async (req, res) => {
    await cancelMessage(deps, req.params.id);
    res.json(await getMessageView(ctx.db, req.params.id));
  });

  router.post('/:id/requeue', async (req, res) => {
    await requeueMessage(deps, req.params.id, req.body ?? {});
    res.json(await getMessageView(ctx.db, req.params.id));
  });

  return router;
}
