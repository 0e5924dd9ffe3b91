// DKIM-Signature (RFC 6376): rsa-sha256, relaxed/relaxed, over a message held in memory. The
// RSA signature itself is most of the cost and cannot shrink; nodemailer's signer adds as much
// again around it (the message streamed through a header parser and a canonicalizing body
// stream, chunk by chunk, with a setImmediate between chunks). Here the body is hashed in one
// pass over the buffer, and runs of lines that canonicalization leaves alone (base64, most HTML)
// go to the hash as they are, without a copy.
import { createHash, sign, type KeyObject } from 'node:crypto';

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

/** Whether relaxed body canonicalization (§3.4.4) changes the line: a tab, two spaces, or a space at its end. */
function changedByCanon(line: Buffer): boolean {
  for (let i = 0; i < line.length; i++) {
    const b = line[i];
    if (b === TAB) return true;
    if (b === SP && (i + 1 === line.length || line[i + 1] === SP || line[i + 1] === TAB)) return true;
  }
  return false;
}

/** The relaxed body hash (§3.4.4, §3.7): whitespace runs as one space, none at line ends, no empty lines at the end. */
export function relaxedBodyHash(body: Buffer): string {
  const hash = createHash('sha256');
  let emptyLines = 0;
  // A run of unchanged lines, CRLFs included, hashed in one update when something else comes.
  let runStart = -1;
  let runEnd = -1;
  const flushRun = () => {
    if (runStart >= 0) hash.update(body.subarray(runStart, runEnd));
    runStart = -1;
  };
  for (let pos = 0; pos < body.length; ) {
    const crlf = body.indexOf(CRLF, pos);
    const last = crlf < 0;
    const end = last ? body.length : crlf;
    const next = last ? body.length : crlf + 2;
    const line = body.subarray(pos, end);
    const canonical = changedByCanon(line) ? Buffer.from(line.toString('latin1').replace(/[ \t]+/g, ' ').trimEnd(), 'latin1') : line;
    if (canonical.length === 0) {
      // Written only if a non-empty line follows: empty lines at the end are not hashed.
      emptyLines++;
    } else {
      if (emptyLines > 0 || canonical !== line || last) flushRun();
      if (emptyLines > 0) hash.update('\r\n'.repeat(emptyLines));
      emptyLines = 0;
      if (canonical !== line || last) {
        hash.update(canonical);
        hash.update(CRLF);
      } else {
        if (runStart < 0) runStart = pos;
        runEnd = next;
      }
    }
    pos = next;
  }
  flushRun();
  return hash.digest('base64');
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

/** The message with a DKIM-Signature field in front. */
export function dkimSign(message: Buffer, { domain, selector, key }: DkimKey): Buffer {
  const split = message.indexOf('\r\n\r\n');
  const headEnd = split < 0 ? message.length : split;
  const body = split < 0 ? Buffer.alloc(0) : message.subarray(split + 4);
  const fields = headerFields(message.toString('latin1', 0, headEnd));
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
  const tags = ['v=1;', 'a=rsa-sha256;', 'c=relaxed/relaxed;', `d=${domain};`, 'q=dns/txt;', `s=${selector};`, `bh=${relaxedBodyHash(body)};`, `h=${names.join(':')};`];
  // The signature covers this field too, with an empty b= (§3.7), folded as it will be sent.
  const unsigned = relaxedHeader(foldTags(tags, ''));
  const data = signedHeaders.map((h) => `${h}\r\n`).join('') + unsigned;
  const signature = sign('sha256', Buffer.from(data, 'latin1'), key).toString('base64');
  return Buffer.concat([Buffer.from(`${foldTags(tags, signature)}\r\n`, 'latin1'), message]);
}
