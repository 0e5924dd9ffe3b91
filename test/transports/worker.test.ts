// The postal and http transports end to end: real PostgreSQL and pg-boss, the real delivery
// worker, messages committed the way the SMTP listener commits them, HTTP upstreams on port 0.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import * as messages from '../../src/db/messages.repository.ts';
import type { Tenant } from '../../src/db/schema.ts';
import { startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import { createLogger } from '../../src/log.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { queueMessage, waitFor } from '../delivery/upstream.ts';
import { startEndpoint, startFakePostal, type FakePostal, type Server } from './servers.ts';

const POSTAL_KEY = 'e2e-postal-server-key-41f7c0';
const HTTP_TOKEN = 'Bearer e2e-http-token-9b3d55';

let t: TestContext;
let ctx: TestContext;
let tenant: Tenant;
let worker: DeliveryWorker;
let postal: FakePostal;
let hook: Server;
const logLines: string[] = [];

async function settled(id: string) {
  return await waitFor(`message ${id} to settle`, async () => {
    const m = await messages.findMessage(ctx.db, id);
    return m && (m.status === 'sent' || m.status === 'failed') ? m : undefined;
  });
}

before(async () => {
  t = await testContext();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString('utf8'));
      done();
    },
  });
  ctx = { ...t, log: createLogger('debug', sink) };
  tenant = await createTenant(ctx.db, { name: 'acme' });
  postal = await startFakePostal({ key: POSTAL_KEY, domains: ['example.com'] });
  hook = await startEndpoint((req) => (req.path === '/refuse' ? { status: 422, body: '{"error":"recipient not allowed"}' } : { status: 200, body: '{"accepted":true}' }));
  worker = await startDelivery(ctx, { reconcileIntervalMs: 60_000, routePollMs: 200 });
});

after(async () => {
  await worker?.stop();
  await postal?.close();
  await hook?.close();
  await t?.close();
});

describe('postal and http routes through the delivery worker', () => {
  test('a message on a postal route is sent; each recipient keeps its Postal message id', async () => {
    const route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'postal', transport: 'postal', config: { url: postal.url, server_key: POSTAL_KEY } });
    const to = ['alice@example.net', 'bob@example.org'];
    const { id, mime } = await queueMessage(ctx, route, to);
    const m = await settled(id);

    assert.equal(m.status, 'sent');
    assert.equal(m.attempts, 1);
    const created = postal.messages.filter((x) => x.raw.equals(mime));
    assert.deepEqual(created.map((x) => x.rcptTo), to, 'Postal got the stored bytes, one message per recipient');
    assert.ok(created.every((x) => x.mailFrom === 'bounces@example.com'));
    const recipients = await messages.listRecipients(ctx.db, id);
    for (const r of recipients) {
      const pm = created.find((x) => x.rcptTo === r.address)!;
      assert.equal(r.status, 'sent');
      assert.match(r.response ?? '', new RegExp(`^Postal accepted as message ${pm.id} \\(token ${pm.token}`));
    }
    assert.deepEqual((await messages.listAttempts(ctx.db, id)).map((a) => [a.number, a.outcome, a.route_name]), [[1, 'sent', 'postal']]);
  });

  test('a refused Postal key defers the message (kept for when the route is fixed), never recording the key', async () => {
    const route = await createRoute(ctx.db, ctx.box, tenant.id, {
      name: 'postal-badkey',
      transport: 'postal',
      config: { url: postal.url, server_key: 'not-the-key-7c2e91' },
      retry_delay_seconds: 3600,
    });
    const { id } = await queueMessage(ctx, route, ['k@example.net']);
    const m = await waitFor('deferred status', async () => {
      const x = await messages.findMessage(ctx.db, id);
      return x?.status === 'deferred' ? x : undefined;
    });
    assert.equal(m.attempts, 1);
    const [r] = await messages.listRecipients(ctx.db, id);
    assert.equal(r.status, 'deferred');
    assert.match(r.response ?? '', /^Postal error InvalidServerAPIKey/);
    const stored = JSON.stringify([r, await messages.listAttempts(ctx.db, id), await messages.listEvents(ctx.db, id)]);
    assert.ok(!stored.includes('not-the-key-7c2e91'), 'the key Postal echoed is not stored');
    assert.ok(!logLines.join('').includes('not-the-key-7c2e91'), 'nor logged');
  });

  test('a message on an http route is POSTed as JSON with the route headers and sent', async () => {
    const route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'hook', transport: 'http', config: { url: `${hook.url}/mail`, headers: { authorization: HTTP_TOKEN } } });
    const { id, mime } = await queueMessage(ctx, route, ['h@example.net']);
    const m = await settled(id);

    assert.equal(m.status, 'sent');
    const req = hook.requests.find((x) => x.path === '/mail' && x.body.includes(Buffer.from(id)));
    assert.ok(req, 'the endpoint got the message');
    assert.equal(req.headers.authorization, HTTP_TOKEN);
    const body = JSON.parse(req.body.toString('utf8')) as Record<string, unknown>;
    assert.equal(body.id, id, 'the txrelay message id');
    assert.equal(body.message_id_header, `<${id}@relay.test>`);
    assert.deepEqual(body.rcpt_to, ['h@example.net']);
    assert.ok(Buffer.from(body.mime_base64 as string, 'base64').equals(mime));
    const [r] = await messages.listRecipients(ctx.db, id);
    assert.equal(r.status, 'sent');
    assert.equal(r.response, 'HTTP 200 OK: {"accepted":true}');
    assert.ok(!logLines.join('').includes('e2e-http-token'), 'the route header is never logged');
  });

  test('an http 4xx fails the message at once', async () => {
    const route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'hook-refusing', transport: 'http', config: { url: `${hook.url}/refuse`, headers: {} } });
    const { id } = await queueMessage(ctx, route, ['no@example.net']);
    const m = await settled(id);
    assert.equal(m.status, 'failed');
    assert.equal(m.attempts, 1);
    const [a] = await messages.listAttempts(ctx.db, id);
    assert.equal(a.response, 'HTTP 422 Unprocessable Entity: {"error":"recipient not allowed"}');
  });
});
