// Webhook delivery against a real receiver on loopback: retries with pg-boss and the delivery
// log, giving up, disabling an endpoint after persistent failure, failures of every kind,
// concurrent dispatchers, the production SSRF rules at send time, and the secret kept out of logs.
// The worker runs with a retry policy in seconds (the default spans a day; policy.test.ts checks it).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { after, afterEach, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { createApiApp } from '../../src/api/app.ts';
import type { Context } from '../../src/context.ts';
import { insertEvent } from '../../src/db/messages.repository.ts';
import { createLogger } from '../../src/log.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { processJob } from '../../src/delivery/deliver.ts';
import { createTransport, TransportCache } from '../../src/delivery/transports/index.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { sendTestEvent } from '../../src/services/webhooks.service.ts';
import { dispatchBatch } from '../../src/webhooks/dispatcher.ts';
import { WEBHOOK_QUEUE, type DisablePolicy, type RetryPolicy } from '../../src/webhooks/policy.ts';
import { targetPolicy, type HostLookup } from '../../src/webhooks/target.ts';
import { ensureWebhookQueue, startWebhooks, type WebhookWorker } from '../../src/webhooks/worker.ts';
import { acceptedMessage } from '../helpers/accepted.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { callJson, type Reply } from '../helpers/http.ts';
import { eventually } from '../helpers/relay.ts';
import { signatureValid, startReceiver, type Receiver } from './receiver.ts';

/** Retries at once: pg-boss's next poll (0.5 s) takes them. */
const FAST = (retryLimit: number): RetryPolicy => ({ retryLimit, retryDelay: 0, retryBackoff: false });
const NEVER_DISABLE: DisablePolicy = { failures: 1_000, seconds: 0 };

let base: TestContext;
let ctx: Context;
let server: http.Server;
let api: string;
let receiver: Receiver;
const logged: string[] = [];
/** Every secret this file used: none may appear in the log. */
const secrets: string[] = [];
let workers: WebhookWorker[] = [];

const call = (method: string, path: string, body?: unknown): Promise<Reply> => callJson(api, method, path, body === undefined ? {} : { body });

async function work(options: { retry: RetryPolicy; disable?: DisablePolicy; lookup?: HostLookup; on?: Context }): Promise<WebhookWorker> {
  const w = await startWebhooks(options.on ?? ctx, { retry: options.retry, disable: options.disable ?? NEVER_DISABLE, lookup: options.lookup, intervalMs: 100 });
  workers.push(w);
  return w;
}

async function tenant(name: string): Promise<{ id: string; name: string }> {
  const t = await createTenant(ctx.db, { name });
  return { id: t.id, name: t.name };
}

async function endpoint(t: { name: string }, body: Record<string, unknown>): Promise<{ id: string; secret: string }> {
  const r = await call('POST', `/admin/tenants/${t.name}/webhooks`, body);
  assert.equal(r.status, 201, r.text);
  secrets.push(r.body.secret);
  return { id: r.body.id, secret: r.body.secret };
}

/** A message sent with a test key: its `accepted` and `sent` events are recorded at once. */
async function message(t: { id: string }, tag = 'receipt'): Promise<string> {
  const id = randomUUID();
  return await commitMessage(ctx, {
    id, tenantId: t.id, apiKeyId: null, tag, routeId: null, routeName: '', templateId: null, templateName: null, testMode: true,
    mailFrom: 'a@example.com', fromAddress: 'a@example.com', subject: 'hi', messageIdHeader: `<${id}@relay.test>`,
    mime: [Buffer.from('Subject: hi\r\n\r\nhello\r\n')], size: 22, verdicts: [], recipients: ['b@example.org'], attachments: [],
  });
}

async function deliveries(t: { name: string }, endpointId: string, query = ''): Promise<any[]> {
  const r = await call('GET', `/admin/tenants/${t.name}/webhooks/${endpointId}/deliveries${query}`);
  assert.equal(r.status, 200, r.text);
  return r.body.items;
}

async function webhook(t: { name: string }, endpointId: string): Promise<any> {
  const r = await call('GET', `/admin/tenants/${t.name}/webhooks/${endpointId}`);
  assert.equal(r.status, 200, r.text);
  return r.body;
}

/** Waits until the event of this type of this message has been dispatched (deliveries created or not). */
async function dispatched(messageId: string, type: string): Promise<void> {
  await eventually(async () => {
    const r = await ctx.db.selectFrom('events').select('webhooks_dispatched').where('message_id', '=', messageId).where('type', '=', type).executeTakeFirst();
    return r?.webhooks_dispatched === true;
  }, 20_000, `${type} event of ${messageId} dispatched`);
}

before(async () => {
  base = await testContext();
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => logged.push(chunk.toString('utf8')));
  // Everything logged at every level, to check that no secret is among it.
  ctx = { ...base, log: createLogger('trace', sink) };
  await ensureWebhookQueue(ctx.boss);
  const app = createApiApp(ctx);
  server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  receiver = await startReceiver();
});

afterEach(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  workers = [];
  receiver.requests.length = 0;
  receiver.answer = () => ({ status: 200, body: 'ok' });
});

after(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await receiver?.close();
  await base?.close();
});

describe('webhook delivery', () => {
  test('fails twice, then 200: three attempts in the delivery log with their status codes, delivered', async () => {
    const t = await tenant('retry-then-ok');
    const ep = await endpoint(t, { url: receiver.url('/retry'), events: ['accepted'] });
    const statuses = [500, 503, 200];
    receiver.answer = (_r, n) => ({ status: statuses[n] ?? 200, body: n < 2 ? `try again (${n})` : 'thanks' });
    await work({ retry: FAST(5) });
    const msg = await message(t, 'welcome');

    const [d] = await eventually(async () => {
      const items = await deliveries(t, ep.id);
      return items.length === 1 && items[0].status === 'succeeded' ? items : undefined;
    }, 30_000, 'the delivery to succeed');
    assert.equal(d.type, 'accepted');
    assert.equal(d.message_id, msg);
    assert.equal(d.attempts, 3);
    assert.equal(d.reason, null);
    assert.equal(d.next_attempt_at, null);
    assert.ok(d.completed_at);
    assert.deepEqual(d.attempt_log.map((a: any) => [a.number, a.status_code, a.error, a.response]), [
      [1, 500, 'HTTP 500', 'try again (0)'],
      [2, 503, 'HTTP 503', 'try again (1)'],
      [3, 200, null, 'thanks'],
    ]);
    for (const a of d.attempt_log) {
      assert.equal(typeof a.duration_ms, 'number');
      assert.ok(!Number.isNaN(Date.parse(a.at)));
    }

    // The same body and delivery id on every attempt, each freshly and validly signed.
    assert.equal(receiver.requests.length, 3);
    const bodies = new Set(receiver.requests.map((r) => r.body));
    assert.equal(bodies.size, 1);
    for (const r of receiver.requests) {
      assert.equal(r.headers['x-txrelay-delivery'], d.id);
      assert.equal(signatureValid(ep.secret, r.headers['x-txrelay-signature'], r.body), true);
    }
    const payload = JSON.parse(receiver.requests[0].body);
    assert.deepEqual(Object.keys(payload), ['id', 'type', 'at', 'message_id', 'tenant', 'tag', 'detail']);
    assert.equal(payload.id, d.event_id);
    assert.equal(payload.tenant, 'retry-then-ok');
    assert.equal(payload.tag, 'welcome');
    // A success forgets the failures before it.
    assert.equal((await webhook(t, ep.id)).consecutive_failures, 0);
  });

  test('retries exhausted: the delivery fails with its reason; failures within the time window do not disable the endpoint', async () => {
    const t = await tenant('gives-up');
    const ep = await endpoint(t, { url: receiver.url('/down'), events: ['sent'] });
    receiver.answer = () => ({ status: 500, body: 'down' });
    // Two failures would disable it, but only once they span an hour: these take seconds.
    await work({ retry: FAST(2), disable: { failures: 2, seconds: 3600 } });
    await message(t);

    const [d] = await eventually(async () => {
      const items = await deliveries(t, ep.id);
      return items.length === 1 && items[0].status === 'failed' ? items : undefined;
    }, 30_000, 'the delivery to fail');
    assert.equal(d.attempts, 3);
    assert.match(d.reason, /^gave up after 3 attempts: HTTP 500$/);
    assert.deepEqual(d.attempt_log.map((a: any) => a.status_code), [500, 500, 500]);
    const e = await webhook(t, ep.id);
    assert.equal(e.status, 'active');
    assert.equal(e.consecutive_failures, 3);
    assert.ok(e.failing_since);
    // No attempt beyond the policy's.
    assert.equal(receiver.requests.length, 3);

    // The endpoint recovers: the next event is delivered and the failures are forgotten.
    receiver.answer = () => ({ status: 204 });
    await message(t);
    await eventually(async () => (await deliveries(t, ep.id)).find((x) => x.status === 'succeeded'), 30_000, 'the next delivery');
    const healed = await webhook(t, ep.id);
    assert.equal(healed.consecutive_failures, 0);
    assert.equal(healed.failing_since, null);
  });

  test('persistent failure disables the endpoint, cancels its pending deliveries, and shows why; PATCH enables it again', async () => {
    const t = await tenant('disabled');
    const ep = await endpoint(t, { url: receiver.url('/broken'), events: ['*'] });
    receiver.answer = () => ({ status: 502, body: 'bad gateway' });
    await work({ retry: FAST(20), disable: { failures: 3, seconds: 0 } });
    await message(t);

    const e = await eventually(async () => {
      const w = await webhook(t, ep.id);
      return w.status === 'disabled' ? w : undefined;
    }, 30_000, 'the endpoint to be disabled');
    assert.ok(e.disabled_at);
    assert.match(e.disabled_reason, /^\d+ failed attempts in a row since \S+; last: HTTP 502$/);
    // The list shows it too.
    const list = await call('GET', `/admin/tenants/${t.name}/webhooks`);
    assert.equal(list.body.items.find((x: any) => x.id === ep.id).status, 'disabled');
    // Both deliveries (accepted, sent) are cancelled with the reason, their attempts kept.
    const ds = await eventually(async () => {
      const items = await deliveries(t, ep.id);
      return items.length === 2 && items.every((x) => x.status === 'cancelled') ? items : undefined;
    }, 20_000, 'the deliveries to be cancelled');
    for (const d of ds) assert.match(d.reason, /^endpoint disabled: \d+ failed attempts in a row/);
    assert.ok(ds.reduce((n, d) => n + d.attempts, 0) >= 3);
    assert.ok(logged.join('').includes('webhook endpoint disabled after persistent failure'), 'a warning is logged');

    // While disabled, new events are not delivered to it.
    const requestsBefore = receiver.requests.length;
    const later = await message(t);
    await dispatched(later, 'sent');
    assert.equal((await deliveries(t, ep.id)).length, 2);

    // Enabled again: failures forgotten, new events delivered; cancelled ones stay cancelled.
    receiver.answer = () => ({ status: 200 });
    const r = await call('PATCH', `/admin/tenants/${t.name}/webhooks/${ep.id}`, { enabled: true });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.body.status, r.body.disabled_at, r.body.disabled_reason, r.body.consecutive_failures], ['active', null, null, 0]);
    const fresh = await message(t);
    await eventually(async () => (await deliveries(t, ep.id)).filter((x) => x.message_id === fresh && x.status === 'succeeded').length === 2, 30_000, 'delivery after re-enabling');
    assert.ok(receiver.requests.length > requestsBefore);
    assert.equal((await deliveries(t, ep.id, '?status=cancelled')).length, 2);
  });

  test('disabling by hand cancels pending deliveries; their jobs then send nothing', async () => {
    const t = await tenant('by-hand');
    const ep = await endpoint(t, { url: receiver.url('/hand'), events: ['accepted'] });
    // Dispatch without a consumer, so the delivery waits.
    const msg = await message(t);
    await dispatchBatch({ db: ctx.db, boss: ctx.boss, log: ctx.log, retry: FAST(3) }, 1000);
    assert.equal((await deliveries(t, ep.id))[0]?.status, 'pending');
    const r = await call('PATCH', `/admin/tenants/${t.name}/webhooks/${ep.id}`, { enabled: false });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'disabled');
    assert.equal(r.body.disabled_reason, 'disabled by an admin');
    const [d] = await deliveries(t, ep.id);
    assert.equal(d.status, 'cancelled');
    assert.equal(d.reason, 'endpoint disabled: disabled by an admin');
    assert.equal(d.message_id, msg);
    // The job runs and finds nothing to send.
    await work({ retry: FAST(3) });
    await eventually(async () => {
      const j = await sql<{ state: string }>`SELECT state FROM pgboss.job WHERE name = ${WEBHOOK_QUEUE} AND id = ${d.id}::uuid`.execute(ctx.db);
      return j.rows[0]?.state === 'completed';
    }, 20_000, 'the job to complete');
    assert.equal(receiver.requests.filter((x) => x.path === '/hand').length, 0);
    assert.equal((await deliveries(t, ep.id))[0].attempts, 0);
  });

  test('no answer in time, connection refused, a redirect, a long answer: failures with their reason', async () => {
    const t = await tenant('failures');
    const deps = { db: ctx.db, box: ctx.box, target: targetPolicy(ctx.config), timeoutMs: 300 };
    const hang = await endpoint(t, { url: receiver.url('/hang'), events: ['sent'] });
    const other = await startReceiver();
    const redirect = await endpoint(t, { url: receiver.url('/redirect'), events: ['sent'] });
    const long = await endpoint(t, { url: receiver.url('/long'), events: ['sent'] });
    // A port nothing listens on: a receiver closed again.
    const gone = await startReceiver();
    const refused = await endpoint(t, { url: gone.url('/gone'), events: ['sent'] });
    await gone.close();
    receiver.answer = (r) =>
      r.path === '/hang' ? 'hang'
      : r.path === '/redirect' ? { status: 302, headers: { location: other.url('/elsewhere') } }
      : { status: 200, body: 'x'.repeat(5000) };
    try {
      const hung = await sendTestEvent(deps, t, hang.id);
      assert.deepEqual([hung.ok, hung.status_code, hung.error], [false, null, 'no answer within 0.3 s']);
      const moved = await sendTestEvent(deps, t, redirect.id);
      assert.deepEqual([moved.ok, moved.status_code, moved.error], [false, 302, 'HTTP 302: redirects are not followed']);
      assert.equal(other.requests.length, 0, 'the redirect was not followed');
      const lengthy = await sendTestEvent(deps, t, long.id);
      assert.equal(lengthy.ok, true);
      assert.equal(lengthy.response?.length, 1024);
      const closed = await sendTestEvent(deps, t, refused.id);
      assert.equal(closed.ok, false);
      assert.equal(closed.status_code, null);
      assert.match(closed.error ?? '', /ECONNREFUSED/);
      // Each is in its endpoint's log.
      const [inLog] = await deliveries(t, hang.id);
      assert.deepEqual([inLog.type, inLog.status, inLog.attempts, inLog.attempt_log[0].error], ['test', 'failed', 1, 'no answer within 0.3 s']);
    } finally {
      await other.close();
    }
  });

  test('a delivery whose secret no longer opens fails after its last try, with the reason, and sends nothing', async () => {
    const t = await tenant('unsealable');
    const ep = await endpoint(t, { url: receiver.url('/unsealable'), events: ['accepted'] });
    // As if TXRELAY_SECRET had changed since the endpoint was created.
    await ctx.db.updateTable('webhook_endpoints').set({ secret_enc: ctx.box.seal('x').replace(/^v1\.[^.]+/, 'v1.AAAAAAAAAAAAAAAA') }).where('id', '=', ep.id).execute();
    await work({ retry: FAST(1) });
    await message(t);
    const [d] = await eventually(async () => {
      const items = await deliveries(t, ep.id);
      return items[0]?.status === 'failed' ? items : undefined;
    }, 30_000, 'the delivery to fail');
    assert.match(d.reason, /^internal error: /);
    assert.equal(d.attempts, 0);
    assert.equal(receiver.requests.filter((r) => r.path === '/unsealable').length, 0);
    assert.ok(logged.join('').includes('webhook job failed; no retries left'));
  });

  test('a job to retry that pg-boss cannot fail stays active: it is not completed with its batch', async () => {
    const t = await tenant('unfailable');
    const ep = await endpoint(t, { url: receiver.url('/unfailable'), events: ['accepted'] });
    receiver.answer = () => ({ status: 500, body: 'down' });
    // pg-boss fails a job by deleting it and inserting it again as a retry: refuse the delete.
    await sql`CREATE FUNCTION test_refuse_webhook_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`.execute(ctx.db);
    await sql`CREATE TRIGGER refuse_webhook_fail BEFORE DELETE ON pgboss.job FOR EACH ROW WHEN (OLD.name = 'webhooks') EXECUTE FUNCTION test_refuse_webhook_fail()`.execute(ctx.db);
    try {
      await work({ retry: FAST(3) });
      await message(t);
      await eventually(async () => logged.join('').includes('failing a webhook job failed; its batch is failed'), 30_000, 'the failed fail to be logged');
      const [d] = await deliveries(t, ep.id);
      assert.equal(d.status, 'pending');
      assert.equal(d.attempts, 1);
      const job = await sql<{ state: string }>`SELECT state FROM pgboss.job WHERE name = 'webhooks' AND data->>'deliveryId' = ${d.id}`.execute(ctx.db);
      assert.deepEqual(job.rows.map((r) => r.state), ['active']);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      workers = [];
      await sql`DROP TRIGGER refuse_webhook_fail ON pgboss.job`.execute(ctx.db);
      await sql`DROP FUNCTION test_refuse_webhook_fail()`.execute(ctx.db);
      // Not to be retried once its claim lapses, during the tests after this one.
      await sql`DELETE FROM pgboss.job WHERE name = 'webhooks' AND data->>'deliveryId' IN (SELECT d.id::text FROM webhook_deliveries d WHERE d.endpoint_id = ${ep.id})`.execute(ctx.db);
    }
  });

  test('a dispatch that cannot queue its jobs rolls back: the events wait for the next pass', async () => {
    const t = await tenant('rollback');
    const ep = await endpoint(t, { url: receiver.url('/rollback'), events: ['accepted'] });
    const msg = await message(t);
    const deps = { db: ctx.db, boss: ctx.boss, log: ctx.log, retry: FAST(3) };
    await ctx.boss.deleteQueue(WEBHOOK_QUEUE);
    try {
      await assert.rejects(dispatchBatch(deps, 1000), /Queue webhooks does not exist/);
      const ev = await ctx.db.selectFrom('events').select('webhooks_dispatched').where('message_id', '=', msg).where('type', '=', 'accepted').executeTakeFirstOrThrow();
      assert.equal(ev.webhooks_dispatched, false);
      assert.deepEqual(await deliveries(t, ep.id), []);
    } finally {
      await ensureWebhookQueue(ctx.boss);
    }
    assert.ok((await dispatchBatch(deps, 1000)) > 0);
    assert.equal((await deliveries(t, ep.id)).length, 1);
  });

  test("a tenant without an active endpoint has its events written dispatched; one with an endpoint's wait for the dispatcher", async () => {
    const quiet = await tenant('born-dispatched');
    const loud = await tenant('born-pending');
    const ep = await endpoint(loud, { url: receiver.url('/born'), events: ['accepted', 'sent'] });
    const captureRoute = (t: { id: string }) => createRoute(ctx.db, ctx.box, t.id, { name: 'capture', transport: 'capture' });
    const transports = new TransportCache((r) => createTransport(r, { box: ctx.box, hostname: 'relay.test' }));
    const flags = async (id: string) =>
      (await ctx.db.selectFrom('events').select(['type', 'webhooks_dispatched']).where('message_id', '=', id).orderBy('id').execute()).map((e) => `${e.type}:${e.webhooks_dispatched}`);
    const ids: Record<string, string> = {};
    for (const [name, t] of [['quiet', quiet], ['loud', loud]] as const) {
      // Through both statements that write events: the accepting one and a delivery's final record.
      const route = await captureRoute(t);
      const m = acceptedMessage(route);
      await commitMessage(ctx, m);
      await processJob({ ctx, transports, deadlineMs: 10_000, shutdown: new AbortController().signal }, { id: m.id, data: { messageId: m.id } });
      ids[name] = m.id;
    }
    await transports.closeAll();
    assert.deepEqual(await flags(ids.quiet), ['accepted:true', 'sent:true']);
    assert.deepEqual(await flags(ids.loud), ['accepted:false', 'sent:false']);
    // The dispatcher takes the endpoint's tenant's events as before, and no other.
    const deps = { db: ctx.db, boss: ctx.boss, log: ctx.log, retry: FAST(3) };
    while ((await dispatchBatch(deps, 1000)) > 0);
    assert.deepEqual(await flags(ids.loud), ['accepted:true', 'sent:true']);
    assert.deepEqual((await deliveries(loud, ep.id)).map((d: { type: string }) => d.type).sort(), ['accepted', 'sent']);
  });

  test('concurrent dispatchers create each delivery once, and each event is delivered once per endpoint', async () => {
    const t = await tenant('fan-out');
    const quiet = await tenant('no-endpoints');
    const a = await endpoint(t, { url: receiver.url('/a'), events: ['*'] });
    const b = await endpoint(t, { url: receiver.url('/b'), events: ['sent', 'opened'] });
    const msg = await message(t);
    const other = await message(quiet);
    const ref = { id: msg, tenant_id: t.id, tag: 'receipt' };
    for (let i = 0; i < 60; i++) {
      await insertEvent(ctx.db, ref, { type: 'opened', detail: { n: i } });
      await insertEvent(ctx.db, ref, { type: 'clicked', detail: { n: i } });
      // Bookkeeping events that no endpoint receives.
      await insertEvent(ctx.db, ref, { type: 'retried' });
      await insertEvent(ctx.db, { id: other, tenant_id: quiet.id, tag: 'x' }, { type: 'sent' });
    }
    const pending = await sql<{ n: number }>`SELECT count(*)::int AS n FROM events WHERE NOT webhooks_dispatched`.execute(ctx.db);

    // Four dispatchers at once, small batches, until none finds anything.
    const deps = { db: ctx.db, boss: ctx.boss, log: ctx.log, retry: FAST(3) };
    const claimedBy = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        let claimed = 0;
        for (let pass = 0; pass < 1000; pass++) {
          const n = await dispatchBatch(deps, 7);
          claimed += n;
          if (n === 0) break;
        }
        return claimed;
      }),
    );
    assert.equal(claimedBy.reduce((x, y) => x + y, 0), pending.rows[0].n, 'every event claimed by exactly one dispatcher');
    const left = await sql<{ n: number }>`SELECT count(*)::int AS n FROM events WHERE NOT webhooks_dispatched`.execute(ctx.db);
    assert.equal(left.rows[0].n, 0);

    // a: accepted, sent, 60 opened, 60 clicked; b: sent and 60 opened. None for 'retried'.
    const rows = await ctx.db.selectFrom('webhook_deliveries').select(['id', 'endpoint_id', 'event_id', 'event_type']).where('tenant_id', '=', t.id).execute();
    const per = (id: string) => rows.filter((r) => r.endpoint_id === id);
    assert.equal(per(a.id).length, 122);
    assert.equal(per(b.id).length, 61);
    assert.equal(rows.filter((r) => r.event_type === 'retried').length, 0);
    assert.equal(new Set(rows.map((r) => `${r.endpoint_id}/${r.event_id}`)).size, rows.length);
    assert.equal(await ctx.db.selectFrom('webhook_deliveries').select('id').where('tenant_id', '=', quiet.id).executeTakeFirst(), undefined);
    const jobs = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pgboss.job WHERE name = ${WEBHOOK_QUEUE} AND id = ANY(${rows.map((r) => r.id)}::uuid[])`.execute(ctx.db);
    assert.equal(jobs.rows[0].n, rows.length, 'one job per delivery');

    // Two worker processes' worth of consumers send them: each event reaches each endpoint once.
    await work({ retry: FAST(3) });
    await work({ retry: FAST(3) });
    await eventually(async () => {
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE tenant_id = ${t.id} AND status = 'succeeded'`.execute(ctx.db);
      return r.rows[0].n === rows.length;
    }, 60_000, 'every delivery sent');
    const seen = receiver.requests.filter((r) => r.path === '/a' || r.path === '/b').map((r) => `${r.path}/${JSON.parse(r.body).id}`);
    assert.equal(seen.length, rows.length);
    assert.equal(new Set(seen).size, rows.length, 'no event twice to one endpoint');
  });

  test('send-time rules: in production a host name resolving to 10.x is refused without connecting; the injected lookup is what connects', async () => {
    const t = await tenant('ssrf');
    const prod: Context = { ...ctx, config: { ...ctx.config, production: true } };
    const prodApp = createApiApp(prod);
    const prodServer = prodApp.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => prodServer.once('listening', () => resolve()));
    const prodApi = `http://127.0.0.1:${(prodServer.address() as AddressInfo).port}`;
    try {
      // Creation: literal private and loopback addresses are refused in production.
      for (const url of ['http://10.0.0.5/hook', receiver.url('/prod'), 'http://[fd00::5]/hook']) {
        const r = await callJson(prodApi, 'POST', `/admin/tenants/${t.name}/webhooks`, { body: { url, events: ['sent'] } });
        assert.equal(r.status, 422, `${url}: ${r.text}`);
        assert.match(r.body.error.details.fields[0].message, /private or local address/);
      }
      // A host name is judged when the request is made, on what it resolves to.
      const host = `hooks.example.test:${receiver.port}`;
      const created = await callJson(prodApi, 'POST', `/admin/tenants/${t.name}/webhooks`, { body: { url: `http://${host}/named`, events: ['sent'] } });
      assert.equal(created.status, 201, created.text);
      secrets.push(created.body.secret);
      const toTen: HostLookup = async () => [{ address: '10.0.0.5', family: 4 }];
      await work({ on: prod, retry: FAST(0), lookup: toTen });
      await message(t);
      const [d] = await eventually(async () => {
        const items = await deliveries(t, created.body.id);
        return items[0]?.status === 'failed' ? items : undefined;
      }, 30_000, 'the refused delivery');
      assert.equal(d.attempt_log[0].status_code, null);
      assert.match(d.attempt_log[0].error, /^refused: hooks\.example\.test resolves to a private or local address \(10\.0\.0\.5\)$/);
      const named = () => receiver.requests.filter((r) => r.path === '/named');
      assert.equal(named().length, 0, 'no connection was made');
      await Promise.all(workers.map((w) => w.stop()));
      workers = [];

      // Outside production, the same name resolved by the injected lookup to loopback connects there.
      const toLoopback: HostLookup = async (name) => (name === 'hooks.example.test' ? [{ address: '127.0.0.1', family: 4 }] : []);
      const ok = await sendTestEvent({ db: ctx.db, box: ctx.box, target: targetPolicy(ctx.config), lookup: toLoopback }, t, created.body.id);
      assert.equal(ok.ok, true, ok.error ?? '');
      assert.equal(named().length, 1);
      assert.equal(named()[0].headers.host, host);

      // In any mode, a name that resolves to loopback must not reach the relay's own ports.
      const relayLike: Context = { ...ctx, listening: { http: receiver.port, smtp: [], smtps: [] } };
      const self = await sendTestEvent({ db: ctx.db, box: ctx.box, target: targetPolicy(relayLike.config, relayLike.listening), lookup: toLoopback }, t, created.body.id);
      assert.equal(self.ok, false);
      assert.match(self.error ?? '', /resolves to the relay itself/);
      assert.equal(named().length, 1);
    } finally {
      prodServer.closeAllConnections();
      await new Promise<void>((resolve) => prodServer.close(() => resolve()));
    }
  });

  test('the secret is never logged, never shown after creation, and sealed at rest', async () => {
    const t = await tenant('secretive');
    const given = 'my-own-secret-0123456789';
    const ep = await endpoint(t, { url: receiver.url('/secret'), events: ['*'], secret: given });
    assert.equal(ep.secret, given);
    const generated = await endpoint(t, { url: receiver.url('/secret2'), events: ['sent'] });
    assert.match(generated.secret, /^whsec_/);
    const rotated = 'rotated-secret-0123456789';
    secrets.push(rotated);
    const patched = await call('PATCH', `/admin/tenants/${t.name}/webhooks/${ep.id}`, { secret: rotated });
    assert.equal(patched.status, 200, patched.text);
    const shown = [patched.text, (await call('GET', `/admin/tenants/${t.name}/webhooks`)).text, (await call('GET', `/admin/tenants/${t.name}/webhooks/${ep.id}`)).text];
    // A refused secret is not echoed either.
    const short = await call('POST', `/admin/tenants/${t.name}/webhooks`, { url: receiver.url('/x'), events: ['sent'], secret: 'short-secret' });
    assert.equal(short.status, 422);
    assert.ok(!short.text.includes('short-secret'));
    shown.push(short.text);

    // Traffic: failures and a success, so the worker logs what it logs.
    receiver.answer = (_r, n) => ({ status: n === 0 ? 500 : 200 });
    await work({ retry: FAST(3) });
    await message(t);
    await eventually(async () => (await deliveries(t, ep.id)).filter((d) => d.status === 'succeeded').length === 2, 30_000, 'deliveries');
    const test = await call('POST', `/admin/tenants/${t.name}/webhooks/${ep.id}/test`);
    assert.equal(test.status, 200, test.text);
    // The rotated secret signs from now on.
    const last = receiver.requests.at(-1)!;
    assert.equal(signatureValid(rotated, last.headers['x-txrelay-signature'], last.body), true);
    assert.equal(signatureValid(given, last.headers['x-txrelay-signature'], last.body), false);

    const rows = await ctx.db.selectFrom('webhook_endpoints').select(['id', 'secret_enc']).where('tenant_id', '=', t.id).execute();
    for (const row of rows) {
      assert.ok(!secrets.some((s) => row.secret_enc.includes(s)), 'sealed, not plain');
      assert.ok(secrets.includes(ctx.box.open(row.secret_enc)));
    }
    const log = logged.join('');
    assert.ok(log.includes('webhook delivered') && log.includes('will retry') && log.includes('webhook test event sent'), 'the log saw the traffic');
    for (const s of secrets) {
      assert.ok(!log.includes(s), 'no secret in the log');
      for (const text of shown) assert.ok(!text.includes(s), 'no secret in an answer after creation');
    }
  });
});
