// The daily DNS re-check of verified domains, against a fake resolver: records present, gone
// (flagged, still verified), DNS not answering (left alone), back (flag cleared), and only
// domains whose last check is over 24 h old.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import { SecretBox } from '../../src/crypto.ts';
import type { Domain } from '../../src/db/schema.ts';
import { createLogger } from '../../src/log.ts';
import { recheckDomains, startDomainRechecks } from '../../src/services/domain-verification.service.ts';
import { addDomain, dnsRecords, domainView, getDomain } from '../../src/services/domains.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { TEST_SECRET } from '../helpers/context.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { fakeDns, type FakeDns } from '../helpers/dns.ts';

const HOUR = 3600_000;

describe('domain re-check', () => {
  let tdb: TestDatabase;
  let tenantId: string;
  let dns: FakeDns;
  const box = new SecretBox(TEST_SECRET);
  const logLines: { level: number; msg: string; domain?: string; problem?: string }[] = [];
  const log = createLogger(
    'info',
    new Writable({
      write(chunk, _enc, cb) {
        logLines.push(JSON.parse(String(chunk)));
        cb();
      },
    }),
  );
  let n = 0;

  /** A verified domain with all its records published in the fake DNS. */
  async function publishedDomain(verified = true): Promise<Domain> {
    const d = await addDomain(tdb.db, box, tenantId, { name: `d${++n}.example.com`, verified });
    dns.publishAll(dnsRecords(d));
    return d;
  }

  const reload = (d: Domain) => getDomain(tdb.db, tenantId, d.id);
  /** Makes a domain due again, as if its last check were a day and an hour ago. */
  const age = (d: Domain, ms = 25 * HOUR) =>
    tdb.db.updateTable('domains').set({ checked_at: new Date(Date.now() - ms) }).where('id', '=', d.id).execute();

  before(async () => {
    tdb = await testDatabase();
    tenantId = (await createTenant(tdb.db, { name: 'recheck' })).id;
  });

  after(async () => {
    if (tdb) await tdb.close();
  });

  beforeEach(async () => {
    dns = fakeDns();
    logLines.length = 0;
    // Each test starts with no verified domain due: earlier tests' domains are set aside.
    await tdb.db.updateTable('domains').set({ verified: false }).execute();
  });

  test('records present: checked_at set, no problem; records removed: flagged, still verified; back: cleared', async () => {
    const d = await publishedDomain();
    assert.equal(d.checked_at, null);

    const first = await recheckDomains(tdb.db, dns.resolveTxt, { log });
    assert.deepEqual(first, { claimed: 1, ok: 1, flagged: 0, cleared: 0, unavailable: 0 });
    let row = await reload(d);
    assert.ok(row.checked_at && Date.now() - row.checked_at.getTime() < 60_000);
    assert.equal(row.dns_problem, null);
    assert.deepEqual(row.dns_checks, { verification: 'valid', dkim: 'valid' });
    assert.ok(dns.lookups.includes(`_txrelay.${d.name}`) && dns.lookups.includes(`${d.dkim_selector}._domainkey.${d.name}`));

    // The customer removes the verification record and breaks the DKIM one.
    dns.remove(`_txrelay.${d.name}`);
    dns.remove(`${d.dkim_selector}._domainkey.${d.name}`);
    dns.publish(`${d.dkim_selector}._domainkey.${d.name}`, 'v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAother');
    await age(d);
    const second = await recheckDomains(tdb.db, dns.resolveTxt, { log });
    assert.equal(second.flagged, 1);
    row = await reload(d);
    assert.equal(row.verified, true, 'a flagged domain stays verified');
    assert.equal(row.dns_problem, `TXT _txrelay.${d.name} missing; TXT ${d.dkim_selector}._domainkey.${d.name} does not match`);
    assert.deepEqual(row.dns_checks, { verification: 'missing', dkim: 'mismatch' });
    const warn = logLines.find((l) => l.level === 40);
    assert.ok(warn, 'the flag is logged at warn');
    assert.equal(warn.domain, d.name);
    assert.equal(warn.problem, row.dns_problem);
    // The view shows it.
    const view = domainView(row);
    assert.equal(view.dns_problem, row.dns_problem);
    assert.equal(view.checked_at, row.checked_at);
    assert.deepEqual(view.dns_records.map((r) => [r.purpose, r.status]), [['verification', 'missing'], ['dkim', 'mismatch']]);

    // Records back (the DKIM key split into 255-byte strings, as DNS serves it): flag cleared.
    dns.remove(`${d.dkim_selector}._domainkey.${d.name}`);
    dns.publishAll(dnsRecords(d));
    await age(d);
    const third = await recheckDomains(tdb.db, dns.resolveTxt, { log });
    assert.deepEqual(third, { claimed: 1, ok: 1, flagged: 0, cleared: 1, unavailable: 0 });
    row = await reload(d);
    assert.equal(row.dns_problem, null);
    assert.equal(row.verified, true);
  });

  test('DNS not answering is not "vanished": the domain is left alone and retried next pass', async () => {
    const d = await publishedDomain();
    dns.remove(`_txrelay.${d.name}`);
    await recheckDomains(tdb.db, dns.resolveTxt);
    const flagged = await reload(d);
    assert.equal(flagged.dns_problem, `TXT _txrelay.${d.name} missing`);

    await age(d);
    const before = await reload(d);
    for (const code of ['ESERVFAIL', 'ETIMEOUT']) {
      dns.fail(`${d.dkim_selector}._domainkey.${d.name}`, code);
      const r = await recheckDomains(tdb.db, dns.resolveTxt, { log });
      assert.deepEqual(r, { claimed: 1, ok: 0, flagged: 0, cleared: 0, unavailable: 1 });
      const row = await reload(d);
      assert.equal(row.dns_problem, before.dns_problem, 'flag untouched');
      assert.deepEqual(row.dns_checks, before.dns_checks);
      assert.equal(row.checked_at?.getTime(), before.checked_at?.getTime(), 'claim handed back: still due');
      assert.equal(row.verified, true);
    }
    assert.ok(!logLines.some((l) => l.level >= 40), 'a DNS hiccup is no warning');

    // A never-checked domain stays never-checked when DNS fails.
    const fresh = await publishedDomain();
    dns.fail(`_txrelay.${fresh.name}`, 'ESERVFAIL');
    dns.remove(`${d.dkim_selector}._domainkey.${d.name}`);
    await recheckDomains(tdb.db, dns.resolveTxt);
    assert.equal((await reload(fresh)).checked_at, null);
  });

  test('only verified domains whose last check is over 24 h old (or never) are checked', async () => {
    const recent = await publishedDomain();
    const stale = await publishedDomain();
    const never = await publishedDomain();
    const unverified = await publishedDomain(false);
    await age(recent, 23 * HOUR);
    await age(stale, 25 * HOUR);
    const recentBefore = (await reload(recent)).checked_at!;

    const r = await recheckDomains(tdb.db, dns.resolveTxt);
    assert.equal(r.claimed, 2);
    assert.equal((await reload(recent)).checked_at!.getTime(), recentBefore.getTime());
    assert.ok((await reload(stale)).checked_at!.getTime() > Date.now() - 60_000);
    assert.ok((await reload(never)).checked_at);
    assert.equal((await reload(unverified)).checked_at, null);
    assert.ok(!dns.lookups.some((h) => h.endsWith(recent.name) || h.endsWith(unverified.name)));

    // Nothing left due.
    assert.equal((await recheckDomains(tdb.db, dns.resolveTxt)).claimed, 0);
  });

  test('batches: limit bounds a call; concurrent passes never check one domain twice', async () => {
    const domains = [];
    for (let i = 0; i < 7; i++) domains.push(await publishedDomain());
    assert.equal((await recheckDomains(tdb.db, dns.resolveTxt, { limit: 3 })).claimed, 3);

    // Two processes' passes at once (separate connections): each due domain is claimed once.
    const [a, b] = await Promise.all([recheckDomains(tdb.db, dns.resolveTxt, { limit: 10 }), recheckDomains(tdb.db, dns.resolveTxt, { limit: 10 })]);
    assert.equal(a.claimed + b.claimed, 4);
    const verificationLookups = dns.lookups.filter((h) => h.startsWith('_txrelay.'));
    assert.equal(verificationLookups.length, 7);
    assert.equal(new Set(verificationLookups).size, 7);
  });

  test('SPF is reported but never flags a domain', async () => {
    const d = await publishedDomain();
    const spf = 'spf.esp.example';
    let r = await recheckDomains(tdb.db, dns.resolveTxt, { spfInclude: spf });
    let row = await reload(d);
    assert.equal(r.ok, 1);
    assert.equal(row.dns_problem, null);
    assert.deepEqual(row.dns_checks, { verification: 'valid', dkim: 'valid', spf: 'missing' });

    dns.publish(d.name, 'v=spf1 ip4:192.0.2.0/24 include:_spf.other.example ~all');
    await age(d);
    await recheckDomains(tdb.db, dns.resolveTxt, { spfInclude: spf });
    assert.equal((await reload(d)).dns_checks?.spf, 'mismatch');

    dns.remove(d.name);
    dns.publish(d.name, 'google-site-verification=abc');
    dns.publish(d.name, 'v=spf1 ip4:192.0.2.0/24 +include:SPF.esp.example -all');
    await age(d);
    await recheckDomains(tdb.db, dns.resolveTxt, { spfInclude: spf });
    row = await reload(d);
    assert.equal(row.dns_checks?.spf, 'valid');
    assert.deepEqual(
      domainView(row, spf).dns_records.find((x) => x.purpose === 'spf'),
      { type: 'TXT', name: d.name, value: `v=spf1 include:${spf} ~all`, purpose: 'spf', status: 'valid' },
    );

    // SPF lookup failing concludes nothing about it, and blocks nothing.
    dns.fail(d.name, 'ESERVFAIL');
    await age(d);
    r = await recheckDomains(tdb.db, dns.resolveTxt, { spfInclude: spf });
    assert.equal(r.ok, 1);
    assert.equal((await reload(d)).dns_checks?.spf, 'unknown');
  });

  test('the worker loop runs passes and stops cleanly', async () => {
    const d = await publishedDomain();
    dns.remove(`_txrelay.${d.name}`);
    const loop = startDomainRechecks({ db: tdb.db, log }, dns.resolveTxt, { firstPassMs: 0, intervalMs: 50 });
    try {
      const deadline = Date.now() + 10_000;
      while (!(await reload(d)).dns_problem) {
        assert.ok(Date.now() < deadline, 'the loop never checked the domain');
        await new Promise((r) => setTimeout(r, 25));
      }
    } finally {
      await loop.stop();
    }
    const checkedAt = (await reload(d)).checked_at!.getTime();
    await new Promise((r) => setTimeout(r, 150));
    await age(d);
    await new Promise((r) => setTimeout(r, 150));
    assert.notEqual((await reload(d)).checked_at!.getTime(), checkedAt, 'aged by the test');
    assert.ok((await reload(d)).checked_at!.getTime() < Date.now() - 24 * HOUR, 'no pass after stop()');
  });
});
