// Starts the relay: database (embedded when DATABASE_URL is unset), migrations, the queue, and
// the roles this process runs (TXRELAY_ROLES: smtp, api, worker). Returns a handle to stop it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApiApp } from './api/app.ts';
import type { Config } from './config.ts';
import type { Context } from './context.ts';
import { SecretBox } from './crypto.ts';
import { openConfiguredDatabase } from './db/configured.ts';
import { migrateToLatest } from './db/migrate.ts';
import { startDelivery } from './delivery/worker.ts';
import { startRollUp } from './events/rollup.ts';
import { startDomainRechecks, systemTxtResolver, type TxtResolver } from './services/domain-verification.service.ts';
import { createLogger, type Logger } from './log.ts';
import { createPipeline } from './pipeline/index.ts';
import { createBoss } from './queue.ts';
import { resolveSecrets } from './secrets.ts';
import { seedDemo, type SeedResult } from './seed.ts';
import { startSmtp, type SmtpListeners } from './smtp/server.ts';
import { loadTls } from './smtp/tls.ts';
import { closeTemplateEngine, templateEngine } from './templates/index.ts';

export interface RunningApp {
  ctx: Context;
  smtpPorts: number[];
  smtpsPorts: number[];
  httpPort: number | undefined;
  seeded: SeedResult | undefined;
  adminTokenGenerated: boolean;
  /** Graceful: stop accepting, let transactions and deliveries in flight finish, close. */
  stop(deadlineMs?: number): Promise<void>;
}

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

    const ctx: Context = {
      config,
      db: handle.db,
      boss,
      box: new SecretBox(secrets.secret),
      log,
      adminToken: secrets.adminToken,
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
      httpServer = http.createServer(app);
      await new Promise<void>((resolve, reject) => {
        httpServer!.once('error', reject);
        httpServer!.listen(config.httpPort, config.bind, () => resolve());
      });
      log.info({ http: 'listening', port: (httpServer.address() as AddressInfo).port }, 'HTTP listening');
    }
    const delivery = roles.has('worker') ? await startDelivery(ctx) : undefined;
    // Stats roll-ups run beside delivery: every worker process may, each event is counted once.
    const rollup = roles.has('worker') ? startRollUp(ctx) : undefined;
    // Verified domains' DNS records re-checked daily; claims keep processes off each other's domains.
    const rechecks = roles.has('worker') ? startDomainRechecks({ db: ctx.db, log, spfInclude: config.spfInclude }, resolveTxt) : undefined;

    let stopping: Promise<void> | undefined;
    return {
      ctx,
      smtpPorts: smtp?.ports ?? [],
      smtpsPorts: smtp?.smtpsPorts ?? [],
      httpPort: httpServer ? (httpServer.address() as AddressInfo).port : undefined,
      seeded,
      adminTokenGenerated: secrets.adminTokenGenerated,
      stop(deadlineMs = 30_000) {
        stopping ??= (async () => {
          shuttingDown = true;
          const closeHttp = httpServer
            ? new Promise<void>((resolve) => {
                httpServer!.close(() => resolve());
                httpServer!.closeIdleConnections();
              })
            : Promise.resolve();
          await Promise.all([smtp?.close(deadlineMs), closeHttp, delivery?.stop(deadlineMs), rollup?.stop(), rechecks?.stop()]);
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
