// Stage 1: raw bytes → Submission fields, with mailparser, bounded in parts and time.
// Untrusted input (mailparser's own threat model): it must never crash, hang or exhaust us.
import libmime from 'libmime';
import { simpleParser, type AddressObject, type EmailAddress } from 'mailparser';
import { SmtpError } from '../smtp/smtp-error.ts';
import { withoutNul, type Address, type Submission } from './submission.ts';

export const MAX_MIME_PARTS = 1000;
/** The header block of the message, or of any one part (mailsplit's own default). */
export const MAX_HEADER_BYTES = 1024 * 1024;
export const PARSE_TIMEOUT_MS = 20_000;

const tooManyParts = () => new SmtpError(554, '5.6.0', `Message has more than ${MAX_MIME_PARTS} MIME parts`, 'too_many_parts');

/**
 * mailparser stops at its limits with an EMAXLEN error. That is the message's fault, not ours: a
 * 5xx naming the limit, not the 451 an unknown error gets (the client would retry it forever).
 */
function limitError(err: unknown): SmtpError | undefined {
  if ((err as { code?: string } | null)?.code !== 'EMAXLEN') return undefined;
  if (/header size/i.test((err as Error).message)) {
    return new SmtpError(552, '5.3.4', `A header block of the message is larger than ${MAX_HEADER_BYTES / 1024 / 1024} MiB`, 'message_too_large');
  }
  return tooManyParts();
}

const PARSER_OPTIONS = {
  // mailsplit's limits (mailparser hands its options on; its types omit them), stated here
  // because parts without a Content-Type header escape countParts.
  maxHeadSize: MAX_HEADER_BYTES,
  maxChildNodes: MAX_MIME_PARTS,
  // An attached message is kept as an attachment, never parsed into this one: mailparser would
  // merge an inline message/rfc822 part's body into ours, and (3.9.31) waits forever on an empty
  // inline one. Either way it is not the HTML part a transactional message is made of.
  ignoreEmbedded: true,
  keepCidLinks: true,
  skipHtmlToText: true,
  skipTextToHtml: true,
  skipImageLinks: true,
  skipTextLinks: true,
};

/** Counts Content-Type header lines: an upper bound on the MIME parts, found without parsing. */
function countParts(raw: Buffer): number {
  const text = raw.toString('latin1');
  let count = 0;
  const re = /(^|\n)content-type[ \t]*:/gi;
  while (re.exec(text) !== null) {
    if (++count > MAX_MIME_PARTS) break;
  }
  return count;
}

function flattenAddresses(value: AddressObject | AddressObject[] | undefined): Address[] {
  if (!value) return [];
  const out: Address[] = [];
  const walk = (list: EmailAddress[]) => {
    for (const a of list) {
      // An empty group ("Valued Customer:;") is a display name with no address.
      if (a.group && a.group.length === 0) out.push({ address: '', name: withoutNul(a.name ?? '') });
      else if (a.group) walk(a.group);
      else out.push({ address: withoutNul(a.address ?? ''), name: withoutNul(a.name ?? '') });
    }
  };
  for (const obj of Array.isArray(value) ? value : [value]) walk(obj.value);
  return out;
}

export async function parse(sub: Submission): Promise<Submission> {
  let raw = sub.raw;
  if (!raw) return sub; // HTTP submissions arrive already structured.
  // Some Windows clients write a UTF-8 byte order mark before the first header; it would hide
  // the first header (often From) from the parser.
  if (raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf) raw = raw.subarray(3);
  if (countParts(raw) > MAX_MIME_PARTS) throw tooManyParts();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new SmtpError(451, '4.3.0', 'Message took too long to parse, try again later', 'parse_timeout')),
      PARSE_TIMEOUT_MS,
    );
  });
  try {
    const mail = await Promise.race([
      simpleParser(raw, PARSER_OPTIONS),
      timeout,
    ]).catch((err: unknown) => {
      throw limitError(err) ?? err;
    });
    for (const line of mail.headerLines) {
      const colon = line.line.indexOf(':');
      const rawValue = colon >= 0 ? line.line.slice(colon + 1).replace(/\r?\n[ \t]/g, ' ').trim() : '';
      const list = sub.rawHeaders.get(line.key) ?? [];
      list.push(rawValue);
      sub.rawHeaders.set(line.key, list);
    }
    // Unstructured values, unfolded and RFC 2047-decoded (mailparser leaves X- headers encoded;
    // nodemailer encodes non-ASCII or long values, e.g. X-Transactional-Variables).
    const seen = new Map<string, number>();
    sub.headers = mail.headerLines.map((h) => {
      const n = seen.get(h.key) ?? 0;
      seen.set(h.key, n + 1);
      const raw = sub.rawHeaders.get(h.key)?.[n] ?? '';
      let value: string;
      try {
        value = libmime.decodeWords(raw);
      } catch {
        value = raw;
      }
      return { name: withoutNul(h.key), value: withoutNul(value) };
    });
    sub.from = mail.from ? flattenAddresses(mail.from) : undefined;
    sub.to = flattenAddresses(mail.to);
    sub.replyTo = flattenAddresses(mail.replyTo);
    sub.subject = withoutNul(mail.subject ?? '');
    sub.html = typeof mail.html === 'string' ? mail.html : null;
    sub.text = typeof mail.text === 'string' ? mail.text : null;
    sub.attachments = mail.attachments.map((a) => ({
      filename: a.filename == null ? null : withoutNul(a.filename),
      contentType: withoutNul(a.contentType || 'application/octet-stream').toLowerCase(),
      content: a.content,
      contentId: a.contentId === undefined ? undefined : withoutNul(a.contentId.replace(/^<|>$/g, '')),
      inline: a.contentDisposition === 'inline' || a.related === true,
    }));
    // The parsed form is all later stages need; drop the raw bytes early.
    sub.raw = undefined;
    return sub;
  } finally {
    clearTimeout(timer);
  }
}
