// The durable step: the message row, its recipients, attachments, `accepted` event and its
// pg-boss job commit in one PostgreSQL transaction. Only after this returns may SMTP say 250.
import type { Context } from '../context.ts';
import { findByIdempotencyKey, insertAcceptedMessage, insertEvent, type AttachmentInfo } from '../db/messages.repository.ts';
import type { Verdict } from '../db/schema.ts';
import { enqueueDelivery, ensureQueue } from '../queue.ts';
import { isUniqueViolation } from '../services/errors.ts';

export interface AcceptedMessage {
  id: string;
  tenantId: string;
  apiKeyId: string | null;
  tag: string;
  /** Null for test-key messages: they are captured at once and never queued. */
  routeId: string | null;
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
  const routeId = m.testMode ? null : m.routeId;
  if (routeId && !knownQueues.has(routeId)) {
    await ensureQueue(ctx.boss, routeId);
    knownQueues.add(routeId);
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
          // A test key's message is stored as captured: `sent`, with no job (SPEC §5).
          status: routeId ? 'queued' : 'sent',
          sent_at: routeId ? null : new Date(),
          tag: m.tag,
          route_id: routeId,
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
          job_id: routeId ? m.id : null,
          idempotency_key: m.idempotencyKey ?? null,
        },
        m.recipients,
        m.attachments,
        routeId ? undefined : { status: 'sent', response: 'captured (test key)' },
      );
      if (routeId) {
        await enqueueDelivery(ctx.boss, trx, { routeId, messageId: m.id, jobId: m.id });
      } else {
        await insertEvent(trx, { id: m.id, tenant_id: m.tenantId, tag: m.tag, route_name: m.routeName }, { type: 'sent', detail: { captured: true, test_key: true } });
      }
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
