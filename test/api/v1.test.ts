// The tenant API (/v1) over real HTTP on the whole relay: key authentication, scopes, sending
// through the SMTP pipeline, and tenant isolation for every resource type.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { addDomain } from '../../src/services/domains.service.ts';
import { createKey, createTenant, revokeKey, updateTenant } from '../../src/services/tenants.service.ts';
import { callJson, type CallOptions, type Reply } from '../helpers/http.ts';
import { addRoute, client, eventually, startTestRelay, type TestRelay } from '../helpers/relay.ts';

const PDF = Buffer.from('%PDF-1.4\n% a tiny test document\n').toString('base64');
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex').toString('base64');

interface Keys {
  id: string;
  name: string;
  send: string;
  read: string;
  full: string;
  test: string;
}

describe('tenant API /v1', () => {
  let relay: TestRelay;
  let base: string;
  let a: Keys;
  let b: Keys;

  const call = (method: string, path: string, token: string | null, options: Omit<CallOptions, 'token'> = {}): Promise<Reply> =>
    callJson(base, method, path, { ...options, token });

  function assertError(r: Reply, status: number, code: string): void {
    assert.equal(r.status, status, r.text);
    assert.equal(r.body?.error?.code, code, r.text);
    assert.equal(typeof r.body.error.message, 'string');
  }

  async function tenant(name: string): Promise<Keys> {
    const t = await createTenant(relay.ctx.db, { name });
    await addDomain(relay.ctx.db, relay.ctx.box, t.id, { name: `${name}.example`, verified: true });
    await addRoute(relay.ctx, t.id, { name: 'main', transport: 'capture' });
    const key = async (scope: 'send' | 'read' | 'full', mode: 'live' | 'test' = 'live') => (await createKey(relay.ctx.db, t.id, { scope, mode })).key;
    return { id: t.id, name, send: await key('send'), read: await key('read'), full: await key('full'), test: await key('send', 'test') };
  }

  const mail = (k: Keys, extra: Record<string, unknown> = {}) => ({
    from: `Shop <noreply@${k.name}.example>`,
    to: ['customer@example.org'],
    subject: 'Your order',
    html: '<p>Thanks</p>',
    ...extra,
  });

  async function send(k: Keys, extra: Record<string, unknown> = {}, token = k.send, headers: Record<string, string> = {}): Promise<Reply> {
    return await call('POST', '/v1/messages', token, { body: mail(k, extra), headers });
  }

  async function sent(k: Keys, id: string): Promise<Reply> {
    return await eventually(async () => {
      const r = await call('GET', `/v1/messages/${id}`, k.read);
      return r.status === 200 && r.body.status === 'sent' ? r : undefined;
    }, 20_000, `message ${id} captured`);
  }

  before(async () => {
    relay = await startTestRelay();
    base = `http://127.0.0.1:${relay.httpPort}`;
    a = await tenant('acme');
    b = await tenant('globex');
  });

  after(async () => {
    await relay?.close();
  });

  describe('authentication', () => {
    test('no key, a malformed key, an unknown key: 401 with WWW-Authenticate', async () => {
      for (const token of [null, 'nonsense', 'txr_live_' + 'x'.repeat(32)]) {
        const r = await call('GET', '/v1/messages', token);
        assertError(r, 401, 'unauthorized');
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
      }
    });

    test('a revoked key fails like an unknown one', async () => {
      const k = await createKey(relay.ctx.db, a.id, { scope: 'full' });
      assert.equal((await call('GET', '/v1/messages', k.key)).status, 200);
      await revokeKey(relay.ctx.db, a.id, k.id);
      assertError(await call('GET', '/v1/messages', k.key), 401, 'unauthorized');
    });

    test('the admin token is not an API key, and an API key never reaches /admin', async () => {
      assertError(await call('GET', '/v1/messages', relay.ctx.adminToken), 401, 'unauthorized');
      for (const token of [a.full, a.read, a.send]) {
        assertError(await call('GET', '/admin/tenants', token), 401, 'unauthorized');
        assertError(await call('GET', `/admin/tenants/${a.name}/keys`, token), 401, 'unauthorized');
      }
    });

    test('routes and keys are the admin\'s: a tenant key finds no such endpoint', async () => {
      assertError(await call('GET', '/v1/routes', a.full), 404, 'not_found');
      assertError(await call('GET', '/v1/keys', a.full), 404, 'not_found');
    });
  });

  describe('scopes', () => {
    test('send: sends, but reads nothing and manages nothing', async () => {
      assert.equal((await send(a)).status, 202);
      assertError(await call('GET', '/v1/messages', a.send), 403, 'forbidden');
      assertError(await call('GET', '/v1/smtp/info', a.send), 403, 'forbidden');
      assertError(await call('GET', '/v1/templates', a.send), 403, 'forbidden');
      assertError(await call('POST', '/v1/domains', a.send, { body: { name: 'x.acme.example' } }), 403, 'forbidden');
    });

    test('read: reads the log and SMTP info, cannot send or write', async () => {
      assert.equal((await call('GET', '/v1/messages', a.read)).status, 200);
      assert.equal((await call('GET', '/v1/smtp/info', a.read)).status, 200);
      assertError(await send(a, {}, a.read), 403, 'forbidden');
      assertError(await call('POST', '/v1/templates', a.read, { body: { name: 't', subject: 's', html: 'h' } }), 403, 'forbidden');
      assertError(await call('GET', '/v1/domains', a.read), 403, 'forbidden');
    });

    test('full: sends, reads and manages its templates and domains', async () => {
      assert.equal((await send(a, {}, a.full)).status, 202);
      assert.equal((await call('GET', '/v1/messages', a.full)).status, 200);
      assert.equal((await call('GET', '/v1/templates', a.full)).status, 200);
      assert.equal((await call('GET', '/v1/domains', a.full)).status, 200);
    });
  });

  describe('GET /v1/smtp/info', () => {
    test('host, ports and an smtp_url with the key left as a placeholder', async () => {
      const r = await call('GET', '/v1/smtp/info', a.read);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.host, 'relay.test');
      assert.deepEqual(r.body.auth, ['PLAIN', 'LOGIN']);
      assert.match(r.body.smtp_url, /^smtps?:\/\/txrelay:<api key>@relay\.test:\d+$/);
      assert.ok(!r.text.includes(a.read), 'the key is never echoed');
    });
  });

  describe('POST /v1/messages', () => {
    test('202 {id}; the message is queued, captured, and logged with its fields', async () => {
      const r = await send(a, { tag: 'welcome', to: ['Jane <jane@example.org>', 'bob@example.org'], reply_to: 'help@acme.example' });
      assert.equal(r.status, 202, r.text);
      assert.deepEqual(Object.keys(r.body), ['id']);
      const m = (await sent(a, r.body.id)).body;
      assert.equal(m.tenant, 'acme');
      assert.equal(m.tag, 'welcome');
      assert.equal(m.route, 'main');
      assert.equal(m.from, 'noreply@acme.example');
      assert.equal(m.subject, 'Your order');
      assert.deepEqual(m.recipients.map((x: { address: string }) => x.address).sort(), ['bob@example.org', 'jane@example.org']);
      const byRecipient = await call('GET', '/v1/messages?recipient=JANE@example.org', a.read);
      assert.deepEqual(byRecipient.body.items.map((x: { id: string }) => x.id), [r.body.id]);

      const mime = await call('GET', `/v1/messages/${r.body.id}/mime`, a.read);
      assert.equal(mime.status, 200);
      assert.match(mime.headers.get('content-type') ?? '', /^message\/rfc822/);
      assert.match(mime.text, /^DKIM-Signature: .*d=acme\.example/m);
      assert.match(mime.text, /^Reply-To: help@acme\.example/m);
      assert.match(mime.text, /^To: Jane <jane@example\.org>, bob@example\.org/m);
      assert.match(mime.text, /<p>Thanks<\/p>/);
    });

    test('the SMTP body rules apply: text turned into HTML, images stripped, other attachments kept', async () => {
      const r = await send(a, {
        html: undefined,
        text: 'line one\nline <two>',
        attachments: [
          { filename: 'invoice.pdf', content_type: 'application/pdf', content_base64: PDF },
          { filename: 'logo.png', content_type: 'image/png', content_base64: PNG },
        ],
      });
      assert.equal(r.status, 202, r.text);
      const m = (await sent(a, r.body.id)).body;
      assert.deepEqual(m.attachments, [{ filename: 'invoice.pdf', content_type: 'application/pdf', size: Buffer.from(PDF, 'base64').length }]);
      assert.ok(m.verdicts.some((v: { rule: string }) => v.rule === 'images'), JSON.stringify(m.verdicts));
      assert.ok(m.verdicts.some((v: { rule: string; action: string }) => v.rule === 'text-part' && v.action === 'converted'));
      const mime = (await call('GET', `/v1/messages/${r.body.id}/mime`, a.read)).text;
      assert.match(mime, /line one<br>/);
      assert.match(mime, /line &lt;two&gt;/);
      assert.doesNotMatch(mime, /logo\.png/);
      assert.match(mime, /filename=invoice\.pdf/);
    });

    test('a template with variables renders, exactly as over SMTP', async () => {
      const t = await call('POST', '/v1/templates', a.full, { body: { name: 'receipt', subject: 'Receipt {{ n }}', html: '<p>Hello {{ name }}</p>' } });
      assert.equal(t.status, 201, t.text);
      const r = await send(a, { template: 'receipt', variables: { n: 42, name: '<Jane>' }, subject: undefined, html: undefined });
      assert.equal(r.status, 202, r.text);
      const m = (await sent(a, r.body.id)).body;
      assert.equal(m.subject, 'Receipt 42');
      assert.equal(m.template, 'receipt');
      const mime = (await call('GET', `/v1/messages/${r.body.id}/mime`, a.read)).text;
      assert.match(mime, /Hello &lt;Jane&gt;/);
    });

    test('variables without a template render the message\'s own HTML; neither leaves {{ alone', async () => {
      const withVars = await send(a, { html: '<p>Hi {{ who }}</p>', variables: { who: 'Ann' } });
      const without = await send(a, { html: '<p>Hi {{ who }}</p>' });
      assert.match((await call('GET', `/v1/messages/${withVars.body.id}/mime`, a.read)).text, /Hi Ann/);
      assert.match((await call('GET', `/v1/messages/${without.body.id}/mime`, a.read)).text, /Hi \{\{ who \}\}/);
    });

    test('a test key captures whatever route is named, and marks the message test mode', async () => {
      const r = await send(a, { route: 'main' }, a.test);
      assert.equal(r.status, 202, r.text);
      const m = await call('GET', `/v1/messages/${r.body.id}`, a.read);
      assert.equal(m.body.test_mode, true);
      assert.equal(m.body.status, 'sent');
    });

    test('the same Idempotency-Key answers the first message\'s id and creates nothing', async () => {
      const headers = { 'idempotency-key': 'order-1234' };
      const first = await send(a, { tag: 'idem' }, a.send, headers);
      const second = await send(a, { tag: 'idem' }, a.send, headers);
      assert.equal(first.status, 202);
      assert.equal(second.status, 202);
      assert.equal(second.body.id, first.body.id);
      const list = await call('GET', '/v1/messages?tag=idem', a.read);
      assert.equal(list.body.items.length, 1);
    });

    test('pipeline refusals come back as JSON with the SMTP reply alongside', async () => {
      const unverified = await send(a, { from: 'x@not-ours.example' });
      assertError(unverified, 403, 'domain_not_verified');
      assert.match(unverified.body.error.details.smtp, /^550 5\.7\.1 /);

      assertError(await send(a, { route: 'nope' }), 422, 'unknown_route');
      assertError(await send(a, { template: 'nope', html: undefined }), 422, 'unknown_template');
      assertError(await send(a, { html: '<p>{{ broken </p>', variables: {} }), 422, 'render_error');
      assertError(await send(a, { html: undefined }), 422, 'empty_message');
      assertError(await send(a, { from: 'a@acme.example, b@acme.example' }), 422, 'invalid_from');
    });

    test('validation errors list the fields', async () => {
      const r = await call('POST', '/v1/messages', a.send, { body: { from: 'noreply@acme.example', to: ['not an address', 'ok@example.org'], cc: ['x'] } });
      assertError(r, 422, 'validation_error');
      const missing = await call('POST', '/v1/messages', a.send, { body: { from: 'noreply@acme.example' } });
      assertError(missing, 422, 'validation_error');
      assert.ok(missing.body.error.details.fields.some((f: { path: string }) => f.path === 'to'), missing.text);
      const badAddress = await send(a, { to: ['not an address', 'ok@example.org'] });
      assertError(badAddress, 422, 'validation_error');
      assert.deepEqual(badAddress.body.error.details.fields.map((f: { path: string }) => f.path), ['to.0']);
      const badBase64 = await send(a, { attachments: [{ filename: 'a.pdf', content_type: 'application/pdf', content_base64: '!!!' }] });
      assert.ok(badBase64.body.error.details.fields.some((f: { path: string }) => f.path === 'attachments.0.content_base64'), badBase64.text);
      const tooMany = await send(a, { to: Array.from({ length: 51 }, (_, i) => `r${i}@example.org`) });
      assertError(tooMany, 422, 'validation_error');
    });

    test('malformed JSON is 400, a non-JSON body 415, an oversized message 413', async () => {
      assertError(await call('POST', '/v1/messages', a.send, { raw: '{"from": ' }), 400, 'malformed_json');
      assertError(await call('POST', '/v1/messages', a.send, { raw: 'hello', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type');
      const big = Buffer.alloc(relay.ctx.config.maxMessageBytes + 1, 0x41).toString('base64');
      const r = await send(a, { attachments: [{ filename: 'big.bin', content_type: 'application/octet-stream', content_base64: big }] });
      assertError(r, 413, 'message_too_large');
    });

    test('over the tenant\'s rate limit: 429 with Retry-After, the SMTP reply alongside', async () => {
      const t = await tenant('limited');
      await updateTenant(relay.ctx.db, t.id, { rate_limit_per_minute: 2 });
      // Stay inside one minute window of the database clock.
      const { rows } = await relay.tdb.pool.query<{ s: number }>(`SELECT extract(second FROM now())::float AS s`);
      if (rows[0].s > 50) await new Promise((r) => setTimeout(r, (61 - rows[0].s) * 1000));
      assert.equal((await send(t)).status, 202);
      assert.equal((await send(t)).status, 202);
      const r = await send(t);
      assertError(r, 429, 'rate_limited');
      assert.match(r.body.error.details.smtp, /^451 4\.7\.1 /);
      const retryAfter = Number(r.headers.get('retry-after'));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    });

    test('a suspended tenant cannot send or change anything, but still reads its log', async () => {
      const t = await tenant('initech');
      await updateTenant(relay.ctx.db, t.id, { status: 'suspended' });
      try {
        assertError(await send(t), 403, 'tenant_suspended');
        assertError(await call('POST', '/v1/templates', t.full, { body: { name: 'x', subject: 's', html: 'h' } }), 403, 'tenant_suspended');
        assert.equal((await call('GET', '/v1/messages', t.read)).status, 200);
      } finally {
        await updateTenant(relay.ctx.db, t.id, { status: 'active' });
      }
    });

    test('an SMTP-sent message shows in the same log', async () => {
      const transport = client(relay.smtpPort, a.send);
      const info = await transport.sendMail({ from: 'noreply@acme.example', to: 'x@example.org', subject: 'over smtp', html: '<p>x</p>', headers: { 'X-Transactional-Tag': 'smtp-and-http' } });
      transport.close();
      const id = /queued as (\S+)/.exec(info.response)![1];
      const r = await call('GET', '/v1/messages?tag=smtp-and-http', a.read);
      assert.deepEqual(r.body.items.map((m: { id: string }) => m.id), [id]);
    });
  });

  describe('tenant isolation: tenant A never reads, lists, changes or deletes B\'s', () => {
    test('messages', async () => {
      const theirs = await send(b, { tag: 'b-secret' });
      assert.equal(theirs.status, 202);
      await sent(b, theirs.body.id);
      assertError(await call('GET', `/v1/messages/${theirs.body.id}`, a.read), 404, 'not_found');
      assertError(await call('GET', `/v1/messages/${theirs.body.id}/mime`, a.read), 404, 'not_found');
      const list = await call('GET', '/v1/messages?limit=500', a.read);
      assert.ok(list.body.items.length > 0);
      assert.ok(list.body.items.every((m: { tenant: string }) => m.tenant === 'acme'), 'only A\'s messages');
      // ?tenant= is an admin filter; a tenant key cannot use it to look elsewhere.
      const widened = await call('GET', `/v1/messages?tenant=globex&tag=b-secret`, a.read);
      assert.deepEqual(widened.body.items, []);
    });

    test('templates', async () => {
      const theirs = await call('POST', '/v1/templates', b.full, { body: { name: 'b-only', subject: 's', html: 'B secret' } });
      assert.equal(theirs.status, 201, theirs.text);
      for (const ref of ['b-only', theirs.body.id]) {
        assertError(await call('GET', `/v1/templates/${ref}`, a.full), 404, 'not_found');
        assertError(await call('PUT', `/v1/templates/${ref}`, a.full, { body: { subject: 'x', html: 'pwned' } }), 404, 'not_found');
        assertError(await call('POST', `/v1/templates/${ref}/render`, a.full, { body: { variables: {} } }), 404, 'not_found');
        assertError(await call('DELETE', `/v1/templates/${ref}`, a.full), 404, 'not_found');
      }
      const list = await call('GET', '/v1/templates', a.full);
      assert.ok(!list.body.items.some((t: { name: string }) => t.name === 'b-only'));
      // Nor can A send with it.
      assertError(await send(a, { template: theirs.body.id, html: undefined }), 422, 'unknown_template');
      const still = await call('GET', '/v1/templates/b-only', b.full);
      assert.equal(still.body.html, 'B secret');
    });

    test('domains', async () => {
      const theirs = await call('POST', '/v1/domains', b.full, { body: { name: 'mail.globex.example' } });
      assert.equal(theirs.status, 201, theirs.text);
      for (const ref of ['mail.globex.example', theirs.body.id, 'globex.example']) {
        assertError(await call('GET', `/v1/domains/${ref}`, a.full), 404, 'not_found');
        assertError(await call('POST', `/v1/domains/${ref}/verify`, a.full), 404, 'not_found');
        assertError(await call('DELETE', `/v1/domains/${ref}`, a.full), 404, 'not_found');
      }
      const list = await call('GET', '/v1/domains', a.full);
      assert.deepEqual(list.body.items.map((d: { name: string }) => d.name), ['acme.example']);
      assert.equal((await call('GET', '/v1/domains/mail.globex.example', b.full)).status, 200);
      // B's verified domain does not let A send as B.
      assertError(await send(a, { from: 'ceo@globex.example' }), 403, 'domain_not_verified');
    });

    test('stats', async () => {
      assert.equal((await send(b, { tag: 'globex-stats' })).status, 202);
      assert.equal((await send(a, { tag: 'acme-stats' })).status, 202);
      const mine = await call('GET', '/v1/stats?interval=hour', a.read);
      assert.equal(mine.status, 200, mine.text);
      const tags = mine.body.tags.map((t: { tag: string }) => t.tag);
      assert.ok(tags.includes('acme-stats'), mine.text);
      assert.ok(!tags.includes('globex-stats'), 'B\'s tags never show in A\'s stats');
      const widened = await call('GET', '/v1/stats?tenant=globex', a.read);
      assert.ok(!widened.body.tags.some((t: { tag: string }) => t.tag === 'globex-stats'));
      assertError(await call('GET', '/v1/stats', a.send), 403, 'forbidden');
    });

    test('routes', async () => {
      await addRoute(relay.ctx, b.id, { name: 'globex-only', transport: 'capture' });
      assertError(await send(a, { route: 'globex-only' }), 422, 'unknown_route');
    });
  });

  describe('domains through /v1', () => {
    test('a tenant proves a domain in DNS; it cannot mark one verified by hand', async () => {
      assertError(await call('POST', '/v1/domains', a.full, { body: { name: 'news.acme.example', verified: true } }), 403, 'forbidden');
      const d = await call('POST', '/v1/domains', a.full, { body: { name: 'news.acme.example' } });
      assert.equal(d.status, 201, d.text);
      assert.equal(d.body.verified, false);
      assert.ok(d.body.dns_records.some((r: { purpose: string }) => r.purpose === 'dkim'));
      assertError(await call('POST', '/v1/domains/news.acme.example/verify', a.full, { body: { verified: true } }), 403, 'forbidden');
      assert.equal((await call('GET', '/v1/domains/news.acme.example', a.full)).body.verified, false);
      assert.equal((await call('DELETE', '/v1/domains/news.acme.example', a.full)).status, 204);
    });
  });
});
