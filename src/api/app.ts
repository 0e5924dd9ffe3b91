// The HTTP API: health, the admin API, and one error middleware. JSON in and out.
import { createRequire } from 'node:module';
import express, { type RequestHandler } from 'express';
import type { Context } from '../context.ts';
import { createPipeline, type AcceptSubmission } from '../pipeline/index.ts';
import { systemTxtResolver, type TxtResolver } from '../services/domain-verification.service.ts';
import { ApiError } from '../services/errors.ts';
import { templateEngine } from '../templates/index.ts';
import { requireAdmin } from './admin/auth.ts';
import { adminRouter } from './admin/index.ts';
import { dashboardRouter } from './dashboard.ts';
import { renderDocs } from './docs.ts';
import { errorHandler, notFoundHandler } from './errors.ts';
import { openApiDocument } from './openapi.ts';
import { mountOps } from './ops.ts';
import { trackingHandlers } from './tracking.ts';
import { v1Router } from './v1/index.ts';

export interface ApiOptions {
  /** DNS TXT lookups for domain verification (tests inject a fake). */
  resolveTxt?: TxtResolver;
  /** The submission pipeline `POST /v1/messages` runs (the SMTP server's, when both run). */
  accept?: AcceptSubmission;
}

/**
 * Sized for a 25 MiB message sent base64-encoded in `POST /v1/messages` (4/3 of 25 MiB plus
 * the JSON around it). Mounted after authentication so strangers cannot make us parse it.
 */
export const jsonBody: RequestHandler = express.json({ limit: '36mb' });

/** A request that has a body must send it as JSON; bodiless POSTs (e.g. verify) are fine. */
export const requireJsonBody: RequestHandler = (req, _res, next) => {
  const length = Number(req.get('content-length') ?? 0);
  const hasBody = req.get('transfer-encoding') !== undefined || length > 0;
  if (hasBody && !req.is('application/json')) {
    throw new ApiError(415, 'unsupported_media_type', 'send the request body as application/json');
  }
  next();
};

const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

export function createApiApp(ctx: Context, options: ApiOptions = {}): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Flat query strings: `?a[b]=1` stays a literal key, never a nested object.
  app.set('query parser', 'simple');
  app.use((_req, res, next) => {
    res.set('X-Content-Type-Options', 'nosniff');
    next();
  });

  // Liveness, readiness and /metrics (src/api/ops.ts).
  mountOps(app, ctx);

  // Built once, on first request: the document is the same for the life of the process.
  let doc: ReturnType<typeof openApiDocument> | undefined;
  const document = () => (doc ??= openApiDocument({ serverUrl: ctx.config.publicUrl, version: VERSION }));
  app.get('/openapi.json', (_req, res) => {
    res.json(document());
  });
  app.get('/docs', (_req, res) => {
    res.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'");
    res.type('html').send(renderDocs(document()));
  });
  app.use('/dashboard', dashboardRouter());

  // Open pixel and click redirector (SPEC §6): public, the signed token is the authority.
  const tracking = trackingHandlers(ctx);
  app.get('/t/o/:token.gif', tracking.open);
  app.get('/t/c/:token', tracking.click);

  const resolveTxt = options.resolveTxt ?? systemTxtResolver;
  app.use('/admin', requireAdmin(ctx.adminToken), requireJsonBody, jsonBody, adminRouter(ctx, resolveTxt));
  // The template engine starts its sandboxes on first use, not when the app is built.
  const accept = options.accept ?? createPipeline(ctx, (...args) => templateEngine(ctx).render(...args));
  app.use('/v1', v1Router(ctx, accept, resolveTxt, [requireJsonBody, jsonBody]));

  app.use(notFoundHandler);
  app.use(errorHandler(ctx.log));
  return app;
}
