// Sending domains: verification token and DKIM key pair generated on creation.
import crypto from 'node:crypto';
import { z } from 'zod';
import type { SecretBox } from '../crypto.ts';
import type { Executor } from '../db/database.ts';
import * as domains from '../db/domains.repository.ts';
import type { Domain } from '../db/schema.ts';
import { conflict, isUniqueViolation, notFound } from './errors.ts';

export const DomainCreate = z.object({
  name: z
    .string()
    .trim()
    .toLowerCase()
    .max(253)
    .regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/, 'must be a domain name'),
  verified: z.boolean().default(false),
});

export interface DnsRecord {
  type: 'TXT';
  name: string;
  value: string;
  purpose: 'verification' | 'dkim' | 'spf';
}

export const spfRecordValue = (include: string): string => `v=spf1 include:${include} ~all`;

/**
 * The records a customer publishes: the verification token, the DKIM public key, and, when the
 * operator configures TXRELAY_SPF_INCLUDE, an SPF record including it (merged into the
 * domain's existing SPF record if it has one: a name may carry only one, RFC 7208 §3.2).
 */
export function dnsRecords(d: Domain, spfInclude?: string): DnsRecord[] {
  const records: DnsRecord[] = [
    { type: 'TXT', name: `_txrelay.${d.name}`, value: `txrelay-verification=${d.verification_token}`, purpose: 'verification' },
  ];
  if (d.dkim_selector && d.dkim_public_key) {
    records.push({ type: 'TXT', name: `${d.dkim_selector}._domainkey.${d.name}`, value: `v=DKIM1; k=rsa; p=${d.dkim_public_key}`, purpose: 'dkim' });
  }
  if (spfInclude) {
    records.push({ type: 'TXT', name: d.name, value: spfRecordValue(spfInclude), purpose: 'spf' });
  }
  return records;
}

/**
 * The API's view of a domain. Each record carries its status at the last DNS check (`valid`,
 * `missing`, `mismatch`, `unknown`; `unchecked` before any); `dns_problem` says what a verified
 * domain's last re-check found missing (null when all is well).
 */
export function domainView(d: Domain, spfInclude?: string) {
  const records = dnsRecords(d, spfInclude).map((r) => ({ ...r, status: d.dns_checks?.[r.purpose] ?? 'unchecked' }));
  return {
    id: d.id,
    name: d.name,
    verified: d.verified,
    verified_at: d.verified_at,
    dns_records: records,
    checked_at: d.checked_at,
    dns_problem: d.dns_problem,
    created_at: d.created_at,
  };
}

export async function addDomain(db: Executor, box: SecretBox, tenantId: string, input: z.input<typeof DomainCreate>): Promise<Domain> {
  const { name, verified } = DomainCreate.parse(input);
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pub = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  const priv = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  try {
    return await domains.insertDomain(db, tenantId, {
      name,
      verification_token: crypto.randomBytes(16).toString('hex'),
      verified,
      verified_at: verified ? new Date() : null,
      dkim_selector: `txr${new Date().toISOString().slice(0, 7).replace('-', '')}`,
      dkim_public_key: pub,
      dkim_private_key_enc: box.seal(priv),
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`domain "${name}" already exists for this tenant`);
    throw err;
  }
}

export async function listDomains(db: Executor, tenantId: string): Promise<Domain[]> {
  return await domains.listDomains(db, tenantId);
}

export async function getDomain(db: Executor, tenantId: string, idOrName: string): Promise<Domain> {
  const d = await domains.findDomain(db, tenantId, idOrName);
  if (!d) throw notFound('domain', idOrName);
  return d;
}

export async function markVerified(db: Executor, tenantId: string, idOrName: string, verified = true): Promise<Domain> {
  const d = await getDomain(db, tenantId, idOrName);
  return (await domains.setDomainVerified(db, tenantId, d.id, verified))!;
}

export async function deleteDomain(db: Executor, tenantId: string, idOrName: string): Promise<void> {
  const d = await getDomain(db, tenantId, idOrName);
  await domains.deleteDomain(db, tenantId, d.id);
}
