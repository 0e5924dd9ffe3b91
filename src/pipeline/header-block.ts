// The header block of a one-part message whose headers need no encoding, written directly: the
// usual transactional message (an ASCII subject, ASCII addresses and names). nodemailer's
// MailComposer builds a tree of MIME nodes, parses every address again and normalises every
// header name with regular expressions; for a 5 KB message that was 7% of the accepting event
// loop, more than the rest of the build. What is written here is what nodemailer writes for the
// same message, byte for byte (test/pipeline/header-block.test.ts compares the two over random
// messages); anything else (a non-ASCII or quoted name, a line that would need folding, an empty
// To) returns undefined and nodemailer writes it.
import type { Address, Submission } from './submission.ts';

/** Header lines nodemailer would fold are left to it: those of 76 characters or more (its foldLines). */
const FOLD_AT = 76;
/**
 * An address nodemailer writes as it is: a dot-atom local part and a lower-case ASCII domain (it
 * lower-cases domains and converts IDNs; it quotes other local parts).
 */
const PLAIN_ADDRESS = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;
/** A display name nodemailer writes unquoted: words of letters and digits, single spaces. */
const PLAIN_NAME = /^[A-Za-z0-9]+(?: [A-Za-z0-9]+)*$/;
/**
 * A subject nodemailer writes as it is: printable ASCII words but for the double quote (which it
 * encodes), single spaces, and no encoded-word lookalike.
 */
const PLAIN_SUBJECT = /^(?!.*=\?)[\x21\x23-\x7e]+(?: [\x21\x23-\x7e]+)*$/;

function mailbox(a: Address): string | undefined {
  if (!PLAIN_ADDRESS.test(a.address)) return undefined;
  if (a.name === '') return a.address;
  return PLAIN_NAME.test(a.name) ? `${a.name} <${a.address}>` : undefined;
}

/** `Key: value` if every address is plain and the line needs no folding; else undefined. */
function addressLine(key: string, list: readonly Address[]): string | undefined {
  let line = `${key}: `;
  for (let i = 0; i < list.length; i++) {
    const m = mailbox(list[i]);
    if (m === undefined) return undefined;
    line += i === 0 ? m : `, ${m}`;
  }
  return line.length < FOLD_AT ? line : undefined;
}

export interface HeaderFrame {
  messageIdHeader: string;
  date: Date;
}

/**
 * The header block (without the blank line after it) nodemailer writes for a one-part HTML
 * message, its body a 7bit placeholder, or undefined when its headers are not all plain.
 */
export function plainHeaderBlock(sub: Submission, frame: HeaderFrame): string | undefined {
  const from = sub.from?.[0];
  const to = sub.to.filter((a) => a.address);
  if (!from || to.length === 0) return undefined;
  const subject = sub.subject;
  if (!PLAIN_SUBJECT.test(subject) || subject.length + 'Subject: '.length >= FOLD_AT) return undefined;
  const lines = [addressLine('From', [from]), addressLine('To', to)];
  if (sub.replyTo.length > 0) lines.push(addressLine('Reply-To', sub.replyTo));
  if (lines.some((l) => l === undefined)) return undefined;
  lines.push(
    `Subject: ${subject}`,
    `Message-ID: ${frame.messageIdHeader}`,
    `Date: ${frame.date.toUTCString().replace(/GMT/, '+0000')}`,
    'Content-Transfer-Encoding: 7bit',
    'MIME-Version: 1.0',
    'Content-Type: text/html; charset=utf-8',
  );
  return lines.join('\r\n');
}
