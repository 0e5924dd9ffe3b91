// PostgreSQL SIGKILLed (not stopped: no shutdown checkpoint, crash recovery on restart) under a
// relay that is taking and delivering a stream of messages, then started again on the same data
// directory and port. database-outage.test.ts covers a clean stop; this is the crash. While the
// database is gone the relay answers 4xx, never 250 or 5xx; every message that got 250 before
// the crash survives crash recovery (committed means in the WAL) with a live job, and every
// acknowledged message is delivered, once: a database crash is neither of the two windows where
// a duplicate is allowed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { SecretBox } from '../../src/crypto.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { TEST_SECRET } from '../helpers/context.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import { startFaultUpstream, type FaultUpstream } from './fault-upstream.ts';
import { copiesById, messagesWithoutLiveJob, pendingWork, sleep, until } from './invariants.ts';

const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/;
const STREAM_PACE_MS = 40;
const OUTAGE_MS = 3_000;
const MAX_MESSAGES = 3_000;

let tdb: TestDatabase;
let relay: TestRelay;
let upstream: FaultUpstream;
let key: string;
let dbDown = false;
let stopStreaming = false;

interface Sent {
  subject: string;
  started: number;
  ended: number;
  reply: string;
  id?: string;
}

function postmasterPid(): number {
  return Number(fs.readFileSync(path.join(tdb.dataDir!, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** One client sending messages back to back, reconnecting when its connection is gone (bounded). */
async function stream(out: Sent[]): Promise<void> {
  let conn: RawSmtp | undefined;
  const deadline = Date.now() + 90_000;
  for (let n = 0; n < MAX_MESSAGES && !stopStreaming && Date.now() < deadline; ) {
    if (!conn || conn.closed) {
      conn?.close();
      conn = undefined;
      try {
        const c = await RawSmtp.connect(relay.smtpPort);
        const auth = c.greeting.startsWith('220') ? (await c.cmd('EHLO client.test'), await c.cmd(`AUTH PLAIN ${plain(key)}`)) : c.greeting;
        if (auth.startsWith('235')) conn = c;
        else {
          out.push({ subject: 'connect', started: Date.now(), ended: Date.now(), reply: auth || 'connection closed' });
          c.close();
        }
      } catch {
        // Nothing listens only if the relay died, which the test checks on its own.
      }
      if (!conn) await sleep(200);
      continue;
    }
    const subject = `crash n${n++}`;
    const started = Date.now();
    let reply: string;
    try {
      const mail = await conn.cmd('MAIL FROM:<app@acme.example>');
      const rcpt = mail.startsWith('250') ? await conn.cmd('RCPT TO:<user@dest.example>') : mail;
      reply = rcpt.startsWith('250') ? await conn.data(`From: app@acme.example\nTo: user@dest.example\nSubject: ${subject}\nContent-Type: text/html\n\n<p>${subject}</p>\n`) : rcpt;
    } catch (err) {
      reply = `error: ${(err as Error).message}`;
    }
    const id = QUEUED.exec(reply)?.[1];
    out.push({ subject, started, ended: Date.now(), reply: reply || 'connection closed', ...(id ? { id } : {}) });
    await sleep(STREAM_PACE_MS);
  }
  conn?.close();
}

before(async () => {
  tdb = await testDatabase();
  assert.ok(tdb.server && tdb.dataDir, 'this test kills its own embedded PostgreSQL (run without DATABASE_URL)');
  upstream = await startFaultUpstream();
  const box = new SecretBox(TEST_SECRET);
  const tenant = await createTenant(tdb.db, { name: 'acme' });
  await addDomain(tdb.db, box, tenant.id, { name: 'acme.example', verified: true });
  key = (await createKey(tdb.db, tenant.id, { scope: 'send', mode: 'live' })).key;
  await createRoute(tdb.db, box, tenant.id, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: true } });
  relay = await startTestRelay({}, tdb);
});

after(async () => {
  stopStreaming = true;
  if (dbDown) await tdb.restart().catch(() => {});
  await relay?.close();
  await upstream?.close();
  await tdb?.close();
});

test('PostgreSQL SIGKILLed and restarted: 4xx meanwhile, every 250 survives crash recovery and is delivered once', { timeout: 150_000 }, async (t) => {
  const sent: Sent[] = [];
  const streaming = stream(sent);
  await until('messages accepted and delivered before the crash', () => (sent.filter((s) => s.id).length >= 20 && upstream.accepted.length >= 5 ? true : undefined), 30_000);

  const pid = postmasterPid();
  const killAt = Date.now();
  dbDown = true;
  process.kill(pid, 'SIGKILL');
  const acknowledgedBeforeKill = sent.filter((s) => s.id && s.ended <= killAt).map((s) => s.id!);
  // Its backends notice the postmaster's death and exit; then the data directory is free.
  await until('the postmaster gone', () => (alive(pid) ? undefined : true), 10_000);
  // Down for a while, as after a real crash: the relay must keep answering meanwhile.
  await sleep(OUTAGE_MS);
  for (let tries = 0; ; tries++) {
    try {
      await tdb.restart();
      break;
    } catch (err) {
      // A backend still attached to the old shared memory makes the new postmaster refuse.
      if (tries >= 20) throw err;
      await sleep(500);
    }
  }
  dbDown = false;
  const upAt = Date.now();

  // The crash lost nothing acknowledged: every 250 before it is in the database, with a live job
  // or already sent.
  const rows = await sql<{ id: string }>`SELECT id FROM messages WHERE id = ANY(${acknowledgedBeforeKill}::uuid[])`.execute(tdb.db);
  assert.equal(rows.rows.length, acknowledgedBeforeKill.length, 'every message acknowledged before the crash survived it');

  const recoveredAt = await until('a 250 after the restart', () => sent.find((s) => s.id && s.started >= upAt)?.ended, 30_000, () => JSON.stringify(sent.slice(-3)));
  stopStreaming = true;
  await streaming;
  assert.deepEqual(await messagesWithoutLiveJob(tdb.db), [], 'every waiting message has a live job after crash recovery');

  for (const s of sent) assert.match(s.reply, /^(250|4\d\d) |^connection closed$|^error: /, `${s.subject}: 250 or 4xx, never 5xx; got ${JSON.stringify(s.reply)}`);
  const duringOutage = sent.filter((s) => s.started > killAt + 1_000 && s.ended < upAt);
  assert.ok(duringOutage.length > 0, 'the client kept trying while the database was down');
  for (const s of duringOutage) assert.ok(!s.id, `${s.subject} got 250 while the database was down`);

  const acked = sent.filter((s) => s.id).map((s) => s.id!);
  await until(
    'every acknowledged message delivered and the queue drained',
    async () => {
      const got = new Set(upstream.accepted.map((a) => a.id));
      return acked.every((id) => got.has(id)) && (await pendingWork(tdb.db)) === 0 ? true : undefined;
    },
    75_000,
    async () => JSON.stringify({ missing: acked.filter((id) => !upstream.accepted.some((a) => a.id === id)).length, pending: await pendingWork(tdb.db) }),
  );
  const copies = copiesById(upstream.accepted.map((a) => a.id));
  for (const id of acked) assert.equal(copies.get(id), 1, `acknowledged ${id} delivered once`);
  assert.deepEqual(upstream.overlaps, []);

  const report = {
    acknowledged: acked.length,
    acknowledged_before_kill: acknowledgedBeforeKill.length,
    tried_during_outage: duringOutage.length,
    replies_during_outage: [...new Set(duringOutage.map((s) => s.reply.slice(0, 9)))],
    restart_ms: upAt - killAt,
    first_250_after_restart_ms: recoveredAt - upAt,
    drained_after_kill_ms: Date.now() - killAt,
    duplicates: [...copies.values()].filter((n) => n > 1).length,
  };
  t.diagnostic(`postgres kill: ${JSON.stringify(report)}`);
});
