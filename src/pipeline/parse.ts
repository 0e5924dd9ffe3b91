// Stage 1: raw bytes → Submission fields, with mailparser, bounded in parts and time.
// Untrusted input (mailparser's own threat model): it must never crash, hang or exhaust us.
import { Readable } from 'node:stream';
import { Headers, type HeaderLine } from '@zone-eu/mailsplit';
import libmime from 'libmime';
import libqp from 'libqp';
import { MailParser, simpleParser, type AddressObject, type EmailAddress, type ParsedMail } from 'mailparser';
import { LARGE_MESSAGE_BYTES, released } from '../gc.ts';
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

/** What parse reads of mailparser's result. */
export type Parsed = Pick<ParsedMail, 'headerLines' | 'from' | 'to' | 'replyTo' | 'subject' | 'html' | 'text' | 'attachments'>;

/** mailparser's header processing (addresses, encoded words), a method that keeps no state. */
const headerProcessor = new MailParser(PARSER_OPTIONS) as unknown as { processHeaders(lines: HeaderLine[]): Map<string, unknown> };

/** Not in a header block the one-part path takes: beyond printable ASCII and tab, or a bare CR or LF. */
const NOT_PLAIN_HEADER = /[^\t\r\n\x20-\x7e]|\r(?!\n)|(?<!\r)\n/;
/** A header field's name and colon: what the block must start with (no mbox "From " line). */
const FIELD_START = /^[!-9;-~]+:/;
/** Charsets mailparser reads as UTF-8 (it converts the others), as it normalises them. */
const UTF8_CHARSETS = new Set(['', 'ascii', 'usascii', 'utf8']);
/** Transfer encodings mailparser passes through undecoded. */
const UNENCODED = new Set(['', '7bit', '8bit', 'binary']);

/**
 * The usual transactional message parsed at once, without mailparser's streams (a fifth of the
 * relay's CPU per small message went to them): one text/html part (or text/plain, from a cron
 * job), no multipart and no attachment, in UTF-8 or ASCII, unencoded or quoted-printable, under
 * a header block of ASCII with CRLF line ends. It is put together from the pieces mailparser
 * itself uses (mailsplit's header reader, mailparser's header processing, libqp's decoder, line
 * ends made LF as mailparser makes them), so the result is mailparser's:
 * test/pipeline/parse-at-once.test.ts compares the two over the corpus and over variants.
 * Undefined for anything else, which mailparser parses.
 */
export function parsedAtOnce(bytes: Buffer): Parsed | undefined {
  const split = bytes.indexOf('\r\n\r\n');
  if (split < 0 || split + 2 > MAX_HEADER_BYTES) return undefined;
  const head = bytes.toString('latin1', 0, split + 2);
  if (!FIELD_START.test(head) || NOT_PLAIN_HEADER.test(head)) return undefined;
  const headers = new Headers(bytes.subarray(0, split + 2));
  const lines = headers.getList();
  const count = (key: string) => lines.reduce((n, l) => n + (l.key === key ? 1 : 0), 0);
  if (count('content-type') !== 1 || count('content-transfer-encoding') > 1 || count('content-disposition') > 0) return undefined;
  const contentType = libmime.parseHeaderValue(headers.getFirst('Content-Type'));
  const type = contentType.value.toLowerCase().trim();
  if (type !== 'text/html' && type !== 'text/plain') return undefined;
  if (Object.keys(contentType.params).some((name) => name !== 'charset')) return undefined;
  if (!UTF8_CHARSETS.has((contentType.params.charset ?? '').toLowerCase().replace(/[^a-z0-9]+/g, ''))) return undefined;
  const encoding = headers.getFirst('Content-Transfer-Encoding').toLowerCase();
  if (encoding !== 'quoted-printable' && !UNENCODED.has(encoding)) return undefined;
  const body = bytes.subarray(split + 4);
  const content = (encoding === 'quoted-printable' ? libqp.decode(body) : body).toString('utf8').replace(/\r?\n/g, '\n');
  // An empty part leaves mailparser without html and text alike.
  if (!content) return undefined;
  const processed = headerProcessor.processHeaders(lines);
  return {
    headerLines: lines,
    from: processed.get('from') as AddressObject | undefined,
    to: processed.get('to') as AddressObject | undefined,
    replyTo: processed.get('reply-to') as AddressObject | undefined,
    subject: processed.get('subject') as string | undefined,
    // mailparser's text of an HTML-only message is empty (skipHtmlToText); a text-only one has no HTML.
    ...(type === 'text/html' ? { html: content, text: '' } : { text: content }),
    attachments: [],
  } as Parsed;
}

/** Text searched at once by countParts: a large message is never one string. */
const COUNT_WINDOW_BYTES = 1024 * 1024;
/** How much of a line countParts carries into the next window: a header name and its colon. */
const COUNT_CARRY_CHARS = 64;

/**
 * Counts Content-Type header lines: an upper bound on the MIME parts, found without parsing. The
 * message is searched a window at a time; the start of a line cut by a window's end goes with
 * the next, and a match is counted in the window it ends in.
 */
function countParts(chunks: readonly Buffer[]): number {
  let count = 0;
  let carry = '\n';
  const re = /\ncontent-type[ \t]*:/gi;
  for (const chunk of chunks) {
    for (let at = 0; at < chunk.length; at += COUNT_WINDOW_BYTES) {
      const text = carry + chunk.toString('latin1', at, Math.min(chunk.length, at + COUNT_WINDOW_BYTES));
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        if (re.lastIndex > carry.length && ++count > MAX_MIME_PARTS) return count;
      }
      const lineStart = text.lastIndexOf('\n');
      carry = lineStart >= 0 && text.length - lineStart <= COUNT_CARRY_CHARS ? text.slice(lineStart) : '';
    }
  }
  return count;
}

/**
 * The chunks as a stream that lets go of each chunk once the parser has read it: a large
 * message (up to LARGE_MESSAGE_BYTES one is parsed from one buffer) is never joined, and its
 * raw bytes shrink as its parts are decoded.
 */
function consumed(chunks: Buffer[]): Readable {
  return new Readable({
    read() {
      const chunk = chunks.shift();
      if (chunk) released(chunk.length);
      this.push(chunk ?? null);
    },
  });
}

/** The message's chunks without a UTF-8 byte order mark in front (see parse). */
function withoutBom(raw: Buffer | Buffer[]): Buffer[] {
  let chunks = Buffer.isBuffer(raw) ? [raw] : raw;
  if (chunks.length > 1 && chunks[0].length < 3) chunks = [Buffer.concat(chunks.slice(0, 3)), ...chunks.slice(3)];
  const first = chunks[0];
  if (first?.[0] === 0xef && first[1] === 0xbb && first[2] === 0xbf) chunks = [first.subarray(3), ...chunks.slice(1)];
  return chunks;
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
  if (!sub.raw) return sub; // HTTP submissions arrive already structured.
  // Some Windows clients write a UTF-8 byte order mark before the first header; it would hide
  // the first header (often From) from the parser.
  const chunks = withoutBom(sub.raw);
  // The parsed form is all later stages need: from here on the parser holds the raw bytes.
  sub.raw = undefined;
  if (countParts(chunks) > MAX_MIME_PARTS) throw tooManyParts();
  const size = chunks.reduce((sum, c) => sum + c.length, 0);
  const source = size > LARGE_MESSAGE_BYTES ? consumed(chunks) : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
  const mail = (Buffer.isBuffer(source) ? parsedAtOnce(source) : undefined) ?? (await parsedByMailparser(source));
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
  return sub;
}

/** mailparser's parse, within PARSE_TIMEOUT_MS; its limits reported as the message's fault. */
export async function parsedByMailparser(source: Buffer | Readable): Promise<Parsed> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new SmtpError(451, '4.3.0', 'Message took too long to parse, try again later', 'parse_timeout')),
      PARSE_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([simpleParser(source, PARSER_OPTIONS), timeout]).catch((err: unknown) => {
      throw limitError(err) ?? err;
    });
  } finally {
    clearTimeout(timer);
  }
}
