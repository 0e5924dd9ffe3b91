// Stage: the From address must be in a domain the tenant has verified (live keys only; test
// keys never deliver outside, so they skip the check). SPEC §2, §3.
import { domainToASCII } from 'node:url';
import type { Executor } from '../db/database.ts';
import { findVerifiedDomain } from '../db/domains.repository.ts';
import type { Domain } from '../db/schema.ts';
import { SendingCache } from '../db/sending-cache.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import type { Submission } from './submission.ts';

export function senderDomain(address: string): string {
  const domain = address.slice(address.lastIndexOf('@') + 1).trim().replace(/\.$/, '');
  // IDN and case variants compare as the ASCII (punycode) lower-case form.
  return (domainToASCII(domain) || domain).toLowerCase();
}

export function checkSender(db: Executor) {
  const verifiedDomains = new SendingCache<Domain | undefined>();
  return async function checkSenderStage(sub: Submission): Promise<Submission> {
    if (sub.testMode) return sub;
    const domain = senderDomain(sub.from![0].address);
    const tenantId = sub.principal!.tenant.id;
    const verified = await verifiedDomains.get(`${tenantId} ${domain}`, () => findVerifiedDomain(db, tenantId, domain));
    if (!verified) {
      throw new SmtpError(550, '5.7.1', `Sender domain ${domain} is not verified for this tenant`, 'domain_not_verified');
    }
    // The address goes out (From and envelope) with the domain as checked. Spelled otherwise
    // (upper case, a trailing dot, Unicode, or full-width letters that IDNA maps to ASCII) it
    // could reach the receiver as a different domain: nodemailer punycodes full-width letters
    // as they are, and DKIM and DMARC would then judge a domain we never verified.
    sub.senderDomain = verified;
    const from = sub.from![0];
    sub.from![0] = { ...from, address: `${from.address.slice(0, from.address.lastIndexOf('@'))}@${domain}` };
    return sub;
  };
}
