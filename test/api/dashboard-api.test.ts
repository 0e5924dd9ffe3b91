// What the dashboard adds to the HTTP API, on the whole relay: the page and its assets (strict
// CSP, vendored chart library, nothing else from node_modules), a message's HTML part as JSON for
// the preview (tenant-scoped like its MIME), and the capture inbox's `captured` filter.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { DASHBOARD_CSP } from '../../src/api/dashboard.ts';
import { insertAcceptedMessages } from '../../src/db/messages.repository.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { callJson, type Reply } from '../helpers/http.ts';
import { addRoute, eventually, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

interface Tenant {
  id: string;
  name: string;
  full: string;
  read: string;
  send: string;
  test: string;
}

describe('dashboard API', () => {
  let relay: TestRelay;
  let upstream: Upstream;
  let base: string;
  let acme: Tenant;
  let globex: Tenant;
  /** acme's messages: delivered upstream, captured by route, sent with a test key. */
  const ids = { delivered: '', routed: '', testKey: '', globex: '' };

  async function tenant(name: string): Promise<Tenant> {
    const t = await createTenant(relay.ctx.db, { name });
    await addDomain(relay.ctx.db, relay.ctx.box, t.id, { name: `${name}.example`, verified: true });
    const key = async (scope: 'send' | 'read' | 'full', mode: 'live' | 'test' = 'live') => (await createKey(relay.ctx.db, t.id, { scope, mode })).key;
    return { id: t.id, name, full: await key('full'), read: await key('read'), send: await key('send'), test: await key('send', 'test') };
  }

  async function send(t: Tenant, key: string, extra: Record<string, unknown>): Promise<string> {
    const r = await callJson(base, 'POST', '/v1/messages', {
      token: key,
      body: { from: `Shop <shop@${t.name}.example>`, to: ['jane@example.org'], subject: 'Your receipt', html: '<h1>Thanks, Jane</h1><p>Order 42</p>', ...extra },
    });
    assert.equal(r.status, 202, r.text);
    return r.body.id;
  }

  const sent = (key: string, id: string) =>
    eventually(async () => {
      const r = await callJson(base, 'GET', `/v1/messages/${id}`, { token: key });
      return r.status === 200 && r.body.status === 'sent' ? r : undefined;
    }, 20_000, `message ${id} sent`);

  const ofPage = (r: Reply): string[] => r.body.items.map((m: { id: string }) => m.id);

  before(async () => {
    upstream = await startUpstream();
    relay = await startTestRelay();
    base = `http://127.0.0.1:${relay.httpPort}`;
    acme = await tenant('acme');
    globex = await tenant('globex');
    await addRoute(relay.ctx, acme.id, { name: 'upstream', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port } });
    await addRoute(relay.ctx, acme.id, { name: 'inbox', transport: 'capture' });
    await addRoute(relay.ctx, globex.id, { name: 'inbox', transport: 'capture' });
    ids.delivered = await send(acme, acme.full, { route: 'upstream', tag: 'receipt' });
    ids.routed = await send(acme, acme.full, { route: 'inbox', tag: 'receipt' });
    ids.testKey = await send(acme, acme.test, { route: 'upstream', tag: 'welcome' });
    ids.globex = await send(globex, globex.full, { tag: 'receipt' });
    for (const id of [ids.delivered, ids.routed, ids.testKey]) await sent(acme.read, id);
    await sent(globex.read, ids.globex);
    await upstream.waitFor(1);
  });

  after(async () => {
    await relay?.close();
    await upstream?.close();
  });

  describe('the page', () => {
    test('/dashboard and /dashboard/ serve the page with a strict CSP and no inline script', async () => {
      for (const path of ['/dashboard', '/dashboard/']) {
        const res = await fetch(base + path);
        assert.equal(res.status, 200, path);
        assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
        const csp = res.headers.get('content-security-policy') ?? '';
        assert.equal(csp, DASHBOARD_CSP);
        assert.match(csp, /default-src 'self'/);
        assert.match(csp, /script-src 'self'(;|$)/, 'scripts from this origin only, never inline');
        assert.doesNotMatch(csp, /https?:|\*/, 'no other host');
        assert.equal(res.headers.get('x-frame-options'), 'DENY');
        const html = await res.text();
        assert.match(html, /<script type="module" src="\/dashboard\/assets\/app\.js"><\/script>/);
        // Every <script> has a src: nothing inline for the CSP to refuse.
        assert.deepEqual(html.match(/<script(?![^>]*\bsrc=)[^>]*>/g), null);
        assert.doesNotMatch(html, /https?:\/\//, 'no CDN');
      }
    });

    test('the scripts and styles are served, as JavaScript and CSS, under the same CSP', async () => {
      for (const [path, type] of [
        ['/dashboard/assets/app.js', /javascript/],
        ['/dashboard/assets/views/tags.js', /javascript/],
        ['/dashboard/assets/app.css', /^text\/css/],
      ] as const) {
        const res = await fetch(base + path);
        assert.equal(res.status, 200, path);
        assert.match(res.headers.get('content-type') ?? '', type, path);
        assert.equal(res.headers.get('content-security-policy'), DASHBOARD_CSP, path);
        assert.ok((await res.text()).length > 100, path);
      }
    });

    test('uPlot is served from its npm package; nothing else of it, or of node_modules, is', async () => {
      const js = await fetch(`${base}/dashboard/assets/vendor/uPlot.esm.js`);
      assert.equal(js.status, 200);
      assert.match(js.headers.get('content-type') ?? '', /javascript/);
      assert.match(await js.text(), /export \{ uPlot as default \}/);
      const css = await fetch(`${base}/dashboard/assets/vendor/uPlot.min.css`);
      assert.equal(css.status, 200);
      assert.match(await css.text(), /\.uplot/);
      for (const path of [
        '/dashboard/assets/vendor/uPlot.cjs.js',
        '/dashboard/assets/vendor/package.json',
        '/dashboard/assets/vendor/constructor',
        '/dashboard/assets/%2e%2e/%2e%2e/package.json',
        '/dashboard/assets/..%2f..%2fapi%2fdashboard.ts',
        '/dashboard/assets/nope.js',
      ]) {
        const res = await fetch(base + path);
        assert.equal(res.status, 404, path);
        await res.body?.cancel();
      }
    });

    test('the page needs no credential, but the data behind it does', async () => {
      assert.equal((await fetch(`${base}/dashboard`)).status, 200);
      assert.equal((await callJson(base, 'GET', '/v1/stats', { token: null })).status, 401);
    });
  });

  describe('GET …/messages/:id/html', () => {
    test('a tenant key with read scope gets the subject and the HTML part', async () => {
      for (const key of [acme.read, acme.full]) {
        const r = await callJson(base, 'GET', `/v1/messages/${ids.routed}/html`, { token: key });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.subject, 'Your receipt');
        assert.match(r.body.html, /<h1>Thanks, Jane<\/h1><p>Order 42<\/p>/);
      }
    });

    test('the admin gets any tenant\'s', async () => {
      for (const id of [ids.testKey, ids.globex]) {
        const r = await callJson(base, 'GET', `/admin/messages/${id}/html`);
        assert.equal(r.status, 200, r.text);
        assert.match(r.body.html, /Thanks, Jane/);
      }
    });

    test('another tenant\'s message, an unknown id and a malformed id are not found', async () => {
      for (const path of [`/v1/messages/${ids.globex}/html`, `/v1/messages/${randomUUID()}/html`, '/v1/messages/not-an-id/html']) {
        const r = await callJson(base, 'GET', path, { token: acme.read });
        assert.equal(r.status, 404, `${path}: ${r.text}`);
        assert.equal(r.body.error.code, 'not_found');
      }
      const r = await callJson(base, 'GET', `/admin/messages/${randomUUID()}/html`);
      assert.equal(r.status, 404, r.text);
    });

    test('a send key cannot read it; without a credential nobody can', async () => {
      const forbidden = await callJson(base, 'GET', `/v1/messages/${ids.routed}/html`, { token: acme.send });
      assert.equal(forbidden.status, 403, forbidden.text);
      assert.equal(forbidden.body.error.code, 'forbidden');
      assert.equal((await callJson(base, 'GET', `/v1/messages/${ids.routed}/html`, { token: null })).status, 401);
      assert.equal((await callJson(base, 'GET', `/admin/messages/${ids.routed}/html`, { token: acme.full })).status, 401);
    });

    test('a message without an HTML part answers html: null', async () => {
      const id = randomUUID();
      const mime = Buffer.from('From: a@acme.example\r\nTo: b@example.org\r\nSubject: Plain\r\nContent-Type: text/plain\r\n\r\njust text\r\n');
      await insertAcceptedMessages(relay.ctx.db, [{
        message: {
          id, tenant_id: acme.id, status: 'sent', tag: 'legacy', route_name: 'inbox', test_mode: false, mail_from: 'a@acme.example', from_address: 'a@acme.example',
          subject: 'Plain', message_id_header: `<${id}@relay.test>`, size: mime.length, mime, verdicts: [],
        },
        recipients: ['b@example.org'],
        attachments: [],
        recipientResult: { status: 'sent', response: 'stored by hand' },
      }]);
      const r = await callJson(base, 'GET', `/v1/messages/${id}/html`, { token: acme.read });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { subject: 'Plain', html: null });
    });
  });

  describe('the captured filter', () => {
    test('captured=true lists test-key and capture-route messages, not delivered ones nor other tenants\'', async () => {
      const r = await callJson(base, 'GET', '/v1/messages?captured=true', { token: acme.read });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(new Set(ofPage(r)), new Set([ids.testKey, ids.routed]));
      assert.deepEqual(ofPage(r), [ids.testKey, ids.routed], 'newest first');
    });

    test('captured=false lists the others', async () => {
      const r = await callJson(base, 'GET', '/v1/messages?captured=false&tag=receipt', { token: acme.read });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(ofPage(r), [ids.delivered]);
    });

    test('it combines with the other filters and with paging', async () => {
      const tagged = await callJson(base, 'GET', '/v1/messages?captured=true&tag=welcome', { token: acme.read });
      assert.deepEqual(ofPage(tagged), [ids.testKey]);
      const first = await callJson(base, 'GET', '/v1/messages?captured=true&limit=1', { token: acme.read });
      assert.deepEqual(ofPage(first), [ids.testKey]);
      const second = await callJson(base, 'GET', `/v1/messages?captured=true&limit=1&cursor=${first.body.next_cursor}`, { token: acme.read });
      assert.deepEqual(ofPage(second), [ids.routed]);
      assert.equal(second.body.next_cursor, null);
    });

    test('tenant-scoped: another tenant\'s key sees only its own, the admin narrows with tenant=', async () => {
      const g = await callJson(base, 'GET', '/v1/messages?captured=true', { token: globex.read });
      assert.deepEqual(ofPage(g), [ids.globex]);
      const a = await callJson(base, 'GET', '/admin/messages?captured=true&tenant=acme');
      assert.deepEqual(new Set(ofPage(a)), new Set([ids.testKey, ids.routed]));
      const all = await callJson(base, 'GET', '/admin/messages?captured=true');
      assert.deepEqual(new Set(ofPage(all)), new Set([ids.testKey, ids.routed, ids.globex]));
    });

    test('a value other than true or false is refused', async () => {
      const r = await callJson(base, 'GET', '/v1/messages?captured=yes', { token: acme.read });
      assert.equal(r.status, 422, r.text);
      assert.equal(r.body.error.details.fields[0].path, 'captured');
    });
  });
});
