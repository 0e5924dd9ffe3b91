// The admin API (SPEC §7) under /admin. Authentication and body parsing are mounted in app.ts.
import { Router } from 'express';
import type { Context } from '../../context.ts';
import type { TxtResolver } from '../../services/domain-verification.service.ts';
import { domainsRouter } from './domains.ts';
import { keysRouter } from './keys.ts';
import { messagesRouter } from './messages.ts';
import { queuesRouter } from './queues.ts';
import { routesRouter } from './routes.ts';
import { statsRouter } from './stats.ts';
import { templatesRouter } from './templates.ts';
import { loadTenant, tenantsRouter } from './tenants.ts';
import { webhooksRouter } from './webhooks.ts';

export function adminRouter(ctx: Context, resolveTxt: TxtResolver): Router {
  const router = Router();
  router.use('/tenants/:tenant', loadTenant(ctx));
  router.use('/tenants', tenantsRouter(ctx));
  router.use('/tenants/:tenant/keys', keysRouter(ctx));
  router.use('/tenants/:tenant/domains', domainsRouter(ctx, resolveTxt));
  router.use('/tenants/:tenant/routes', routesRouter(ctx));
  router.use('/tenants/:tenant/templates', templatesRouter(ctx));
  router.use('/tenants/:tenant/webhooks', webhooksRouter(ctx));
  router.use('/messages', messagesRouter(ctx));
  router.use('/queues', queuesRouter(ctx));
  router.use('/stats', statsRouter(ctx));
  return router;
}
