// The durable step: the message row, its recipients, attachments, `accepted` event and its
// pg-boss job commit in one PostgreSQL statement, so in one transaction and one round trip
// (insertAcceptedMessages). Only after this returns may SMTP say 250. Under load, messages share
// that statement (createCommitter: group commit).
import type { Context } from '../context.ts';
import { GroupedWrites } from '../db/grouped-writes.ts';
import { findByIdempotencyKey, insertAcceptedMessages, writeMimePieces, type AcceptedRows, type AttachmentInfo } from '../db/messages.repository.ts';
import type { Verdict } from '../db/schema.ts';
import { storedMime, type StoredMime } from '../db/stored-mime.ts';
import { deliveryJobsInsert, ensureQueue } from '../queue.ts';
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
  /** The final message in pieces of whole lines (build.ts), `size` bytes in all. */
  mime: Buffer[];
  size: number;
  verdicts: Verdict[];
  recipients: string[];
  attachments: AttachmentInfo[];
  idempotencyKey?: string;
}

const knownQueues = new Set<string>();

async function ensureRouteQueue(ctx: Context, routeId: string): Promise<void> {
  if (knownQueues.has(routeId)) return;
  await ensureQueue(ctx.boss, routeId);
  knownQueues.add(routeId);
}

/**
 * A larger message commits alone: a batch's accepting statement carries every message's bytes in
 * one protocol message, and a few 25 MiB messages together would hold that much more memory.
 * Nor is it joined into one buffer to be sent as one parameter (its bytes would be held twice,
 * and a third time by the driver): its row is written without them and its pieces follow, a
 * statement each (writeMimePieces).
 */
const MAX_BATCHED_BYTES = 1024 * 1024;
const inPieces = (m: AcceptedMessage) => m.size > MAX_BATCHED_BYTES;
const NO_BYTES = Buffer.alloc(0);

/** A message with the form its row stores its bytes in: compressed from 16 KiB (stored-mime.ts). */
type Storable = AcceptedMessage & { stored: StoredMime };

/**
 * The message's bytes as its row will hold them. A message in pieces has none in its row (they
 * follow it, writeMimePieces) and is never compressed: that would hold it whole once more.
 */
function storable(ctx: Context, m: AcceptedMessage): Storable {
  return { ...m, stored: inPieces(m) ? { mime: NO_BYTES, mime_compression: 'none' } : storedMime(m.mime, m.size, ctx.config.storeCompression) };
}

function rowsOf(m: Storable, routeId: string | null): AcceptedRows {
  return {
    message: {
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
      size: m.size,
      mime: m.stored.mime,
      mime_compression: m.stored.mime_compression,
      verdicts: m.verdicts,
      job_id: routeId ? m.id : null,
      idempotency_key: m.idempotencyKey ?? null,
    },
    recipients: m.recipients,
    attachments: m.attachments,
    ...(routeId ? {} : { recipientResult: { status: 'sent', response: 'captured (test key)' }, events: [{ type: 'sent', detail: { captured: true, test_key: true } }] }),
  };
}

/**
 * Commits the message and its job. Returns the id the client is told: the new message's, or
 * with an idempotency key seen in the last 24 h, the first message's (and nothing is created).
 */
export async function commitMessage(ctx: Context, m: AcceptedMessage): Promise<string> {
  return await commitAlone(ctx, storable(ctx, m));
}

async function commitAlone(ctx: Context, m: Storable): Promise<string> {
  const routeId = m.testMode ? null : m.routeId;
  if (routeId) await ensureRouteQueue(ctx, routeId);
  if (m.idempotencyKey) {
    const existing = await findByIdempotencyKey(ctx.db, m.tenantId, m.idempotencyKey);
    if (existing) return existing.id;
  }
  const jobs = routeId ? [await deliveryJobsInsert(ctx.boss, routeId, [m.id])] : [];
  try {
    if (inPieces(m)) {
      await ctx.db.transaction().execute(async (trx) => {
        await insertAcceptedMessages(trx, [rowsOf(m, routeId)], jobs);
        await writeMimePieces(trx, m.id, m.mime);
      });
    } else {
      await insertAcceptedMessages(ctx.db, [rowsOf(m, routeId)], jobs);
    }
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

/** Messages in one group commit at most. */
const MAX_BATCH = 100;

/**
 * Group commit (GroupedWrites): a message that reaches the commit while another commit runs
 * waits for it to end, then commits with every other message that waited, in one statement.
 * Messages with an idempotency key (which must look for their twin first), test-key captures and
 * messages over 1 MiB commit alone.
 */
export function createCommitter(ctx: Context): (m: AcceptedMessage) => Promise<string> {
  async function commitBatch(batch: (Storable & { routeId: string })[]): Promise<string[]> {
    const jobs = [];
    for (const [routeId, ms] of Map.groupBy(batch, (m) => m.routeId)) {
      await ensureRouteQueue(ctx, routeId);
      jobs.push(await deliveryJobsInsert(ctx.boss, routeId, ms.map((m) => m.id)));
    }
    await insertAcceptedMessages(ctx.db, batch.map((m) => rowsOf(m, m.routeId)), jobs);
    return batch.map((m) => m.id);
  }
  const grouped = new GroupedWrites({ writeMany: commitBatch, writeOne: (m) => commitAlone(ctx, m), maxGroup: MAX_BATCH });

  return async function commit(accepted: AcceptedMessage): Promise<string> {
    // Compressed now, while an earlier group's statement may still run, not when this one's goes.
    const m = storable(ctx, accepted);
    const { routeId } = m;
    if (m.idempotencyKey || m.testMode || !routeId || inPieces(m)) return await commitAlone(ctx, m);
    return await grouped.write({ ...m, routeId });
  };
}
