// `POST /v1/messages`: the JSON body becomes a Submission that runs through the same stages as
// SMTP. The body's fields become the headers an SMTP client would have sent (From, To, the
// X-Transactional-* headers), so every header rule, limit and error is the SMTP one.
import addressparser from 'nodemailer/lib/addressparser';
import { z } from 'zod';
import type { Config } from '../config.ts';
import { invalid } from '../services/errors.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import { newSubmission, withoutNul, type Address, type Attachment, type Principal, type Submission } from './submission.ts';

const addressField = z.string().trim().min(3).max(998);
const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

export const MessageSend = z.strictObject({
  from: addressField.describe('one mailbox, e.g. "Shop <noreply@shop.example>"; its domain must be verified'),
  to: z.array(addressField).min(1).describe('recipients (the envelope): "a@b.example" or "Name <a@b.example>"'),
  reply_to: addressField.optional(),
  subject: z.string().max(998).optional(),
  html: z.string().optional(),
  text: z.string().optional().describe('used only when there is no html: turned into HTML'),
  tag: z.string().optional().describe('as X-Transactional-Tag'),
  route: z.string().optional().describe('route name or id, as X-Transactional-Route'),
  template: z.string().optional().describe('template name or id, as X-Transactional-Template'),
  variables: z.record(z.string(), z.unknown()).optional().describe('the template context, as X-Transactional-Variables'),
  track_opens: z.boolean().optional(),
  track_clicks: z.boolean().optional(),
  attachments: z
    .array(
      z.strictObject({
        filename: z.string().trim().min(1).max(255),
        content_type: z.string().trim().min(3).max(255).regex(/^[\w.+-]+\/[\w.+-]+$/, 'must be a MIME type such as application/pdf'),
        content_base64: z.string().regex(BASE64, 'must be base64'),
      }),
    )
    .max(100)
    .optional(),
});
export type MessageSendInput = z.input<typeof MessageSend>;

/** One mailbox with an address, or undefined. */
function mailbox(value: string): Address | undefined {
  const list = addressparser(value, { flatten: true });
  if (list.length !== 1 || !/^[^@\s]+@[^@\s]+$/.test(list[0].address ?? '')) return undefined;
  return { address: list[0].address, name: list[0].name ?? '' };
}

function mailboxes(values: string[], field: string): Address[] {
  const bad: { path: string; message: string }[] = [];
  const out = values.map((v, i) => {
    const a = mailbox(v);
    if (!a) bad.push({ path: `${field}.${i}`, message: 'must be one e-mail address' });
    return a!;
  });
  if (bad.length) throw invalid('the request is invalid', bad);
  return out;
}

/** Every string of the request without NUL (see withoutNul): most become header text or rows. */
function stripNul<T>(value: T): T {
  if (typeof value === 'string') return withoutNul(value) as T;
  if (Array.isArray(value)) return value.map(stripNul) as T;
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, stripNul(v)])) as T;
  return value;
}

/**
 * Builds the Submission for a JSON send. `idempotencyKey` is the request's Idempotency-Key
 * header. Size and recipient limits are the SMTP ones.
 */
export function httpSubmission(config: Config, principal: Principal, body: unknown, idempotencyKey?: string): Submission {
  const m = stripNul(MessageSend.parse(body));
  const from = mailbox(m.from);
  if (!from) throw new SmtpError(550, '5.1.7', 'From must hold exactly one address', 'invalid_from');
  const to = mailboxes(m.to, 'to');
  const replyTo = m.reply_to === undefined ? [] : mailboxes([m.reply_to], 'reply_to');
  if (to.length > config.maxRecipients) {
    throw invalid(`too many recipients: at most ${config.maxRecipients} per message`, [{ path: 'to', message: `at most ${config.maxRecipients}` }]);
  }

  const attachments: Attachment[] = (m.attachments ?? []).map((a) => ({
    filename: a.filename,
    contentType: a.content_type.toLowerCase(),
    content: Buffer.from(a.content_base64, 'base64'),
  }));
  const size =
    Buffer.byteLength(m.html ?? '') + Buffer.byteLength(m.text ?? '') + Buffer.byteLength(m.subject ?? '') + attachments.reduce((n, a) => n + a.content.length, 0);
  if (size > config.maxMessageBytes) {
    throw new SmtpError(552, '5.3.4', `Message exceeds the maximum size of ${config.maxMessageBytes} bytes`, 'message_too_large');
  }

  // What an SMTP client would have written; applyHeaders reads these.
  const headers: { name: string; value: string }[] = [
    { name: 'from', value: m.from },
    { name: 'to', value: m.to.join(', ') },
  ];
  const add = (name: string, value: string | boolean | undefined) => {
    if (value !== undefined) headers.push({ name, value: String(value) });
  };
  add('reply-to', m.reply_to);
  add('subject', m.subject);
  add('x-transactional-tag', m.tag);
  add('x-transactional-route', m.route);
  add('x-transactional-template', m.template);
  add('x-transactional-variables', m.variables === undefined ? undefined : JSON.stringify(m.variables));
  add('x-transactional-track-opens', m.track_opens);
  add('x-transactional-track-clicks', m.track_clicks);
  add('x-transactional-idempotency-key', idempotencyKey);

  return newSubmission({
    source: 'http',
    envelope: { mailFrom: from.address, rcptTo: to.map((a) => a.address) },
    sessionPrincipal: principal,
    headers,
    rawHeaders: new Map(headers.map((h) => [h.name, [h.value]])),
    from: [from],
    to,
    replyTo,
    subject: m.subject ?? '',
    html: m.html ?? null,
    text: m.text ?? null,
    attachments,
  });
}
