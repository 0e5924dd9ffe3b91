// Scale-out (issue 9): many relay processes on one PostgreSQL. Two `smtp,api` processes and two
// `worker` processes (`node src/cli.ts start`, TXRELAY_ROLES) start at once on an empty
// database: migrations race and must be applied once. A client spreads messages over both SMTP
// ports; a real upstream holds each reply to the final dot a little, so deliveries are in flight
// when one worker is SIGKILLed. Every acknowledged message must reach the upstream exactly once
// (but for the window no relay can close: the upstream accepted, the worker died before recording
// it), every message must end `sent`, and the survivor must finish the dead worker's jobs once
// their pg-boss heartbeat lapses (how long that took is reported, not asserted).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { SecretBox } from '../../src/crypto.ts';
import { DEFAULT_ROUTE_CONCURRENCY } from '../../src/delivery/transports/index.ts';
import { freePort } from '../../src/db/embedded.ts';
import { MIGRATIONS_DIR } from '../../src/db/migrate.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { startCountingUpstream, type Accepted, type CountingUpstream } from '../delivery/counting-upstream.ts';
import { pendingWork } from '../faults/invariants.ts';
import { TEST_SECRET } from '../helpers/context.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { callJson } from '../helpers/http.ts';
import { assertAlive, killHard, spawnRelay, threadsOf, waitStarted, type RelayProcess } from '../helpers/process.ts';
import { queueStates } from '../helpers/queue-state.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';

const QUEUED = /^250 2\.\d{1,3}\.\d{1,3} Ok: queued as ([0-9a-f-]{36})$/;
/** Messages sent, spread over both SMTP ports. */
const MESSAGES = 300;
/** Client connections per SMTP port, each sending its share one message after another. */
const CONNECTIONS_PER_PORT = 3;
/** The upstream holds each reply to the final dot this long: deliveries overlap the kill. */
const UPSTREAM_DELAY_MS = 60;
/** The victim is killed once both workers delivered this many and it has deliveries open. */
const DELIVERED_BEFORE_KILL = 15;
/**
 * Bounds on the waits. The dead worker's jobs come back after their heartbeat (10 s) lapses,
 * the next supervise pass (every 10 s) fails them, and pg-boss's first retry delay (2–4 s,
 * src/queue.ts) passes; its route slots are free again once their leases (30 s) run out.
 */
const START_TIMEOUT_MS = 60_000;
const KILL_WAIT_MS = 60_000;
const DELIVERY_WAIT_MS = 90_000;

let tdb: TestDatabase;
let upstream: CountingUpstream;
let dir: string;
const ports = { smtpA: 0, smtpB: 0, httpA: 0, httpB: 0 };
const relays: RelayProcess[] = [];
let front: RelayProcess[] = [];
let workers: RelayProcess[] = [];

/** One pino line of a relay's log. */
type LogLine = Record<string, unknown> & { msg?: string };

function logLines(relay: RelayProcess): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of relay.log().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as LogLine);
    } catch {
      // A line cut off by the read (the process is writing): not needed.
    }
  }
  return lines;
}

/** A worker's EHLO name, which the upstream records for each message. */
const hostOf = (name: string) => `${name}.test`;

function spawnAll(): void {
  // A data dir each, as on separate hosts: what a process keeps there (a generated TLS
  // certificate) is not written by several processes at once.
  const common = (name: string) => ({ DATABASE_URL: tdb.url, TXRELAY_DATA_DIR: path.join(dir, name), TXRELAY_SMTPS_PORTS: '', TXRELAY_HOSTNAME: hostOf(name) });
  const smtpApi = (name: string, smtp: number, http: number) =>
    spawnRelay(name, dir, { ...common(name), TXRELAY_ROLES: 'smtp,api', TXRELAY_SMTP_PORTS: String(smtp), TXRELAY_HTTP_PORT: String(http) });
  const worker = (name: string) => spawnRelay(name, dir, { ...common(name), TXRELAY_ROLES: 'worker', TXRELAY_SMTP_PORTS: '' });
  front = [smtpApi('front-a', ports.smtpA, ports.httpA), smtpApi('front-b', ports.smtpB, ports.httpB)];
  workers = [worker('worker-a'), worker('worker-b')];
  relays.push(...front, ...workers);
}

interface Sent {
  subject: string;
  port: number;
  reply: string;
  id?: string;
}

/** One client connection: AUTH once, then its messages one after another. */
async function sendOver(port: number, key: string, subjects: string[], out: Sent[]): Promise<void> {
  const conn = await RawSmtp.connect(port);
  try {
    const ehlo = await conn.cmd('EHLO client.test');
    assert.match(ehlo, /^250/, `EHLO on ${port}`);
    assert.match(await conn.cmd(`AUTH PLAIN ${plain(key)}`), /^235/, `AUTH on ${port}`);
    for (const subject of subjects) {
      const mail = await conn.cmd('MAIL FROM:<app@acme.example>');
      const rcpt = mail.startsWith('250') ? await conn.cmd('RCPT TO:<user@dest.example>') : mail;
      const reply = rcpt.startsWith('250') ? await conn.data(`From: App <app@acme.example>\nTo: user@dest.example\nSubject: ${subject}\nContent-Type: text/html\n\n<p>${subject}</p>\n`) : rcpt;
      const id = QUEUED.exec(reply)?.[1];
      out.push({ subject, port, reply, ...(id ? { id } : {}) });
      if (!reply.startsWith('250') && !/^[45]/.test(reply)) break;
    }
  } finally {
    conn.close();
  }
}

/** The relay's own message id (the Message-ID header is `<id@host>`). */
const relayIdOf = (a: Accepted) => a.messageId?.split('@')[0];

before(async () => {
  tdb = await testDatabase({ migrate: false });
  upstream = await startCountingUpstream({ dataDelayMs: UPSTREAM_DELAY_MS });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-scale-out-'));
  for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
  // All four at once, so that their migrations race.
  spawnAll();
  await Promise.all(relays.map((r) => waitStarted(r, START_TIMEOUT_MS)));
}, { timeout: START_TIMEOUT_MS + 60_000 });

after(async () => {
  for (const r of relays) await killHard(r);
  await upstream?.close();
  await tdb?.close();
  if (dir) {
    if (process.env.KEEP_FAULT_LOGS) console.log(`relay logs kept in ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('two smtp,api and two worker processes started at once on an empty database: migrated once, all up', async () => {
  for (const r of relays) assertAlive(r);
  // Each migration applied by exactly one process (Kysely's Migrator holds an advisory lock).
  const files = fs.readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '')).sort();
  const appliedBy = new Map<string, string[]>();
  for (const r of relays) {
    for (const line of logLines(r).filter((l) => l.msg === 'migrations applied')) {
      for (const m of line.migrations as string[]) appliedBy.set(m, [...(appliedBy.get(m) ?? []), r.name]);
    }
  }
  assert.deepEqual([...appliedBy.keys()].sort(), files, 'every migration was applied by one of the processes');
  for (const [m, by] of appliedBy) assert.equal(by.length, 1, `${m} applied once, not by ${by.join(' and ')}`);
  const recorded = await sql<{ name: string }>`SELECT name FROM kysely_migration ORDER BY name`.execute(tdb.db);
  assert.deepEqual(recorded.rows.map((r) => r.name), files);
  // pg-boss installed its schema once too (under its own advisory lock).
  const version = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pgboss.version`.execute(tdb.db);
  assert.equal(version.rows[0].n, 1);

  // Each process runs its roles and no other: SMTP and HTTP on the front processes only.
  const started = (r: RelayProcess) => logLines(r).find((l) => l.msg === 'txrelay started')!;
  assert.deepEqual(started(front[0]).smtp, [ports.smtpA]);
  assert.deepEqual(started(front[1]).smtp, [ports.smtpB]);
  assert.equal(started(front[0]).http, ports.httpA);
  assert.equal(started(front[1]).http, ports.httpB);
  for (const w of workers) {
    assert.deepEqual(started(w).roles, ['worker']);
    assert.deepEqual(started(w).smtp, [], `${w.name} listens for no SMTP`);
    assert.equal(started(w).http, undefined, `${w.name} serves no API`);
  }
  for (const port of [ports.httpA, ports.httpB]) {
    const ready = await callJson(`http://127.0.0.1:${port}`, 'GET', '/readyz', { token: null });
    assert.equal(ready.status, 200, `the API on ${port} is ready: ${ready.text}`);
  }

  // `start` lowered the priority of V8's collector threads (TXRELAY_GC_THREAD_NICE, 19 by
  // default), and of no other thread.
  if (process.platform === 'linux') {
    for (const r of relays) {
      const named = threadsOf(r.child.pid!);
      assert.ok(named.some((t) => t.name === 'V8Worker'), `${r.name} has V8 helper threads`);
      assert.deepEqual(started(r).collector, { helperThreadsReniced: named.filter((t) => t.name === 'V8Worker').length, heapGrowthPercent: 200 });
      const main = os.getPriority(r.child.pid);
      for (const t of named) assert.equal(os.getPriority(t.id), t.name === 'V8Worker' ? 19 : main, `${r.name}: thread ${t.id} (${t.name})`);
    }
  }
});

test('messages over both SMTP ports are delivered once although a worker is SIGKILLed mid-delivery', { timeout: 200_000 }, async (t) => {
  for (const r of relays) assertAlive(r);
  const box = new SecretBox(TEST_SECRET);
  const tenant = await createTenant(tdb.db, { name: 'acme' });
  await addDomain(tdb.db, box, tenant.id, { name: 'acme.example', verified: true });
  const { key } = await createKey(tdb.db, tenant.id, { scope: 'send', mode: 'live' });
  await createRoute(tdb.db, box, tenant.id, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: true } });

  // The client: MESSAGES over both ports, CONNECTIONS_PER_PORT connections each.
  const sent: Sent[] = [];
  const smtpPorts = [ports.smtpA, ports.smtpB];
  const lanes = smtpPorts.flatMap((port) => Array.from({ length: CONNECTIONS_PER_PORT }, () => ({ port, subjects: [] as string[] })));
  for (let n = 0; n < MESSAGES; n++) lanes[n % lanes.length].subjects.push(`scale-out n${n}`);
  const sending = Promise.all(lanes.map((lane) => sendOver(lane.port, key, lane.subjects, sent)));
  // Awaited below; should the kill fail first, its failure is the one reported.
  sending.catch(() => {});

  // Kill worker-a while both workers are delivering and it has deliveries open at the upstream.
  const [victim, survivor] = workers;
  const victimHost = hostOf(victim.name);
  const survivorHost = hostOf(survivor.name);
  const by = (host: string) => upstream.accepted.filter((a) => a.client === host).length;
  const ready = () => by(victimHost) >= DELIVERED_BEFORE_KILL && by(survivorHost) >= DELIVERED_BEFORE_KILL && upstream.openBy(victimHost) > 0;
  for (const deadline = Date.now() + KILL_WAIT_MS; !ready(); ) {
    assert.ok(Date.now() < deadline, `the workers did not both get to ${DELIVERED_BEFORE_KILL} deliveries (worker-a with one open) within ${KILL_WAIT_MS} ms: worker-a ${by(victimHost)}, worker-b ${by(survivorHost)}`);
    assertAlive(victim);
    await new Promise((r) => setTimeout(r, 2));
  }
  const openAtKill = upstream.openBy(victimHost);
  const acceptedBeforeKill = upstream.accepted.length;
  const killAt = Date.now();
  await killHard(victim);
  const killedAt = Date.now();
  assert.equal(victim.child.signalCode, 'SIGKILL');
  // The jobs active now are the dead worker's and those the survivor is working on; pg-boss
  // gives the dead worker's back (retried) once their heartbeat lapsed.
  const active = await sql<{ id: string }>`SELECT id FROM pgboss.job WHERE name LIKE 'route.%' AND state = 'active'`.execute(tdb.db);
  const activeAtKill = active.rows.map((r) => r.id);

  await sending;
  const acked = sent.filter((s) => s.id);
  assert.equal(sent.length, MESSAGES, 'every message got a reply');
  assert.deepEqual(
    sent.filter((s) => !s.id).map((s) => s.reply),
    [],
    'every message was acknowledged',
  );
  for (const port of smtpPorts) assert.ok(acked.some((s) => s.port === port), `messages were accepted on ${port}`);

  // Wait until every acknowledged message arrived and nothing is left to deliver.
  const ackedIds = new Set(acked.map((s) => s.id!));
  let allArrivedAt: number | undefined;
  for (const deadline = killAt + DELIVERY_WAIT_MS; ; await new Promise((r) => setTimeout(r, 200))) {
    for (const r of [...front, survivor]) assertAlive(r);
    const got = new Set(upstream.accepted.map(relayIdOf));
    const missing = [...ackedIds].filter((id) => !got.has(id));
    if (missing.length === 0) allArrivedAt ??= Date.now();
    if (missing.length === 0 && (await pendingWork(tdb.db)) === 0) break;
    if (Date.now() > deadline) assert.fail(`${missing.length} acknowledged message(s) not delivered within ${DELIVERY_WAIT_MS} ms of the kill; ${await queueStates(tdb.db)}`);
  }

  // Exactly once, but for deliveries the upstream accepted while worker-a died unrecorded.
  const copies = new Map<string, Accepted[]>();
  for (const a of upstream.accepted) {
    const id = relayIdOf(a);
    assert.ok(id && ackedIds.has(id), `the upstream got only acknowledged messages (got ${a.messageId})`);
    copies.set(id, [...(copies.get(id) ?? []), a]);
  }
  const duplicates = [...copies].filter(([, list]) => list.length > 1);
  // Worker-a may have written a whole message just before it died that the upstream (in this
  // process) reads and answers only after the kill returned, but never after it saw worker-a's
  // connections close.
  const victimGoneAt = Math.max(killedAt, upstream.closedAt(victimHost) ?? killedAt);
  for (const [id, [first, second, ...more]] of duplicates) {
    assert.equal(more.length, 0, `${id} arrived ${more.length + 2} times`);
    assert.ok(first.client === victimHost && first.at <= victimGoneAt && first.at >= killAt - 2_000, `${id}'s first copy came from worker-a just before it died (${first.client}, kill${first.at - killAt >= 0 ? '+' : ''}${first.at - killAt} ms; killed at +${killedAt - killAt} ms, its connections seen closed by +${victimGoneAt - killAt} ms)`);
    assert.ok(second.client === survivorHost, `${id}'s second copy came from the survivor`);
  }
  // Each of worker-a's delivery slots had at most one delivery in flight when it died.
  assert.ok(duplicates.length <= DEFAULT_ROUTE_CONCURRENCY, `${duplicates.length} duplicates, more than worker-a's ${DEFAULT_ROUTE_CONCURRENCY} deliveries in flight`);
  // Only workers deliver: the smtp,api processes run no delivery.
  const clients = new Set(upstream.accepted.map((a) => a.client));
  assert.deepEqual([...clients].sort(), [victimHost, survivorHost]);

  // Every message ends sent, with its one `sent` attempt recorded.
  const statuses = await sql<{ status: string; n: number }>`SELECT status, count(*)::int AS n FROM messages GROUP BY status`.execute(tdb.db);
  assert.deepEqual(statuses.rows, [{ status: 'sent', n: acked.length }]);
  const sentAttempts = await sql<{ n: number }>`SELECT count(*)::int AS n FROM attempts WHERE outcome = 'sent'`.execute(tdb.db);
  assert.equal(sentAttempts.rows[0].n, acked.length, 'one sent attempt per message');

  // worker-a's jobs: active when it died, then failed by the heartbeat sweep and retried, and
  // completed by the survivor.
  const retried = await sql<{ id: string; message_id: string; state: string; completed_on: Date | null }>`
    SELECT id, data->>'messageId' AS message_id, state, completed_on FROM pgboss.job
    WHERE id = ANY(${activeAtKill}::uuid[]) AND retry_count > 0`.execute(tdb.db);
  assert.ok(retried.rows.length > 0, `worker-a held jobs when it died (${activeAtKill.length} active at the kill, none retried)`);
  for (const job of retried.rows) assert.equal(job.state, 'completed', `worker-a's job ${job.id} was completed by the survivor`);
  const finishedAfterKill = Math.max(...retried.rows.map((j) => j.completed_on!.getTime())) - killAt;
  const survivorCopies = retried.rows.flatMap((j) => (copies.get(j.message_id) ?? []).filter((a) => a.client === survivorHost));

  const report = {
    messages: MESSAGES,
    acknowledged: acked.length,
    acknowledged_per_port: smtpPorts.map((p) => acked.filter((s) => s.port === p).length),
    delivered_by: Object.fromEntries([...clients].map((c) => [c, upstream.accepted.filter((a) => a.client === c).length])),
    upstream_accepted_before_kill: acceptedBeforeKill,
    worker_a_open_at_kill: openAtKill,
    dropped_by_upstream_sender_gone: upstream.dropped,
    active_jobs_at_kill: activeAtKill.length,
    worker_a_jobs_retried: retried.rows.length,
    // The figure asked for: kill → the last of worker-a's jobs completed by worker-b.
    worker_a_jobs_finished_after_kill_ms: finishedAfterKill,
    worker_a_messages_redelivered_after_kill_ms: survivorCopies.length ? Math.max(...survivorCopies.map((a) => a.at)) - killAt : null,
    duplicates: duplicates.length,
    all_delivered_after_kill_ms: (allArrivedAt ?? Date.now()) - killAt,
    drained_after_kill_ms: Date.now() - killAt,
  };
  t.diagnostic(`scale-out: ${JSON.stringify(report)}`);
  console.log('scale-out report', report);
});
