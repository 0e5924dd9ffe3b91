// Health vs readiness: with PostgreSQL stopped under a running relay, /healthz still answers 200,
// /readyz 503, and new SMTP connections get 421 4.3.0 at once (the readiness monitor's answer,
// not a query per connection); when PostgreSQL is back, all of it recovers by itself.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createLogger } from '../../src/log.ts';
import { ReadinessMonitor, runChecks } from '../../src/readiness.ts';
import { createKey } from '../../src/services/tenants.service.ts';
import { callJson } from '../helpers/http.ts';
import { eventually, sendForReply, setupTenant, startTestRelay, addRoute, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import { counter, parseExposition, series } from './prometheus.ts';

let tdb: TestDatabase;
let relay: TestRelay;
let acme: TenantSetup;
let base: string;
let dbDown = false;

const silent = createLogger('silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function greeting(): Promise<string> {
  const c = await RawSmtp.connect(relay.smtpPort);
  c.close();
  return c.greeting;
}

async function metrics() {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200, 'metrics are served while the database is down too');
  return parseExposition(await res.text());
}

before(async () => {
  tdb = await testDatabase();
  relay = await startTestRelay({}, tdb);
  base = `http://127.0.0.1:${relay.httpPort}`;
  acme = await setupTenant(relay.ctx, 'acme');
  await addRoute(relay.ctx, acme.tenantId, { name: 'main', transport: 'capture' });
});

after(async () => {
  if (dbDown) await tdb.restart().catch(() => {});
  await relay?.close();
  await tdb?.close();
});

test('a database outage: /healthz 200, /readyz 503, SMTP 421 4.3.0 on connect; then recovery', { timeout: 120_000 }, async (t) => {
  if (!tdb.server) return t.skip('needs the embedded server (DATABASE_URL is set)');
  assert.equal((await callJson(base, 'GET', '/readyz', { token: null })).status, 200);
  assert.match(await greeting(), /^220 /);
  const before = await metrics();
  assert.equal(series(before, 'txrelay_ready'), 1);

  // A session opened before the outage keeps going; its messages get 451 4.3.0 meanwhile.
  const open = await RawSmtp.connect(relay.smtpPort);
  await open.cmd('EHLO early.test');
  assert.match(await open.cmd(`AUTH PLAIN ${plain(acme.key)}`), /^235 /);

  // And one that has not authenticated yet: its AUTH during the outage is our fault, not its.
  // With a key this relay has not looked up: one it has is answered from its cache of keys for
  // 2 s (pipeline/authenticate.ts), without the database.
  const unseen = await createKey(relay.ctx.db, acme.tenantId, { scope: 'send' });
  const unauthenticated = await RawSmtp.connect(relay.smtpPort);
  await unauthenticated.cmd('EHLO late.test');

  dbDown = true;
  await tdb.server.stop();
  try {
    const authReply = await unauthenticated.cmd(`AUTH PLAIN ${plain(unseen.key)}`);
    assert.match(authReply, /^4\d\d 4\.\d\.\d /, 'AUTH the database cannot check is a 4xx, not 535');

    const health = await callJson(base, 'GET', '/healthz', { token: null });
    assert.equal(health.status, 200, 'liveness does not depend on the database');
    const ready = await callJson(base, 'GET', '/readyz', { token: null });
    assert.equal(ready.status, 503);
    assert.equal(ready.body.status, 'unavailable');
    assert.match(ready.body.checks.database, /^unavailable \(/);

    // The monitor checks every 2 s: within a few seconds new connections are turned away.
    const refused = await eventually(async () => {
      const g = await greeting();
      return g.startsWith('220') ? undefined : g;
    }, 20_000, 'new connections refused');
    assert.match(refused, /^421 4\.3\.0 /);
    // The queue gauges cannot be read: once the 5 s cache has passed they are left out of the
    // scrape rather than kept stale, and the scrape itself still succeeds.
    const during = await eventually(async () => {
      const m = await metrics();
      return m.some((s) => s.name === 'txrelay_queue_messages') ? undefined : m;
    }, 20_000, 'queue gauges dropped');
    assert.equal(series(during, 'txrelay_ready'), 0);
    assert.ok(counter(during, 'txrelay_smtp_connections_total', { outcome: 'unready' }) >= 1);
    assert.equal(counter(during, 'txrelay_smtp_auth_total', { outcome: 'error' }) - counter(before, 'txrelay_smtp_auth_total', { outcome: 'error' }), 1);
    assert.equal(counter(during, 'txrelay_smtp_auth_total', { outcome: 'invalid' }), counter(before, 'txrelay_smtp_auth_total', { outcome: 'invalid' }));

    // The session from before is answered, never with 250 or 5xx.
    assert.match(await open.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
    assert.match(await open.cmd('RCPT TO:<user@dest.example>'), /^250 /);
    assert.match(await open.data('From: app@acme.example\nTo: user@dest.example\nSubject: outage\nContent-Type: text/html\n\n<p>x</p>\n'), /^451 4\.3\.0 /);
  } finally {
    open.close();
    unauthenticated.close();
    await tdb.restart();
    dbDown = false;
  }

  await eventually(async () => (await greeting()).startsWith('220'), 20_000, 'new connections greeted again');
  assert.equal((await callJson(base, 'GET', '/readyz', { token: null })).status, 200);
  assert.equal(series(await metrics(), 'txrelay_ready'), 1);
  assert.match(await sendForReply(relay.smtpPort, acme.key, { from: 'app@acme.example', to: 'user@dest.example', subject: 'after', html: '<p>back</p>' }), /^250 /);
});

test('runChecks: each check bounded in time, failures named by their code only', async () => {
  const report = await runChecks(
    {
      fine: async () => {},
      refused: async () => {
        throw Object.assign(new Error('connect ECONNREFUSED 10.1.2.3:5432'), { code: 'ECONNREFUSED' });
      },
      hangs: () => new Promise<void>(() => {}),
      plain: async () => {
        throw new Error('no code');
      },
    },
    50,
  );
  assert.equal(report.ok, false);
  assert.deepEqual(report.checks, { fine: 'ok', refused: 'unavailable (ECONNREFUSED)', hangs: 'unavailable (ETIMEDOUT)', plain: 'unavailable (error)' });
  assert.deepEqual(report.failures.map((f) => f.check), ['refused', 'hangs', 'plain']);
  assert.ok(!JSON.stringify(report.checks).includes('10.1.2.3'), 'no internal host names in the answer');
});

test('ReadinessMonitor: turns unready and ready again on its checks, logging each change once', async () => {
  let up = true;
  let calls = 0;
  const lines: string[] = [];
  const log = createLogger('info', new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
  const monitor = new ReadinessMonitor(
    {
      database: async () => {
        calls++;
        if (!up) throw Object.assign(new Error('down'), { code: 'ECONNREFUSED' });
      },
    },
    log,
    { intervalMs: 60_000 },
  );
  assert.equal(monitor.ready, true, 'starts ready');
  up = false;
  // Concurrent checks share one run.
  const [a, b] = await Promise.all([monitor.check(), monitor.check()]);
  assert.deepEqual([a, b, calls], [false, false, 1]);
  assert.equal(monitor.ready, false);
  await monitor.check();
  up = true;
  // suspect() right after a check is ignored (cooldown), then checks.
  monitor.suspect();
  assert.equal(calls, 2);
  await sleep(600);
  monitor.suspect();
  await eventually(async () => monitor.ready, 5_000, 'ready again');
  assert.equal(calls, 3);
  await monitor.stop();
  const changes = lines.map((l) => JSON.parse(l) as { readiness?: string }).map((l) => l.readiness);
  assert.deepEqual(changes, ['unready', 'ready']);
});

test('ReadinessMonitor: checks on its own every interval', async () => {
  let calls = 0;
  const monitor = new ReadinessMonitor({ x: async () => void calls++ }, silent, { intervalMs: 20 });
  monitor.start();
  await eventually(async () => calls >= 3, 5_000, 'periodic checks');
  await monitor.stop();
  const stoppedAt = calls;
  await sleep(100);
  assert.equal(calls, stoppedAt, 'no checks after stop()');
});
