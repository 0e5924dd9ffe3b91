// Queue operations end to end (issue 5): the relay's SMTP listener and admin API on port 0, a
// delivery worker on the same context (with a 200 ms route poll, so a pause or resume reaches it
// in a fraction of the 5 s default), and real smtp-server upstreams.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { processJob } from '../../src/delivery/deliver.ts';
import type { TransportCache } from '../../src/delivery/transports/index.ts';
import { startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import * as messages from '../../src/db/messages.repository.ts';
import { createLogger } from '../../src/log.ts';
import { callJson, type CallOptions, type Reply } from '../helpers/http.ts';
import { eventually, sendForReply, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { smtpError, startUpstream, type Upstream } from '../helpers/upstream.ts';

const MISSING = '00000000-0000-4000-8000-000000000000';

let relay: TestRelay;
let worker: DeliveryWorker;
let base: string;
let acme: TenantSetup;
const logLines: Record<string, unknown>[] = [];
const upstreams: Upstream[] = [];
const routeIds = new Map<string, string>();

const call = (method: string, path: string, options: CallOptions = {}): Promise<Reply> => callJson(base, method, path, options);

function expectError(r: Reply, status: number, code: string, message?: RegExp): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body?.error?.code, code, r.text);
  if (message) assert.match(r.body.error.message, message);
}

async function upstream(): Promise<Upstream> {
  const u = await startUpstream();
  upstreams.push(u);
  return u;
}

async function smtpRoute(tenant: string, name: string, port: number, extra: Record<string, unknown> = {}): Promise<Reply> {
  const r = await call('POST', `/admin/tenants/${tenant}/routes`, { body: { name, transport: 'smtp', config: { host: '127.0.0.1', port, pool: false }, ...extra } });
  assert.equal(r.status, 201, r.text);
  routeIds.set(`${tenant}/${name}`, r.body.id);
  await consumerStarted(r.body.id);
  return r;
}

/** The worker's route poll found the new route and consumes its queue. */
async function consumerStarted(routeId: string): Promise<void> {
  await eventually(async () => logLines.some((l) => l.msg === 'route consumer started' && l.route_id === routeId), 5_000, `route ${routeId} consumer to start`);
}

/** Sends over SMTP with the tenant's live key; the message id from the 250 reply. */
async function send(route: string, to: string[], subject = 'queue ops'): Promise<string> {
  const response = await sendForReply(relay.smtpPort, acme.key, {
    from: 'app@acme.example',
    to,
    subject,
    html: `<p>${subject}</p>`,
    headers: { 'X-Transactional-Route': route },
  });
  const m = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/.exec(response);
  assert.ok(m, `accepted with 250: ${response}`);
  return m[1];
}

async function status(id: string, wanted: string, timeoutMs = 20_000) {
  return await eventually(async () => {
    const m = await messages.findMessageMeta(relay.ctx.db, id);
    return m?.status === wanted ? m : undefined;
  }, timeoutMs, `message ${id} to be ${wanted}`);
}

const delivered = (u: Upstream, id: string) => u.received.filter((r) => r.raw.includes(Buffer.from(id)));

const stopLines = (routeId: string | undefined) => logLines.filter((l) => l.msg === 'route consumer stopped: route paused' && l.route_id === routeId).length;

/** Pauses an acme route and waits until the worker has stopped its consumer (nothing is fetched any more). */
async function pause(route: string): Promise<Reply> {
  const routeId = routeIds.get(`acme/${route}`);
  const seen = stopLines(routeId);
  const r = await call('POST', `/admin/tenants/acme/routes/${route}/pause`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.paused, true);
  await eventually(async () => stopLines(routeId) > seen, 5_000, `${route} consumer to stop`);
  return r;
}

before(async () => {
  relay = await startTestRelay({ TXRELAY_ROLES: 'smtp,api' });
  base = `http://127.0.0.1:${relay.httpPort}`;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  worker = await startDelivery({ ...relay.ctx, log: createLogger('info', sink) }, { routePollMs: 200, reconcileIntervalMs: 60_000 });
  acme = await setupTenant(relay.ctx, 'acme', 'acme.example');
  await setupTenant(relay.ctx, 'globex', 'globex.example');
});

after(async () => {
  await worker?.stop(1000);
  for (const u of upstreams) await u.close();
  await relay?.close();
});

describe('queue operations', () => {
  let main: Upstream;
  let backup: Upstream;

  before(async () => {
    main = await upstream();
    backup = await upstream();
    const created = await smtpRoute('acme', 'main', main.port);
    // The default retry policy: 8 attempts, 180 s doubling (about 6 h 21 min in all).
    assert.equal(created.body.max_attempts, 8);
    assert.equal(created.body.retry_delay_seconds, 180);
    assert.equal(created.body.paused, false);
    await smtpRoute('acme', 'backup', backup.port);
    const other = await call('POST', '/admin/tenants/globex/routes', { body: { name: 'elsewhere', transport: 'capture' } });
    assert.equal(other.status, 201, other.text);
    routeIds.set('globex/elsewhere', other.body.id);
  });

  test('pause: messages are accepted (250) and wait; resume delivers them', async () => {
    const paused = await pause('main');
    assert.equal((await call('GET', '/admin/tenants/acme/routes/main')).body.paused, true);
    assert.equal(paused.body.name, 'main');
    // Pausing a paused route changes nothing.
    assert.equal((await call('POST', '/admin/tenants/acme/routes/main/pause')).body.paused, true);

    const ids = [await send('main', ['one@example.net']), await send('main', ['two@example.net'])];
    await new Promise((r) => setTimeout(r, 1500));
    for (const id of ids) {
      assert.equal(delivered(main, id).length, 0, 'nothing is delivered while paused');
      assert.equal((await messages.findMessageMeta(relay.ctx.db, id))?.status, 'queued');
    }

    const q = await call('GET', '/admin/tenants/acme/routes/main/queue');
    assert.equal(q.status, 200, q.text);
    assert.deepEqual(
      { ...q.body, oldest_queued_at: undefined, oldest_age_seconds: undefined },
      { tenant: 'acme', route: 'main', route_id: routeIds.get('acme/main'), paused: true, enabled: true, queued: 2, deferred: 0, oldest_queued_at: undefined, oldest_age_seconds: undefined, next_attempt_at: null },
    );
    const first = await messages.findMessageMeta(relay.ctx.db, ids[0]);
    assert.equal(new Date(q.body.oldest_queued_at).getTime(), first?.created_at.getTime());
    assert.ok(q.body.oldest_age_seconds >= 1 && q.body.oldest_age_seconds < 60, `age ${q.body.oldest_age_seconds}`);

    const all = await call('GET', '/admin/queues');
    assert.equal(all.status, 200, all.text);
    assert.deepEqual(
      all.body.items
        .filter((i: { tenant: string }) => i.tenant !== 'demo')
        .map((i: { tenant: string; route: string; queued: number; paused: boolean }) => [i.tenant, i.route, i.queued, i.paused]),
      [['acme', 'backup', 0, false], ['acme', 'main', 2, true], ['globex', 'elsewhere', 0, false]],
    );
    assert.deepEqual((await call('GET', '/admin/queues?tenant=globex')).body.items.map((i: { route: string }) => i.route), ['elsewhere']);
    expectError(await call('GET', '/admin/queues?tenant=nobody'), 404, 'not_found');

    const resumed = await call('POST', '/admin/tenants/acme/routes/main/resume');
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.body.paused, false);
    for (const id of ids) await status(id, 'sent');
    for (const id of ids) assert.equal(delivered(main, id).length, 1);
    const after = (await call('GET', '/admin/tenants/acme/routes/main/queue')).body;
    assert.equal(after.queued, 0);
    assert.equal(after.oldest_queued_at, null);
    assert.equal(after.oldest_age_seconds, null);
  });

  test('a job fetched after the pause is put back unsent, attempts untouched', async () => {
    await pause('main');
    const id = await send('main', ['late@example.net']);
    const before = await messages.findMessageMeta(relay.ctx.db, id);
    assert.ok(before?.job_id);
    // Play the worker that fetched the job just before the pause reached it.
    const transports = {
      acquire() {
        throw new Error('a paused route must not be delivered to');
      },
    } as unknown as TransportCache;
    await processJob({ ctx: relay.ctx, transports, deadlineMs: 10_000, shutdown: new AbortController().signal }, { id: before.job_id, data: { messageId: id } });

    const m = await messages.findMessageMeta(relay.ctx.db, id);
    assert.equal(m?.status, 'queued');
    assert.equal(m?.attempts, 0);
    assert.notEqual(m?.job_id, before.job_id, 'a new job replaced the fetched one');
    const job = await sql<{ start_after: Date }>`SELECT start_after FROM pgboss.job WHERE id = ${m?.job_id}::uuid`.execute(relay.ctx.db);
    assert.ok(job.rows[0].start_after.getTime() > Date.now() + 5_000, 'the new job waits a little');
    assert.deepEqual((await messages.listAttempts(relay.ctx.db, id)).length, 0);
    assert.equal(delivered(main, id).length, 0);

    // Resumed, the put-back job waits out its delay; retry-now sends it at once.
    assert.equal((await call('POST', '/admin/tenants/acme/routes/main/resume')).status, 200);
    const retried = await call('POST', `/admin/messages/${id}/retry`);
    assert.equal(retried.status, 200, retried.text);
    assert.equal(retried.body.status, 'queued');
    await status(id, 'sent');
    assert.equal(delivered(main, id).length, 1);
  });

  test('retry now: a deferred message is delivered without waiting out its backoff', async () => {
    const flaky = await upstream();
    flaky.behaviour.onData = (_msg, n) => (n === 1 ? smtpError(451, '4.3.0 Temporary problem, try later') : undefined);
    await smtpRoute('acme', 'flaky', flaky.port, { retry_delay_seconds: 3600 });
    const id = await send('flaky', ['slow@example.net']);
    const deferred = await status(id, 'deferred');
    assert.equal(deferred.attempts, 1);
    assert.ok(deferred.next_attempt_at && deferred.next_attempt_at.getTime() > Date.now() + 3500_000, 'the backoff is an hour');

    const q = (await call('GET', '/admin/tenants/acme/routes/flaky/queue')).body;
    assert.equal(q.queued, 0);
    assert.equal(q.deferred, 1);
    assert.equal(new Date(q.next_attempt_at).getTime(), deferred.next_attempt_at.getTime());

    const started = Date.now();
    const r = await call('POST', `/admin/messages/${id}/retry`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.id, id);
    assert.equal(r.body.status, 'deferred');
    const ev = r.body.events.at(-1);
    assert.equal(ev.type, 'retried');
    assert.equal(ev.detail.by, 'admin');
    assert.equal(ev.detail.attempt, 2);

    const sent = await status(id, 'sent');
    assert.ok(Date.now() - started < 15_000);
    assert.equal(sent.attempts, 2);
    assert.equal(flaky.received.length, 1);
    assert.deepEqual((await messages.listEvents(relay.ctx.db, id)).map((e) => e.type), ['accepted', 'deferred', 'retried', 'sent']);

    expectError(await call('POST', `/admin/messages/${id}/retry`), 409, 'conflict', /is sent/);
  });

  test('cancel: a queued message on a paused route fails and is never delivered after the resume', async () => {
    await pause('main');
    const id = await send('main', ['never@example.net', 'nor@example.net']);
    const jobId = (await messages.findMessageMeta(relay.ctx.db, id))?.job_id;

    const r = await call('POST', `/admin/messages/${id}/cancel`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'failed');
    assert.deepEqual(r.body.recipients.map((x: { status: string; response: string }) => [x.status, x.response]), [['failed', 'cancelled'], ['failed', 'cancelled']]);
    const ev = r.body.events.at(-1);
    assert.equal(ev.type, 'failed');
    assert.equal(ev.detail.reason, 'cancelled by admin');

    expectError(await call('POST', `/admin/messages/${id}/cancel`), 409, 'conflict', /already failed/);
    expectError(await call('POST', `/admin/messages/${id}/retry`), 409, 'conflict');

    assert.equal((await call('POST', '/admin/tenants/acme/routes/main/resume')).status, 200);
    // The worker takes the old job and finds it stale.
    await eventually(async () => {
      const j = await sql<{ state: string }>`SELECT state FROM pgboss.job WHERE id = ${jobId}::uuid`.execute(relay.ctx.db);
      return j.rows[0]?.state === 'completed';
    }, 10_000, 'the cancelled message\'s job to be taken');
    assert.equal(delivered(main, id).length, 0);
    const m = await messages.findMessageMeta(relay.ctx.db, id);
    assert.equal(m?.status, 'failed');
    assert.equal(m?.attempts, 0);
  });

  test('requeue: a failed message goes to another route, only for the recipients that failed', async () => {
    const partial = await upstream();
    partial.behaviour.onRcpt = (address) => (address.startsWith('busy@') ? smtpError(450, '4.2.1 Mailbox busy') : undefined);
    await smtpRoute('acme', 'partial', partial.port, { max_attempts: 1 });
    const id = await send('partial', ['fine@example.net', 'busy@example.net']);
    const failed = await status(id, 'failed');
    assert.equal(failed.attempts, 1);
    assert.equal(delivered(partial, id).length, 1);
    const got = delivered(partial, id)[0];
    assert.deepEqual(got.rcptTo, ['fine@example.net']);

    // 409 unless failed; 422 for a route the tenant lacks (another tenant's name), or a bad body.
    await pause('backup');
    const queuedId = await send('backup', ['wait@example.net']);
    expectError(await call('POST', `/admin/messages/${queuedId}/requeue`), 409, 'conflict', /only a failed message/);
    expectError(await call('POST', `/admin/messages/${id}/requeue`, { body: { route: 'elsewhere' } }), 422, 'validation_error');
    expectError(await call('POST', `/admin/messages/${id}/requeue`, { body: { route: routeIds.get('globex/elsewhere') } }), 422, 'validation_error');
    expectError(await call('POST', `/admin/messages/${id}/requeue`, { body: { route: 5 } }), 422, 'validation_error');
    expectError(await call('POST', `/admin/messages/${id}/requeue`, { body: { route: 'backup', extra: true } }), 422, 'validation_error');
    assert.equal((await call('POST', '/admin/tenants/acme/routes/backup/resume')).status, 200);
    await status(queuedId, 'sent');

    const r = await call('POST', `/admin/messages/${id}/requeue`, { body: { route: 'backup' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'queued');
    assert.equal(r.body.route, 'backup');
    assert.equal(r.body.attempts, 0, 'attempts start again on the new route');
    assert.deepEqual(r.body.recipients.map((x: { address: string; status: string }) => [x.address, x.status]), [['fine@example.net', 'sent'], ['busy@example.net', 'queued']]);
    const ev = r.body.events.at(-1);
    assert.equal(ev.type, 'requeued');
    assert.equal(ev.detail.from_route, 'partial');
    assert.equal(ev.detail.route, 'backup');
    assert.deepEqual(ev.detail.recipients, ['busy@example.net']);

    const sent = await status(id, 'sent');
    assert.equal(sent.route_name, 'backup');
    assert.equal(sent.attempts, 1);
    const there = delivered(backup, id);
    assert.equal(there.length, 1);
    assert.deepEqual(there[0].rcptTo, ['busy@example.net'], 'the delivered recipient is not sent again');
    assert.equal(delivered(partial, id).length, 1);
    const attempts = await messages.listAttempts(relay.ctx.db, id);
    assert.deepEqual(attempts.map((a) => [a.route_name, a.number, a.outcome]), [['partial', 1, 'failed'], ['backup', 1, 'sent']]);

    expectError(await call('POST', `/admin/messages/${id}/requeue`), 409, 'conflict');
  });

  test('requeue without a route uses the message\'s own', async () => {
    const refusing = await upstream();
    let refuse = true;
    refusing.behaviour.onData = () => (refuse ? smtpError(554, '5.7.1 Relay access denied') : undefined);
    await smtpRoute('acme', 'refusing', refusing.port);
    const id = await send('refusing', ['again@example.net']);
    await status(id, 'failed');
    refuse = false;
    const r = await call('POST', `/admin/messages/${id}/requeue`, { body: {} });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.route, 'refusing');
    await status(id, 'sent');
    assert.equal(delivered(refusing, id).length, 1);
  });

  test('404 for an unknown message and for another tenant\'s route', async () => {
    for (const op of ['retry', 'cancel', 'requeue']) {
      expectError(await call('POST', `/admin/messages/${MISSING}/${op}`), 404, 'not_found');
      expectError(await call('POST', `/admin/messages/not-an-id/${op}`), 404, 'not_found');
    }
    const acmeMain = routeIds.get('acme/main');
    for (const ref of ['main', acmeMain]) {
      expectError(await call('POST', `/admin/tenants/globex/routes/${ref}/pause`), 404, 'not_found');
      expectError(await call('POST', `/admin/tenants/globex/routes/${ref}/resume`), 404, 'not_found');
      expectError(await call('GET', `/admin/tenants/globex/routes/${ref}/queue`), 404, 'not_found');
    }
    expectError(await call('POST', '/admin/tenants/nobody/routes/main/pause'), 404, 'not_found');
    assert.equal((await call('GET', '/admin/tenants/acme/routes/main')).body.paused, false, 'acme\'s route untouched');
    expectError(await call('POST', `/admin/messages/${MISSING}/retry`, { token: null }), 401, 'unauthorized');
  });
});
