// Stage 3: the platform header rules and body rules of SPEC §4. Each rule records its verdict
// on the submission (Haraka's txn.results), shown in the message's API view.
import { SmtpError } from '../smtp/smtp-error.ts';
import { parseVariables } from './variables.ts';
import { header, type Submission } from './submission.ts';

export const MAX_TAG_LENGTH = 100;

/** Headers we keep (rewritten by the builder) or consume; every other header is dropped. */
const KEPT = new Set(['from', 'to', 'subject', 'reply-to']);
const CONSUMED = new Set([
  'x-transactional-tag', 'x-transactional-route', 'x-transactional-template', 'x-transactional-variables',
  'x-auth-apikey', 'x-transactional-track-opens', 'x-transactional-track-clicks', 'x-transactional-idempotency-key',
]);
/** Structural headers the builder writes afresh; not worth reporting as dropped. */
const REBUILT = new Set(['mime-version', 'content-type', 'content-transfer-encoding', 'date', 'message-id']);

const IMAGE_EXTENSIONS = /\.(png|jpe?g|gif|bmp|webp|svg|tiff?|ico|heic|heif|avif)$/i;

export function isImage(a: { contentType: string; filename: string | null }): boolean {
  return a.contentType.startsWith('image/') || (a.filename !== null && IMAGE_EXTENSIONS.test(a.filename));
}

function parseBoolean(sub: Submission, name: string): boolean | undefined {
  const v = header(sub, name)?.trim().toLowerCase();
  if (v === undefined || v === '') return undefined;
  if (v === 'true' || v === 'yes' || v === '1') return true;
  if (v === 'false' || v === 'no' || v === '0') return false;
  throw new SmtpError(554, '5.6.0', `Header ${name} must be true or false`, 'invalid_header');
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A text-only message becomes HTML: escaped, line breaks kept. */
export function textToHtml(text: string): string {
  return `<!DOCTYPE html><html><body><div style="white-space:pre-wrap">${escapeHtml(text).replace(/\r?\n/g, '<br>\n')}</div></body></html>`;
}

/** Removes <img> tags whose src is a cid: reference (their images are stripped). */
export function removeCidImages(html: string): { html: string; removed: number } {
  let removed = 0;
  const out = html.replace(/<img\b[^>]*?\bsrc\s*=\s*(["']?)\s*cid:[^"'\s>]*\1[^>]*>/gi, () => {
    removed++;
    return '';
  });
  return { html: out, removed };
}

export function applyHeaders(sub: Submission): Submission {
  // Platform headers.
  let tag = header(sub, 'x-transactional-tag')?.trim() ?? '';
  if (tag.length > MAX_TAG_LENGTH) {
    sub.verdicts.push({ rule: 'tag', action: 'truncated', detail: `tag cut to ${MAX_TAG_LENGTH} characters` });
    tag = tag.slice(0, MAX_TAG_LENGTH);
  }
  sub.tag = tag || 'untagged';
  sub.routeRef = header(sub, 'x-transactional-route')?.trim() || sub.routeRef;
  sub.templateRef = header(sub, 'x-transactional-template')?.trim() || sub.templateRef;
  const rawVariables = header(sub, 'x-transactional-variables');
  if (rawVariables !== undefined) sub.variables = parseVariables(rawVariables);
  sub.trackOpens = parseBoolean(sub, 'x-transactional-track-opens') ?? sub.trackOpens;
  sub.trackClicks = parseBoolean(sub, 'x-transactional-track-clicks') ?? sub.trackClicks;
  const idem = header(sub, 'x-transactional-idempotency-key')?.trim();
  if (idem) {
    if (idem.length > 200) throw new SmtpError(554, '5.6.0', 'X-Transactional-Idempotency-Key is longer than 200 characters', 'invalid_header');
    sub.idempotencyKey = idem;
  }

  // From: exactly one mailbox with an address (RFC 5322 §3.6.2 allows a list only with Sender).
  const fromHeaders = sub.rawHeaders.get('from')?.length ?? (sub.from ? 1 : 0);
  const from = sub.from ?? [];
  if (fromHeaders > 1 || from.length !== 1 || !/^[^@\s]+@[^@\s]+$/.test(from[0].address)) {
    const why = fromHeaders === 0 || from.length === 0 ? 'From header missing' : 'From must hold exactly one address';
    throw new SmtpError(550, '5.1.7', `${why}`, 'invalid_from');
  }

  // To with a display name only: that name with the envelope recipients' addresses.
  if (sub.to.length > 0 && sub.to.every((a) => !a.address)) {
    const name = sub.to.map((a) => a.name).filter(Boolean).join(', ');
    sub.to = sub.envelope.rcptTo.map((address) => ({ address, name }));
    sub.verdicts.push({ rule: 'to', action: 'rewritten', detail: 'display-name-only To given the envelope recipients' });
  }

  const dropped = [...new Set(sub.headers.map((h) => h.name))].filter((n) => !KEPT.has(n) && !CONSUMED.has(n) && !REBUILT.has(n));
  if (dropped.length) sub.verdicts.push({ rule: 'headers', action: 'dropped', detail: dropped.join(', ') });
  const consumed = [...new Set(sub.headers.map((h) => h.name))].filter((n) => CONSUMED.has(n));
  if (consumed.length) sub.verdicts.push({ rule: 'platform-headers', action: 'removed', detail: consumed.join(', ') });

  // Body: the HTML part only; text-only becomes HTML.
  if (sub.html !== null) {
    if (sub.text !== null && sub.text.trim() !== '') sub.verdicts.push({ rule: 'text-part', action: 'dropped', detail: 'HTML part kept' });
  } else if (sub.text !== null) {
    sub.html = textToHtml(sub.text);
    sub.verdicts.push({ rule: 'text-part', action: 'converted', detail: 'text-only message turned into HTML' });
  }
  sub.text = null;

  // Images go, inline or not, and so do the <img src="cid:…"> references to them.
  const images = sub.attachments.filter(isImage);
  if (images.length) {
    sub.attachments = sub.attachments.filter((a) => !isImage(a));
    sub.verdicts.push({
      rule: 'images',
      action: 'removed',
      detail: images.map((a) => a.filename ?? a.contentId ?? a.contentType).join(', '),
    });
  }
  if (sub.html !== null) {
    const { html, removed } = removeCidImages(sub.html);
    if (removed) {
      sub.html = html;
      sub.verdicts.push({ rule: 'cid-images', action: 'removed', detail: `${removed} <img src="cid:…"> reference(s)` });
    }
  }
  return sub;
}
