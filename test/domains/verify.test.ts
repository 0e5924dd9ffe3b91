// Verification by DNS through the admin API (`POST …/domains/:d/verify` with no body), with
// TXRELAY_SPF_INCLUDE set: the verification TXT and the DKIM record are required (the DKIM
// `p=` compared ignoring whitespace and chunking); SPF is reported but never blocks.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createApiApp } from '../../src/api/app.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { fakeDns, type FakeDns } from '../helpers/dns.ts';
import { callJson, type Reply } from '../helpers/http.ts';

const SPF = 'spf.esp.example';

describe('domain verification by DNS', () => {
  let ctx: TestContext;
  let server: http.Server;
  let base: string;
  let dns: FakeDns;
  const call = (method: string, path: string, body?: unknown): Promise<Reply> => callJson(base, method, path, body === undefined ? {} : { body });

  before(async () => {
    ctx = await testContext({ TXRELAY_SPF_INCLUDE: SPF.toUpperCase() });
    dns = fakeDns();
    server = createApiApp(ctx, { resolveTxt: (name) => dns.resolveTxt(name) }).listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    assert.equal((await call('POST', '/admin/tenants', { name: 'verifyco' })).status, 201);
  });

  after(async () => {
    if (server) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    if (ctx) await ctx.close();
  });

  test('adding a domain returns the verification, DKIM and SPF records, unchecked', async () => {
    const r = await call('POST', '/admin/tenants/verifyco/domains', { name: 'acme.example.com' });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(
      r.body.dns_records.map((x: { purpose: string; name: string; status: string }) => [x.purpose, x.name, x.status]),
      [
        ['verification', '_txrelay.acme.example.com', 'unchecked'],
        ['dkim', `${r.body.dns_records[1].name.split('.')[0]}._domainkey.acme.example.com`, 'unchecked'],
        ['spf', 'acme.example.com', 'unchecked'],
      ],
    );
    assert.equal(r.body.dns_records[2].value, `v=spf1 include:${SPF} ~all`);
    assert.equal(r.body.checked_at, null);
    assert.equal(r.body.dns_problem, null);
  });

  test('the failure names each missing record; SPF alone does not block; DKIM must publish our key', async () => {
    const domain = (await call('GET', '/admin/tenants/verifyco/domains/acme.example.com')).body;
    const [token, dkim] = domain.dns_records as { name: string; value: string }[];

    const none = await call('POST', '/admin/tenants/verifyco/domains/acme.example.com/verify');
    assert.equal(none.status, 422, none.text);
    assert.equal(none.body.error.code, 'verification_failed');
    assert.equal(none.body.error.message, `domain acme.example.com not verified: TXT ${token.name} missing; TXT ${dkim.name} missing`);
    assert.equal(none.body.error.details.expected.name, token.name);
    assert.deepEqual(none.body.error.details.records.map((x: { purpose: string; status: string }) => [x.purpose, x.status]), [
      ['verification', 'missing'],
      ['dkim', 'missing'],
      ['spf', 'missing'],
    ]);

    // The token alone: the DKIM record is what is missing now.
    dns.publish(token.name, token.value);
    const noDkim = await call('POST', '/admin/tenants/verifyco/domains/acme.example.com/verify');
    assert.equal(noDkim.status, 422, noDkim.text);
    assert.equal(noDkim.body.error.message, `domain acme.example.com not verified: TXT ${dkim.name} missing`);
    assert.equal(noDkim.body.error.details.expected.name, dkim.name);
    // The failed attempt shows in the view, the domain still unverified.
    const view = (await call('GET', '/admin/tenants/verifyco/domains/acme.example.com')).body;
    assert.equal(view.verified, false);
    assert.equal(view.dns_problem, `TXT ${dkim.name} missing`);
    assert.ok(view.checked_at);

    // Another key under our selector (a stale record, a copy-paste from another domain).
    dns.publish(dkim.name, 'v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotours');
    const wrong = await call('POST', '/admin/tenants/verifyco/domains/acme.example.com/verify');
    assert.equal(wrong.status, 422, wrong.text);
    assert.equal(wrong.body.error.message, `domain acme.example.com not verified: TXT ${dkim.name} does not match`);

    // Ours, as a DNS console might keep it: tags reordered, the key broken by spaces and split
    // into 255-byte strings. SPF still unpublished: verified all the same, SPF reported.
    dns.remove(dkim.name);
    const p = dkim.value.replace(/^.*p=/, '');
    dns.publish(dkim.name, `k=rsa; v=DKIM1; p=${p.slice(0, 100)} ${p.slice(100, 250)}\t${p.slice(250)}`);
    const ok = await call('POST', '/admin/tenants/verifyco/domains/acme.example.com/verify');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.verified, true);
    assert.equal(ok.body.dns_problem, null);
    assert.deepEqual(ok.body.dns_records.map((x: { purpose: string; status: string }) => [x.purpose, x.status]), [
      ['verification', 'valid'],
      ['dkim', 'valid'],
      ['spf', 'missing'],
    ]);

    dns.publish('acme.example.com', `v=spf1 include:${SPF} ~all`);
    const spf = await call('POST', '/admin/tenants/verifyco/domains/acme.example.com/verify');
    assert.equal(spf.body.dns_records[2].status, 'valid');
  });

  test('DNS not answering is 502 naming the lookup, and changes nothing', async () => {
    const d = (await call('POST', '/admin/tenants/verifyco/domains', { name: 'flaky.example.com' })).body;
    dns.publishAll(d.dns_records.filter((x: { purpose: string }) => x.purpose !== 'spf'));
    dns.fail(d.dns_records[1].name, 'ETIMEOUT');
    const r = await call('POST', '/admin/tenants/verifyco/domains/flaky.example.com/verify', {});
    assert.equal(r.status, 502, r.text);
    assert.equal(r.body.error.code, 'dns_error');
    assert.match(r.body.error.message, new RegExp(`${d.dns_records[1].name} TXT failed \\(ETIMEOUT\\)`));
    const view = (await call('GET', '/admin/tenants/verifyco/domains/flaky.example.com')).body;
    assert.equal(view.verified, false);
    assert.equal(view.checked_at, null);
  });
});
