// Webhooks through the whole relay: endpoints managed by the admin and by `full` keys over real
// HTTP, a message sent through the relay arriving as signed `accepted` and `sent` webhooks at a
// receiver on loopback, event-type filtering, URL rules, tenant isolation, the delivery log and
// the test event.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { addDomain } from '../../src/services/domains.service.ts';
import { createKey, createTenant, updateTenant } from '../../src/services/tenants.service.ts';
import { MAX_ENDPOINTS_PER_TENANT } from '../../src/services/webhooks.service.ts';
import { callJson, type CallOptions, type Reply } from '../helpers/http.ts';
import { addRoute, eventually, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { signatureTime, signatureValid, startReceiver, type Receiver } from './receiver.ts';

interface Keys {
  id: string;
  name: string;
  send: string;
  read: string;
  full: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('webhooks through the relay', () => {
  let relay: TestRelay;
  let base: string;
  let receiver: Receiver;
  let acme: Keys;
  let globex: Keys;

  const call = (method: string, path: string, token: string | null | undefined, options: Omit<CallOptions, 'token'> = {}): Promise<Reply> =>
    callJson(base, method, path, { ...options, ...(token === undefined ? {} : { token }) });
  const admin = (method: string, path: string, body?: unknown) => call(method, path, undefined, body === undefined ? {} : { body });

  function assertError(r: Reply, status: number, code: string): void {
    assert.equal(r.status, status, r.text);
    assert.equal(r.body?.error?.code, code, r.text);
  }

  async function tenant(name: string): Promise<Keys> {
    const t = await createTenant(relay.ctx.db, { name });
    await addDomain(relay.ctx.db, relay.ctx.box, t.id, { name: `${name}.example`, verified: true });
    await addRoute(relay.ctx, t.id, { name: 'main', transport: 'capture' });
    const key = async (scope: 'send' | 'read' | 'full') => (await createKey(relay.ctx.db, t.id, { scope })).key;
    return { id: t.id, name, send: await key('send'), read: await key('read'), full: await key('full') };
  }

  before(async () => {
    relay = await startTestRelay({ TXRELAY_PUBLIC_URL: 'https://relay.example.com' });
    base = `http://127.0.0.1:${relay.httpPort}`;
    receiver = await startReceiver();
    acme = await tenant('acme');
    globex = await tenant('globex');
  });

  after(async () => {
    await receiver?.close();
    await relay?.close();
  });

  test('a message sent through the relay arrives as signed accepted and sent webhooks, filtered by event type', async () => {
    // By the tenant itself, with its own secret.
    const secret = 'acme-webhook-secret-0123456789';
    const main = await call('POST', '/v1/webhooks', acme.full, { body: { url: receiver.url('/acme/main'), events: ['accepted', 'sent'], secret } });
    assert.equal(main.status, 201, main.text);
    assert.equal(main.body.secret, secret);
    assert.deepEqual(main.body.events, ['accepted', 'sent']);
    assert.equal(main.body.status, 'active');
    // By the admin: one for failures only, one for everything ('*' alone stands for all).
    const failures = await admin('POST', '/admin/tenants/acme/webhooks', { url: receiver.url('/acme/failed'), events: ['failed'] });
    const all = await admin('POST', '/admin/tenants/acme/webhooks', { url: receiver.url('/acme/all'), events: ['sent', '*'] });
    assert.equal(all.status, 201, all.text);
    assert.deepEqual(all.body.events, ['*']);
    assert.match(all.body.secret, /^whsec_[0-9A-Za-z]{32}$/);
    const other = await admin('POST', '/admin/tenants/globex/webhooks', { url: receiver.url('/globex'), events: ['*'] });
    assert.equal(other.status, 201, other.text);

    const sent = await call('POST', '/v1/messages', acme.send, {
      body: { from: 'Shop <noreply@acme.example>', to: ['customer@example.org'], subject: 'Your order', html: '<p>Thanks</p>', tag: 'order' },
    });
    assert.equal(sent.status, 202, sent.text);
    const messageId = sent.body.id;

    const at = (path: string) => receiver.requests.filter((r) => r.path === path);
    await eventually(async () => at('/acme/main').length === 2 && at('/acme/all').length === 2, 30_000, 'accepted and sent webhooks');
    const byType = new Map(at('/acme/main').map((r) => [JSON.parse(r.body).type as string, r]));
    assert.deepEqual([...byType.keys()].sort(), ['accepted', 'sent']);
    for (const [type, r] of byType) {
      assert.equal(r.method, 'POST');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.match(String(r.headers['user-agent']), /^txrelay-webhooks\/\d+\.\d+\.\d+/);
      assert.match(String(r.headers['x-txrelay-delivery']), UUID);
      assert.equal(signatureValid(secret, r.headers['x-txrelay-signature'], r.body), true, 'signed with the secret');
      assert.equal(signatureValid('another-secret-0123456789', r.headers['x-txrelay-signature'], r.body), false, 'a wrong secret fails');
      assert.ok(Math.abs(signatureTime(r.headers['x-txrelay-signature']) - Date.now() / 1000) < 300, 'a current timestamp');
      const p = JSON.parse(r.body);
      assert.deepEqual(Object.keys(p), ['id', 'type', 'at', 'message_id', 'tenant', 'tag', 'detail']);
      assert.equal(p.type, type);
      assert.match(p.id, /^\d+$/);
      assert.equal(p.message_id, messageId);
      assert.equal(p.tenant, 'acme');
      assert.equal(p.tag, 'order');
      assert.match(p.at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      assert.equal(typeof p.detail, 'object');
    }
    assert.equal(JSON.parse(byType.get('sent')!.body).detail.route, 'main');
    // The same event has the same id at every endpoint.
    assert.deepEqual(new Set(at('/acme/all').map((r) => JSON.parse(r.body).id)), new Set([...byType.values()].map((r) => JSON.parse(r.body).id)));
    // Its secret signs the '*' endpoint's requests, not acme's own one.
    assert.equal(signatureValid(all.body.secret, at('/acme/all')[0].headers['x-txrelay-signature'], at('/acme/all')[0].body), true);

    // The delivery log, each delivery with its one successful attempt. (Both events may have been
    // dispatched in one batch, at one time, so their order is not asserted; paging is, below.)
    const log = await call('GET', `/v1/webhooks/${main.body.id}/deliveries`, acme.full);
    assert.equal(log.status, 200, log.text);
    assert.deepEqual(log.body.items.map((d: any) => d.type).sort(), ['accepted', 'sent']);
    for (const d of log.body.items) {
      assert.equal(d.status, 'succeeded');
      assert.equal(d.message_id, messageId);
      assert.equal(d.attempts, 1);
      assert.equal(d.attempt_log.length, 1);
      assert.equal(d.attempt_log[0].status_code, 200);
      assert.equal(d.attempt_log[0].error, null);
      assert.equal(typeof d.attempt_log[0].duration_ms, 'number');
    }
    assert.equal(log.body.next_cursor, null);
    // Dispatching the sent event created every delivery it has: the failures-only endpoint and
    // the other tenant's got none.
    assert.deepEqual((await admin('GET', `/admin/tenants/acme/webhooks/${failures.body.id}/deliveries`)).body.items, []);
    assert.deepEqual((await admin('GET', `/admin/tenants/globex/webhooks/${other.body.id}/deliveries`)).body.items, []);
    assert.equal(at('/acme/failed').length + at('/globex').length, 0);
  });

  test('URLs: http(s) only, no credentials, never the relay itself', async () => {
    const refused = async (url: unknown, why: RegExp) => {
      const r = await admin('POST', '/admin/tenants/globex/webhooks', { url, events: ['sent'] });
      assertError(r, 422, 'validation_error');
      assert.equal(r.body.error.details.fields[0].path, 'url');
      assert.match(r.body.error.details.fields[0].message, why, String(url));
    };
    await refused('ftp://hooks.example.com/in', /http:\/\/ or https:/);
    await refused('not a url', /not a valid URL/);
    await refused(`http://user:pass@127.0.0.1:${receiver.port}/in`, /user name or password/);
    await refused(`http://127.0.0.1:${relay.httpPort}/admin/tenants`, /relay itself/);
    await refused(`http://localhost:${relay.httpPort}/`, /relay itself/);
    await refused(`http://[::1]:${relay.httpPort}/`, /relay itself/);
    await refused(`http://relay.test:${relay.smtpPort}/`, /relay itself/);
    await refused('https://relay.example.com/v1/messages', /TXRELAY_PUBLIC_URL/);
    // PATCH checks the same rules.
    const ok = await admin('POST', '/admin/tenants/globex/webhooks', { url: receiver.url('/fine'), events: ['sent'] });
    assert.equal(ok.status, 201, ok.text);
    const patched = await admin('PATCH', `/admin/tenants/globex/webhooks/${ok.body.id}`, { url: `http://127.0.0.1:${relay.httpPort}/` });
    assertError(patched, 422, 'validation_error');
    assert.equal((await admin('GET', `/admin/tenants/globex/webhooks/${ok.body.id}`)).body.url, receiver.url('/fine'));
    assert.equal((await admin('DELETE', `/admin/tenants/globex/webhooks/${ok.body.id}`)).status, 204);
  });

  test('bodies: events required and known, strict fields, secrets long enough, a limit per tenant', async () => {
    const t = await tenant('validation');
    const bad = [
      { url: receiver.url(), events: [] },
      { url: receiver.url(), events: ['bounced'] },
      { url: receiver.url() },
      { events: ['sent'] },
      { url: receiver.url(), events: ['sent'], secret: 'too-short' },
      { url: receiver.url(), events: ['sent'], secret: 'has spaces in it, sixteen+' },
      { url: receiver.url(), events: ['sent'], urls: ['typo'] },
    ];
    for (const body of bad) assertError(await admin('POST', `/admin/tenants/${t.name}/webhooks`, body), 422, 'validation_error');
    const one = await admin('POST', `/admin/tenants/${t.name}/webhooks`, { url: receiver.url('/v'), events: ['sent', 'sent', 'failed'] });
    assert.deepEqual(one.body.events, ['sent', 'failed']);
    assertError(await admin('PATCH', `/admin/tenants/${t.name}/webhooks/${one.body.id}`, {}), 422, 'validation_error');
    assertError(await admin('PATCH', `/admin/tenants/${t.name}/webhooks/${one.body.id}`, { enable: true }), 422, 'validation_error');
    const changed = await admin('PATCH', `/admin/tenants/${t.name}/webhooks/${one.body.id}`, { events: ['opened', 'clicked'], url: receiver.url('/v2') });
    assert.equal(changed.status, 200, changed.text);
    assert.deepEqual([changed.body.events, changed.body.url], [['opened', 'clicked'], receiver.url('/v2')]);
    for (let i = 1; i < MAX_ENDPOINTS_PER_TENANT; i++) {
      assert.equal((await admin('POST', `/admin/tenants/${t.name}/webhooks`, { url: receiver.url(`/n${i}`), events: ['sent'] })).status, 201);
    }
    assertError(await admin('POST', `/admin/tenants/${t.name}/webhooks`, { url: receiver.url('/one-too-many'), events: ['sent'] }), 409, 'conflict');
    assert.equal((await admin('GET', `/admin/tenants/${t.name}/webhooks`)).body.items.length, MAX_ENDPOINTS_PER_TENANT);
  });

  test('tenant isolation: another tenant\'s endpoint is not found, by admin path or by key', async () => {
    const mine = await call('POST', '/v1/webhooks', acme.full, { body: { url: receiver.url('/iso'), events: ['sent'] } });
    assert.equal(mine.status, 201, mine.text);
    const id = mine.body.id;
    for (const [method, sub] of [['GET', ''], ['PATCH', ''], ['DELETE', ''], ['GET', '/deliveries'], ['POST', '/test']] as const) {
      const body = method === 'PATCH' ? { body: { enabled: false } } : {};
      assertError(await call(method, `/admin/tenants/globex/webhooks/${id}${sub}`, undefined, body), 404, 'not_found');
      assertError(await call(method, `/v1/webhooks/${id}${sub}`, globex.full, body), 404, 'not_found');
    }
    assertError(await call('GET', '/v1/webhooks/not-a-uuid', acme.full), 404, 'not_found');
    assert.ok(!(await call('GET', '/v1/webhooks', globex.full)).body.items.some((w: any) => w.id === id));
    // Untouched by all that.
    const still = await call('GET', `/v1/webhooks/${id}`, acme.full);
    assert.equal(still.body.status, 'active');
    assert.ok((await call('GET', '/v1/webhooks', acme.full)).body.items.some((w: any) => w.id === id));
  });

  test('/v1/webhooks needs the full scope; a suspended tenant may read but not change', async () => {
    for (const token of [acme.read, acme.send]) {
      assertError(await call('GET', '/v1/webhooks', token), 403, 'forbidden');
      assertError(await call('POST', '/v1/webhooks', token, { body: { url: receiver.url('/s'), events: ['sent'] } }), 403, 'forbidden');
    }
    assertError(await call('GET', '/v1/webhooks', null), 401, 'unauthorized');
    const t = await tenant('suspended');
    const w = await call('POST', '/v1/webhooks', t.full, { body: { url: receiver.url('/susp'), events: ['sent'] } });
    assert.equal(w.status, 201, w.text);
    await updateTenant(relay.ctx.db, t.id, { status: 'suspended' });
    assert.equal((await call('GET', '/v1/webhooks', t.full)).status, 200);
    assertError(await call('PATCH', `/v1/webhooks/${w.body.id}`, t.full, { body: { enabled: false } }), 403, 'tenant_suspended');
    assertError(await call('POST', `/v1/webhooks/${w.body.id}/test`, t.full), 403, 'tenant_suspended');
  });

  test('the secret is in the creation answer only', async () => {
    const created = await call('POST', '/v1/webhooks', acme.full, { body: { url: receiver.url('/once'), events: ['failed'] } });
    assert.equal(created.status, 201, created.text);
    const secret: string = created.body.secret;
    for (const r of [await call('GET', '/v1/webhooks', acme.full), await call('GET', `/v1/webhooks/${created.body.id}`, acme.full), await admin('GET', '/admin/tenants/acme/webhooks')]) {
      assert.equal(r.status, 200);
      assert.ok(!r.text.includes(secret));
      assert.ok(!r.text.includes('"secret"'));
    }
  });

  test('test event: sent now, signed, answered with the result, and in the delivery log', async () => {
    const created = await call('POST', '/v1/webhooks', acme.full, { body: { url: receiver.url('/test-event'), events: ['failed'] } });
    const id = created.body.id;
    const ok = await call('POST', `/v1/webhooks/${id}/test`, acme.full);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.ok, true);
    assert.equal(ok.body.status_code, 200);
    assert.equal(ok.body.error, null);
    assert.equal(typeof ok.body.duration_ms, 'number');
    const [r] = receiver.requests.filter((x) => x.path === '/test-event');
    assert.equal(signatureValid(created.body.secret, r.headers['x-txrelay-signature'], r.body), true);
    assert.equal(r.headers['x-txrelay-delivery'], ok.body.delivery_id);
    const p = JSON.parse(r.body);
    assert.deepEqual([p.type, p.tenant, p.message_id, p.tag, p.detail], ['test', 'acme', null, null, { test: true }]);
    assert.match(p.id, /^test_/);

    // A failing endpoint: the result says so, once, with no retry.
    receiver.answer = (req) => (req.path === '/test-event' ? { status: 500, body: 'nope' } : { status: 200 });
    try {
      const failed = await admin('POST', `/admin/tenants/acme/webhooks/${id}/test`);
      assert.equal(failed.status, 200, failed.text);
      assert.deepEqual([failed.body.ok, failed.body.status_code, failed.body.error, failed.body.response], [false, 500, 'HTTP 500', 'nope']);
    } finally {
      receiver.answer = () => ({ status: 200, body: 'ok' });
    }
    await admin('POST', `/admin/tenants/acme/webhooks/${id}/test`);
    // A test does not count against the endpoint.
    assert.equal((await call('GET', `/v1/webhooks/${id}`, acme.full)).body.consecutive_failures, 0);

    // The log, newest first, two to a page.
    const first = await call('GET', `/v1/webhooks/${id}/deliveries?limit=2`, acme.full);
    assert.equal(first.status, 200, first.text);
    assert.deepEqual(first.body.items.map((d: any) => [d.type, d.status, d.event_id]), [['test', 'succeeded', null], ['test', 'failed', null]]);
    assert.ok(first.body.next_cursor);
    const second = await call('GET', `/v1/webhooks/${id}/deliveries?limit=2&cursor=${first.body.next_cursor}`, acme.full);
    assert.deepEqual(second.body.items.map((d: any) => d.id), [ok.body.delivery_id]);
    assert.equal(second.body.next_cursor, null);
    const failedOnly = await call('GET', `/v1/webhooks/${id}/deliveries?status=failed`, acme.full);
    assert.deepEqual(failedOnly.body.items.map((d: any) => d.attempt_log[0].status_code), [500]);
    assertError(await call('GET', `/v1/webhooks/${id}/deliveries?cursor=bogus`, acme.full), 422, 'validation_error');
    assertError(await call('GET', `/v1/webhooks/${id}/deliveries?status=lost`, acme.full), 422, 'validation_error');
    assertError(await call('POST', '/v1/webhooks/00000000-0000-4000-8000-000000000000/test', acme.full), 404, 'not_found');

    // Deleting the endpoint deletes its log.
    assert.equal((await call('DELETE', `/v1/webhooks/${id}`, acme.full)).status, 204);
    assertError(await call('GET', `/v1/webhooks/${id}`, acme.full), 404, 'not_found');
    assertError(await call('GET', `/v1/webhooks/${id}/deliveries`, acme.full), 404, 'not_found');
    assert.equal(await relay.ctx.db.selectFrom('webhook_deliveries').select('id').where('endpoint_id', '=', id).executeTakeFirst(), undefined);
  });
});
