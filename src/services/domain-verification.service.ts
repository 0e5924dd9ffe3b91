// Domain verification by DNS (SPEC §2) and the daily re-check of verified domains. A domain is
// verified once the TXT record txrelay asked for at `_txrelay.<domain>` is published and, when
// the domain has a DKIM key, the DKIM record publishes that key. The resolver is injected so
// tests need no DNS.
import dns from 'node:dns';
import type { Db, Executor } from '../db/database.ts';
import { claimDomainsToCheck, recordDomainCheck, releaseDomainClaim } from '../db/domains.repository.ts';
import type { DnsChecks, DnsRecordStatus, Domain } from '../db/schema.ts';
import { every, type Periodic } from '../every.ts';
import type { Logger } from '../log.ts';
import { dnsRecords, getDomain, markVerified, type DnsRecord } from './domains.service.ts';
import { ApiError } from './errors.ts';

export type TxtResolver = (hostname: string) => Promise<string[][]>;

// Bounded: a re-check pass or an admin's verify call must not hang on a dead name server.
const systemResolver = new dns.promises.Resolver({ timeout: 5_000, tries: 2 });
export const systemTxtResolver: TxtResolver = (hostname) => systemResolver.resolveTxt(hostname);

/** "The name has no such record" as opposed to "DNS did not answer". */
const ABSENT = new Set(['ENOTFOUND', 'ENODATA', 'NXDOMAIN']);

/** DNS did not answer (timeout, SERVFAIL, refused): nothing can be concluded about the record. */
export class DnsUnavailable extends Error {
  readonly hostname: string;
  readonly code: string;
  constructor(hostname: string, code: string) {
    super(`DNS lookup of ${hostname} TXT failed (${code})`);
    this.name = 'DnsUnavailable';
    this.hostname = hostname;
    this.code = code;
  }
}

export interface RecordCheck extends DnsRecord {
  status: DnsRecordStatus;
  /** The TXT values found at the name (chunks joined). */
  found: string[];
}

async function lookupTxt(resolveTxt: TxtResolver, hostname: string): Promise<string[]> {
  try {
    // A TXT record may arrive split into several strings of at most 255 bytes: join them
    // (RFC 7208 §3.3; RFC 6376 §3.6.2.2). A 2048-bit DKIM key is always split.
    return (await resolveTxt(hostname)).map((chunks) => chunks.join(''));
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (ABSENT.has(code)) return [];
    throw new DnsUnavailable(hostname, code || 'error');
  }
}

/** The `p=` tag of a DKIM key record, whitespace removed (RFC 6376 §3.6.1: FWS is allowed in it). */
function dkimPublicKey(value: string): string | undefined {
  for (const tag of value.split(';')) {
    const eq = tag.indexOf('=');
    if (eq > 0 && tag.slice(0, eq).trim() === 'p') return tag.slice(eq + 1).replace(/\s+/g, '');
  }
  return undefined;
}

/** Whether an SPF record includes `include` (with no qualifier or `+`, the ones that pass). */
function spfIncludes(value: string, include: string): boolean {
  const terms = value.trim().toLowerCase().split(/\s+/);
  return terms[0] === 'v=spf1' && terms.slice(1).some((t) => t.replace(/^\+/, '') === `include:${include}`);
}

async function checkRecord(record: DnsRecord, domain: Domain, resolveTxt: TxtResolver, spfInclude: string | undefined): Promise<RecordCheck> {
  if (record.purpose === 'spf') {
    // Advisory: a DNS failure here concludes nothing and blocks nothing.
    let found: string[];
    try {
      found = (await lookupTxt(resolveTxt, record.name)).filter((v) => /^v=spf1(\s|$)/i.test(v.trim()));
    } catch (err) {
      if (err instanceof DnsUnavailable) return { ...record, status: 'unknown', found: [] };
      throw err;
    }
    const status = found.some((v) => spfIncludes(v, spfInclude!)) ? 'valid' : found.length ? 'mismatch' : 'missing';
    return { ...record, status, found };
  }
  const found = await lookupTxt(resolveTxt, record.name);
  if (record.purpose === 'dkim') {
    const keys = found.map(dkimPublicKey).filter((k) => k !== undefined);
    const status = keys.includes(domain.dkim_public_key!) ? 'valid' : keys.length ? 'mismatch' : 'missing';
    return { ...record, status, found };
  }
  const tokens = found.map((v) => v.trim()).filter((v) => v.startsWith('txrelay-verification='));
  const status = tokens.includes(record.value) ? 'valid' : tokens.length ? 'mismatch' : 'missing';
  return { ...record, status, found };
}

/**
 * Looks every record of the domain up. Throws DnsUnavailable when the verification or DKIM
 * lookup got no answer; an unanswered SPF lookup is reported as `unknown`.
 */
export async function checkDnsRecords(domain: Domain, resolveTxt: TxtResolver, spfInclude?: string): Promise<RecordCheck[]> {
  return await Promise.all(dnsRecords(domain, spfInclude).map((r) => checkRecord(r, domain, resolveTxt, spfInclude)));
}

/**
 * The records that block verification and whose loss flags a verified domain: the
 * verification token and the DKIM key. SPF is reported but never blocks: a domain's SPF
 * record is often managed by another team and may legitimately authorise us another way
 * (an `ip4:` range, a parent include, or no SPF at all with DKIM alignment carrying DMARC);
 * the DKIM key and token prove control of the domain, which is what verification is about.
 */
function blocking(checks: RecordCheck[]): RecordCheck[] {
  return checks.filter((c) => c.purpose !== 'spf' && c.status !== 'valid');
}

/** One line naming each missing or wrong record, e.g. "TXT _txrelay.example.com missing". */
export function describeProblem(failed: RecordCheck[]): string | null {
  if (failed.length === 0) return null;
  return failed.map((c) => `${c.type} ${c.name} ${c.status === 'missing' ? 'missing' : 'does not match'}`).join('; ');
}

function statuses(checks: RecordCheck[]): DnsChecks {
  return Object.fromEntries(checks.map((c) => [c.purpose, c.status]));
}

export interface VerifyOptions {
  /** TXRELAY_SPF_INCLUDE: also report the SPF record (never blocks). */
  spfInclude?: string;
}

export async function verifyByDns(db: Executor, tenantId: string, idOrName: string, resolveTxt: TxtResolver, options: VerifyOptions = {}): Promise<Domain> {
  const domain = await getDomain(db, tenantId, idOrName);
  let checks: RecordCheck[];
  try {
    checks = await checkDnsRecords(domain, resolveTxt, options.spfInclude);
  } catch (err) {
    if (err instanceof DnsUnavailable) throw new ApiError(502, 'dns_error', `${err.message}; try again later`);
    throw err;
  }
  const failed = blocking(checks);
  const problem = describeProblem(failed);
  await recordDomainCheck(db, tenantId, domain.id, { checked_at: new Date(), dns_problem: problem, dns_checks: statuses(checks) });
  if (problem) {
    const first = failed[0];
    throw new ApiError(422, 'verification_failed', `domain ${domain.name} not verified: ${problem}`, {
      expected: { type: first.type, name: first.name, value: first.value },
      found: first.found,
      records: checks,
    });
  }
  return await markVerified(db, tenantId, domain.id, true);
}

export interface RecheckOptions {
  /** Re-check verified domains last checked before this (never checked: always). Default 24 h ago. */
  olderThan?: Date;
  /** Domains claimed in this call. Default 100. */
  limit?: number;
  spfInclude?: string;
  log?: Logger;
  /** Lookups run at once. Default 8. */
  concurrency?: number;
}

export interface RecheckResult {
  /** Domains claimed; fewer than `limit` means none is due any more. */
  claimed: number;
  ok: number;
  flagged: number;
  cleared: number;
  /** DNS did not answer: left as they were, tried again on the next pass. */
  unavailable: number;
}

export const RECHECK_AFTER_MS = 24 * 3600_000;

/**
 * Re-checks one batch of verified domains whose last check is older than `olderThan`. Records
 * that vanished flag the domain (`dns_problem`, logged at warn); records that are back clear
 * the flag. A flagged domain stays verified: one DNS hiccup or a zone edit gone wrong must not
 * stop a customer's mail; the flag shows in the domain's view for the operator to act on.
 * DNS not answering concludes nothing: the domain is left alone and retried on the next pass.
 */
export async function recheckDomains(db: Db, resolveTxt: TxtResolver, options: RecheckOptions = {}): Promise<RecheckResult> {
  const limit = options.limit ?? 100;
  const olderThan = options.olderThan ?? new Date(Date.now() - RECHECK_AFTER_MS);
  const claimed = await claimDomainsToCheck(db, olderThan, limit);
  const result: RecheckResult = { claimed: claimed.length, ok: 0, flagged: 0, cleared: 0, unavailable: 0 };
  const queue = [...claimed];
  const worker = async (): Promise<void> => {
    for (let d = queue.shift(); d; d = queue.shift()) {
      const claimedAt = d.checked_at!;
      let checks: RecordCheck[];
      try {
        checks = await checkDnsRecords(d, resolveTxt, options.spfInclude);
      } catch (err) {
        if (!(err instanceof DnsUnavailable)) throw err;
        await releaseDomainClaim(db, d.tenant_id, d.id, claimedAt, d.previous_checked_at);
        options.log?.info({ domain: d.name, tenant: d.tenant_id, dns: err.code, hostname: err.hostname }, 'domain re-check postponed: DNS did not answer');
        result.unavailable++;
        continue;
      }
      const problem = describeProblem(blocking(checks));
      await recordDomainCheck(db, d.tenant_id, d.id, { checked_at: claimedAt, dns_problem: problem, dns_checks: statuses(checks) });
      if (problem) {
        result.flagged++;
        options.log?.warn({ domain: d.name, domain_id: d.id, tenant: d.tenant_id, problem }, 'verified domain: DNS records missing; flagged, stays verified');
      } else {
        result.ok++;
        if (d.dns_problem) {
          result.cleared++;
          options.log?.info({ domain: d.name, domain_id: d.id, tenant: d.tenant_id }, 'domain DNS records are back; flag cleared');
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 8, Math.max(claimed.length, 1)) }, worker));
  return result;
}

export type DomainRechecks = Periodic;

export interface DomainRecheckSchedule {
  /** Time between passes. Default 1 h: a domain is re-checked 24 to 25 h after its last check. */
  intervalMs?: number;
  /** Delay before the first pass after start. Default 1 min. */
  firstPassMs?: number;
  batch?: number;
}

/**
 * The worker role's re-check loop. Every process with the role runs it; claims are taken with
 * FOR UPDATE SKIP LOCKED and stamped, so each domain is checked by one process per day however
 * many run. A pass takes batches until none is due. A domain claimed by a process that then
 * dies waits for the next day's pass.
 */
export function startDomainRechecks(
  deps: { db: Db; log: Logger; spfInclude?: string },
  resolveTxt: TxtResolver,
  schedule: DomainRecheckSchedule = {},
): DomainRechecks {
  const intervalMs = schedule.intervalMs ?? 3600_000;
  const batch = schedule.batch ?? 100;
  const pass = async (stopping: AbortSignal): Promise<void> => {
    const total: RecheckResult = { claimed: 0, ok: 0, flagged: 0, cleared: 0, unavailable: 0 };
    for (;;) {
      const r = await recheckDomains(deps.db, resolveTxt, { limit: batch, spfInclude: deps.spfInclude, log: deps.log });
      for (const k of Object.keys(total) as (keyof RecheckResult)[]) total[k] += r[k];
      if (stopping.aborted || r.claimed < batch) break;
    }
    if (total.claimed) deps.log.info({ domains: total }, 'domain DNS re-check pass done');
  };
  return every(intervalMs, pass, (err) => deps.log.error({ err }, 'domain DNS re-check pass failed'), { firstDelayMs: schedule.firstPassMs ?? 60_000 });
}
