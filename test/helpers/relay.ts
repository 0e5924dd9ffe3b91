// The whole relay in this process (SMTP + API + workers) on a test database, ports chosen by
// the OS, plus helpers to create tenants, keys, domains and routes through the services.
import nodemailer from 'nodemailer';
import { startApp, type RunningApp } from '../../src/app.ts';
import type { Context } from '../../src/context.ts';
import type { Logger } from '../../src/log.ts';
import type { TxtResolver } from '../../src/services/domain-verification.service.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { ensureQueue } from '../../src/queue.ts';
import { testDatabase, type TestDatabase } from './db.ts';
import { testConfig } from './context.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface TestRelay {
  app: RunningApp;
  ctx: Context;
  tdb: TestDatabase;
  smtpPort: number;
  httpPort: number;
  close(): Promise<void>;
}

/** Tests never ask public DNS: unless a test brings its own resolver, DNS "does not answer". */
export const noDns: TxtResolver = async (hostname) => {
  throw Object.assign(new Error(`queryTxt ECONNREFUSED ${hostname} (no DNS in tests)`), { code: 'ECONNREFUSED' });
};

export async function startTestRelay(env: Record<string, string> = {}, tdb?: TestDatabase, options: { resolveTxt?: TxtResolver; log?: Logger } = {}): Promise<TestRelay> {
  const db = tdb ?? (await testDatabase());
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-data-'));
  const app = await startApp(testConfig({ DATABASE_URL: db.url, TXRELAY_DATA_DIR: dataDir, NODE_ENV: 'test-no-seed', ...env }), {
    resolveTxt: options.resolveTxt ?? noDns,
    ...(options.log ? { log: options.log } : {}),
  });
  return {
    app,
    ctx: app.ctx,
    tdb: db,
    smtpPort: app.smtpPorts[0],
    httpPort: app.httpPort!,
    async close() {
      await app.stop(2000);
      if (!tdb) await db.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TenantSetup {
  tenantId: string;
  key: string;
  testKey: string;
}

/** A tenant with a live send key, a test key, and a verified domain. */
export async function setupTenant(ctx: Context, name: string, domain = `${name}.example`): Promise<TenantSetup> {
  const t = await createTenant(ctx.db, { name });
  await addDomain(ctx.db, ctx.box, t.id, { name: domain, verified: true });
  const key = await createKey(ctx.db, t.id, { scope: 'send', mode: 'live' });
  const testKey = await createKey(ctx.db, t.id, { scope: 'send', mode: 'test' });
  return { tenantId: t.id, key: key.key, testKey: testKey.key };
}

export async function addRoute(ctx: Context, tenantId: string, route: Record<string, unknown>): Promise<string> {
  const r = await createRoute(ctx.db, ctx.box, tenantId, route);
  await ensureQueue(ctx.boss, r.id);
  return r.id;
}

/** A nodemailer SMTP client for the relay (self-signed certificate accepted). */
export function client(port: number, key?: string, options: Record<string, unknown> = {}) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    ...(key ? { auth: { user: 'anything', pass: key } } : {}),
    tls: { rejectUnauthorized: false },
    ...options,
  } as never);
}

/** Polls until fn returns a truthy value, bounded in time. */
export async function eventually<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends one message with nodemailer; the server's reply text, or the refusal's response. */
export async function sendForReply(port: number, key: string | undefined, mail: Record<string, unknown>): Promise<string> {
  const transport = client(port, key);
  try {
    const info = await transport.sendMail(mail);
    return info.response;
  } catch (err) {
    return String((err as { response?: string }).response ?? (err as Error).message);
  } finally {
    transport.close();
  }
}
