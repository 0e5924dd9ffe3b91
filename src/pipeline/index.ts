// The pipeline orchestrator: SMTP and the HTTP API both call acceptSubmission. Each stage takes
// the Submission and returns it or throws an SmtpError (STYLE: stages with one signature).
import type { Context } from '../context.ts';
import { uuidv7 } from '../crypto.ts';
import { applyHeaders } from './apply-headers.ts';
import { authenticate } from './authenticate.ts';
import { buildMime } from './build.ts';
import { checkSender } from './check-sender.ts';
import { createCommitter } from './commit.ts';
import { parse } from './parse.ts';
import { rateLimit, releaseRateSlot } from './rate-limit.ts';
import { render, type Renderer } from './render.ts';
import { resolveRoute } from './resolve-route.ts';
import type { Submission } from './submission.ts';
import { track } from './track.ts';

export type Stage = (sub: Submission) => Submission | Promise<Submission>;

export interface Accepted {
  id: string;
  tenantId: string;
  tag: string;
  route: string;
  duplicate: boolean;
}

export function createPipeline(ctx: Context, renderer?: Renderer) {
  const stages: Stage[] = [
    parse,
    authenticate(ctx.db),
    rateLimit(ctx.db),
    applyHeaders,
    checkSender(ctx.db),
    resolveRoute(ctx.db),
    render(ctx.db, renderer && ctx.metrics ? ctx.metrics.timeRender(renderer) : renderer),
    track(ctx.config.publicUrl, ctx.tracking),
  ];
  // Only messages accepted as new use up the tenant's rate limit: any other outcome gives the
  // slot back (a failed give-back only makes the limit stricter until the minute ends).
  const commit = createCommitter(ctx);
  const releaseSlot = (sub: Submission) =>
    releaseRateSlot(ctx.db, sub).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, 'rate-limit slot not given back'));

  async function store(sub: Submission): Promise<Accepted> {
    const id = sub.id ?? uuidv7();
    const attachments = sub.attachments.map((a) => ({ filename: a.filename, content_type: a.contentType, size: a.content.length }));
    // Takes the decoded attachments: they are in the built message, and let go before it is stored.
    const built = await buildMime(ctx.box, ctx.config.hostname, id, sub);
    const principal = sub.principal!;
    const routeName = sub.route?.name ?? sub.routeRef ?? 'capture';
    const committed = await commit({
      id,
      tenantId: principal.tenant.id,
      apiKeyId: principal.key.id,
      tag: sub.tag,
      routeId: sub.route?.id ?? null,
      routeName,
      templateId: sub.template?.id ?? null,
      templateName: sub.template?.name ?? null,
      testMode: sub.testMode,
      // The envelope sender is the verified From address, not the client's MAIL FROM: a tenant
      // cannot borrow another domain's bounce path through us.
      mailFrom: sub.from![0].address,
      fromAddress: sub.from![0].address,
      subject: sub.subject,
      messageIdHeader: built.messageIdHeader,
      mime: built.mime,
      size: built.size,
      verdicts: sub.verdicts,
      recipients: [...new Set(sub.envelope.rcptTo)],
      attachments,
      idempotencyKey: sub.idempotencyKey,
    });
    return { id: committed, tenantId: principal.tenant.id, tag: sub.tag, route: routeName, duplicate: committed !== id };
  }

  return async function acceptSubmission(input: Submission): Promise<Accepted> {
    let sub = input;
    try {
      for (const stage of stages) sub = await stage(sub);
      const accepted = await store(sub);
      if (accepted.duplicate) await releaseSlot(sub);
      (accepted.duplicate ? ctx.metrics?.messagesDuplicate : ctx.metrics?.messagesAccepted)?.inc({ source: input.source });
      return accepted;
    } catch (err) {
      ctx.metrics?.rejected(input.source, err);
      await releaseSlot(sub);
      throw err;
    }
  };
}

export type AcceptSubmission = ReturnType<typeof createPipeline>;
