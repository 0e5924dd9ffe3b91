// The tenant API (SPEC §7) under /v1: everything is scoped to the API key's tenant. Templates,
// domains and webhooks reuse the admin routers, which read the tenant from res.locals.tenant; a tenant
// cannot mark its own domain verified. Another tenant's resource is simply not found (404).
import { Router, type RequestHandler } from 'express';
import type { Config } from '../../config.ts';
import type { Context } from '../../context.ts';
import type { AcceptSubmission } from '../../pipeline/index.ts';
import type { TxtResolver } from '../../services/domain-verification.service.ts';
import { getStats } from '../../services/stats.service.ts';
import { domainsRouter } from '../admin/domains.ts';
import { templatesRouter } from '../admin/templates.ts';
import { webhooksRouter } from '../admin/webhooks.ts';
import { principalOf, requireKey, requireRight } from './auth.ts';
import { messagesRouter } from './messages.ts';

/** How to connect over SMTP; the key itself is never echoed back. */
export function smtpInfo(config: Config) {
  const port = config.smtpPorts[0] ?? config.smtpsPorts[0];
  const scheme = config.smtpPorts.length ? 'smtp' : 'smtps';
  return {
    host: config.hostname,
    ports: { starttls: config.smtpPorts, implicit_tls: config.smtpsPorts },
    tls: { starttls: config.smtpPorts.length > 0, implicit: config.smtpsPorts.length > 0, required: config.requireTls },
    auth: ['PLAIN', 'LOGIN'],
    username: 'txrelay',
    password: 'your API key (any username works; the key is the password)',
    smtp_url: `${scheme}://txrelay:<api key>@${config.hostname}:${port}`,
  };
}

/** `bodyParsers` run after authentication, so strangers cannot make us parse a body. */
export function v1Router(ctx: Context, accept: AcceptSubmission, resolveTxt: TxtResolver, bodyParsers: RequestHandler[]): Router {
  const router = Router();
  router.use(requireKey(ctx.db), ...bodyParsers);
  router.get('/smtp/info', requireRight('read'), (_req, res) => {
    res.json(smtpInfo(ctx.config));
  });
  router.use('/messages', messagesRouter(ctx, accept));
  router.get('/stats', requireRight('read'), async (req, res) => {
    res.json(await getStats(ctx.db, req.query, principalOf(res).tenant.id));
  });
  router.use('/templates', requireRight('manage'), templatesRouter(ctx));
  router.use('/domains', requireRight('manage'), domainsRouter(ctx, resolveTxt, { manualVerify: false }));
  router.use('/webhooks', requireRight('manage'), webhooksRouter(ctx, { disabledBy: 'disabled by the tenant' }));
  return router;
}
