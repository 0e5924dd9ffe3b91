// Tenant API: send over HTTP (the SMTP pipeline, one code path) and the tenant's message log.
import { Router, type Request } from 'express';
import { z } from 'zod';
import type { Context } from '../../context.ts';
import { httpSubmission } from '../../pipeline/http-submission.ts';
import type { AcceptSubmission } from '../../pipeline/index.ts';
import { ApiError } from '../../services/errors.ts';
import { getMessageMime, getMessageView, listMessages } from '../../services/messages.service.ts';
import { toSmtpError } from '../../smtp/smtp-error.ts';
import { principalOf, requireRight } from './auth.ts';

export function messagesRouter(ctx: Context, accept: AcceptSubmission): Router {
  const router = Router();

  router.post('/', requireRight('send'), async (req, res) => {
    const principal = principalOf(res);
    const sub = httpSubmission(ctx.config, principal, req.body ?? {}, req.get('idempotency-key')?.trim() || undefined);
    let accepted;
    try {
      accepted = await accept(sub);
    } catch (err) {
      if (err instanceof ApiError || err instanceof z.core.$ZodError) throw err;
      const refusal = toSmtpError(err);
      if (refusal !== err) ctx.log.error({ err, tenant: principal.tenant.name }, 'HTTP send failed: answered 503');
      else ctx.log.info({ http: 'send', tenant: principal.tenant.name, outcome: refusal.code, reply: refusal.responseCode }, 'message refused');
      throw refusal;
    }
    ctx.log.info(
      { http: 'send', tenant: principal.tenant.name, msgid: accepted.id, tag: accepted.tag, route: accepted.route, duplicate: accepted.duplicate },
      'message accepted',
    );
    // A repeated Idempotency-Key answers the first message's id, as SMTP answers its 250.
    res.status(202).json({ id: accepted.id });
  });

  router.get('/', requireRight('read'), async (req, res) => {
    // With the key's tenant given, the admins' `tenant` filter is ignored.
    res.json(await listMessages(ctx.db, req.query, principalOf(res).tenant.id));
  });

  router.get('/:id', requireRight('read'), async (req: Request<{ id: string }>, res) => {
    res.json(await getMessageView(ctx.db, req.params.id, principalOf(res).tenant.id));
  });

  router.get('/:id/mime', requireRight('read'), async (req: Request<{ id: string }>, res) => {
    const mime = await getMessageMime(ctx.db, req.params.id, principalOf(res).tenant.id);
    res.set('Content-Disposition', `inline; filename="${req.params.id}.eml"`);
    res.type('message/rfc822').send(mime);
  });

  return router;
}
