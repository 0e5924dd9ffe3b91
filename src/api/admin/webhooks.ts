// A tenant's webhook endpoints, their delivery log and test events. Mounted under
// /admin/tenants/:tenant/webhooks and, for `full` keys, /v1/webhooks: the tenant comes from
// res.locals either way, so another tenant's endpoint is simply not found (404).
import { Router } from 'express';
import type { Context } from '../../context.ts';
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  listWebhookDeliveries,
  listWebhooks,
  sendTestEvent,
  updateWebhook,
  webhookView,
  type WebhookDeps,
} from '../../services/webhooks.service.ts';
import { targetPolicy } from '../../webhooks/target.ts';
import { tenantOf } from './tenants.ts';

export interface WebhooksRouterOptions {
  /** Who a PATCH {"enabled": false} is recorded as disabled by. */
  disabledBy: string;
}

export function webhooksRouter(ctx: Context, options: WebhooksRouterOptions = { disabledBy: 'disabled by an admin' }): Router {
  const router = Router();
  // Read per request: the ports the relay listens on are known once it has bound them.
  const deps = (): WebhookDeps => ({ db: ctx.db, box: ctx.box, target: targetPolicy(ctx.config, ctx.listening) });

  router.post('/', async (req, res) => {
    res.status(201).json(await createWebhook(deps(), tenantOf(res).id, req.body ?? {}));
  });

  router.get('/', async (_req, res) => {
    res.json({ items: (await listWebhooks(ctx.db, tenantOf(res).id)).map(webhookView), next_cursor: null });
  });

  router.get('/:id', async (req, res) => {
    res.json(webhookView(await getWebhook(ctx.db, tenantOf(res).id, req.params.id)));
  });

  router.patch('/:id', async (req, res) => {
    res.json(webhookView(await updateWebhook(deps(), tenantOf(res).id, req.params.id, req.body ?? {}, options.disabledBy)));
  });

  router.delete('/:id', async (req, res) => {
    await deleteWebhook(ctx.db, tenantOf(res).id, req.params.id);
    res.status(204).end();
  });

  router.get('/:id/deliveries', async (req, res) => {
    res.json(await listWebhookDeliveries(ctx.db, tenantOf(res).id, req.params.id, req.query));
  });

  router.post('/:id/test', async (req, res) => {
    const tenant = tenantOf(res);
    const result = await sendTestEvent(deps(), { id: tenant.id, name: tenant.name }, req.params.id);
    ctx.log.info({ tenant: tenant.name, webhook: req.params.id, delivery: result.delivery_id, ok: result.ok, status_code: result.status_code }, 'webhook test event sent');
    res.json(result);
  });

  return router;
}
