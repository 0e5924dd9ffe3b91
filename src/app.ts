// Starts the relay: database (embedded when DATABASE_URL is unset), migrations, the queue, and
// the roles this process runs (TXRELAY_ROLES: smtp, api, worker). Returns a handle to stop it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApiApp } from './api/app.ts';
import { createOpsApp } from './api/ops.ts';
import type { Config } from './config.ts';
import type { Context } from './context.ts';
import { SecretBox } from './crypto.ts';
import { openConfiguredDatabase } from './db/configured.ts';
import { migrateToLatest } from './db/migrate.ts';
import { startDelivery } from './delivery/worker.ts';
import { startRollUp } from './events/rollup.ts';
import { TrackingTokens } from './events/tracking-tokens.ts';
import { startDomainRechecks, systemTxtResolver, type TxtResolver } from './services/domain-verification.service.ts';
import { createLogger, type Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import { createPipeline } from './pipeline/index.ts';
import { createBoss } from './queue.ts';
import { dependencyChecks, ReadinessMonitor } from './readiness.ts';
import { resolveSecrets } from './secrets.ts';
import { seedDemo, type SeedResult } from './seed.ts';
import { startSmtp, type SmtpListeners } from './smtp/server.ts';
import { loadTls } from './smtp/tls.ts';
import { closeTemplateEngine, templateEngine } from './templates/index.ts';
import { startWebhooks } from './webhooks/worker.ts';

export interface RunningApp {
  ctx: Context;
  smtpPorts: number[];
  smtpsPorts: number[];
  httpPort: number | undefined;
  /** The TXRELAY_METRICS_PORT listener's port, when one was configured. */
  metricsPort: number | undefined;
  seeded: SeedResult | undefined;
  adminTokenGenerated: boolean;
  /** Graceful: stop accepting, let transactions and deliveries in flight finish, close. */
  stop(deadlineMs?: number): Promise<void>;
}

/** Of a stop's deadline, what is kept for closing after transactions and deliveries (at most a fifth). */
const STOP_MARGIN_MS = 5_000;

export interface StartOptions {
  log?: Logger;
  /** DNS TXT lookups for domain verification and the daily re-check (tests inject a fake). */
  resolveTxt?: TxtResolver;
}

export async function startApp(config: Config, options: StartOptions = {}): Promise<RunningApp> {
  const log = options.log ?? createLogger(config.logLevel);
  const resolveTxt = options.resolveTxt ?? systemTxtResolver;
  const secrets = resolveSecrets(config);
  const database = await openConfiguredDatabase(config, secrets.pgPassword, {
    max: 20,
    onLog: (line) => log.debug({ postgres: line.trim() }),
    onEmbeddedStarted: () => log.info({ dataDir: config.dataDir }, 'embedded PostgreSQL started'),
  });
  const { handle } = database;
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const migrated = await migrateToLatest(handle.db);
    if (migrated.applied.length) log.info({ migrations: migrated.applied }, 'migrations applied');

    const roles = new Set(config.roles);
    // pg-boss maintenance (expiry, retention) runs where the workers are.
    const boss = await createBoss(handle.url, { supervise: roles.has('worker') });
    let shuttingDown = false;
    // While shutting down, the queue's connections closing is expected, not an error.
    boss.on('error', (err: Error) => (shuttingDown ? log.debug.bind(log) : log.error.bind(log))({ queue: 'error', err: err.message }, 'queue error'));
    await boss.start();
    cleanups.push(async () => {
      await boss.stop({ graceful: true, timeout: 10_000 });
    });

    // Checked every 2 s and on failures: SMTP turns new connections away while it fails.
    const readiness = new ReadinessMonitor(dependencyChecks({ db: handle.db, boss }), log);
    readiness.start();
    cleanups.push(() => readiness.stop());
    const ctx: Context = {
      config,
      db: handle.db,
      boss,
      box: new SecretBox(secrets.secret),
      tracking: new TrackingTokens(secrets.secret),
      log,
      adminToken: secrets.adminToken,
      metrics: new Metrics({ db: handle.db, log, ready: () => readiness.ready }),
      readiness,
    };
    // Awaited at shutdown: isolated-vm must not be torn down mid-dispose.
    cleanups.push(() => closeTemplateEngine(ctx));
    const seeded = await seedDemo(ctx);

    // One pipeline for SMTP and `POST /v1/messages`.
    const accept = createPipeline(ctx, templateEngine(ctx).render);
    let smtp: SmtpListeners | undefined;
    if (roles.has('smtp')) {
      smtp = await startSmtp(ctx, accept, await loadTls(config));
    }
    let httpServer: http.Server | undefined;
    if (roles.has('api')) {
      const app = createApiApp(ctx, { accept, resolveTxt });
      httpServer = await listenHttp(app, config.httpPort, config.bind);
      log.info({ http: 'listening', port: (httpServer.address() as AddressInfo).port }, 'HTTP listening');
    }
    // Health and metrics on a port of their own, e.g. for a worker, which serves no API.
    let opsServer: http.Server | undefined;
    if (config.metricsPort !== undefined) {
      opsServer = await listenHttp(createOpsApp(ctx), config.metricsPort, config.bind);
      log.info({ http: 'listening', metrics_port: (opsServer.address() as AddressInfo).port }, 'metrics listening');
    }
    // Webhook URLs must not point at the relay's own ports (src/webhooks/target.ts).
    ctx.listening = { http: httpServer ? (httpServer.address() as AddressInfo).port : undefined, smtp: smtp?.ports ?? [], smtps: smtp?.smtpsPorts ?? [] };
    const delivery = roles.has('worker') ? await startDelivery(ctx) : undefined;
    // Stats roll-ups run beside delivery: every worker process may, each event is counted once.
    const rollup = roles.has('worker') ? startRollUp(ctx) : undefined;
    // Webhooks: events fanned out to endpoints about every second, sent with pg-boss retries.
    const webhooks = roles.has('worker') ? await startWebhooks(ctx) : undefined;
    // Verified domains' DNS records re-checked daily; claims keep processes off each other's domains.
    const rechecks = roles.has('worker') ? startDomainRechecks({ db: ctx.db, log, spfInclude: config.spfInclude }, resolveTxt) : undefined;

    let stopping: Promise<void> | undefined;
    return {
      ctx,
      smtpPorts: smtp?.ports ?? [],
      smtpsPorts: smtp?.smtpsPorts ?? [],
      httpPort: httpServer ? (httpServer.address() as AddressInfo).port : undefined,
      metricsPort: opsServer ? (opsServer.address() as AddressInfo).port : undefined,
      seeded,
      adminTokenGenerated: secrets.adminTokenGenerated,
      stop(deadlineMs = 30_000) {
        stopping ??= (async () => {
          shuttingDown = true;
          // Transactions and deliveries in flight get the deadline less a margin, kept for
          // putting back what did not finish and closing the queue and the database.
          const grace = deadlineMs - Math.min(STOP_MARGIN_MS, Math.round(deadlineMs / 5));
          await Promise.all([smtp?.close(grace), closeHttp(httpServer), closeHttp(opsServer), delivery?.stop(grace), rollup?.stop(), rechecks?.stop(), webhooks?.stop()]);
          for (const c of cleanups.reverse()) await c().catch(() => {});
          await database.close();
        })();
        return stopping;
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await database.close().catch(() => {});
    throw err;
  }
}

async function listenHttp(app: http.RequestListener, port: number, bind: string): Promise<http.Server> {
  const server = http.createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, bind, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** Stops accepting, closes idle keep-alive connections, and waits for requests in flight. */
function closeHttp(server: http.Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
