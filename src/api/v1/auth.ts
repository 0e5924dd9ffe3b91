// Tenant API authentication: `Authorization: Bearer <api key>`. The key's tenant scopes every
// request below /v1 (res.locals.tenant, as the admin routers expect); its scope decides what
// it may do (SPEC §2): `send` sends, `read` reads, `full` does both and manages the tenant's
// own templates, domains and webhooks.
import type { RequestHandler, Response } from 'express';
import type { KeyScope } from '../../db/schema.ts';
import type { Executor } from '../../db/database.ts';
import { lookupKey } from '../../pipeline/authenticate.ts';
import type { Principal } from '../../pipeline/submission.ts';
import { ApiError } from '../../services/errors.ts';

export function requireKey(db: Executor): RequestHandler {
  return async (req, res, next) => {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.get('authorization') ?? '');
    res.set('WWW-Authenticate', 'Bearer realm="txrelay"');
    if (!m) throw new ApiError(401, 'unauthorized', 'missing API key: send "Authorization: Bearer <api key>"');
    // Malformed, unknown and revoked keys fail alike (SPEC §2).
    const principal = await lookupKey(db, m[1]);
    if (!principal) throw new ApiError(401, 'unauthorized', 'invalid API key');
    res.removeHeader('WWW-Authenticate');
    res.locals.principal = principal;
    res.locals.tenant = principal.tenant;
    next();
  };
}

export function principalOf(res: Response): Principal {
  const p = res.locals.principal as Principal | undefined;
  if (!p) throw new Error('principal not loaded: mount requireKey before this router');
  return p;
}

/** What each scope grants; `full` holds every right. */
const GRANTS: Record<KeyScope, ReadonlySet<'send' | 'read' | 'manage'>> = {
  send: new Set(['send']),
  read: new Set(['read']),
  full: new Set(['send', 'read', 'manage']),
};

/**
 * The key must grant `right`. A suspended tenant keeps read access (its logs stay visible) but
 * cannot change anything; sending answers the pipeline's own `tenant_suspended` error.
 */
export function requireRight(right: 'send' | 'read' | 'manage'): RequestHandler {
  return (req, res, next) => {
    const { key, tenant } = principalOf(res);
    if (!GRANTS[key.scope].has(right)) {
      const needs = right === 'manage' ? 'full' : `${right} or full`;
      throw new ApiError(403, 'forbidden', `this API key has the ${key.scope} scope; this needs ${needs}`);
    }
    if (right === 'manage' && tenant.status !== 'active' && req.method !== 'GET') {
      throw new ApiError(403, 'tenant_suspended', `tenant ${tenant.name} is suspended`);
    }
    next();
  };
}
