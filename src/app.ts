// Starts the relay: database (embedded when DATABASE_URL is unset), migrations, the queue, and
// the roles this process runs (TXRELAY_ROLES: smtp, api, worker). Returns a handle to stop it.
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { createApiApp } from './api/app.ts';
import type { Config } from './config.ts';
import type { Context } from './context.ts';
import { SecretBox } from './crypto.ts';
import { openDatabase, type DbHandle } from './db/database.ts';
import { startEmbedded, type EmbeddedServer } from './db/embedded.ts';
import { migrateToLatest } from './db/migrate.ts';
import { startDelivery } from './delivery/worker.ts';
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

export interface Database {
  handle: DbHandle;
  embedded?: EmbeddedServer;
}

/** Connects to DATABASE_URL, or starts the embedded server under the data dir. */
export async function openConfiguredDatabase(config: Config, pgPassword: string, log: Logger): Promise<Database> {
  let url = config.databaseUrl;
  let embedded: EmbeddedServer | undefined;
  if (!url) {
    embedded = await startEmbedded({
      dir: path.join(config.dataDir, 'pg'),
      password: pgPassword,
      onLog: (line) => log.debug({ postgres: line.trim() }),
    });
    url = embedded.url;
    log.info({ dataDir: config.dataDir }, 'embedded PostgreSQL started');
  }
  return { handle: openDatabase(url, { max: 20 }), embedded };
}

export async function startApp(config: Config, options: { log?: Logger } = {}): Promise<RunningApp> {
  const log = options.log ?? createLogger(config.logLevel);
  const secrets = resolveSecrets(config);
  const { handle, embedded } = await openConfiguredDatabase(config, secrets.pgPassword, log);
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

    let smtp: SmtpListeners | undefined;
    if (roles.has('smtp')) {
      smtp = await startSmtp(ctx, createPipeline(ctx, templateEngine(ctx).render), await loadTls(config));
    }
    let httpServer: http.Server | undefined;
    if (roles.has('api')) {
      const app = createApiApp(ctx);
      httpServer = http.createServer(app);
      await new Promise<void>((resolve, reject) => {
        httpServer!.once('error', reject);
        httpServer!.listen(config.httpPort, config.bind, () => resolve());
      });
      log.info({ http: 'listening', port: (httpServer.address() as AddressInfo).port }, 'HTTP listening');
    }
    const delivery = roles.has('worker') ? await startDelivery(ctx) : undefined;

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
          await Promise.all([smtp?.close(deadlineMs), closeHttp, delivery?.stop(deadlineMs)]);
          for (const c of cleanups.reverse()) await c().catch(() => {});
          await handle.close();
          if (embedded) await embedded.stop();
        })();
        return stopping;
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await handle.close().catch(() => {});
    if (embedded) await embedded.stop().catch(() => {});
    throw err;
  }
}
