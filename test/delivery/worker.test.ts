// The delivery worker end to end: real PostgreSQL and pg-boss, real smtp-server upstreams on
// port 0, messages committed the way the SMTP listener commits them.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { RECORDS_AHEAD, startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import * as messages from '../../src/db/messages.repository.ts';
import * as routes from '../../src/db/routes.repository.ts';
import type { Route, Tenant } from '../../src/db/schema.ts';
import { createLogger } from '../../src/log.ts';
import { queueName } from '../../src/queue.ts';
import { createRoute, updateRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { queueMessage, reply, startSilentServer, startUpstream, waitFor, type Upstream } from './upstream.ts';

const UPSTREAM_PASS = 'upstream-secret-pass-7f3a';

let t: TestContext;
let ctx: TestContext;
let tenant: Tenant;
let worker: DeliveryWorker;
const logLines: Record<string, unknown>[] = [];
const closers: (() => Promise<void>)[] = [];

let ok: Upstream; // accepts everything, requires AUTH
let second: Upstream; // accepts everything
let orphanRoute: Route;
let orphanId: string;

async function upstream(script: Parameters<typeof startUpstream>[0] = {}): Promise<Upstream> {
  const u = await startUpstream(script);
  closers.push(u.close);
  return u;
}

async function smtpRoute(name: string, port: number, extra: Record<string, unknown> = {}, config: Record<string, unknown> = {}): Promise<Route> {
  return await createRoute(ctx.db, ctx.box, tenant.id, {
    name,
    transport: 'smtp',
    config: { host: '127.0.0.1', port, pool: true, ...config },
    ...extra,
  });
}

async function message(id: string) {
  const m = await messages.findMessage(ctx.db, id);
  assert.ok(m, `message ${id} exists`);
  return m;
}

async function settled(id: string, timeoutMs?: number) {
  return await waitFor(
    `message ${id} to settle`,
    async () => {
      const m = await message(id);
      return m.status === 'sent' || m.status === 'failed' ? m : undefined;
    },
    timeoutMs,
  );
}

before(async () => {
  t = await testContext();
  // The same context, with the logger writing into logLines so tests can read the log.
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  ctx = { ...t, log: createLogger('debug', sink) };
  tenant = await createTenant(ctx.db, { name: 'acme' });
  ok = await upstream({ auth: { user: 'relay-user', pass: UPSTREAM_PASS } });
  second = await upstream();

  // A message whose job vanished before any worker ran: the reconciler must notice it.
  orphanRoute = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'orphanage', transport: 'capture' });
  orphanId = (await queueMessage(ctx, orphanRoute, ['orphan@example.net'])).id;
  await sql`DELETE FROM pgboss.job WHERE id = ${orphanId}::uuid`.execute(ctx.db);

  worker = await startDelivery(ctx, { reconcileIntervalMs: 200, routePollMs: 200, orphanAfterSeconds: 0 });
});

after(async () => {
  await worker?.stop();
  for (const close of closers) await close();
  await t?.close();
});

describe('delivery worker', () => {
  test('reconciler gives a queued message whose job was deleted a new job', async () => {
    const m = await settled(orphanId);
    assert.equal(m.status, 'sent');
    assert.notEqual(m.job_id, orphanId, 'a new job id was stored on the message');
    assert.ok(logLines.some((l) => l.msg === 'orphaned message given a new delivery job' && l.message === orphanId));
  });

  test('delivers the stored bytes unchanged over SMTP with the envelope from the message', async () => {
    const route = await smtpRoute('main', ok.port, {}, { auth: { user: 'relay-user', pass: UPSTREAM_PASS } });
    const to = ['alice@example.net', 'bob@example.org'];
    const { id, mime } = await queueMessage(ctx, route, to);
    const m = await settled(id);

    assert.equal(m.status, 'sent');
    assert.equal(m.attempts, 1);
    assert.ok(m.sent_at);
    const got = ok.received.find((r) => r.data.includes(Buffer.from(id)));
    assert.ok(got, 'upstream received the message');
    assert.ok(got.data.equals(mime), 'upstream received exactly the stored bytes');
    assert.equal(got.mailFrom, 'bounces@example.com');
    assert.deepEqual(got.rcptTo, to);
    assert.equal(got.user, 'relay-user', 'authenticated with the route credentials');

    const recipients = await messages.listRecipients(ctx.db, id);
    assert.deepEqual(recipients.map((r) => [r.address, r.status]), to.map((a) => [a, 'sent']));
    for (const r of recipients) assert.match(r.response ?? '', /^250 /);
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.deepEqual(attempts.map((a) => [a.number, a.outcome, a.route_name]), [[1, 'sent', 'main']]);
    const events = await messages.listEvents(ctx.db, id);
    assert.deepEqual(events.map((e) => e.type), ['accepted', 'sent']);
    assert.equal((events[1].detail as { attempt: number }).attempt, 1);

    // One log line for the attempt, with the fields operators need and nothing secret.
    const line = logLines.find((l) => l.msg === 'delivery attempt' && l.message === id);
    assert.ok(line);
    assert.equal(line.tenant, tenant.id);
    assert.equal(line.route, 'main');
    assert.equal(line.attempt, 1);
    assert.equal(line.outcome, 'sent');
    assert.equal(typeof line.duration_ms, 'number');
    const all = JSON.stringify(logLines);
    assert.ok(!all.includes(UPSTREAM_PASS), 'the route password is never logged');
    assert.ok(!all.includes('Hello from the delivery tests'), 'bodies are never logged');
  });

  test('a capture route marks the message sent without any connection', async () => {
    const route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'capture', transport: 'capture' });
    const { id } = await queueMessage(ctx, route, ['c@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'sent');
    const [r] = await messages.listRecipients(ctx.db, id);
    assert.equal(r.status, 'sent');
    assert.equal(r.response, 'captured');
  });

  test('a message flagged test-mode is captured, never sent, even on an SMTP route', async () => {
    // The intake never queues test-key messages (commitMessage captures them at once); this is
    // the worker's own guard, for a test-mode row that reaches a queue anyway.
    const gate = await upstream({ data: (n) => (n === 1 ? reply(451, '4.3.0 Not yet') : undefined) });
    const route = await smtpRoute('gated', gate.port, { retry_delay_seconds: 1 });
    const { id } = await queueMessage(ctx, route, ['t@example.net']);
    await waitFor('deferred status', async () => ((await message(id)).status === 'deferred' ? true : undefined));
    await sql`UPDATE messages SET test_mode = true WHERE id = ${id}::uuid`.execute(ctx.db);
    const m = await settled(id);
    assert.equal(m.status, 'sent');
    assert.equal((await messages.listRecipients(ctx.db, id))[0].response, 'captured');
    assert.equal(gate.received.length, 0, 'nothing left the relay');
  });

  test('a transient 4xx is retried after the backoff and then delivered', async () => {
    const flaky = await upstream({ data: (n) => (n === 1 ? reply(451, '4.3.0 Temporary problem, try later') : undefined) });
    const route = await smtpRoute('flaky', flaky.port, { retry_delay_seconds: 1 });
    const { id } = await queueMessage(ctx, route, ['retry@example.net']);

    const deferred = await waitFor('deferred status', async () => {
      const m = await message(id);
      return m.status === 'deferred' ? m : m.status === 'sent' ? null : undefined;
    });
    assert.ok(deferred, 'the message was deferred between the attempts');
    assert.equal(deferred.attempts, 1);
    assert.ok(deferred.next_attempt_at);
    const [r1] = await messages.listRecipients(ctx.db, id);
    assert.equal(r1.status, 'deferred');
    assert.match(r1.response ?? '', /^451 4\.3\.0/);

    const m = await settled(id);
    assert.equal(m.status, 'sent');
    assert.equal(m.attempts, 2);
    assert.notEqual(m.job_id, id, 'the retry ran as a new job');
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.deepEqual(attempts.map((a) => [a.number, a.outcome]), [[1, 'deferred'], [2, 'sent']]);
    assert.match(attempts[0].response ?? '', /451 4\.3\.0/);
    // The retry waited for the backoff (1 s for the first step).
    assert.ok(attempts[1].at.getTime() - attempts[0].at.getTime() >= 900);
    const events = await messages.listEvents(ctx.db, id);
    assert.deepEqual(events.map((e) => e.type), ['accepted', 'deferred', 'sent']);
    const d = events[1].detail as { attempt: number; response: string; next_attempt_at: string };
    assert.equal(d.attempt, 1);
    assert.match(d.response, /451/);
    assert.ok(!Number.isNaN(Date.parse(d.next_attempt_at)));
    assert.equal(flaky.received.length, 1);
  });

  test('a permanent 5xx fails the message at once', async () => {
    const refusing = await upstream({ data: () => reply(554, '5.6.0 Message content rejected') });
    const route = await smtpRoute('refusing', refusing.port, { retry_delay_seconds: 1 });
    const { id } = await queueMessage(ctx, route, ['perm@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'failed');
    assert.equal(m.attempts, 1);
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.equal(attempts.length, 1);
    assert.equal(attempts[0].outcome, 'failed');
    assert.match(attempts[0].response ?? '', /554 5\.6\.0/);
    const [r] = await messages.listRecipients(ctx.db, id);
    assert.equal(r.status, 'failed');
    assert.match(r.response ?? '', /^554 5\.6\.0/);
    assert.deepEqual((await messages.listEvents(ctx.db, id)).map((e) => e.type), ['accepted', 'failed']);
  });

  test('a permanent refusal hands the message to the fallback route, which delivers it', async () => {
    const refusing = await upstream({ mailFrom: () => reply(550, '5.7.1 Sender not allowed on this relay') });
    const backup = await smtpRoute('backup', second.port);
    const route = await smtpRoute('primary', refusing.port, { fallback: 'backup' });
    const { id, mime } = await queueMessage(ctx, route, ['fb@example.net']);
    const m = await settled(id);

    assert.equal(m.status, 'sent');
    assert.equal(m.route_id, backup.id);
    assert.equal(m.route_name, 'backup');
    assert.equal(m.attempts, 1, 'attempts count afresh on the fallback route');
    assert.ok(second.received.some((r) => r.data.equals(mime)), 'the fallback upstream got the message');
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.deepEqual(attempts.map((a) => [a.route_name, a.number, a.outcome]), [['primary', 1, 'failed'], ['backup', 1, 'sent']]);
    const events = await messages.listEvents(ctx.db, id);
    assert.deepEqual(events.map((e) => e.type), ['accepted', 'deferred', 'sent']);
    assert.equal((events[1].detail as { fallback: string }).fallback, 'backup');
  });

  test('running out of attempts hands the message to the fallback route', async () => {
    const busy = await upstream({ rcptTo: () => reply(450, '4.2.1 Mailbox busy') });
    await createRoute(ctx.db, ctx.box, tenant.id, { name: 'capture-fallback', transport: 'capture' });
    const route = await smtpRoute('busy', busy.port, { fallback: 'capture-fallback', max_attempts: 2, retry_delay_seconds: 1 });
    const { id } = await queueMessage(ctx, route, ['busy@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'sent');
    assert.equal(m.route_name, 'capture-fallback');
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.deepEqual(attempts.map((a) => [a.route_name, a.number, a.outcome]), [['busy', 1, 'deferred'], ['busy', 2, 'failed'], ['capture-fallback', 1, 'sent']]);
    const [r] = await messages.listRecipients(ctx.db, id);
    assert.equal(r.response, 'captured');
  });

  test('fallback routes that point at each other end in failed, not a loop', async () => {
    const refusing = await upstream({ mailFrom: () => reply(550, '5.7.1 Not here either') });
    await smtpRoute('loop-b', refusing.port);
    const a = await smtpRoute('loop-a', refusing.port, { fallback: 'loop-b' });
    // (config restated: the routes service's PATCH currently resets omitted fields to defaults)
    await updateRoute(ctx.db, ctx.box, tenant.id, 'loop-b', { fallback: 'loop-a', config: { host: '127.0.0.1', port: refusing.port, pool: true } });
    const { id } = await queueMessage(ctx, a, ['loop@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'failed');
    assert.equal(m.route_name, 'loop-b');
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.deepEqual(attempts.map((x) => [x.route_name, x.outcome]), [['loop-a', 'failed'], ['loop-b', 'failed']]);
    assert.deepEqual((await messages.listEvents(ctx.db, id)).map((e) => e.type), ['accepted', 'deferred', 'failed']);
  });

  test('partial acceptance: the message is sent and each recipient keeps its own result', async () => {
    const picky = await upstream({ rcptTo: (a) => (a.startsWith('nobody@') ? reply(550, '5.1.1 No such user here') : undefined) });
    // Created after the worker started: the route poll starts a consumer for it.
    const route = await smtpRoute('picky', picky.port);
    const { id } = await queueMessage(ctx, route, ['somebody@example.net', 'nobody@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'sent');
    assert.equal(m.attempts, 1);
    const recipients = await messages.listRecipients(ctx.db, id);
    const byAddress = Object.fromEntries(recipients.map((r) => [r.address, r]));
    assert.equal(byAddress['somebody@example.net'].status, 'sent');
    assert.match(byAddress['somebody@example.net'].response ?? '', /^250 /);
    assert.equal(byAddress['nobody@example.net'].status, 'failed');
    assert.match(byAddress['nobody@example.net'].response ?? '', /^550 5\.1\.1/);
    assert.deepEqual(picky.received[0].rcptTo, ['somebody@example.net']);
  });

  test('a stale job for a message already sent does nothing', async () => {
    const route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'stale', transport: 'smtp', config: { host: '127.0.0.1', port: second.port } });
    const { id } = await queueMessage(ctx, route, ['once@example.net']);
    await settled(id);
    const receivedBefore = second.received.length;
    const attemptsBefore = (await messages.listAttempts(ctx.db, id)).length;
    const eventsBefore = (await messages.listEvents(ctx.db, id)).length;

    // A duplicate job, as a reconciler race or a replayed enqueue would leave.
    const dup = await ctx.boss.send(queueName(route.id), { messageId: id }, { id: randomUUID() });
    assert.ok(dup);
    await waitFor('the duplicate job to complete', async () => ((await ctx.boss.getJobById(queueName(route.id), dup))?.state === 'completed' ? true : undefined));

    assert.equal(second.received.length, receivedBefore, 'nothing was sent again');
    assert.equal((await messages.listAttempts(ctx.db, id)).length, attemptsBefore);
    assert.equal((await messages.listEvents(ctx.db, id)).length, eventsBefore);
    assert.equal((await message(id)).status, 'sent');
  });

  test('a stale job for a deferred message (superseded by its retry job) does nothing', async () => {
    const later = await upstream({ data: () => reply(451, '4.3.0 Come back in a minute') });
    const route = await smtpRoute('later', later.port, { retry_delay_seconds: 3600 });
    const { id } = await queueMessage(ctx, route, ['later@example.net']);
    const deferred = await waitFor('deferred status', async () => {
      const m = await message(id);
      return m.status === 'deferred' ? m : undefined;
    });
    assert.notEqual(deferred.job_id, id, 'the retry has its own job');

    // The message's first job id, replayed: the message now waits for a different job.
    await sql`DELETE FROM pgboss.job WHERE id = ${id}::uuid`.execute(ctx.db);
    const replay = await ctx.boss.send(queueName(route.id), { messageId: id }, { id });
    assert.equal(replay, id);
    await waitFor('the replayed job to complete', async () => ((await ctx.boss.getJobById(queueName(route.id), id))?.state === 'completed' ? true : undefined));

    assert.equal(later.seen.data, 1, 'no second delivery attempt reached the upstream');
    const m = await message(id);
    assert.equal(m.status, 'deferred');
    assert.equal(m.attempts, 1);
    assert.equal(m.job_id, deferred.job_id);
    assert.equal((await messages.listAttempts(ctx.db, id)).length, 1);
  });

  test('require_tls never falls back to clear text', async () => {
    const plain = await upstream(); // offers no STARTTLS
    const route = await smtpRoute('tls-required', plain.port, { max_attempts: 1 }, { require_tls: true });
    const { id } = await queueMessage(ctx, route, ['tls@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'failed');
    assert.equal(plain.seen.mailFrom, 0, 'no envelope was sent over the clear-text session');
    const [a] = await messages.listAttempts(ctx.db, id);
    assert.match(a.response ?? '', /STARTTLS/i);
  });

  test('an upstream that never greets times out instead of hanging the worker', async () => {
    const silent = await startSilentServer();
    closers.push(silent.close);
    const route = await smtpRoute('silent', silent.port, { max_attempts: 1 }, { connection_timeout_seconds: 1 });
    const { id } = await queueMessage(ctx, route, ['silent@example.net']);
    const m = await settled(id, 10_000);
    assert.equal(m.status, 'failed');
    const [a] = await messages.listAttempts(ctx.db, id);
    assert.ok(a.duration_ms >= 900 && a.duration_ms < 5_000, `took ${a.duration_ms} ms`);
    assert.match(a.response ?? '', /greeting|timeout|timed out/i);
  });

  test('a changed route gets a new connection pool with the new settings', async () => {
    const moved = await upstream();
    const route = await smtpRoute('moving', second.port);
    const first = await queueMessage(ctx, route, ['move1@example.net']);
    await settled(first.id);
    assert.ok(second.received.some((r) => r.data.equals(first.mime)));

    const updated = await updateRoute(ctx.db, ctx.box, tenant.id, 'moving', { config: { host: '127.0.0.1', port: moved.port, pool: true } });
    const next = await queueMessage(ctx, updated, ['move2@example.net']);
    assert.equal((await settled(next.id)).status, 'sent');
    assert.ok(moved.received.some((r) => r.data.equals(next.mime)), 'the new upstream got the next message');
  });

  test('a slot sends its next messages while those before are still being recorded, up to RECORDS_AHEAD', async () => {
    const route = await smtpRoute('pipelined', second.port, { concurrency: 1 });
    // Paused while they are queued, so that the route's one slot fetches them in one batch.
    await routes.setRoutePaused(ctx.db, tenant.id, route.id, true);
    await new Promise((r) => setTimeout(r, 600));
    const ids: string[] = [];
    for (let i = 0; i < RECORDS_AHEAD + 2; i++) ids.push((await queueMessage(ctx, route, [`pipelined-${i}@example.net`])).id);
    // Their rows held by another transaction: each record waits for it.
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    let locked = () => {};
    const lockTaken = new Promise<void>((r) => (locked = r));
    const holder = ctx.db.connection().execute(async (conn) => {
      await sql`BEGIN`.execute(conn);
      await sql`SELECT 1 FROM messages WHERE id = ANY(${ids}::uuid[]) FOR UPDATE`.execute(conn);
      locked();
      await held;
      await sql`COMMIT`.execute(conn);
    });
    await lockTaken;
    await routes.setRoutePaused(ctx.db, tenant.id, route.id, false);
    const sends = (id: string) => second.received.filter((r) => r.data.includes(Buffer.from(id))).length;
    const sent = () => ids.filter((id) => sends(id) > 0);
    try {
      await waitFor('the upstream to receive RECORDS_AHEAD messages', async () => (sent().length >= RECORDS_AHEAD ? true : undefined));
      // The next one waits for the oldest record: none goes beyond the bound meanwhile.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(sent().length, RECORDS_AHEAD);
      for (const id of ids) assert.equal((await message(id)).status, 'queued', 'each record still waits for its row');
    } finally {
      release();
      await holder;
    }
    for (const id of ids) {
      assert.equal((await settled(id)).status, 'sent');
      assert.equal(sends(id), 1, 'sent once');
    }
  });

  // Last: it stops the shared worker.
  test('stop() lets a delivery in flight finish and record its outcome', async () => {
    const slow = await upstream({ dataDelayMs: 1_000 });
    const route = await smtpRoute('slow', slow.port);
    const { id } = await queueMessage(ctx, route, ['slow@example.net']);
    await waitFor('the upstream to receive DATA', async () => (slow.seen.data > 0 ? true : undefined));
    await worker.stop();
    const m = await message(id);
    assert.equal(m.status, 'sent', 'the in-flight delivery was recorded before stop() returned');
    assert.equal(slow.received.length, 1);
  });
});

describe('delivery worker shutdown with a grace period', () => {
  test('stop(graceMs) aborts a delivery still running after the grace and puts it back, its attempt not counted', async () => {
    const stuck = await upstream({ dataDelayMs: 10_000 });
    const route = await smtpRoute('stuck', stuck.port);
    const w = await startDelivery(ctx, { reconcileIntervalMs: 60_000, routePollMs: 60_000 });
    const { id } = await queueMessage(ctx, route, ['stuck@example.net']);
    await waitFor('the upstream to receive DATA', async () => (stuck.seen.data > 0 ? true : undefined));
    const started = Date.now();
    await w.stop(300);
    assert.ok(Date.now() - started < 3_000, `stop took ${Date.now() - started} ms`);
    const m = await message(id);
    assert.equal(m.status, 'queued', 'the interrupted message waits for its next attempt');
    assert.equal(m.attempts, 0, 'the attempt cut short by the shutdown is not counted');
    assert.deepEqual(await messages.listAttempts(ctx.db, id), []);
    // A live job, due at once, for whichever worker runs next.
    assert.notEqual(m.job_id, id);
    const job = await sql<{ state: string }>`SELECT state FROM pgboss.job WHERE id = ${m.job_id}::uuid`.execute(ctx.db);
    assert.equal(job.rows[0]?.state, 'created');
  });
});

describe('delivery worker: a record the database keeps refusing', () => {
  test('its job is failed, to be retried; the others of its batch complete', async () => {
    // A worker of its own, giving up on a record after a second, not a minute; the shared one
    // (stopped already when the whole file runs) would keep trying for the minute.
    await worker.stop();
    const w = await startDelivery(ctx, { reconcileIntervalMs: 60_000, routePollMs: 200, recordRetryLimitMs: 1_000 });
    const route = await smtpRoute('unrecorded', second.port, { concurrency: 1 });
    await routes.setRoutePaused(ctx.db, tenant.id, route.id, true);
    await new Promise((r) => setTimeout(r, 600));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await queueMessage(ctx, route, [`unrecorded-${i}@example.net`])).id);
    const [first, refused, third] = ids;
    // The database refuses the middle one's attempt row, so its final record fails.
    await sql`
      CREATE FUNCTION test_refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.message_id = ${sql.lit(refused)}::uuid THEN RAISE EXCEPTION 'refused by the test'; END IF;
        RETURN NEW;
      END $$`.execute(ctx.db);
    await sql`CREATE TRIGGER test_refuse_attempt BEFORE INSERT ON attempts FOR EACH ROW EXECUTE FUNCTION test_refuse_attempt()`.execute(ctx.db);
    const job = async (id: string) => {
      const { rows } = await sql<{ state: string; retry_count: number }>`SELECT state, retry_count FROM pgboss.job WHERE name = ${queueName(route.id)} AND id = ${id}::uuid`.execute(ctx.db);
      return rows[0];
    };
    try {
      await routes.setRoutePaused(ctx.db, tenant.id, route.id, false);
      for (const id of [first, third]) assert.equal((await settled(id)).status, 'sent');
      await waitFor('the refused job to be failed for a retry', async () => ((await job(refused))?.retry_count >= 1 ? true : undefined));
      for (const id of [first, third]) assert.equal((await job(id)).state, 'completed', 'recorded: completed with its batch');
      assert.notEqual((await job(refused)).state, 'completed', 'not recorded: never completed');
      assert.equal((await message(refused)).status, 'queued');
      assert.ok(logLines.some((l) => l.msg === 'delivery job failed; pg-boss will retry it' && l.message === refused));
    } finally {
      await sql`DROP TRIGGER test_refuse_attempt ON attempts`.execute(ctx.db);
      await sql`DROP FUNCTION test_refuse_attempt()`.execute(ctx.db);
    }
    // Its retry records it (sending it again: the upstream's first copy was never recorded).
    assert.equal((await settled(refused)).status, 'sent');
    assert.equal((await job(refused)).state, 'completed');
    await w.stop();
  });
});
