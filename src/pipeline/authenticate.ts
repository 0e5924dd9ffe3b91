// Stage 2: who is sending. SMTP AUTH (or the HTTP bearer key) and/or the X-Auth-APIKey header;
// the key must be live, carry the `send` scope, and belong to an active tenant (SPEC §3).
import { API_KEY_PATTERN, hashApiKey } from '../crypto.ts';
import type { Executor } from '../db/database.ts';
import { findKeyByHash, touchKey } from '../db/keys.repository.ts';
import { SendingCache } from '../db/sending-cache.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import { header, type Principal, type Submission } from './submission.ts';

const KEY_TOUCH_INTERVAL_MS = 60_000;

export const invalidKey = (): SmtpError =>
  new SmtpError(535, '5.7.8', 'Authentication credentials invalid', 'invalid_key');

/**
 * Keys with their tenants, by hash, as the sending cache keeps routes and domains: a client that
 * opens a connection per message (cron jobs, PHP's mail()) authenticates on every one, and the
 * lookup was a round trip to PostgreSQL each time. A revocation, a new key or a tenant's change
 * made in this process empties it at once (the repositories call sendingConfigChanged after
 * their write); one made by another process is seen within SENDING_CACHE_TTL_MS (2 s). An SMTP
 * session keeps the principal it authenticated with for its whole life anyway.
 */
const keys = new SendingCache<Principal | undefined>();

/** Looks a key up by its hash; undefined for malformed, unknown or revoked keys alike. */
export async function lookupKey(db: Executor, key: string): Promise<Principal | undefined> {
  if (!API_KEY_PATTERN.test(key)) return undefined;
  const hash = hashApiKey(key);
  const found = await keys.get(hash.toString('base64'), () => findKeyByHash(db, hash));
  // Informational, at most once a minute (as touchKey's own condition): the row read says
  // whether it is due, and the cached row is marked at once, so neither a message nor a cache
  // hit costs a round trip for it. Never blocks a send.
  const lastUsed = found?.key.last_used_at;
  if (found && (!lastUsed || lastUsed.getTime() < Date.now() - KEY_TOUCH_INTERVAL_MS)) {
    found.key.last_used_at = new Date();
    touchKey(db, found.key.id).catch(() => {});
  }
  return found;
}

export function assertCanSend(p: Principal): void {
  if (p.key.scope !== 'send' && p.key.scope !== 'full') {
    throw new SmtpError(550, '5.7.1', 'This API key lacks the send scope', 'forbidden');
  }
  if (p.tenant.status !== 'active') {
    throw new SmtpError(550, '5.7.1', `Tenant ${p.tenant.name} is suspended`, 'tenant_suspended');
  }
}

export function authenticate(db: Executor) {
  return async function authenticateStage(sub: Submission): Promise<Submission> {
    const headerKey = header(sub, 'x-auth-apikey')?.trim();
    let principal = sub.sessionPrincipal;
    if (headerKey) {
      const fromHeader = await lookupKey(db, headerKey);
      if (!fromHeader) throw new SmtpError(535, '5.7.8', 'X-Auth-APIKey header holds an invalid API key', 'invalid_key');
      if (principal && principal.tenant.id !== fromHeader.tenant.id) {
        throw new SmtpError(550, '5.7.1', 'AUTH key and X-Auth-APIKey header belong to different tenants', 'tenant_mismatch');
      }
      // With both, the session's key decides scope and mode; the header only confirmed the tenant.
      principal ??= fromHeader;
    }
    if (!principal) {
      throw new SmtpError(530, '5.7.0', 'Authentication required: use SMTP AUTH or an X-Auth-APIKey header', 'auth_required');
    }
    assertCanSend(principal);
    sub.principal = principal;
    sub.testMode = principal.key.mode === 'test';
    return sub;
  };
}
