// The durable step: the message row, its recipients, attachments, `accepted` event and its
// pg-boss job commit in one PostgreSQL transaction. Only after this returns may SMTP say 250.
import type { Context } from '../context.ts';
import { findByIdempotencyKey, insertAcceptedMessage, type AttachmentInfo } from '../db/messages.repository.ts';
import type { Verdict } from '../db/schema.ts';
import { enqueueDelivery, ensureQueue } from '../queue.ts';
import { isUniqueViolation } from '../services/errors.ts';

export interface AcceptedMessage {
  id: string;
  tenantId: string;
  apiKeyId: string | null;
  tag: string;
  routeId: string;
  routeName: string;
  templateId: string | null;
  templateName: string | null;
  testMode: boolean;
  mailFrom: string;
  fromAddress: string;
  subject: string;
  messageIdHeader: string;
  mime: Buffer;
  verdicts: Verdict[];
  recipients: string[];
  attachments: AttachmentInfo[];
  idempotencyKey?: string;
}

const knownQueues = new Set<string>();

/**
 * Commits the message and its job. Returns the id the client is told: the new message's, or
 * with an idempotency key seen in the last 24 h, the first message's (and nothing is created).
 */
export async function commitMessage(ctx: Context, m: AcceptedMessage): Promise<string> {
  if (!knownQueues.has(m.routeId)) {
    await ensureQueue(ctx.boss, m.routeId);
    knownQueues.add(m.routeId);
  }
  if (m.idempotencyKey) {
    const existing = await findByIdempotencyKey(ctx.db, m.tenantId, m.idempotencyKey);
    if (existing) return existing.id;
  }
  try {
    await ctx.db.transaction().execute(async (trx) => {
      await insertAcceptedMessage(
        trx,
        {
          id: m.id,
          tenant_id: m.tenantId,
          api_key_id: m.apiKeyId,
          status: 'queued',
          tag: m.tag,
          route_id: m.routeId,
          route_name: m.routeName,
          template_id: m.templateId,
          template_name: m.templateName,
          test_mode: m.testMode,
          mail_from: m.mailFrom,
          from_address: m.fromAddress,
          subject: m.subject,
          message_id_header: m.messageIdHeader,
          size: m.mime.length,
          mime: m.mime,
          verdicts: m.verdicts,
          job_id: m.id,
          idempotency_key: m.idempotencyKey ?? null,
        },
        m.recipients,
        m.attachments,
      );
      await enqueueDelivery(ctx.boss, trx, { routeId: m.routeId, messageId: m.id, jobId: m.id });
    });
  } catch (err) {
    // Two submissions with one idempotency key raced: the loser answers with the winner's id.
    if (m.idempotencyKey && isUniqueViolation(err)) {
      const existing = await findByIdempotencyKey(ctx.db, m.tenantId, m.idempotencyKey);
      if (existing) return existing.id;
    }
    throw err;
  }
  return m.id;
}
