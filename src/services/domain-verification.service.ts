// Domain verification by DNS (SPEC §2): the domain is verified once the TXT record txrelay
// asked for at `_txrelay.<domain>` is published. The resolver is injected so tests need no DNS.
import dns from 'node:dns';
import type { Executor } from '../db/database.ts';
import type { Domain } from '../db/schema.ts';
import { getDomain, markVerified } from './domains.service.ts';
import { ApiError } from './errors.ts';

export type TxtResolver = (hostname: string) => Promise<string[][]>;

export const systemTxtResolver: TxtResolver = (hostname) => dns.promises.resolveTxt(hostname);

/** "The name has no such record" as opposed to "DNS did not answer". */
const ABSENT = new Set(['ENOTFOUND', 'ENODATA', 'NXDOMAIN']);

export async function verifyByDns(db: Executor, tenantId: string, idOrName: string, resolveTxt: TxtResolver): Promise<Domain> {
  const domain = await getDomain(db, tenantId, idOrName);
  const name = `_txrelay.${domain.name}`;
  const expected = `txrelay-verification=${domain.verification_token}`;
  let found: string[] = [];
  try {
    // A TXT record may arrive split into several strings of at most 255 bytes: join them.
    found = (await resolveTxt(name)).map((chunks) => chunks.join(''));
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (!ABSENT.has(code)) {
      throw new ApiError(502, 'dns_error', `DNS lookup of ${name} TXT failed (${code || 'error'}); try again later`);
    }
  }
  if (!found.some((v) => v.trim() === expected)) {
    throw new ApiError(422, 'verification_failed', `TXT record ${name} does not contain "${expected}" yet`, {
      expected: { type: 'TXT', name, value: expected },
      found,
    });
  }
  return await markVerified(db, tenantId, domain.id, true);
}
