// Admin authentication: `Authorization: Bearer <TXRELAY_ADMIN_TOKEN>`, compared in constant time.
import type { RequestHandler } from 'express';
import { timingSafeEqualString } from '../../crypto.ts';
import { ApiError } from '../../services/errors.ts';

const unauthorized = (message: string): ApiError => new ApiError(401, 'unauthorized', message);

export function requireAdmin(adminToken: string): RequestHandler {
  return (req, res, next) => {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.get('authorization') ?? '');
    res.set('WWW-Authenticate', 'Bearer realm="txrelay-admin"');
    if (!m) throw unauthorized('missing bearer token: send "Authorization: Bearer <admin token>"');
    if (!timingSafeEqualString(m[1], adminToken)) throw unauthorized('invalid admin token');
    res.removeHeader('WWW-Authenticate');
    next();
  };
}
