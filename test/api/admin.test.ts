// The admin API over real HTTP (port 0) against a fresh migrated PostgreSQL.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { createApiApp } from '../../src/api/app.ts';
import { openDatabase } from '../../src/db/database.ts';
import { insertAttempt, insertEvent } from '../../src/db/messages.repository.ts';
import { acceptedMessage } from '../helpers/accepted.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { queueName } from '../../src/queue.ts';
import { TEST_ADMIN_TOKEN, testContext, type TestContext } from '../helpers/context.ts';
import { callJson, type CallOptions, type Reply } from '../helpers/http.ts';

const MISSING = '00000000-0000-4000-8000-000000000000';


async function serve(app: ReturnType<typeof createApiApp>): Promise<{ server: http.Server; base: string }> {
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function stop(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

describe('admin API', () => {
  let ctx: TestContext;
  let server: http.Server;
  let base: string;
  const txt = new Map<string, string[][] | Error>();

  const call = (method: string, path: string, options: CallOptions = {}): Promise<Reply> => callJson(base, method, path, options);

  function assertError(r: Reply, status: number, code: string): void {
    assert.equal(r.status, status, r.text);
    assert.equal(r.body?.error?.code, code, r.text);
    assert.equal(typeof r.body.error.message, 'string');
  }

  async function tenant(name: string): Promise<{ id: string; name: string }> {
    const r = await call('POST', '/admin/tenants', { body: { name } });
    assert.equal(r.status, 201, r.text);
    return r.body;
  }

  async function captureRoute(tenantName: string, name: string): Promise<{ id: string; name: string }> {
    const r = await call('POST', `/admin/tenants/${tenantName}/routes`, { body: { name, transport: 'capture' } });
    assert.equal(r.status, 201, r.text);
    return r.body;
  }

  async function message(t: { id: string }, route: { id: string; name: string }, fields: { tag?: string; subject?: string } = {}): Promise<string> {
    return await commitMessage(
      ctx,
      acceptedMessage({ ...route, tenant_id: t.id }, {
        ...fields,
        verdicts: [{ rule: 'header.x-mailer', action: 'dropped' }],
        recipients: ['b@example.org', 'c@example.org'],
        attachments: [{ filename: 'report.pdf', content_type: 'application/pdf', size: 1234 }],
      }),
    );
  }


  before(async () => {
    ctx = await testContext();
    const app = createApiApp(ctx, {
      resolveTxt: async (name) => {
        const v = txt.get(name);
        if (v instanceof Error) throw v;
        if (!v) throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
        return v;
      },
    });
    ({ server, base } = await serve(app));
  });

  after(async () => {
    if (server) await stop(server);
    if (ctx) await ctx.close();
  });

  describe('health', () => {
    test('GET /healthz answers ok without a token', async () => {
      const r = await call('GET', '/healthz', { token: null });
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, { status: 'ok' });
    });

    test('GET /readyz is 200 when database and queue answer', async () => {
      const r = await call('GET', '/readyz', { token: null });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { status: 'ok', checks: { database: 'ok', queue: 'ok' } });
    });

    test('GET /readyz is 503 with the reason when the database is unreachable; API calls 500', async () => {
      const dead = openDatabase('postgres://nobody:x@127.0.0.1:1/none', { max: 1 });
      const other = await serve(createApiApp({ ...ctx, db: dead.db }));
      try {
        const res = await fetch(`${other.base}/readyz`);
        const body = (await res.json()) as { status: string; checks: Record<string, string> };
        assert.equal(res.status, 503);
        assert.equal(body.status, 'unavailable');
        assert.match(body.checks.database, /^unavailable/);
        assert.equal(body.checks.queue, 'ok');
        // Our own fault is a 500 with the generic shape, never the driver's message.
        const admin = await fetch(`${other.base}/admin/tenants`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
        assert.equal(admin.status, 500);
        assert.deepEqual(await admin.json(), { error: { code: 'internal_error', message: 'internal error' } });
      } finally {
        await stop(other.server);
        await dead.close();
      }
    });
  });

  describe('authentication and unknown paths', () => {
    test('401 without a token, with a wrong token, or another scheme', async () => {
      assertError(await call('GET', '/admin/tenants', { token: null }), 401, 'unauthorized');
      assertError(await call('GET', '/admin/tenants', { token: 'wrong-token-wrong-token' }), 401, 'unauthorized');
      const basic = await call('GET', '/admin/tenants', { token: null, headers: { authorization: `Basic ${TEST_ADMIN_TOKEN}` } });
      assertError(basic, 401, 'unauthorized');
      assert.match(basic.headers.get('www-authenticate') ?? '', /^Bearer/);
      // Unknown admin paths do not reveal themselves before authentication.
      assertError(await call('GET', '/admin/nothing-here', { token: null }), 401, 'unauthorized');
    });

    test('unknown paths answer a JSON 404', async () => {
      assertError(await call('GET', '/nothing-here'), 404, 'not_found');
      assertError(await call('GET', '/admin/nothing-here'), 404, 'not_found');
    });

    test('malformed JSON is 400, a non-JSON body 415', async () => {
      assertError(await call('POST', '/admin/tenants', { raw: '{"name": ' }), 400, 'malformed_json');
      assertError(await call('POST', '/admin/tenants', { raw: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type');
    });
  });

  describe('tenants', () => {
    test('create, read by id and by name, update, delete', async () => {
      const t = await tenant('acme');
      assert.deepEqual(Object.keys(t).sort(), ['created_at', 'id', 'name', 'rate_limit_per_minute', 'status', 'track_clicks', 'track_opens']);
      assert.equal(t.name, 'acme');
      assert.equal((await call('GET', `/admin/tenants/${t.id}`)).body.name, 'acme');
      assert.equal((await call('GET', '/admin/tenants/acme')).body.id, t.id);

      const p = await call('PATCH', '/admin/tenants/acme', { body: { status: 'suspended', rate_limit_per_minute: 600, track_opens: true } });
      assert.equal(p.status, 200, p.text);
      assert.equal(p.body.status, 'suspended');
      assert.equal(p.body.rate_limit_per_minute, 600);
      assert.equal(p.body.track_opens, true);

      const d = await call('DELETE', `/admin/tenants/${t.id}`);
      assert.equal(d.status, 204);
      assertError(await call('GET', '/admin/tenants/acme'), 404, 'not_found');
      assertError(await call('DELETE', '/admin/tenants/acme'), 404, 'not_found');
    });

    test('409 on a duplicate name, also by rename', async () => {
      await tenant('dup-a');
      await tenant('dup-b');
      assertError(await call('POST', '/admin/tenants', { body: { name: 'dup-a' } }), 409, 'conflict');
      assertError(await call('PATCH', '/admin/tenants/dup-b', { body: { name: 'dup-a' } }), 409, 'conflict');
    });

    test('422 lists the invalid fields', async () => {
      const r = await call('POST', '/admin/tenants', { body: { name: '-bad name', status: 'sleeping', rate_limit_per_minute: -1 } });
      assertError(r, 422, 'validation_error');
      const paths = r.body.error.details.fields.map((f: { path: string }) => f.path).sort();
      assert.deepEqual(paths, ['name', 'rate_limit_per_minute', 'status']);
      for (const f of r.body.error.details.fields) assert.equal(typeof f.message, 'string');
      assertError(await call('POST', '/admin/tenants', { body: {} }), 422, 'validation_error');
      assertError(await call('GET', `/admin/tenants/${MISSING}`), 404, 'not_found');
    });

    test('the list pages with a cursor', async () => {
      for (const n of ['page-1', 'page-2', 'page-3']) await tenant(n);
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const r: Reply = await call('GET', `/admin/tenants?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(r.status, 200, r.text);
        assert.ok(r.body.items.length <= 2);
        seen.push(...r.body.items.map((t: { name: string }) => t.name));
        cursor = r.body.next_cursor;
      } while (cursor);
      assert.deepEqual(seen, [...seen].sort());
      for (const n of ['page-1', 'page-2', 'page-3']) assert.ok(seen.includes(n));
      assert.equal(new Set(seen).size, seen.length);
      assertError(await call('GET', '/admin/tenants?limit=501'), 422, 'validation_error');
    });
  });

  describe('keys', () => {
    test('the key is shown once, at creation, and never listed', async () => {
      await tenant('keyco');
      const r = await call('POST', '/admin/tenants/keyco/keys', { body: { scope: 'full', mode: 'test' } });
      assert.equal(r.status, 201, r.text);
      assert.match(r.body.key, /^txr_test_[0-9A-Za-z]{32}$/);
      assert.equal(r.body.scope, 'full');
      assert.equal(r.body.mode, 'test');
      assert.equal(r.body.prefix, r.body.key.slice(0, r.body.prefix.length));
      assert.ok(r.body.id && r.body.created_at);

      const live = await call('POST', '/admin/tenants/keyco/keys', {});
      assert.equal(live.status, 201, live.text);
      assert.match(live.body.key, /^txr_live_/);
      assert.equal(live.body.scope, 'send');

      const list = await call('GET', '/admin/tenants/keyco/keys');
      assert.equal(list.status, 200);
      assert.equal(list.body.items.length, 2);
      assert.equal(list.body.next_cursor, null);
      assert.ok(!list.text.includes(r.body.key) && !list.text.includes(live.body.key));
      for (const k of list.body.items) {
        assert.deepEqual(Object.keys(k).sort(), ['created_at', 'id', 'last_used_at', 'mode', 'prefix', 'revoked_at', 'scope']);
      }
    });

    test('revoke, then 404 for revoked, unknown and malformed ids', async () => {
      const created = await call('POST', '/admin/tenants/keyco/keys', { body: { scope: 'read' } });
      const r = await call('DELETE', `/admin/tenants/keyco/keys/${created.body.id}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.id, created.body.id);
      assert.ok(r.body.revoked_at);
      assert.equal(r.body.key, undefined);
      assertError(await call('DELETE', `/admin/tenants/keyco/keys/${created.body.id}`), 404, 'not_found');
      assertError(await call('DELETE', `/admin/tenants/keyco/keys/${MISSING}`), 404, 'not_found');
      assertError(await call('DELETE', '/admin/tenants/keyco/keys/not-a-uuid'), 404, 'not_found');
    });

    test('422 on an unknown scope or mode', async () => {
      const r = await call('POST', '/admin/tenants/keyco/keys', { body: { scope: 'everything', mode: 'prod' } });
      assertError(r, 422, 'validation_error');
      assert.deepEqual(r.body.error.details.fields.map((f: { path: string }) => f.path).sort(), ['mode', 'scope']);
      assertError(await call('POST', '/admin/tenants/nobody/keys', {}), 404, 'not_found');
    });
  });

  describe('domains', () => {
    test('add returns DNS records; read by name and id; 409 on duplicate; 422 on a bad name', async () => {
      await tenant('domco');
      const r = await call('POST', '/admin/tenants/domco/domains', { body: { name: 'Mail.Example.com' } });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.name, 'mail.example.com');
      assert.equal(r.body.verified, false);
      assert.equal(r.body.verified_at, null);
      const purposes = r.body.dns_records.map((d: { purpose: string }) => d.purpose).sort();
      assert.deepEqual(purposes, ['dkim', 'verification']);
      assert.ok(!r.text.includes('PRIVATE KEY'));

      assert.equal((await call('GET', '/admin/tenants/domco/domains/mail.example.com')).body.id, r.body.id);
      assert.equal((await call('GET', `/admin/tenants/domco/domains/${r.body.id}`)).body.name, 'mail.example.com');
      const list = await call('GET', '/admin/tenants/domco/domains');
      assert.deepEqual(list.body.items.map((d: { name: string }) => d.name), ['mail.example.com']);
      assert.equal(list.body.next_cursor, null);

      assertError(await call('POST', '/admin/tenants/domco/domains', { body: { name: 'mail.example.com' } }), 409, 'conflict');
      const bad = await call('POST', '/admin/tenants/domco/domains', { body: { name: 'not a domain' } });
      assertError(bad, 422, 'validation_error');
      assert.equal(bad.body.error.details.fields[0].path, 'name');
      assertError(await call('GET', '/admin/tenants/domco/domains/other.example.com'), 404, 'not_found');
    });

    test('admins mark a domain verified (or not) by hand', async () => {
      const v = await call('POST', '/admin/tenants/domco/domains/mail.example.com/verify', { body: { verified: true } });
      assert.equal(v.status, 200, v.text);
      assert.equal(v.body.verified, true);
      assert.ok(v.body.verified_at);
      const u = await call('POST', '/admin/tenants/domco/domains/mail.example.com/verify', { body: { verified: false } });
      assert.equal(u.body.verified, false);
      assertError(await call('POST', '/admin/tenants/domco/domains/mail.example.com/verify', { body: { verified: 'yes' } }), 422, 'validation_error');
    });

    test('verification by DNS: published record verifies, missing record 422, DNS failure 502', async () => {
      const d = await call('POST', '/admin/tenants/domco/domains', { body: { name: 'dns.example.com' } });
      const record = d.body.dns_records.find((x: { purpose: string }) => x.purpose === 'verification');

      const missing = await call('POST', '/admin/tenants/domco/domains/dns.example.com/verify');
      assertError(missing, 422, 'verification_failed');
      assert.equal(missing.body.error.details.expected.name, '_txrelay.dns.example.com');

      txt.set(record.name, [['v=spf1 -all'], ['other']]);
      assertError(await call('POST', '/admin/tenants/domco/domains/dns.example.com/verify'), 422, 'verification_failed');

      txt.set(record.name, Object.assign(new Error('queryTxt ESERVFAIL'), { code: 'ESERVFAIL' }) as Error);
      assertError(await call('POST', '/admin/tenants/domco/domains/dns.example.com/verify', { body: {} }), 502, 'dns_error');

      // Long TXT values arrive split into strings; they are joined before comparing.
      const value: string = record.value;
      txt.set(record.name, [['v=spf1 -all'], [value.slice(0, 10), value.slice(10)]]);
      // The token alone is not enough while the domain has a DKIM key: its record is named.
      const dkim = d.body.dns_records.find((x: { purpose: string }) => x.purpose === 'dkim');
      const noDkim = await call('POST', '/admin/tenants/domco/domains/dns.example.com/verify');
      assertError(noDkim, 422, 'verification_failed');
      assert.match(noDkim.body.error.message, new RegExp(`TXT ${dkim.name.replaceAll('.', '\\.')} missing`));
      txt.set(dkim.name, [[dkim.value.slice(0, 255), dkim.value.slice(255)]]);
      const ok = await call('POST', '/admin/tenants/domco/domains/dns.example.com/verify');
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.verified, true);
    });

    test('delete', async () => {
      assert.equal((await call('DELETE', '/admin/tenants/domco/domains/dns.example.com')).status, 204);
      assertError(await call('GET', '/admin/tenants/domco/domains/dns.example.com'), 404, 'not_found');
      assertError(await call('DELETE', '/admin/tenants/domco/domains/dns.example.com'), 404, 'not_found');
    });
  });

  describe('routes', () => {
    const PASSWORD = 'hunter2-very-secret-pass';

    test('credentials are encrypted at rest and never returned', async () => {
      await tenant('routeco');
      const r = await call('POST', '/admin/tenants/routeco/routes', {
        body: { name: 'upstream', transport: 'smtp', config: { host: 'smtp.example.net', port: 587, auth: { user: 'relay-user', pass: PASSWORD } } },
      });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.name, 'upstream');
      assert.equal(r.body.transport, 'smtp');
      assert.equal(r.body.config.host, 'smtp.example.net');
      assert.equal(r.body.max_attempts, 8);
      assert.ok(!r.text.includes(PASSWORD));

      const get = await call('GET', '/admin/tenants/routeco/routes/upstream');
      assert.equal(get.status, 200);
      assert.ok(!get.text.includes(PASSWORD));
      assert.equal((await call('GET', `/admin/tenants/routeco/routes/${r.body.id}`)).body.name, 'upstream');
      const list = await call('GET', '/admin/tenants/routeco/routes');
      assert.equal(list.body.items.length, 1);
      assert.ok(!list.text.includes(PASSWORD));

      const row = await ctx.db.selectFrom('routes').select(['secrets_enc', 'config']).where('id', '=', r.body.id).executeTakeFirstOrThrow();
      assert.ok(row.secrets_enc);
      assert.ok(!row.secrets_enc.includes(PASSWORD));
      assert.ok(!JSON.stringify(row.config).includes(PASSWORD));
      assert.ok(JSON.parse(ctx.box.open(row.secrets_enc)).auth.pass === PASSWORD);
    });

    test('creating a route creates its queue', async () => {
      const r = await captureRoute('routeco', 'capture');
      assert.ok(await ctx.boss.getQueue(queueName(r.id)));
    });

    test('409 on a duplicate name; 422 names invalid config fields', async () => {
      assertError(await call('POST', '/admin/tenants/routeco/routes', { body: { name: 'capture', transport: 'capture' } }), 409, 'conflict');
      const bad = await call('POST', '/admin/tenants/routeco/routes', { body: { name: 'x', transport: 'smtp', config: { port: 99999 } } });
      assertError(bad, 422, 'validation_error');
      const paths = bad.body.error.details.fields.map((f: { path: string }) => f.path).sort();
      assert.deepEqual(paths, ['config.host', 'config.port']);
      const unknown = await call('POST', '/admin/tenants/routeco/routes', { body: { name: 'y', transport: 'pigeon' } });
      assertError(unknown, 422, 'validation_error');
      assert.deepEqual(unknown.body.error.details.fields.map((f: { path: string }) => f.path), ['transport']);
    });

    test('patch and delete', async () => {
      const p = await call('PATCH', '/admin/tenants/routeco/routes/capture', { body: { enabled: false, max_attempts: 3, fallback: 'upstream' } });
      assert.equal(p.status, 200, p.text);
      assert.equal(p.body.enabled, false);
      assert.equal(p.body.max_attempts, 3);
      assert.equal(p.body.fallback, 'upstream');
      assertError(await call('PATCH', '/admin/tenants/routeco/routes/capture', { body: { fallback: 'nowhere' } }), 422, 'validation_error');
      assertError(await call('PATCH', '/admin/tenants/routeco/routes/capture', { body: { name: 'upstream' } }), 409, 'conflict');
      assert.equal((await call('DELETE', '/admin/tenants/routeco/routes/capture')).status, 204);
      assertError(await call('GET', '/admin/tenants/routeco/routes/capture'), 404, 'not_found');
      assertError(await call('PATCH', `/admin/tenants/routeco/routes/${MISSING}`, { body: { enabled: true } }), 404, 'not_found');
    });
  });

  describe('tenant isolation', () => {
    test("tenant A's key, domain, route and template are not reachable under tenant B", async () => {
      await tenant('iso-a');
      await tenant('iso-b');
      const key = await call('POST', '/admin/tenants/iso-a/keys', {});
      const domain = await call('POST', '/admin/tenants/iso-a/domains', { body: { name: 'iso-a.example' } });
      const route = await captureRoute('iso-a', 'only-a');

      assertError(await call('DELETE', `/admin/tenants/iso-b/keys/${key.body.id}`), 404, 'not_found');
      assert.equal((await call('GET', '/admin/tenants/iso-b/keys')).body.items.length, 0);

      for (const ref of ['iso-a.example', domain.body.id]) {
        assertError(await call('GET', `/admin/tenants/iso-b/domains/${ref}`), 404, 'not_found');
        assertError(await call('POST', `/admin/tenants/iso-b/domains/${ref}/verify`, { body: { verified: true } }), 404, 'not_found');
        assertError(await call('DELETE', `/admin/tenants/iso-b/domains/${ref}`), 404, 'not_found');
      }
      for (const ref of ['only-a', route.id]) {
        assertError(await call('GET', `/admin/tenants/iso-b/routes/${ref}`), 404, 'not_found');
        assertError(await call('PATCH', `/admin/tenants/iso-b/routes/${ref}`, { body: { enabled: false } }), 404, 'not_found');
        assertError(await call('DELETE', `/admin/tenants/iso-b/routes/${ref}`), 404, 'not_found');
      }
      const template = await call('POST', '/admin/tenants/iso-a/templates', { body: { name: 'only-a', subject: 's', html: '<p>A</p>' } });
      assert.equal(template.status, 201, template.text);
      for (const ref of ['only-a', template.body.id]) {
        assertError(await call('GET', `/admin/tenants/iso-b/templates/${ref}`), 404, 'not_found');
        assertError(await call('PUT', `/admin/tenants/iso-b/templates/${ref}`, { body: { subject: 's', html: 'x' } }), 404, 'not_found');
        assertError(await call('POST', `/admin/tenants/iso-b/templates/${ref}/render`, { body: {} }), 404, 'not_found');
        assertError(await call('DELETE', `/admin/tenants/iso-b/templates/${ref}`), 404, 'not_found');
      }
      assert.equal((await call('GET', '/admin/tenants/iso-b/templates')).body.items.length, 0);
      // A fallback may only name a route of the same tenant.
      await captureRoute('iso-b', 'b-route');
      assertError(await call('PATCH', '/admin/tenants/iso-b/routes/b-route', { body: { fallback: 'only-a' } }), 422, 'validation_error');

      // Everything of A is still there.
      assert.equal((await call('GET', '/admin/tenants/iso-a/domains/iso-a.example')).body.verified, false);
      assert.equal((await call('GET', '/admin/tenants/iso-a/routes/only-a')).body.enabled, true);
      assert.equal((await call('GET', '/admin/tenants/iso-a/keys')).body.items[0].revoked_at, null);
    });
  });

  describe('messages', () => {
    let msgTenant: { id: string; name: string };
    let route: { id: string; name: string };
    let first: string;

    test('one message with recipients, attempts, events, verdicts and attachments', async () => {
      msgTenant = await tenant('msgco');
      route = await captureRoute('msgco', 'main');
      first = await message(msgTenant, route, { tag: 'welcome', subject: 'Welcome!' });
      await insertAttempt(ctx.db, { message_id: first, route_id: route.id, route_name: route.name, number: 1, outcome: 'deferred', response: '451 4.7.1 try later', duration_ms: 42 });
      await insertEvent(ctx.db, { id: first, tenant_id: msgTenant.id, tag: 'welcome' }, { type: 'deferred', detail: { attempt: 1 } });

      const r = await call('GET', `/admin/messages/${first}`);
      assert.equal(r.status, 200, r.text);
      const m = r.body;
      assert.equal(m.id, first);
      assert.equal(m.tenant, 'msgco');
      assert.equal(m.status, 'queued');
      assert.equal(m.tag, 'welcome');
      assert.equal(m.route, 'main');
      assert.equal(m.template, null);
      assert.equal(m.from, 'a@example.com');
      assert.equal(m.subject, 'Welcome!');
      assert.deepEqual(m.recipients, [
        { address: 'b@example.org', status: 'queued', response: null },
        { address: 'c@example.org', status: 'queued', response: null },
      ]);
      assert.equal(typeof m.attempts, 'number');
      assert.equal(m.attempt_log.length, 1);
      assert.equal(m.attempt_log[0].number, 1);
      assert.equal(m.attempt_log[0].outcome, 'deferred');
      assert.equal(m.attempt_log[0].response, '451 4.7.1 try later');
      assert.equal(m.attempt_log[0].duration_ms, 42);
      assert.ok(m.attempt_log[0].at);
      assert.deepEqual(m.events.map((e: { type: string }) => e.type), ['accepted', 'deferred']);
      assert.deepEqual(m.events[1].detail, { attempt: 1 });
      assert.deepEqual(m.verdicts, [{ rule: 'header.x-mailer', action: 'dropped' }]);
      assert.deepEqual(m.attachments, [{ filename: 'report.pdf', content_type: 'application/pdf', size: 1234 }]);
      assert.equal(typeof m.size, 'number');
      assert.equal(m.test_mode, false);
      assert.ok(m.created_at);
      assert.equal(m.sent_at, null);
      assert.ok(!('mime' in m));
    });

    test('/mime answers the stored bytes as message/rfc822', async () => {
      const res = await fetch(`${base}/admin/messages/${first}/mime`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^message\/rfc822/);
      const stored = await ctx.db.selectFrom('messages').select('mime').where('id', '=', first).executeTakeFirstOrThrow();
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), stored.mime);
      assertError(await call('GET', `/admin/messages/${first}/mime`, { token: null }), 401, 'unauthorized');
    });

    test('404 for unknown and malformed ids', async () => {
      assertError(await call('GET', `/admin/messages/${MISSING}`), 404, 'not_found');
      assertError(await call('GET', '/admin/messages/not-a-uuid'), 404, 'not_found');
      assertError(await call('GET', `/admin/messages/${MISSING}/mime`), 404, 'not_found');
      assertError(await call('GET', "/admin/messages/1'%20or%201=1/mime"), 404, 'not_found');
    });

    test('the list filters by tenant, tag and status', async () => {
      const other = await tenant('msgco-other');
      const otherRoute = await captureRoute('msgco-other', 'main');
      await message(other, otherRoute, { tag: 'welcome' });
      await message(msgTenant, route, { tag: 'receipt' });

      const all = await call('GET', '/admin/messages');
      assert.equal(all.status, 200, all.text);
      assert.equal(all.body.items.length, 3);
      assert.equal(all.body.next_cursor, null);
      const item = all.body.items.find((i: { id: string }) => i.id === first);
      assert.equal(item.tenant, 'msgco');
      assert.equal(item.recipients.length, 2);

      const byTenant = await call('GET', '/admin/messages?tenant=msgco');
      assert.deepEqual(new Set(byTenant.body.items.map((i: { tenant: string }) => i.tenant)), new Set(['msgco']));
      assert.equal(byTenant.body.items.length, 2);
      assert.equal((await call('GET', `/admin/messages?tenant=${other.id}`)).body.items.length, 1);

      const welcome = await call('GET', '/admin/messages?tenant=msgco&tag=welcome');
      assert.deepEqual(welcome.body.items.map((i: { id: string }) => i.id), [first]);
      assert.equal((await call('GET', '/admin/messages?status=sent')).body.items.length, 0);
      assert.equal((await call('GET', '/admin/messages?status=queued&tag=')).body.items.length, 3);

      const future = new Date(Date.now() + 3600_000).toISOString();
      assert.equal((await call('GET', `/admin/messages?since=${future}`)).body.items.length, 0);
      assert.equal((await call('GET', `/admin/messages?until=${future}`)).body.items.length, 3);

      assertError(await call('GET', '/admin/messages?tenant=nobody'), 404, 'not_found');
      const bad = await call('GET', '/admin/messages?status=lost&since=yesterday&limit=0');
      assertError(bad, 422, 'validation_error');
      assert.deepEqual(bad.body.error.details.fields.map((f: { path: string }) => f.path).sort(), ['limit', 'since', 'status']);
      assertError(await call('GET', '/admin/messages?limit=501'), 422, 'validation_error');
      assertError(await call('GET', '/admin/messages?cursor=garbage'), 422, 'validation_error');
    });

    test('cursor pagination is stable, newest first, even with equal timestamps', async () => {
      const pager = await tenant('pager');
      const pagerRoute = await captureRoute('pager', 'main');
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) ids.push(await message(pager, pagerRoute, { tag: 'page' }));
      // Three messages share one timestamp: the id breaks the tie.
      // Microseconds too, which a JS Date would round away.
      await ctx.db
        .updateTable('messages')
        .set({ created_at: sql`'2020-01-01T00:00:00.123456Z'::timestamptz` } as never)
        .where('id', 'in', ids.slice(2, 5))
        .execute();

      const expected = (
        await ctx.db.selectFrom('messages').select('id').where('tenant_id', '=', pager.id).orderBy('created_at', 'desc').orderBy('id', 'desc').execute()
      ).map((r) => r.id);

      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const r: Reply = await call('GET', `/admin/messages?tenant=pager&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        assert.equal(r.status, 200, r.text);
        seen.push(...r.body.items.map((i: { id: string }) => i.id));
        cursor = r.body.next_cursor;
        pages++;
        // A message arriving meanwhile appears on no later page (it is newer than the cursor).
        if (pages === 1) await message(pager, pagerRoute, { tag: 'page' });
      } while (cursor);
      assert.equal(pages, 4);
      assert.deepEqual(seen, expected);
    });
  });
});
