// DKIM-Signature (RFC 6376): rsa-sha256, relaxed/relaxed, over a message held in memory, in
// pieces of whole lines (build.ts). The RSA signature itself is most of the cost and cannot
// shrink; nodemailer's signer adds as much again around it (the message streamed through a
// header parser and a canonicalizing body stream, chunk by chunk, with a setImmediate between
// chunks). Here the body is hashed in one pass over each piece, and runs of lines that
// canonicalization leaves alone (base64, most HTML) go to the hash as they are, without a copy.
import { createHash, type Hash, type KeyObject } from 'node:crypto';
import { rsaSign } from './signer.ts';

/** What is signed, when present: the fields a reader sees and the MIME structure (RFC 6376 §5.4.1). */
const SIGNED_FIELDS = new Set([
  'from', 'sender', 'reply-to', 'subject', 'date', 'message-id', 'to', 'cc', 'mime-version', 'content-type',
  'content-transfer-encoding', 'content-id', 'content-description', 'in-reply-to', 'references',
  'list-id', 'list-help', 'list-unsubscribe', 'list-unsubscribe-post', 'list-subscribe', 'list-post', 'list-owner', 'list-archive',
]);
const CRLF = Buffer.from('\r\n');
const SP = 0x20;
const TAB = 0x09;

export interface DkimKey {
  domain: string;
  selector: string;
  key: KeyObject;
}

/** Relaxed header canonicalization (§3.4.2): lower-case name, unfolded, whitespace runs as one space. */
function relaxedHeader(field: string): string {
  const colon = field.indexOf(':');
  const name = field.slice(0, colon).trimEnd().toLowerCase();
  const value = field.slice(colon + 1).replace(/\r\n/g, '').replace(/[ \t]+/g, ' ').trim();
  return `${name}:${value}`;
}

/** A line under relaxed body canonicalization (§3.4.4): whitespace runs as one space, none at its end. */
function relaxedLine(line: Buffer): Buffer {
  return Buffer.from(line.toString('latin1').replace(/[ \t]+/g, ' ').replace(/ $/, ''), 'latin1');
}

/**
 * Where the next line starting at or after `from` that relaxed canonicalization changes has the
 * change: a tab, two spaces, or a space before the line's end. Native searches, one per kind,
 * each kept until the scan passes it: the body is searched about three times in all, not byte
 * by byte in JavaScript.
 */
class Changes {
  readonly #body: Buffer;
  readonly #next: number[] = [-1, -1, -1];
  static readonly #patterns = [Buffer.from('\t'), Buffer.from('  '), Buffer.from(' \r\n')];

  constructor(body: Buffer) {
    this.#body = body;
  }

  /** The first position ≥ from of any of the patterns, or Infinity. */
  at(from: number): number {
    let first = Infinity;
    for (let k = 0; k < 3; k++) {
      if (this.#next[k] < from) {
        const found = this.#body.indexOf(Changes.#patterns[k], from);
        this.#next[k] = found < 0 ? Infinity : found;
      }
      first = Math.min(first, this.#next[k]);
    }
    return first;
  }
}

/** How many CRLFs `bytes` holds. */
function lineEnds(bytes: Buffer): number {
  let count = 0;
  for (let at = bytes.indexOf(CRLF); at >= 0; at = bytes.indexOf(CRLF, at + 2)) count++;
  return count;
}

/**
 * The relaxed body hash (§3.4.4, §3.7): whitespace runs as one space, none at line ends, no
 * empty lines at the end. Lines canonicalization leaves alone (base64, most HTML) go to the hash
 * as they are, in runs, without a copy; only lines with a change are rewritten. A large body
 * comes in pieces, each of whole lines (build.ts cuts only after a CRLF); the empty lines that
 * end a piece are held back until a line with content follows them.
 */
export function relaxedBodyHash(body: Buffer | readonly Buffer[], linesAsIs = false): string {
  const hash = createHash('sha256');
  let held = 0;
  for (const piece of Buffer.isBuffer(body) ? [body] : body) held = hashLines(hash, piece, held, linesAsIs);
  return hash.digest('base64');
}

/**
 * Hashes one piece's lines after the `held` empty lines before it, if any line of the piece has
 * content; returns the empty lines held back after it. An empty body hashes as nothing at all.
 * `linesAsIs`: the caller knows that no line has a tab, two spaces together or a space at its
 * end (html-body.ts's encoder tells), so the lines are not searched for them.
 */
function hashLines(hash: Hash, body: Buffer, held: number, linesAsIs: boolean): number {
  // The end of the last line with anything but whitespace: what follows becomes empty lines.
  let k = body.length;
  for (;;) {
    if (k > 0 && (body[k - 1] === SP || body[k - 1] === TAB)) k--;
    else if (k > 1 && body[k - 1] === 0x0a && body[k - 2] === 0x0d) k -= 2;
    else break;
  }
  if (k === 0) return held + lineEnds(body);
  if (held > 0) hash.update(Buffer.from('\r\n'.repeat(held), 'latin1'));
  /** Where the line holding position i starts. */
  const lineStartOf = (i: number): number => {
    const before = i < 2 ? -1 : body.lastIndexOf(CRLF, i - 2);
    return before < 0 ? 0 : before + 2;
  };
  const lastStart = lineStartOf(k - 1);
  const lastEnd = body.indexOf(CRLF, k);

  const changes = linesAsIs ? undefined : new Changes(body);
  let pos = 0;
  for (let at = changes?.at(0) ?? Infinity; at < lastStart; at = changes!.at(pos)) {
    const lineStart = Math.max(pos, lineStartOf(at));
    const lineEnd = body.indexOf(CRLF, at);
    hash.update(body.subarray(pos, lineStart));
    hash.update(relaxedLine(body.subarray(lineStart, lineEnd)));
    hash.update(CRLF);
    pos = lineEnd + 2;
  }
  hash.update(body.subarray(pos, lastStart));
  // The last line always gets its CRLF, whether the body had one or not.
  hash.update(relaxedLine(body.subarray(lastStart, lastEnd < 0 ? body.length : lastEnd)));
  hash.update(CRLF);
  return lastEnd < 0 ? 0 : lineEnds(body.subarray(lastEnd + 2));
}

/** The header block's fields, unfolded text kept as it is (continuation lines start with WSP). */
function headerFields(head: string): string[] {
  const fields: string[] = [];
  for (const line of head.split('\r\n')) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) fields[fields.length - 1] += `\r\n${line}`;
    else if (line.length > 0) fields.push(line);
  }
  return fields;
}

/** `DKIM-Signature: ` folded before each tag and inside b= so that no line passes 78 characters. */
function foldTags(tags: string[], signature: string): string {
  const lines = [`DKIM-Signature: ${tags[0]}`];
  for (const tag of tags.slice(1)) {
    const current = lines[lines.length - 1];
    if (current.length + tag.length + 2 > 76) lines.push(` ${tag}`);
    else lines[lines.length - 1] = `${current} ${tag}`;
  }
  const b = signature.match(/.{1,72}/g) ?? [''];
  lines.push(` b=${b[0]}`, ...b.slice(1).map((chunk) => ` ${chunk}`));
  return lines.join('\r\n');
}

/**
 * The header block and the body's pieces. The header block is almost always within the first
 * piece; pieces are joined only as far as it reaches.
 */
function splitHead(pieces: readonly Buffer[]): { head: Buffer; body: Buffer[] } {
  let joined = pieces[0] ?? Buffer.alloc(0);
  let next = 1;
  let split = joined.indexOf('\r\n\r\n');
  while (split < 0 && next < pieces.length) {
    joined = Buffer.concat([joined, pieces[next++]]);
    split = joined.indexOf('\r\n\r\n', Math.max(0, joined.length - pieces[next - 1].length - 3));
  }
  if (split < 0) return { head: joined, body: [] };
  return { head: joined.subarray(0, split), body: [joined.subarray(split + 4), ...pieces.slice(next)] };
}

/**
 * The DKIM-Signature field, with its CRLF, for a message given in pieces of whole lines: it goes
 * in front of the message. `bodyLinesAsIs`: see hashLines.
 */
export async function dkimSignature(pieces: readonly Buffer[], { domain, selector, key }: DkimKey, bodyLinesAsIs = false): Promise<Buffer> {
  const { head, body } = splitHead(pieces);
  const fields = headerFields(head.toString('latin1'));
  // Each h= name signs one instance, the last not yet signed going up (§5.4.2).
  const byName = new Map<string, string[]>();
  const names: string[] = [];
  for (const field of fields) {
    const name = field.slice(0, field.indexOf(':')).trim().toLowerCase();
    if (!SIGNED_FIELDS.has(name)) continue;
    const instances = byName.get(name) ?? [];
    instances.push(field);
    byName.set(name, instances);
    names.push(name);
  }
  const taken = new Map<string, number>();
  const signedHeaders = names.map((name) => {
    const instances = byName.get(name)!;
    const n = taken.get(name) ?? 0;
    taken.set(name, n + 1);
    return relaxedHeader(instances[instances.length - 1 - n]);
  });
  const tags = ['v=1;', 'a=rsa-sha256;', 'c=relaxed/relaxed;', `d=${domain};`, 'q=dns/txt;', `s=${selector};`, `bh=${relaxedBodyHash(body, bodyLinesAsIs)};`, `h=${names.join(':')};`];
  // The signature covers this field too, with an empty b= (§3.7), folded as it will be sent.
  const unsigned = relaxedHeader(foldTags(tags, ''));
  const data = signedHeaders.map((h) => `${h}\r\n`).join('') + unsigned;
  const signature = await rsaSign(data, key);
  return Buffer.from(`${foldTags(tags, signature)}\r\n`, 'latin1');
}
