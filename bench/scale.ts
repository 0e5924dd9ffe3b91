// `npm run bench:scale` (also the last part of `npm run bench`): do stats and the message log stay
// fast with a million messages? Prints timings, asserts nothing.
//
//   bench process ── bulk INSERT … SELECT generate_series ──▶ embedded PostgreSQL (own temp dir)
//        │                                                        ▲
//        └── HTTP GET /v1/stats, /v1/messages … ──▶ relay child (TXRELAY_ROLES=api) ─┘
//
// The messages are seeded in bulk (not through SMTP: a million messages at a few hundred per
// second would take an hour), with the rows the real pipeline writes: message, recipient, and
// the events of its life (accepted; sent, deferred then sent, failed or still queued; opens and
// clicks for some). The stats roll-up then folds the events into stats_hourly with the relay's
// own code, and ANALYZE gives the planner the statistics a production database has. Each query
// is then timed over HTTP against the API process, as a dashboard would call it: the median and
// p95 of SCALE_REPEAT calls after one untimed warm-up call.
//
// Env: SCALE_MESSAGES (1,000,000), SCALE_DAYS (30: the seeded messages spread over that many
// days up to now), SCALE_REPEAT (15).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { sql } from 'kysely';
import { openDatabase, type Db } from '../src/db/database.ts';
import { freePort, startEmbedded } from '../src/db/embedded.ts';
import { rollUp } from '../src/db/stats.repository.ts';
import { cli, createDatabase, stopChild } from './harness.ts';
import { median, percentile } from './load.ts';

function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  return n;
}

const MESSAGES = envInt('SCALE_MESSAGES', 1_000_000, 1_000, 20_000_000);
const DAYS = envInt('SCALE_DAYS', 30, 1, 365);
const REPEAT = envInt('SCALE_REPEAT', 15, 1, 1_000);
/** Messages per INSERT statement while seeding (one transaction each, progress after each). */
const CHUNK = 100_000;
/** A second tenant with a tenth as many messages, so every query has someone else's rows to skip. */
const OTHER_MESSAGES = Math.ceil(MESSAGES / 10);
const TAGS = ['welcome', 'password-reset', 'order-confirmation', 'shipping-update', 'invoice', 'receipt', 'login-code', 'newsletter-confirm', 'comment-reply', 'weekly-digest', 'trial-ending', 'untagged'];
/** Distinct recipient addresses: each appears in about MESSAGES / RECIPIENTS messages. */
const RECIPIENTS = 200_000;
const DAY_MS = 86_400_000;

const log = (line: string) => process.stderr.write(line + '\n');
const ms = (n: number) => n.toFixed(1);

interface Seeded {
  tenantId: string;
  routes: { main: string; backup: string };
}

/**
 * Inserts messages [from, to) of a tenant in one statement: each message with one recipient and
 * the events of its life. The outcome is chosen by the message number, so the counts are known:
 * of every 100, 90 sent, 2 deferred then sent, 3 failed, 2 deferred (a retry due), 3 queued; a
 * third of the sent ones opened, a tenth clicked.
 */
async function seedChunk(db: Db, s: Seeded, from: number, to: number, total: number): Promise<void> {
  const end = Date.now();
  const span = DAYS * DAY_MS;
  await sql`
    WITH s AS (
      SELECT i, gen_random_uuid() AS id,
             to_timestamp((${end - span}::bigint + (i::bigint * ${span}::bigint) / ${total}::bigint) / 1000.0) AS at,
             (${sql.val(TAGS)}::text[])[1 + (i * 7) % ${TAGS.length}] AS tag,
             CASE WHEN i % 100 < 92 THEN 'sent' WHEN i % 100 < 95 THEN 'failed' WHEN i % 100 < 97 THEN 'deferred' ELSE 'queued' END AS status,
             i % 100 BETWEEN 90 AND 91 AS retried,
             CASE WHEN i % 50 = 0 THEN 'backup' ELSE 'main' END AS route_name
        FROM generate_series(${from}::int, ${to - 1}::int) i
    ), m AS (
      INSERT INTO messages (id, tenant_id, status, tag, route_id, route_name, test_mode, mail_from, from_address, subject,
                            message_id_header, size, mime, verdicts, attempts, created_at, updated_at, sent_at)
      SELECT id, ${s.tenantId}::uuid, status, tag,
             CASE WHEN route_name = 'main' THEN ${s.routes.main}::uuid ELSE ${s.routes.backup}::uuid END, route_name, false,
             'bounce@bench.example', 'app@bench.example', 'Your ' || tag || ' #' || i, '<' || id || '@relay.bench.local>', 5120,
             convert_to('From: app@bench.example' || chr(13) || chr(10) || 'Subject: ' || tag || chr(13) || chr(10) || chr(13) || chr(10) || '<p>hello</p>', 'UTF8'),
             '[]', CASE WHEN status = 'queued' THEN 0 WHEN retried THEN 2 ELSE 1 END, at, at, CASE WHEN status = 'sent' THEN at + interval '2 seconds' END
        FROM s
      RETURNING id
    ), r AS (
      INSERT INTO recipients (message_id, address, status, response)
      SELECT id, 'user' || ((i::bigint * 7919) % ${RECIPIENTS}) || '@example.net', status,
             CASE status WHEN 'sent' THEN '250 2.0.0 Ok: queued' WHEN 'failed' THEN '550 5.1.1 no such user' WHEN 'deferred' THEN '451 4.3.0 try again later' END
        FROM s
    )
    INSERT INTO events (message_id, tenant_id, type, tag, route, at, detail)
    SELECT s.id, ${s.tenantId}::uuid, e.type, s.tag, s.route_name, s.at + e.after, e.detail::jsonb
      FROM s
      CROSS JOIN LATERAL (VALUES
        ('accepted', interval '0', '{"recipients": 1}', true),
        ('deferred', interval '1 second', '{"attempt": 1, "response": "451 4.3.0 try again later"}', s.retried OR s.status = 'deferred'),
        ('sent', interval '2 seconds', '{"attempt": 1, "response": "250 2.0.0 Ok: queued"}', s.status = 'sent'),
        ('failed', interval '2 seconds', '{"attempt": 1, "response": "550 5.1.1 no such user"}', s.status = 'failed'),
        ('opened', interval '1 hour', '{"first": true, "user_agent": "bench"}', s.status = 'sent' AND s.i % 3 = 0),
        ('opened', interval '2 hours', '{"first": false, "user_agent": "bench"}', s.status = 'sent' AND s.i % 6 = 0),
        ('clicked', interval '1 hour 1 minute', '{"first": true, "url": "https://example.com/"}', s.status = 'sent' AND s.i % 10 = 0)
      ) AS e(type, after, detail, happened)
     WHERE e.happened
  `.execute(db);
}

/** A relay child with the api role only, waited for until /readyz answers 200 (up to 60 s). */
async function startApi(env: NodeJS.ProcessEnv, port: number) {
  const child = spawn(process.execPath, [path.resolve(import.meta.dirname, '../src/cli.ts'), 'start'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-4000)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`relay exited with ${child.exitCode}: ${stderr}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
    if (ok) return child;
    if (Date.now() > deadline) {
      await stopChild(child, 2_000);
      throw new Error(`relay API not ready on port ${port} within 60 s: ${stderr}`);
    }
    await sleep(200);
  }
}

interface Timing {
  name: string;
  p50: number;
  p95: number;
  max: number;
  /** Items (log) or tags (stats) in the answer: shows the query found something. */
  size: number;
}

async function time(name: string, url: string, auth: string): Promise<Timing> {
  const call = async () => {
    const started = performance.now();
    const res = await fetch(url, { headers: { authorization: `Bearer ${auth}` } });
    const body = (await res.json()) as { items?: unknown[]; tags?: unknown[] };
    const elapsed = performance.now() - started;
    if (!res.ok) throw new Error(`${name}: HTTP ${res.status} ${JSON.stringify(body).slice(0, 300)}`);
    return { elapsed, size: (body.items ?? body.tags ?? []).length };
  };
  const { size } = await call();
  const runs: number[] = [];
  for (let i = 0; i < REPEAT; i++) runs.push((await call()).elapsed);
  return { name, p50: median(runs), p95: percentile(runs, 95), max: Math.max(...runs), size };
}

async function main(): Promise<void> {
  const started = performance.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-scale-'));
  const cleanups: (() => Promise<void> | void)[] = [() => fs.rmSync(tmp, { recursive: true, force: true })];
  let interrupted = false;
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await Promise.resolve(step()).catch((err: Error) => log(`cleanup: ${err.message}`));
    cleanups.length = 0;
  };
  process.once('SIGINT', () => {
    interrupted = true;
    void cleanup().then(() => process.exit(130));
  });
  try {
    if (process.getuid?.() === 0) fs.chmodSync(tmp, 0o777);
    log(`scale: ${MESSAGES.toLocaleString('en')} messages over ${DAYS} days (+${OTHER_MESSAGES.toLocaleString('en')} of another tenant), ${REPEAT} timed calls per query (tmp ${tmp})`);
    const pgServer = await startEmbedded({ dir: path.join(tmp, 'pg'), password: 'bench' });
    cleanups.push(() => pgServer.stop());
    const url = await createDatabase(pgServer.url, 'scale');
    const httpPort = await freePort();
    const adminToken = 'bench-admin-token-0123456789';
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: url,
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      TXRELAY_DATA_DIR: path.join(tmp, 'data'),
      TXRELAY_HTTP_PORT: String(httpPort),
      TXRELAY_SMTP_PORTS: '',
      TXRELAY_BIND: '127.0.0.1',
      TXRELAY_HOSTNAME: 'relay.bench.local',
      TXRELAY_ADMIN_TOKEN: adminToken,
      TXRELAY_SECRET: 'bench-secret-0123456789-0123456789-0123456789',
      TXRELAY_ROLES: 'api',
    };

    // Tenants, keys and routes as an operator makes them (the CLI migrates the database first).
    const tenants: Seeded[] = [];
    let key = '';
    for (const name of ['big', 'other']) {
      const t = await cli(env, ['tenant', 'create', name]);
      // Nothing delivers here (no worker role): the smtp route only has to exist.
      const main = await cli(env, ['route', 'create', name, 'main', '--transport', 'smtp', '--config', JSON.stringify({ host: '127.0.0.1', port: 2525 })]);
      const backup = await cli(env, ['route', 'create', name, 'backup', '--transport', 'capture']);
      tenants.push({ tenantId: String(t.id), routes: { main: String(main.id), backup: String(backup.id) } });
      if (name === 'big') key = String((await cli(env, ['key', 'create', name, '--scope', 'read'])).key);
    }

    const { db, close } = openDatabase(url, { max: 2 });
    cleanups.push(() => close());
    const seedStarted = performance.now();
    for (const [s, count] of [[tenants[0], MESSAGES], [tenants[1], OTHER_MESSAGES]] as const) {
      for (let from = 0; from < count; from += CHUNK) {
        if (interrupted) return;
        await seedChunk(db, s, from, Math.min(count, from + CHUNK), count);
        log(`  seeded ${Math.min(count, from + CHUNK).toLocaleString('en')} / ${count.toLocaleString('en')}`);
      }
    }
    const seedS = (performance.now() - seedStarted) / 1000;
    const events = Number((await sql<{ n: string }>`SELECT count(*) AS n FROM events`.execute(db)).rows[0].n);

    const rollStarted = performance.now();
    for (let n = 1; n > 0 && !interrupted; ) n = await rollUp(db, 100_000);
    const rollS = (performance.now() - rollStarted) / 1000;
    await sql`VACUUM ANALYZE`.execute(db);
    const hourlyRows = Number((await sql<{ n: string }>`SELECT count(*) AS n FROM stats_hourly`.execute(db)).rows[0].n);
    log(`  seeded in ${seedS.toFixed(0)} s (${events.toLocaleString('en')} events), rolled up in ${rollS.toFixed(0)} s into ${hourlyRows.toLocaleString('en')} hourly rows`);

    const api = await startApi(env, httpPort);
    cleanups.push(() => stopChild(api, 10_000));
    const base = `http://127.0.0.1:${httpPort}`;
    const now = Date.now();
    const iso = (t: number) => new Date(t).toISOString();
    const period = `from=${iso(now - DAYS * DAY_MS)}&to=${iso(now)}`;
    const day10 = `since=${iso(now - 10 * DAY_MS)}&until=${iso(now - 9 * DAY_MS)}`;
    const queries: [string, string, string][] = [
      [`stats ${DAYS} d by day`, `/v1/stats?${period}&interval=day`, key],
      ['stats 7 d by hour', `/v1/stats?from=${iso(now - 7 * DAY_MS)}&to=${iso(now)}&interval=hour`, key],
      [`stats ${DAYS} d, tag + route`, `/v1/stats?${period}&tag=welcome&route=main`, key],
      [`stats ${DAYS} d, all tenants (admin)`, `/admin/stats?${period}`, adminToken],
      ['log first page', '/v1/messages?limit=50', key],
      ['log tag', '/v1/messages?tag=invoice&limit=50', key],
      ['log status=failed', '/v1/messages?status=failed&limit=50', key],
      ['log tag + status=queued', '/v1/messages?tag=invoice&status=queued&limit=50', key],
      ['log unknown tag (no match)', '/v1/messages?tag=no-such-tag&limit=50', key],
      ['log recipient', '/v1/messages?recipient=user4242@example.net&limit=50', key],
      ['log one day, 10 days ago', `/v1/messages?${day10}&limit=50`, key],
      ['log one day + tag + status', `/v1/messages?${day10}&tag=invoice&status=failed&limit=50`, key],
      ['log all tenants (admin)', '/admin/messages?limit=50', adminToken],
      ['capture inbox (2% of messages)', '/v1/messages?captured=true&limit=50', key],
    ];
    const results: Timing[] = [];
    for (const [name, pathAndQuery, auth] of queries) {
      if (interrupted) return;
      results.push(await time(name, base + pathAndQuery, auth));
    }

    const width = Math.max(...results.map((r) => r.name.length));
    for (const r of results) {
      process.stdout.write(`scale query="${r.name}" messages=${MESSAGES} p50_ms=${ms(r.p50)} p95_ms=${ms(r.p95)} max_ms=${ms(r.max)} items=${r.size}\n`);
    }
    process.stdout.write(
      [
        '',
        `txrelay scale bench: ${MESSAGES.toLocaleString('en')} messages (+${OTHER_MESSAGES.toLocaleString('en')} of another tenant), ${events.toLocaleString('en')} events over ${DAYS} days, node ${process.version}, ${os.cpus().length} CPUs`,
        `${'query'.padEnd(width)}  p50 ms  p95 ms  max ms  items`,
        ...results.map((r) => `${r.name.padEnd(width)}  ${ms(r.p50).padStart(6)}  ${ms(r.p95).padStart(6)}  ${ms(r.max).padStart(6)}  ${String(r.size).padStart(5)}`),
        `HTTP round trip to an API-only relay, ${REPEAT} calls after a warm-up; target: under 100 ms each.`,
        `seeding ${seedS.toFixed(0)} s, roll-up ${rollS.toFixed(0)} s; total ${((performance.now() - started) / 1000).toFixed(0)} s`,
        '',
      ].join('\n'),
    );
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  log(`scale bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
