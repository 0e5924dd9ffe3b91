// The message log: filtered, keyset-paginated lists and the full view of one message (its
// recipients, attempts, events, verdicts and attachments). Shared by the admin and tenant APIs.
import { simpleParser } from 'mailparser';
import { z } from 'zod';
import type { Executor } from '../db/database.ts';
import * as messages from '../db/messages.repository.ts';
import type { Message, Recipient } from '../db/schema.ts';
import * as tenants from '../db/tenants.repository.ts';
import { invalid, notFound } from './errors.ts';
import { getTenant } from './tenants.service.ts';

const ISO_DATE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** A query parameter holding an ISO 8601 date or date-time, parsed to a Date (also used by stats). */
export const dateParam = z
  .string()
  .trim()
  .regex(ISO_DATE, 'must be an ISO 8601 date or date-time')
  .transform((v, ctx) => {
    // A date-time without an offset is UTC, never the server's local time.
    const d = new Date(/[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(v) ? `${v.replace(' ', 'T')}Z` : v);
    if (Number.isNaN(d.getTime())) {
      ctx.addIssue({ code: 'custom', message: 'not a valid date' });
      return z.NEVER;
    }
    return d;
  });

export const MessageListQuery = z.object({
  tenant: z.string().trim().min(1).optional(),
  tag: z.string().trim().min(1).max(100).optional(),
  status: z.enum(['queued', 'deferred', 'sent', 'failed']).optional(),
  recipient: z.string().trim().min(3).max(320).optional(),
  since: dateParam.optional(),
  until: dateParam.optional(),
  captured: z
    .enum(['true', 'false'])
    .optional()
    .describe('`true`: only messages held by capture (sent with a test key or through a `capture` route), the dashboard\'s inbox; `false`: only the others'),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().min(1).optional(),
});

const CURSOR_AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

function encodeCursor(createdAt: string, id: string): string {
  return Buffer.from(`${createdAt}|${id}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: string; id: string } {
  const [createdAt, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  if (!createdAt || !id || !CURSOR_AT.test(createdAt) || !tenants.isUuid(id)) {
    throw invalid('invalid cursor', [{ path: 'cursor', message: 'use the next_cursor of a previous page' }]);
  }
  return { createdAt, id };
}

function recipientView(r: Recipient) {
  return { address: r.address, status: r.status, response: r.response };
}

/**
 * A page of the message log, newest first. `tenantId` scopes a tenant's own view; admins
 * pass undefined and may filter with `?tenant=` (id or name).
 */
export async function listMessages(db: Executor, query: unknown, tenantId?: string) {
  // Empty parameters (a cleared form field) mean "no filter".
  const raw = Object.fromEntries(Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== ''));
  const q = MessageListQuery.parse(raw);
  const scope = tenantId ?? (q.tenant !== undefined ? (await getTenant(db, q.tenant)).id : undefined);
  const rows = await messages.listMessages(db, {
    tenantId: scope,
    tag: q.tag,
    status: q.status,
    recipient: q.recipient,
    since: q.since,
    until: q.until,
    captured: q.captured === undefined ? undefined : q.captured === 'true',
    before: q.cursor !== undefined ? decodeCursor(q.cursor) : undefined,
    limit: q.limit + 1,
  });
  const page = rows.slice(0, q.limit);
  const recipients = await messages.listRecipientsOf(db, page.map((m) => m.id));
  const byMessage = new Map<string, Recipient[]>();
  for (const r of recipients) byMessage.set(r.message_id, [...(byMessage.get(r.message_id) ?? []), r]);
  const last = page.at(-1);
  return {
    items: page.map((m) => ({ ...summaryView(m, m.tenant_name, byMessage.get(m.id) ?? []), size: m.size, test_mode: m.test_mode })),
    next_cursor: rows.length > q.limit && last ? encodeCursor(last.cursor_at, last.id) : null,
  };
}

/** The fields a message shows in the log and in its own view (SPEC §7 message shape). */
function summaryView(
  m: Pick<Message, 'id' | 'status' | 'tag' | 'route_name' | 'template_name' | 'from_address' | 'subject' | 'attempts' | 'created_at' | 'sent_at' | 'next_attempt_at'>,
  tenantName: string,
  recipients: Recipient[],
) {
  return {
    id: m.id,
    tenant: tenantName,
    status: m.status,
    tag: m.tag,
    route: m.route_name,
    template: m.template_name,
    from: m.from_address,
    subject: m.subject,
    recipients: recipients.map(recipientView),
    attempts: m.attempts,
    created_at: m.created_at,
    sent_at: m.sent_at,
    next_attempt_at: m.next_attempt_at,
  };
}

/** The message through `lookup` (with or without its bytes), or 404; a malformed id is simply not a message. */
async function findMessage<M>(lookup: (db: Executor, id: string, tenantId?: string) => Promise<M | undefined>, db: Executor, id: string, tenantId?: string): Promise<M> {
  const m = tenants.isUuid(id) ? await lookup(db, id, tenantId) : undefined;
  if (!m) throw notFound('message', id);
  return m;
}

/** One message with its recipients, attempts, events, verdicts and attachments. */
export async function getMessageView(db: Executor, id: string, tenantId?: string) {
  const m = await findMessage(messages.findMessageMeta, db, id, tenantId);
  const [tenant, recipients, attempts, events, attachments] = await Promise.all([
    tenants.findTenant(db, m.tenant_id),
    messages.listRecipients(db, m.id),
    messages.listAttempts(db, m.id),
    messages.listEvents(db, m.id),
    messages.listAttachments(db, m.id),
  ]);
  return {
    ...summaryView(m, tenant?.name ?? m.tenant_id, recipients),
    attempt_log: attempts.map((a) => ({ number: a.number, route: a.route_name, outcome: a.outcome, response: a.response, at: a.at, duration_ms: a.duration_ms })),
    events: events.map((e) => ({ type: e.type, at: e.at, detail: e.detail })),
    verdicts: m.verdicts,
    attachments: attachments.map((a) => ({ filename: a.filename, content_type: a.content_type, size: a.size })),
    size: m.size,
    test_mode: m.test_mode,
  };
}

/** The final MIME as built at acceptance: what delivery sends and capture stores. */
export async function getMessageMime(db: Executor, id: string, tenantId?: string): Promise<Buffer> {
  return (await findMessage(messages.findMessage, db, id, tenantId)).mime;
}

/**
 * The subject and HTML part of the final MIME, for the dashboard's preview (so the browser never
 * parses MIME). `html` is null when the message has no HTML part: the pipeline always writes
 * one, but a message stored before that rule, or by hand, may lack it. The bytes are our own
 * build, already parsed once at acceptance; cid: links stay as they are (images were removed).
 */
export async function getMessageHtml(db: Executor, id: string, tenantId?: string): Promise<{ subject: string; html: string | null }> {
  const mail = await simpleParser(await getMessageMime(db, id, tenantId), {
    keepCidLinks: true,
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipImageLinks: true,
    skipTextLinks: true,
  });
  return { subject: mail.subject ?? '', html: typeof mail.html === 'string' ? mail.html : null };
}
