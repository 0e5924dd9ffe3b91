// Stage: the final message. txrelay writes its own Date, Message-ID and MIME structure, keeps
// From/To/Subject/Reply-To and the non-image attachments, and DKIM-signs when the sender's
// domain has a key. The bytes built here are exactly what delivery sends and /mime returns.
import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { Readable } from 'node:stream';
import libmime from 'libmime';
import MailComposer from 'nodemailer/lib/mail-composer';
import type MimeNode from 'nodemailer/lib/mime-node';
import type Mail from 'nodemailer/lib/mailer';
import type { SecretBox } from '../crypto.ts';
import { churned, LARGE_MESSAGE_BYTES, released } from '../gc.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import { dkimSignature } from './dkim.ts';
import { plainHeaderBlock } from './header-block.ts';
import { encodeHtmlBody, type EncodedBody } from './html-body.ts';
import { encodeHtmlOffThread } from './signer.ts';
import type { Address, Attachment, Submission } from './submission.ts';

/** RFC 5322 §2.1.1: no line of a message may be longer than 998 octets (without its CRLF). */
export const MAX_LINE_OCTETS = 998;

/**
 * The final message in pieces of about PIECE_BYTES, each ending after a CRLF but the last: no
 * line spans two pieces. A large message is never joined into one buffer, here or on its way
 * into the database (commit.ts), so it is not held twice; a small one is a piece or two.
 */
export interface Built {
  mime: Buffer[];
  size: number;
  messageIdHeader: string;
  /** How it was written: at once (one part), spliced around nodemailer's placeholders, or by nodemailer's stream. */
  written: 'at once' | 'spliced' | 'streamed';
  /** Who wrote the header block: plainHeaderBlock (header-block.ts) or nodemailer. */
  headers: 'plain' | 'nodemailer';
}

export const PIECE_BYTES = 1024 * 1024;
/** The slices an attachment is handed to nodemailer in (see slices). */
const SLICE_BYTES = 64 * 1024;
const CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);

const fmt = (a: Address) => ({ name: a.name, address: a.address });

/**
 * CRLF for every line end. nodemailer sends a short ASCII HTML part as 7bit and a longer one as
 * quoted-printable, both with its line ends as they are: a bare CR or LF would reach the stored
 * MIME and the upstream, where RFC 5322 §2.3 forbids it and where a lenient server could read
 * "<LF>.<LF>" as the end of data (SMTP smuggling). Postfix normalises the same way.
 */
const crlf = (text: string): string => (BARE_LINE_BREAK.test(text) ? text.replace(/\r\n|\r|\n/g, '\r\n') : text);
/** A CR not before an LF, or an LF not after a CR: text without one is left as it is (no copy). */
const BARE_LINE_BREAK = /\r(?!\n)|(?<!\r)\n/;

/**
 * A header is folded only at whitespace (RFC 5322 §2.2.3), so one very long word would make a
 * line over 998 octets. nodemailer encodes only non-ASCII text; a Subject with such a word goes
 * out as RFC 2047 encoded-words instead, which may be split anywhere and are joined again by
 * readers: the subject arrives whole. (900 leaves room for the fold's leading space.)
 */
const foldableSubject = (subject: string): string => (/\S{900}/.test(subject) ? libmime.encodeWord(subject, 'Q', 52) : subject);

/**
 * Where the first line longer than 998 octets (without its CRLF) starts, or -1. Jumps from line
 * start to the last line feed within the longest line's reach: every line before it is short
 * enough, so a message of short lines costs one native search per kilobyte, not one per line.
 * A bare LF ends no line (RFC 5322 §2.3), as a bare CR does not.
 */
export function longLineAt(bytes: Buffer): number {
  let start = 0;
  for (;;) {
    // A line of 998 octets has its CRLF's LF here.
    const reach = start + MAX_LINE_OCTETS + 1;
    const lf = reach < bytes.length ? lastLineEndAtOrBefore(bytes, reach, start) : -1;
    if (lf >= 0) {
      start = lf + 1;
      continue;
    }
    if (reach < bytes.length) return start;
    // The rest is shorter than one line's reach: only its unterminated last line can be too long.
    const end = lastLineEndAtOrBefore(bytes, bytes.length - 1, start);
    const last = end < 0 ? start : end + 1;
    return bytes.length - last > MAX_LINE_OCTETS ? last : -1;
  }
}

/** The LF of the last CRLF ending at or before `at` and after `from`, or -1. */
function lastLineEndAtOrBefore(bytes: Buffer, at: number, from: number): number {
  for (let lf = bytes.lastIndexOf(0x0a, at); lf > from; lf = bytes.lastIndexOf(0x0a, lf - 1)) {
    if (bytes[lf - 1] === 0x0d) return lf;
  }
  return -1;
}

const lineTooLong = (what: string) =>
  new SmtpError(554, '5.6.0', `${what} longer than ${MAX_LINE_OCTETS} characters, more than a line may hold (RFC 5322 §2.1.1)`, 'invalid_header');

/**
 * Every other attachment is base64, but an attached message (message/*) travels unencoded (RFC
 * 2046 §5.2.1): its line ends become CRLF as the HTML's do, and one with a line too long to
 * send is refused.
 */
function attachmentContent(a: Attachment): Buffer {
  if (!/^message\//.test(a.contentType)) return a.content;
  const content = Buffer.from(crlf(a.content.toString('latin1')), 'latin1');
  if (longLineAt(content) >= 0) throw lineTooLong(`The attached message ${a.filename ?? a.contentType} has a line`);
  return content;
}

/**
 * Refuses a built message with a line over 998 octets rather than send what RFC 5322 forbids.
 * Bodies are encoded into short lines and attached messages were checked; what is left is a
 * header holding one word too long to fold: a display name, an address, a file name, a content id.
 */
function assertLineLengths(pieces: readonly Buffer[]): void {
  for (const piece of pieces) {
    const at = longLineAt(piece);
    if (at >= 0) throw lineTooLong(`${fieldAt(piece, at)} holds a word`);
  }
}

/** The name of the header field a line belongs to (continuation lines start with WSP). */
function fieldAt(mime: Buffer, lineStart: number): string {
  let s = lineStart;
  while (s > 0 && (mime[s] === 0x20 || mime[s] === 0x09)) {
    const previousEnd = mime.lastIndexOf('\r\n', s - 3);
    s = previousEnd < 0 ? 0 : previousEnd + 2;
  }
  return /^([!-9;-~]+):/.exec(mime.toString('latin1', s, s + 100))?.[1] ?? 'A header';
}

/** Parsed DKIM keys by their sealed form: a rotated key is a new entry. Bounded. */
const signingKeys = new Map<string, KeyObject>();
const MAX_SIGNING_KEYS = 1000;

/**
 * The domain's private key, opened and parsed once: parsing the PEM costs as much as the RSA
 * signature itself (about 0.3 ms each here), and every message would pay both.
 */
function signingKey(box: SecretBox, sealed: string): KeyObject {
  let key = signingKeys.get(sealed);
  if (!key) {
    if (signingKeys.size >= MAX_SIGNING_KEYS) signingKeys.delete(signingKeys.keys().next().value!);
    key = createPrivateKey(box.open(sealed));
    signingKeys.set(sealed, key);
  }
  return key;
}

const SEVEN_BIT = '\r\nContent-Transfer-Encoding: 7bit\r\n';

/** Where a part nodemailer wrote as `placeholder` (7bit, its whole body) starts its encoding header and its body. */
interface PlaceholderPart {
  /** The CRLF before `Content-Transfer-Encoding: 7bit`. */
  header: number;
  /** The placeholder, the part's body. */
  at: number;
  placeholder: string;
}

/**
 * The placeholder once, as the body of the part whose header block holds that 7bit: anything
 * else (nodemailer writing the part some other way) is undefined.
 */
function placeholderPart(composed: Buffer, placeholder: string): PlaceholderPart | undefined {
  const at = composed.indexOf(placeholder, 0, 'latin1');
  const header = composed.lastIndexOf(SEVEN_BIT, at, 'latin1');
  if (at < 0 || composed.indexOf(placeholder, at + 1, 'latin1') >= 0 || header < 0 || composed.indexOf('\r\n\r\n', header, 'latin1') !== at - 4) return undefined;
  return { header, at, placeholder };
}

/** The part's header block, from the encoding header on, with `encoding` in place of 7bit. */
const partHead = (composed: Buffer, { header, at }: PlaceholderPart, encoding: string): Buffer[] => [
  Buffer.from(`\r\nContent-Transfer-Encoding: ${encoding}\r\n`, 'latin1'),
  composed.subarray(header + SEVEN_BIT.length, at),
];

/** Alone, the HTML part ends the message with one line break: nodemailer adds it unless the body has it. */
const endsWithBreak = (body: Buffer) => body.length >= 2 && body[body.length - 2] === 0x0d && body[body.length - 1] === 0x0a;

/**
 * nodemailer composes the message around a placeholder, then the HTML part gets its body from
 * encodeHtmlBody (html-body.ts: same encoding choice, a fraction of the CPU). The placeholder
 * is random per message, so nothing a client sent can stand in for it; should nodemailer ever
 * write the part differently, the message is composed by nodemailer alone.
 */
export function spliceHtmlBody(composed: Buffer, placeholder: string, { encoding, body }: EncodedBody, complete = true): Buffer | undefined {
  const part = placeholderPart(composed, placeholder);
  if (!part) return undefined;
  // (`composed` may be the start of the message only: then more follows the part.)
  const rest = composed.subarray(part.at + placeholder.length);
  return Buffer.concat([
    composed.subarray(0, part.header),
    ...partHead(composed, part, encoding),
    body,
    endsWithBreak(body) && complete && rest.equals(CRLF) ? Buffer.alloc(0) : rest,
  ]);
}

/** Input bytes of one block of base64Lines: whole lines of 57 bytes, encoded into a string short enough for V8's young generation. */
const BASE64_BLOCK_BYTES = 57 * 1024;
const BASE64_LINE = 76;
const scratch = Buffer.allocUnsafe((BASE64_BLOCK_BYTES / 57) * BASE64_LINE);

/**
 * `bytes` in base64 as nodemailer writes an attachment: lines of 76 characters ending in CRLF,
 * but the last, which the part's boundary line follows. A block at a time, Buffer to Buffer:
 * the strings live only for their block, so a large attachment leaves no string to survive a
 * scavenge (nodemailer's encoder keeps its current line as one, and V8 grows its young
 * generation for what survives).
 */
function* base64Lines(bytes: Buffer): Generator<Buffer> {
  for (let start = 0; start < bytes.length; start += BASE64_BLOCK_BYTES) {
    const block = bytes.subarray(start, start + BASE64_BLOCK_BYTES);
    const encoded = scratch.subarray(0, scratch.write(block.toString('base64'), 'latin1'));
    const lines = Math.ceil(encoded.length / BASE64_LINE);
    const last = start + BASE64_BLOCK_BYTES >= bytes.length;
    const out = Buffer.allocUnsafe(encoded.length + 2 * (last ? lines - 1 : lines));
    let o = 0;
    for (let i = 0; i < encoded.length; i += BASE64_LINE) {
      o += encoded.copy(out, o, i, Math.min(encoded.length, i + BASE64_LINE));
      if (o < out.length) {
        out[o++] = 0x0d;
        out[o++] = 0x0a;
      }
    }
    yield out;
  }
}

/**
 * A message growing into pieces of about PIECE_BYTES that end after a CRLF: what is added is
 * joined and cut once there is a piece's worth (cutLines), so a large message is never one buffer.
 */
class PieceWriter {
  readonly pieces: Buffer[] = [];
  private pending: Buffer[] = [];
  private bytes = 0;

  add(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.pending.push(bytes);
    this.bytes += bytes.length;
    churned(bytes.length);
    if (this.bytes < PIECE_BYTES) return;
    const rest = cutLines(this.joined(), this.pieces);
    this.pending = [rest];
    this.bytes = rest.length;
  }

  end(): Buffer[] {
    return cutAll(this.joined(), this.pieces);
  }

  private joined(): Buffer {
    return this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.bytes);
  }
}

/**
 * The bytes as a stream of slices for nodemailer to encode (an attached message, or a message
 * its placeholders failed for). Views, not copies: the bytes go only once the message is built.
 */
function slices(bytes: Buffer): Readable {
  let rest: Buffer | undefined = bytes;
  return new Readable({
    read() {
      if (!rest) return void this.push(null);
      const slice = rest.subarray(0, SLICE_BYTES);
      rest = rest.length > SLICE_BYTES ? rest.subarray(SLICE_BYTES) : undefined;
      this.push(slice);
    },
  });
}

/**
 * The message as nodemailer's tree of MIME nodes, not yet written. An attachment's content is its
 * bytes, or a placeholder string that nodemailer writes as a 7bit body for its base64 to be
 * spliced in (withAttachments).
 */
function compose(sub: Submission, html: string, contents: readonly (Buffer | string)[], { messageIdHeader, date, baseBoundary }: Frame): MimeNode {
  const from = sub.from![0];
  const composer = new MailComposer({
    from: fmt(from),
    to: sub.to.filter((a) => a.address).map(fmt),
    replyTo: sub.replyTo.length ? sub.replyTo.map(fmt) : undefined,
    subject: foldableSubject(sub.subject),
    html,
    messageId: messageIdHeader,
    date,
    attachments: sub.attachments.map((a, i) => ({
      filename: a.filename ?? undefined,
      ...(typeof contents[i] === 'string' ? { content: contents[i], contentTransferEncoding: '7bit' } : { content: slices(contents[i]) }),
      contentType: a.contentType,
      ...(a.contentId ? { cid: a.contentId } : {}),
      // A forwarded message goes out as an attachment, whatever the client said: an inline
      // message/rfc822 part is parsed into its container by some readers (mailparser merges it,
      // and hangs on an empty one), which is not what a transactional message is made of.
      ...(a.contentType.startsWith('message/') ? { contentDisposition: 'attachment' as const } : {}),
    })),
    // Keep the envelope out of the headers: recipients are the envelope's (Bcc stays hidden).
    disableFileAccess: true,
    disableUrlAccess: true,
    baseBoundary,
  } as Mail.Options);
  return composer.compile();
}

/** What every composition of one message shares. */
interface Frame {
  messageIdHeader: string;
  date: Date;
  /** The random part of multipart boundaries. */
  baseBoundary: string;
}

/**
 * HTML this large is encoded on the signing thread (signer.ts encodeHtmlOffThread): the
 * encoder's loop over every byte would otherwise be the largest part of the event loop's work
 * for the message. Smaller HTML stays here: handing it over costs more than encoding it.
 */
const HTML_OFF_THREAD_CHARS = 32 * 1024;

const encodedHtml = (html: string): EncodedBody | Promise<EncodedBody> =>
  html.length >= HTML_OFF_THREAD_CHARS ? encodeHtmlOffThread(html) : encodeHtmlBody(html);

/**
 * A message of one part (no attachments, the usual transactional message) written at once: its
 * header block (plainHeaderBlock's, or nodemailer's), then the body as nodemailer's stream would
 * write it (a 7bit placeholder, and the line break it ends every message with), the HTML spliced
 * in. Without the stream's pipeline of transforms and turns of the event loop, which cost more
 * than the rest of the build.
 */
async function writtenAtOnce(headers: string, splice: HtmlSplice): Promise<Unsigned | undefined> {
  const composed = Buffer.from(`${headers}\r\n\r\n${splice.placeholder}\r\n`);
  const body = await encodedHtml(splice.html);
  const spliced = spliceHtmlBody(composed, splice.placeholder, body);
  if (!spliced) return undefined;
  churned(spliced.length);
  // The message's body is the HTML part's (and the line break after it).
  return { pieces: cutAll(spliced), bodyLinesAsIs: body.relaxedAsIs };
}

/**
 * Cuts `bytes` into pieces of about PIECE_BYTES that end after a CRLF (views, not copies) and
 * returns what follows the last cut. A line longer than a piece stays whole.
 */
function cutLines(bytes: Buffer, pieces: Buffer[]): Buffer {
  let start = 0;
  while (bytes.length - start >= PIECE_BYTES) {
    let lf = lastLineEndAtOrBefore(bytes, start + PIECE_BYTES - 1, start);
    if (lf < 0) {
      const next = bytes.indexOf(CRLF, start + PIECE_BYTES);
      if (next < 0) break;
      lf = next + 1;
    }
    pieces.push(bytes.subarray(start, lf + 1));
    start = lf + 1;
  }
  return bytes.subarray(start);
}

/** `bytes` in pieces of whole lines (cutLines), the last one whatever is left. */
function cutAll(bytes: Buffer, pieces: Buffer[] = []): Buffer[] {
  const rest = cutLines(bytes, pieces);
  if (rest.length > 0 || pieces.length === 0) pieces.push(rest);
  return pieces;
}

/** A message written at once, and whether its body's lines are as relaxed canonicalization makes them. */
interface Unsigned {
  pieces: Buffer[];
  bodyLinesAsIs: boolean;
}

/** The HTML body, to go in where nodemailer wrote the placeholder (spliceHtmlBody). */
interface HtmlSplice {
  placeholder: string;
  html: string;
}

/**
 * Reads the composed message as nodemailer writes it and cuts it into pieces as it grows, the
 * HTML body spliced in once its part has been read. When the part was written otherwise, the
 * result is undefined and nothing more is read.
 */
async function collect(composed: Readable, splice?: HtmlSplice): Promise<Buffer[] | undefined> {
  const out = new PieceWriter();
  let pending: Buffer[] = [];
  let bytes = 0;
  let partIn = false;
  const splicePending = ({ placeholder, html }: HtmlSplice, complete: boolean) =>
    spliceHtmlBody(Buffer.concat(pending, bytes), placeholder, encodeHtmlBody(html), complete);
  for await (const chunk of composed as AsyncIterable<Buffer>) {
    if (!splice) {
      out.add(chunk);
      continue;
    }
    // Held until the HTML part is in (nodemailer writes its body in one chunk; if it did not,
    // the part is found in the whole message at the end), and a piece's worth is there.
    pending.push(chunk);
    bytes += chunk.length;
    partIn ||= chunk.includes(splice.placeholder);
    if (bytes < PIECE_BYTES || !partIn) continue;
    const spliced = splicePending(splice, false);
    if (!spliced) {
      composed.destroy();
      return undefined;
    }
    out.add(spliced);
    splice = undefined;
    pending = [];
  }
  if (splice) {
    const spliced = splicePending(splice, true);
    if (!spliced) return undefined;
    out.add(spliced);
  }
  return out.end();
}

/**
 * A message with attachments, none of them an attached message: nodemailer composes it with
 * placeholders for the HTML body and every attachment's (a few kilobytes, however large the
 * attachments), then each is spliced in, the attachments encoded a block at a time
 * (base64Lines), each let go as soon as it is written: a large message holds its decoded
 * attachments and the built message at once only one attachment at a time. Undefined, with
 * nothing let go, when nodemailer wrote a placeholder's part some other way.
 */
async function withAttachments(
  root: MimeNode,
  splice: HtmlSplice,
  placeholders: readonly string[],
  contents: readonly Buffer[],
  letGo: (i: number) => void,
): Promise<Buffer[] | undefined> {
  const composed = await root.build();
  const html = placeholderPart(composed, splice.placeholder);
  const parts = placeholders.map((p) => placeholderPart(composed, p));
  if (!html || !parts.every((p) => p !== undefined)) return undefined;
  const out = new PieceWriter();
  let from = 0;
  for (const part of [html, ...parts].sort((a, b) => a.at - b.at)) {
    out.add(composed.subarray(from, part.header));
    from = part.at + part.placeholder.length;
    if (part === html) {
      const { encoding, body } = await encodedHtml(splice.html);
      for (const b of partHead(composed, part, encoding)) out.add(b);
      out.add(body);
      continue;
    }
    const i = parts.indexOf(part);
    for (const b of partHead(composed, part, 'base64')) out.add(b);
    for (const lines of base64Lines(contents[i])) out.add(lines);
    letGo(i);
  }
  out.add(composed.subarray(from));
  return out.end();
}

const sizeOf = (pieces: readonly Buffer[]) => pieces.reduce((sum, p) => sum + p.length, 0);

/**
 * For tests: the Date and boundaries to write, whether to take nodemailer's stream even for one
 * part, and whether nodemailer writes the header block even when plainHeaderBlock could.
 */
export interface BuildOptions {
  date?: Date;
  baseBoundary?: string;
  streamed?: boolean;
  nodemailerHeaders?: boolean;
}

/**
 * The final message. Takes the submission's attachments: once it returns, `sub.attachments` is
 * empty (their bytes are in the message; a large message's are let go as they are written).
 */
export async function buildMime(box: SecretBox, hostname: string, id: string, sub: Submission, options: BuildOptions = {}): Promise<Built> {
  const messageIdHeader = `<${id}@${hostname}>`;
  const html = crlf(sub.html ?? '');
  const placeholder = `txrelay-html-${randomUUID()}`;
  const contents = sub.attachments.map(attachmentContent);
  // From here on only `contents` holds the attachments' bytes, each until it is written.
  sub.attachments = sub.attachments.map((a) => ({ ...a, content: EMPTY }));
  const frame = {
    messageIdHeader,
    date: options.date ?? new Date(),
    // nodemailer's own is crypto.randomBytes per message, a call into OpenSSL that showed as 2%
    // of the accept path's profile; randomUUID draws from Node's buffered entropy. 64 random
    // bits, as nodemailer's.
    baseBoundary: options.baseBoundary ?? randomUUID().replaceAll('-', '').slice(0, 16),
  };
  const splice = { placeholder, html };
  const large = contents.reduce((sum, c) => sum + c.length, html.length) > LARGE_MESSAGE_BYTES;
  const letGo = (i: number) => {
    const bytes = contents[i].length;
    contents[i] = EMPTY;
    if (large) released(bytes);
  };
  let unsigned: Buffer[] | undefined;
  let written: Built['written'] = 'streamed';
  let bodyLinesAsIs = false;
  let headers: Built['headers'] = 'nodemailer';
  if (!options.streamed && contents.length === 0) {
    const plain = options.nodemailerHeaders ? undefined : plainHeaderBlock(sub, frame);
    const root = plain === undefined ? compose(sub, placeholder, contents, frame) : undefined;
    const block = plain ?? (root && !root.multipart && root.childNodes.length === 0 ? root.buildHeaders() : undefined);
    const atOnce = block === undefined ? undefined : await writtenAtOnce(block, splice);
    if (atOnce) {
      ({ pieces: unsigned, bodyLinesAsIs } = atOnce);
      written = 'at once';
      if (plain !== undefined) headers = 'plain';
    }
  } else if (!options.streamed && !sub.attachments.some((a) => a.contentType.startsWith('message/'))) {
    // Attached messages travel unencoded (attachmentContent), as nodemailer writes them.
    const placeholders = contents.map((_, i) => `txrelay-attachment-${i}-${randomUUID()}`);
    unsigned = await withAttachments(compose(sub, placeholder, placeholders, frame), splice, placeholders, contents, letGo);
    if (unsigned) written = 'spliced';
  }
  unsigned ??=
    (await collect(compose(sub, placeholder, contents, frame).createReadStream(), splice)) ??
    (await collect(compose(sub, html, contents, frame).createReadStream()))!;
  for (let i = 0; i < contents.length; i++) if (contents[i] !== EMPTY) letGo(i);
  sub.attachments = [];
  assertLineLengths(unsigned);
  const domain = sub.testMode ? undefined : sub.senderDomain;
  if (!domain?.dkim_private_key_enc || !domain.dkim_selector) return { mime: unsigned, size: sizeOf(unsigned), messageIdHeader, written, headers };
  const dkimKey = { domain: domain.name, selector: domain.dkim_selector, key: signingKey(box, domain.dkim_private_key_enc) };
  const signature = await dkimSignature(unsigned, dkimKey, bodyLinesAsIs);
  sub.verdicts.push({ rule: 'dkim', action: 'signed', detail: `d=${domain.name}; s=${domain.dkim_selector}` });
  const mime = [signature, ...unsigned];
  return { mime, size: sizeOf(mime), messageIdHeader, written, headers };
}
