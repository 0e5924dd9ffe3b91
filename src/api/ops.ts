// Operations endpoints: liveness, readiness and Prometheus metrics. Served on the API port, and
// alone on TXRELAY_METRICS_PORT when that is set (workers have no API to serve them on).
import express, { type RequestHandler } from 'express';
import type { Context } from '../context.ts';
import { timingSafeEqualString } from '../crypto.ts';
import { dependencyChecks, runChecks } from '../readiness.ts';
import { ApiError } from '../services/errors.ts';
import { errorHandler, notFoundHandler } from './errors.ts';

/** With TXRELAY_METRICS_TOKEN set, `Authorization: Bearer <it>`; unset, anyone may scrape. */
function requireMetricsToken(token: string | undefined): RequestHandler {
  return (req, res, next) => {
    if (token === undefined) return next();
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.get('authorization') ?? '');
    if (!m || !timingSafeEqualString(m[1], token)) {
      res.set('WWW-Authenticate', 'Bearer realm="txrelay-metrics"');
      throw new ApiError(401, 'unauthorized', m ? 'invalid metrics token' : 'missing bearer token: send "Authorization: Bearer <TXRELAY_METRICS_TOKEN>"');
    }
    next();
  };
}

/** Adds GET /healthz, /readyz and /metrics to `app`. */
export function mountOps(app: express.Express, ctx: Context): void {
  // Liveness only: the process runs and answers. A database outage must not get it restarted.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    const report = await runChecks(dependencyChecks(ctx));
    for (const f of report.failures) ctx.log.warn({ err: f.err, check: f.check }, 'readiness check failed');
    res.status(report.ok ? 200 : 503).json({ status: report.ok ? 'ok' : 'unavailable', checks: report.checks });
  });

  app.get('/metrics', requireMetricsToken(ctx.config.metricsToken), async (_req, res) => {
    if (!ctx.metrics) throw new ApiError(404, 'not_found', 'this process collects no metrics');
    const { contentType, text } = await ctx.metrics.exposition();
    res.set('Cache-Control', 'no-store');
    res.type(contentType).send(text);
  });
}

/** The app of TXRELAY_METRICS_PORT: the operations endpoints and nothing else. */
export function createOpsApp(ctx: Context): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use((_req, res, next) => {
    res.set('X-Content-Type-Options', 'nosniff');
    next();
  });
  mountOps(app, ctx);
  app.use(notFoundHandler);
  app.use(errorHandler(ctx.log));
  return app;
}
