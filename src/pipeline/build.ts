// Stage: the final message. txrelay writes its own Date, Message-ID and MIME structure, keeps
// From/To/Subject/Reply-To and the non-image attachments, and DKIM-signs when the sender's
// domain has a key. The bytes built here are exactly what delivery sends and /mime returns.
import type { Readable } from 'node:stream';
import DKIM from 'nodemailer/lib/dkim';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { SecretBox } from '../crypto.ts';
import type { Executor } from '../db/database.ts';
import { findSigningDomain } from '../db/domains.repository.ts';
import type { Address, Submission } from './submission.ts';
import { senderDomain } from './check-sender.ts';

export interface Built {
  mime: Buffer;
  messageIdHeader: string;
}

const fmt = (a: Address) => ({ name: a.name, address: a.address });

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function buildMime(db: Executor, box: SecretBox, hostname: string, id: string, sub: Submission): Promise<Built> {
  const messageIdHeader = `<${id}@${hostname}>`;
  const from = sub.from![0];
  const composer = new MailComposer({
    from: fmt(from),
    to: sub.to.filter((a) => a.address).map(fmt),
    replyTo: sub.replyTo.length ? sub.replyTo.map(fmt) : undefined,
    subject: sub.subject,
    html: sub.html ?? '',
    messageId: messageIdHeader,
    date: new Date(),
    attachments: sub.attachments.map((a) => ({
      filename: a.filename ?? undefined,
      content: a.content,
      contentType: a.contentType,
      ...(a.contentId ? { cid: a.contentId } : {}),
    })),
    // Keep the envelope out of the headers: recipients are the envelope's (Bcc stays hidden).
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  const unsigned = await composer.compile().build();
  if (sub.testMode) return { mime: unsigned, messageIdHeader };
  const domain = await findSigningDomain(db, sub.principal!.tenant.id, senderDomain(from.address));
  if (!domain?.dkim_private_key_enc || !domain.dkim_selector) return { mime: unsigned, messageIdHeader };
  const dkim = new DKIM({
    domainName: domain.name,
    keySelector: domain.dkim_selector,
    privateKey: box.open(domain.dkim_private_key_enc),
  });
  const signed = await collect(dkim.sign(unsigned));
  sub.verdicts.push({ rule: 'dkim', action: 'signed', detail: `d=${domain.name}; s=${domain.dkim_selector}` });
  return { mime: signed, messageIdHeader };
}
