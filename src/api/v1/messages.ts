// Tenant API: send over HTTP (the SMTP pipeline, one code path) and the tenant's message log.
import { Router, type Request } from 'express';
import { z } from 'zod';
import type { Context } from '../../context.ts';
import { httpSubmission } from '../../pipeline/http-submission.ts';
import type { AcceptSubmission } from '../../pipeline/index.ts';
import { ApiError } from '../../services/errors.ts';
import { getMessageHtml, getMessageMime, getMessageView, listMessages } from '../../services/messages.service.ts';
import { SmtpError, toSmtpError } from '../../smtp/smtp-error.ts';
import { principalOf, requireRight } from './auth.ts';

export function messagesRouter(ctx: Context, accept: AcceptSubmission): Router {
  const router = Router();

  router.post('/', requireRight('send'), async (req, res) => {
    const principal = principalOf(res);
    const started = Date.now();
    // Field names as in the SMTP transaction log: tenant is the tenant's id, message the message's.
    const send = { http: 'send', tenant: principal.tenant.id };
    let sub;
    try {
      sub = httpSubmission(ctx.config, principal, req.body ?? {}, req.get('idempotency-key')?.trim() || undefined);
    } catch (err) {
      // Refused before the pipeline (which counts its own refusals): a From or size problem.
      if (err instanceof SmtpError) {
        ctx.metrics?.rejected('http', err);
        ctx.log.info({ ...send, outcome: 'rejected', reason: err.code, reply: err.responseCode, duration_ms: Date.now() - started }, 'message refused');
      }
      throw err;
    }
    let accepted;
    try {
      accepted = await accept(sub);
    } catch (err) {
      if (err instanceof ApiError || err instanceof z.core.$ZodError) throw err;
      const refusal = toSmtpError(err);
      if (refusal !== err) ctx.log.error({ ...send, outcome: 'rejected', reason: refusal.code, duration_ms: Date.now() - started, err }, 'HTTP send failed: answered 503');
      else ctx.log.info({ ...send, outcome: 'rejected', reason: refusal.code, reply: refusal.responseCode, duration_ms: Date.now() - started }, 'message refused');
      throw refusal;
    }
    ctx.log.info(
      { ...send, message: accepted.id, tag: accepted.tag, route: accepted.route, outcome: accepted.duplicate ? 'duplicate' : 'accepted', duration_ms: Date.now() - started },
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

  // The dashboard's preview: the HTML part as JSON, so the browser never parses MIME.
  router.get('/:id/html', requireRight('read'), async (req: Request<{ id: string }>, res) => {
    res.json(await getMessageHtml(ctx.db, req.params.id, principalOf(res).tenant.id));
  });

  return router;
}
