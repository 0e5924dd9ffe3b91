// SPEC §3: "database or queue unavailable → 451 4.3.0 — never 250, never a 5xx for our own
// fault", and a message that got 250 is never lost. PostgreSQL is stopped under a relay that
// is taking a stream of messages, then started again on the same port: the relay (never
// restarted) must answer 4xx throughout the outage, AUTH included, accept again once the
// database is back, and deliver every message it acknowledged. Once its readiness monitor has
// seen the outage (src/readiness.ts), new connections are refused at once with 421 4.3.0.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { SMTPServer } from 'smtp-server';
import { SecretBox } from '../../src/crypto.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { TEST_SECRET } from '../helpers/context.ts';
import { startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import type { Received, Upstream } from '../helpers/upstream.ts';

// The exact enhanced code of the 250 is test/smtp's business; here only "queued as <id>" counts.
const QUEUED = /^250 2\.\d{1,3}\.\d{1,3} Ok: queued as ([0-9a-f-]{36})$/;
const OUTAGE_MS = 4000;
const RECOVERY_LIMIT_MS = 30_000;
/**
 * Jobs caught by the outage (claimed, then neither completed nor failed: pg-boss could not write)
 * stay `active` until pg-boss's heartbeat sweep, which runs in its monitor step (every 10 s, see
 * src/queue.ts), then the first retry delay (2 s, src/queue.ts); most are recorded by the worker's own retry first.
 */
const DELIVERY_WAIT_MS = 60_000;
const MAX_MESSAGES = 2000;
const UPSTREAM_DELAY_MS = 300;
/** Pause between messages: the delivery backlog stays small whatever the machine's speed. */
const STREAM_PACE_MS = 50;

let tdb: TestDatabase;
let relay: TestRelay;
let upstream: Upstream;
let acme: { tenantId: string; key: string };
let dbDown = false;
let streamer: { stop(): Promise<void> } | undefined;
const receivedAt = new Map<Received, number>();

interface Reply {
  what: string;
  started: number;
  ended: number;
  reply: string;
  id?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function messageIdOf(raw: Buffer): string | undefined {
  const head = raw.toString('utf8').split(/\r?\n\r?\n/, 1)[0];
  return /^Message-ID:\s*<([^@>]+)@[^>]*>/im.exec(head)?.[1];
}

function message(subject: string, extraHeaders = ''): string {
  return `From: App <app@acme.example>\nTo: user@dest.example\nSubject: ${subject}\n${extraHeaders}Content-Type: text/html\n\n<p>${subject}</p>\n`;
}

/** One authenticated connection sending messages back to back until stopped (bounded). */
function startStreamer(out: Reply[], auths: Reply[]) {
  let stopped = false;
  const done = (async () => {
    let conn: RawSmtp | undefined;
    const deadline = Date.now() + 100_000;
    for (let n = 0; n < MAX_MESSAGES && !stopped && Date.now() < deadline; ) {
      if (!conn || conn.closed) {
        conn?.close();
        conn = undefined;
        const started = Date.now();
        try {
          const c = await RawSmtp.connect(relay.smtpPort);
          if (!c.greeting.startsWith('220')) {
            auths.push({ what: 'streamer connect', started, ended: Date.now(), reply: c.greeting || 'connection closed' });
            c.close();
            await sleep(200);
            continue;
          }
          await c.cmd('EHLO streamer.test');
          const reply = await c.cmd(`AUTH PLAIN ${plain(acme.key)}`);
          auths.push({ what: 'streamer AUTH', started, ended: Date.now(), reply });
          if (reply.startsWith('235')) conn = c;
          else c.close();
        } catch (err) {
          auths.push({ what: 'streamer connect', started, ended: Date.now(), reply: `error: ${(err as Error).message}` });
        }
        if (!conn) await sleep(200);
        continue;
      }
      const subject = `outage n${n++}`;
      const started = Date.now();
      let reply: string;
      try {
        const mail = await conn.cmd('MAIL FROM:<app@acme.example>');
        const rcpt = mail.startsWith('250') ? await conn.cmd('RCPT TO:<user@dest.example>') : mail;
        reply = rcpt.startsWith('250') ? await conn.data(message(subject)) : rcpt;
      } catch (err) {
        reply = `error: ${(err as Error).message}`;
      }
      const id = QUEUED.exec(reply)?.[1];
      out.push({ what: subject, started, ended: Date.now(), reply: reply || 'connection closed', ...(id ? { id } : {}) });
      await sleep(STREAM_PACE_MS);
    }
    conn?.close();
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

/** Opens a connection and tries AUTH `times` times on it; every reply recorded (a refused greeting too). */
async function probeAuth(times: number, out: Reply[]): Promise<void> {
  const started = Date.now();
  const c = await RawSmtp.connect(relay.smtpPort);
  try {
    if (!c.greeting.startsWith('220')) {
      out.push({ what: 'probe AUTH connect', started, ended: Date.now(), reply: c.greeting || 'connection closed' });
      return;
    }
    await c.cmd('EHLO probe.test');
    for (let i = 0; i < times && !c.closed; i++) {
      const started = Date.now();
      const reply = await c.cmd(`AUTH PLAIN ${plain(acme.key)}`);
      out.push({ what: `probe AUTH ${i + 1}`, started, ended: Date.now(), reply: reply || 'connection closed' });
    }
  } finally {
    c.close();
  }
}

/** An unauthenticated session using the X-Auth-APIKey header: the key is checked at DATA end. */
async function probeHeaderKey(subject: string): Promise<Reply> {
  const started = Date.now();
  const c = await RawSmtp.connect(relay.smtpPort);
  try {
    if (!c.greeting.startsWith('220')) return { what: subject, started, ended: Date.now(), reply: c.greeting || 'connection closed' };
    await c.cmd('EHLO probe.test');
    await c.cmd('MAIL FROM:<app@acme.example>');
    await c.cmd('RCPT TO:<user@dest.example>');
    const reply = await c.data(message(subject, `X-Auth-APIKey: ${acme.key}\n`));
    const id = QUEUED.exec(reply)?.[1];
    return { what: subject, started, ended: Date.now(), reply: reply || 'connection closed', ...(id ? { id } : {}) };
  } finally {
    c.close();
  }
}

/**
 * A real upstream (smtp-server) that takes UPSTREAM_DELAY_MS to answer each DATA: deliveries
 * are then in flight when PostgreSQL stops, and the worker must record them afterwards.
 */
async function startSlowUpstream(delayMs: number): Promise<Upstream> {
  const received: Received[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        setTimeout(() => {
          const msg: Received = { mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', rcptTo: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks) };
          received.push(msg);
          receivedAt.set(msg, Date.now());
          callback(null, 'queued upstream');
        }, delayMs);
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.server.address() as AddressInfo).port,
    received,
    behaviour: {},
    waitFor: () => Promise.reject(new Error('not used')),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

before(async () => {
  tdb = await testDatabase();
  assert.ok(tdb.server, 'this test stops its own embedded PostgreSQL (run without DATABASE_URL)');
  upstream = await startSlowUpstream(UPSTREAM_DELAY_MS);
  // Tenant and route exist before the relay starts, so its route consumer runs from the start.
  const box = new SecretBox(TEST_SECRET);
  const tenant = await createTenant(tdb.db, { name: 'acme' });
  await addDomain(tdb.db, box, tenant.id, { name: 'acme.example', verified: true });
  acme = { tenantId: tenant.id, key: (await createKey(tdb.db, tenant.id, { scope: 'send', mode: 'live' })).key };
  await createRoute(tdb.db, box, tenant.id, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: true } });
  relay = await startTestRelay({}, tdb);
});

after(async () => {
  await streamer?.stop();
  // A failure mid-outage must not leave the relay closing against a dead database.
  if (dbDown) await tdb.restart().catch(() => {});
  await relay?.close();
  await upstream?.close();
  await tdb?.close();
});

test('a PostgreSQL outage gives 451 4.3.0 (never 250 or 5xx), and the relay recovers by itself', { timeout: 200_000 }, async (t) => {
  const sent: Reply[] = [];
  const auths: Reply[] = [];
  const probes: Reply[] = [];
  streamer = startStreamer(sent, auths);
  const ackedCount = () => sent.filter((s) => s.id).length;
  // Stop PostgreSQL once messages are being accepted and delivered (deliveries are then in flight).
  for (const deadline = Date.now() + 15_000; ackedCount() < 20 || upstream.received.length < 5; await sleep(50)) {
    assert.ok(Date.now() < deadline, `the relay accepts and delivers before the outage (${upstream.received.length} delivered; replies ${JSON.stringify(sent.slice(-3))})`);
  }

  // The outage: PostgreSQL stops (fast shutdown: sessions are cut) with a transaction in flight.
  const downAt = Date.now();
  dbDown = true;
  await tdb.server!.stop();
  const downConfirmed = Date.now();
  // 21 AUTH attempts over 7 connections: more than the per-connection and per-IP failure limits,
  // which a database fault must not count against the client. Connections made once the
  // readiness monitor has seen the outage get 421 4.3.0 instead, which counts as well.
  for (let i = 0; i < 7; i++) await probeAuth(3, probes);
  probes.push(await probeHeaderKey('outage header-key probe'));
  await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downConfirmed)));

  const upAt = Date.now();
  await tdb.restart();
  dbDown = false;
  const upConfirmed = Date.now();
  let recoveredAt: number | undefined;
  for (const deadline = upConfirmed + RECOVERY_LIMIT_MS; !recoveredAt; await sleep(50)) {
    recoveredAt = sent.find((s) => s.id && s.started >= upConfirmed)?.ended;
    assert.ok(recoveredAt || Date.now() < deadline, `a 250 within ${RECOVERY_LIMIT_MS} ms of PostgreSQL coming back (last replies ${JSON.stringify(sent.slice(-3))})`);
  }
  // A little more traffic after recovery, then a fresh session: AUTH works, no lockout.
  for (const target = ackedCount() + 10, deadline = Date.now() + 10_000; ackedCount() < target && Date.now() < deadline; ) await sleep(50);
  await streamer.stop();
  // The streamer's connection predates the outage; new ones wait for the readiness monitor's
  // next check (every 2 s) to see the database back.
  for (const deadline = Date.now() + 10_000; ; await sleep(100)) {
    const c = await RawSmtp.connect(relay.smtpPort);
    c.close();
    if (c.greeting.startsWith('220')) break;
    assert.ok(Date.now() < deadline, `new connections are greeted again after the outage (last greeting ${JSON.stringify(c.greeting)})`);
  }
  const afterProbe = await probeHeaderKey('after-outage header-key probe');
  const afterAuth: Reply[] = [];
  await probeAuth(1, afterAuth);
  assert.match(afterAuth[0].reply, /^235 /, 'AUTH works again once the database is back (the outage locked no one out)');
  assert.ok(afterProbe.id, `a header-key message is accepted after the outage, got ${JSON.stringify(afterProbe.reply)}`);
  const messagesAll = [...sent, ...probes.filter((p) => !p.what.includes('AUTH')), afterProbe];

  // Never a 5xx, anywhere.
  for (const r of [...sent, ...auths, ...probes, afterProbe]) {
    assert.doesNotMatch(r.reply, /^5/, `${r.what}: no 5xx for our own fault, got ${JSON.stringify(r.reply)}`);
  }
  // Fully inside the outage: 451 4.3.0 for messages (421 4.3.0 for a new connection once the
  // readiness monitor has seen it), a 4xx with an enhanced code for AUTH.
  const during = (r: Reply) => r.started >= downConfirmed && r.ended <= upAt;
  const outageMessages = messagesAll.filter(during);
  assert.ok(outageMessages.length >= 3, `messages were tried during the outage (${outageMessages.length})`);
  for (const r of outageMessages) assert.match(r.reply, /^(451|421) 4\.3\.0 /, `${r.what} during the outage`);
  const outageAuths = [...auths, ...probes.filter((p) => p.what.includes('AUTH'))].filter(during);
  assert.ok(outageAuths.length >= 7, `AUTH was tried during the outage (${outageAuths.length})`);
  for (const r of outageAuths) assert.match(r.reply, /^4\d\d 4\.\d{1,3}\.\d{1,3} /, `${r.what} during the outage answers 4xx, not 535`);
  // Across the transitions (stopping, starting) only 250 or a 4xx.
  for (const r of messagesAll) assert.match(r.reply, /^(250|4\d\d) /, `${r.what}: 250 or 4xx, got ${JSON.stringify(r.reply)}`);

  // Every 250 is in the database; nothing else left a row behind.
  const acked = messagesAll.filter((r) => r.id);
  const refused = messagesAll.filter((r) => !r.id);
  const rows = await sql<{ id: string; subject: string }>`SELECT id, subject FROM messages WHERE tenant_id = ${acme.tenantId}`.execute(tdb.db);
  const stored = new Map(rows.rows.map((r) => [r.id, r.subject]));
  const storedSubjects = new Set(rows.rows.map((r) => r.subject));
  for (const r of acked) assert.equal(stored.get(r.id!), r.what, `250'd message ${r.what} (${r.id}) is in the database`);
  for (const r of refused) assert.ok(!storedSubjects.has(r.what), `${r.what} got ${JSON.stringify(r.reply)} but left a message row`);

  // Every 250 reaches the upstream; count copies by Message-ID.
  const ackedIds = new Set(acked.map((r) => r.id!));
  const deadline = Date.now() + DELIVERY_WAIT_MS;
  for (;;) {
    const got = new Set(upstream.received.map((r) => messageIdOf(r.raw)));
    const missing = [...ackedIds].filter((id) => !got.has(id));
    if (missing.length === 0) {
      const pending = await sql<{ n: number }>`
        SELECT (SELECT count(*) FROM messages WHERE status IN ('queued', 'deferred'))
             + (SELECT count(*) FROM pgboss.job WHERE name LIKE 'route.%' AND state IN ('created', 'retry', 'active')) AS n`.execute(tdb.db);
      if (Number(pending.rows[0].n) === 0) break;
    }
    if (Date.now() > deadline) {
      const jobs = await sql<{ state: string; n: number }>`SELECT state, count(*)::int AS n FROM pgboss.job WHERE name LIKE 'route.%' GROUP BY state`.execute(tdb.db);
      const stuck = await sql`
        SELECT id, state, retry_count, started_on, heartbeat_on, heartbeat_seconds, now() AS now
        FROM pgboss.job WHERE name LIKE 'route.%' AND state IN ('created', 'retry', 'active') ORDER BY started_on LIMIT 5`.execute(tdb.db);
      assert.fail(
        `${missing.length} acknowledged message(s) not delivered within ${DELIVERY_WAIT_MS} ms (e.g. ${missing.slice(0, 5).join(', ')}); ` +
          `jobs ${JSON.stringify(jobs.rows)}; unfinished jobs ${JSON.stringify(stuck.rows)}`,
      );
    }
    await sleep(200);
  }
  const deliveredAt = Date.now();
  const copies = new Map<string, Received[]>();
  for (const r of upstream.received) {
    const id = messageIdOf(r.raw);
    assert.ok(id && stored.has(id), `upstream got ${id}, which is not a message of the database`);
    copies.set(id, [...(copies.get(id) ?? []), r]);
  }
  // The relay never died, and the outage (~4 s) is shorter than the worker's 60 s window for
  // recording an attempt the upstream already took: no message may go out twice.
  const duplicates = [...copies].filter(([, list]) => list.length > 1);
  const duplicateDetails: { id: string; first_copy_after_outage_start_ms: number }[] = [];
  for (const [id, list] of duplicates) {
    const firstAt = Math.min(...list.map((r) => receivedAt.get(r) ?? Infinity));
    duplicateDetails.push({ id, first_copy_after_outage_start_ms: firstAt - downAt });
  }
  assert.deepEqual(duplicateDetails, [], 'no message delivered twice');
  for (const id of ackedIds) assert.ok((copies.get(id)?.length ?? 0) >= 1, `acknowledged ${id} delivered`);

  const report = {
    messages_tried: messagesAll.length,
    acknowledged: acked.length,
    acknowledged_before_outage: acked.filter((r) => r.ended < downAt).length,
    acknowledged_after_outage: acked.filter((r) => r.started >= upConfirmed).length,
    refused_451_during_outage: outageMessages.length,
    refused_in_transitions: refused.length - outageMessages.length,
    auth_tried_during_outage: outageAuths.length,
    auth_replies_during_outage: [...new Set(outageAuths.map((r) => r.reply.slice(0, 9)))],
    duplicates: duplicates.length,
    duplicate_details: duplicateDetails,
    postgres_stop_ms: downConfirmed - downAt,
    postgres_start_ms: upConfirmed - upAt,
    first_250_after_postgres_up_ms: recoveredAt! - upConfirmed,
    all_delivered_after_postgres_up_ms: deliveredAt - upConfirmed,
  };
  t.diagnostic(`database-outage: ${JSON.stringify(report)}`);
  console.log('database-outage report', report);
});
