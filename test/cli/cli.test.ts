// `txrelay tenant|key|domain|route|message …` run as child processes against a test database:
// --json prints the API's shapes, errors are one line on stderr with exit 1 (2 for usage),
// API keys show only at creation and route credentials never.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { uuidv7 } from '../../src/crypto.ts';
import { insertAcceptedMessages } from '../../src/db/messages.repository.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { assertFailed as failed, assertOk as ok, type CliResult, runCli } from '../helpers/cli.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-cli-'));

let tdb: TestDatabase;

before(async () => {
  tdb = await testDatabase();
});
after(async () => {
  await tdb?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});


const cli = (...args: string[]): Promise<CliResult> => runCli({ databaseUrl: tdb.url, dataDir: dir }, args);


describe('usage', () => {
  test('help prints the commands; an unknown command or flag is a usage error (2)', async () => {
    const [help, unknown, sub, flag, missing] = await Promise.all([
      cli('help'),
      cli('frobnicate'),
      cli('tenant', 'frobnicate'),
      cli('tenant', 'list', '--bogus'),
      cli('key', 'create'),
    ]);
    ok(help);
    for (const group of ['tenant', 'key', 'domain', 'route', 'template', 'message']) assert.match(help.stdout, new RegExp(`txrelay ${group} list`));
    assert.match(help.stdout, /--json/);
    failed(unknown, 2, /unknown command "frobnicate"\nusage:\n[^]*txrelay tenant create/);
    failed(sub, 2, /unknown command "tenant frobnicate"\nusage:\n  txrelay tenant create/);
    failed(flag, 2, /Unknown option '--bogus'[^]*usage:\n  txrelay tenant list/);
    failed(missing, 2, /missing <tenant>/);
  });
});

describe('tenant', () => {
  test('create, list, show, update: the API shapes with --json, a summary without', async () => {
    const created = await cli('tenant', 'create', 'acme', '--rate-limit', '100', '--no-track-opens', '--track-clicks', '--json');
    ok(created);
    assert.deepEqual(Object.keys(created.json).sort(), ['created_at', 'id', 'name', 'rate_limit_per_minute', 'status', 'track_clicks', 'track_opens']);
    assert.equal(created.json.name, 'acme');
    assert.equal(created.json.rate_limit_per_minute, 100);
    assert.equal(created.json.track_opens, false);
    assert.equal(created.json.track_clicks, true);

    const [list, show, byId] = await Promise.all([cli('tenant', 'list', '--json'), cli('tenant', 'show', 'acme'), cli('tenant', 'show', created.json.id, '--json')]);
    ok(list);
    assert.deepEqual(list.json, { items: [created.json], next_cursor: null });
    ok(show);
    assert.match(show.stdout, /^id\s+[0-9a-f-]{36}$/m);
    assert.match(show.stdout, /^rate limit\s+100\/min$/m);
    assert.match(show.stdout, /^track opens\s+false$/m);
    assert.deepEqual(byId.json, created.json);

    const updated = await cli('tenant', 'update', 'acme', '--status', 'suspended', '--rate-limit', 'none', '--track-opens', '--no-track-clicks', '--json');
    ok(updated);
    assert.deepEqual(
      { ...updated.json, created_at: undefined },
      { ...created.json, created_at: undefined, status: 'suspended', rate_limit_per_minute: null, track_opens: true, track_clicks: false },
    );
    const renamed = await cli('tenant', 'update', 'acme', '--name', 'acme-corp', '--status', 'active');
    ok(renamed);
    assert.match(renamed.stdout, /^tenant acme-corp updated$/m);
    assert.match(renamed.stdout, /^status\s+active$/m);
    await cli('tenant', 'update', 'acme-corp', '--name', 'acme');
  });

  test('errors: unknown tenant, duplicate, invalid name (with the field), bad flag values', async () => {
    const [unknown, dup, invalid, badStatus, badNumber, nothing] = await Promise.all([
      cli('tenant', 'show', 'nobody'),
      cli('tenant', 'create', 'acme'),
      cli('tenant', 'create', 'bad name!', '--rate-limit=-5'),
      cli('tenant', 'update', 'acme', '--status', 'asleep'),
      cli('tenant', 'update', 'acme', '--rate-limit', 'lots'),
      cli('tenant', 'update', 'acme'),
    ]);
    failed(unknown, 1, /^error: tenant "nobody" not found\n$/);
    failed(dup, 1, /a tenant named "acme" already exists/);
    failed(invalid, 1, /^error: .*\n  name: letters, digits[^\n]*\n  rate_limit_per_minute: /);
    failed(badStatus, 2, /--status takes active\|suspended, not "asleep"/);
    failed(badNumber, 2, /--rate-limit takes a whole number or "none", not "lots"/);
    failed(nothing, 2, /nothing to change/);
  });

  test('delete refuses without --yes, then deletes', async () => {
    await createTenant(tdb.db, { name: 'doomed' });
    const refused = await cli('tenant', 'delete', 'doomed');
    failed(refused, 2, /add --yes to confirm/);
    ok(await cli('tenant', 'show', 'doomed'));
    const deleted = await cli('tenant', 'delete', 'doomed', '--yes', '--json');
    ok(deleted);
    assert.equal(deleted.json.name, 'doomed');
    failed(await cli('tenant', 'delete', 'doomed', '--yes'), 1, /tenant "doomed" not found/);
  });
});

describe('key', () => {
  test('the key appears once, in `key create`; list shows prefixes; revoke', async () => {
    const created = await cli('key', 'create', 'acme', '--scope', 'full', '--mode', 'test', '--json');
    ok(created);
    const secret: string = created.json.key;
    assert.match(secret, /^txr_test_[A-Za-z0-9]{32}$/);
    assert.equal(created.json.scope, 'full');
    assert.equal(created.json.mode, 'test');
    const human = await cli('key', 'create', 'acme');
    ok(human);
    assert.match(human.stdout, /^txr_live_[A-Za-z0-9]{32}\n\(key [0-9a-f-]{36} for acme: scope send, mode live; shown once/);

    const [listJson, listHuman] = await Promise.all([cli('key', 'list', 'acme', '--json'), cli('key', 'list', 'acme')]);
    ok(listJson);
    ok(listHuman);
    assert.equal(listJson.json.items.length, 2);
    assert.deepEqual(Object.keys(listJson.json.items[0]).sort(), ['created_at', 'id', 'last_used_at', 'mode', 'prefix', 'revoked_at', 'scope']);
    assert.equal(listJson.json.items[0].prefix, secret.slice(0, 13));
    const live = human.stdout.split('\n')[0];
    for (const out of [listJson.stdout, listHuman.stdout]) {
      assert.ok(!out.includes(secret) && !out.includes(live), 'a key secret was printed by key list');
      assert.ok(!out.includes(secret.slice(13)));
    }
    assert.match(listHuman.stdout, /^ID\s+PREFIX\s+SCOPE\s+MODE/);

    const revoked = await cli('key', 'revoke', 'acme', created.json.id, '--json');
    ok(revoked);
    assert.equal(revoked.json.id, created.json.id);
    assert.ok(revoked.json.revoked_at);
    assert.ok(!revoked.stdout.includes(secret));

    const [again, unknownTenant, badScope, garbageId] = await Promise.all([
      cli('key', 'revoke', 'acme', created.json.id),
      cli('key', 'list', 'nobody'),
      cli('key', 'create', 'acme', '--scope', 'admin'),
      cli('key', 'revoke', 'acme', 'not-a-key'),
    ]);
    failed(again, 1, /key "[0-9a-f-]{36}" not found/);
    failed(unknownTenant, 1, /tenant "nobody" not found/);
    failed(badScope, 2, /--scope takes send\|read\|full/);
    failed(garbageId, 1, /key "not-a-key" not found/);
  });
});

describe('domain', () => {
  test('add (DNS records), list, show, verify by hand, delete', async () => {
    const added = await cli('domain', 'add', 'acme', 'Acme.Example', '--json');
    ok(added);
    assert.equal(added.json.name, 'acme.example');
    assert.equal(added.json.verified, false);
    const purposes = added.json.dns_records.map((r: { purpose: string }) => r.purpose);
    assert.ok(purposes.includes('verification') && purposes.includes('dkim'));

    const byHand = await cli('domain', 'add', 'acme', 'mail.acme.example', '--verified');
    ok(byHand);
    assert.match(byHand.stdout, /^domain mail\.acme\.example added for acme \(verified\)\nDNS records to publish:\n  TXT _txrelay\.mail\.acme\.example "txrelay-verification=/);

    const [list, show] = await Promise.all([cli('domain', 'list', 'acme', '--json'), cli('domain', 'show', 'acme', 'acme.example')]);
    ok(list);
    assert.deepEqual(list.json.items.map((d: { name: string; verified: boolean }) => [d.name, d.verified]).sort(), [
      ['acme.example', false],
      ['mail.acme.example', true],
    ]);
    assert.equal(list.json.next_cursor, null);
    ok(show);
    assert.match(show.stdout, /^verified\s+false$/m);
    assert.match(show.stdout, /\._domainkey\.acme\.example "v=DKIM1; k=rsa; p=/);

    const verified = await cli('domain', 'verify', 'acme', 'acme.example', '--verified', 'true', '--json');
    ok(verified);
    assert.equal(verified.json.verified, true);
    assert.ok(verified.json.verified_at);
    const unverified = await cli('domain', 'verify', 'acme', 'acme.example', '--verified', 'false');
    ok(unverified);
    assert.match(unverified.stdout, /^domain acme\.example is not verified$/m);

    const deleted = await cli('domain', 'delete', 'acme', 'mail.acme.example', '--json');
    ok(deleted);
    assert.equal(deleted.json.name, 'mail.acme.example');

    const [gone, badName, badVerified, unknownTenant] = await Promise.all([
      cli('domain', 'show', 'acme', 'mail.acme.example'),
      cli('domain', 'add', 'acme', 'not a domain'),
      cli('domain', 'verify', 'acme', 'acme.example', '--verified', 'maybe'),
      cli('domain', 'add', 'nobody', 'x.example'),
    ]);
    failed(gone, 1, /domain "mail\.acme\.example" not found/);
    failed(badName, 1, /\n  name: must be a domain name/);
    failed(badVerified, 2, /--verified takes true\|false/);
    failed(unknownTenant, 1, /tenant "nobody" not found/);
  });
});

describe('route', () => {
  const PASS = 'hunter2-upstream-pass';
  const SERVER_KEY = 'postal-server-key-s3cr3t';
  const notLeaked = (r: CliResult) => {
    assert.ok(!r.stdout.includes(PASS) && !r.stderr.includes(PASS), 'the SMTP password was printed');
    assert.ok(!r.stdout.includes(SERVER_KEY) && !r.stderr.includes(SERVER_KEY), 'the Postal server key was printed');
  };

  test('create, list, show, update, delete; credentials never printed', async () => {
    const smtp = await cli(
      'route', 'create', 'acme', 'upstream', '--transport', 'smtp',
      '--config', JSON.stringify({ host: 'smtp.example', port: 587, auth: { user: 'relay', pass: PASS } }),
      '--max-attempts', '5', '--retry-delay', '30', '--json',
    );
    ok(smtp);
    notLeaked(smtp);
    assert.equal(smtp.json.transport, 'smtp');
    assert.equal(smtp.json.config.host, 'smtp.example');
    assert.deepEqual(smtp.json.config.auth, { user: '(set)', pass: '(set)' });
    assert.equal(smtp.json.max_attempts, 5);
    assert.equal(smtp.json.retry_delay_seconds, 30);
    assert.equal(smtp.json.enabled, true);

    const configFile = path.join(dir, 'postal.json');
    fs.writeFileSync(configFile, JSON.stringify({ url: 'https://postal.example', server_key: SERVER_KEY }));
    const postal = await cli('route', 'create', 'acme', 'postal', '--transport', 'postal', '--config-file', configFile, '--fallback', 'upstream', '--disabled');
    ok(postal);
    notLeaked(postal);
    assert.match(postal.stdout, /^route postal \(postal\) created for acme \([0-9a-f-]{36}\)$/m);

    const [list, listHuman, show] = await Promise.all([cli('route', 'list', 'acme', '--json'), cli('route', 'list', 'acme'), cli('route', 'show', 'acme', 'postal')]);
    for (const r of [list, listHuman, show]) {
      ok(r);
      notLeaked(r);
    }
    const postalView = list.json.items.find((r: { name: string }) => r.name === 'postal');
    assert.deepEqual(postalView.config, { url: 'https://postal.example' });
    assert.equal(postalView.fallback, 'upstream');
    assert.equal(postalView.enabled, false);
    assert.match(listHuman.stdout, /^NAME\s+TRANSPORT\s+ENABLED/);
    assert.match(listHuman.stdout, /^postal\s+postal\s+false\s+upstream\s+8\s/m);
    assert.match(show.stdout, /^fallback\s+upstream$/m);

    const updated = await cli('route', 'update', 'acme', 'postal', '--enabled', '--fallback', 'none', '--max-per-second', '2.5', '--json');
    ok(updated);
    notLeaked(updated);
    assert.equal(updated.json.enabled, true);
    assert.equal(updated.json.fallback, null);
    assert.equal(updated.json.max_per_second, 2.5);
    assert.deepEqual(updated.json.config, { url: 'https://postal.example' });

    const reconfigured = await cli('route', 'update', 'acme', 'upstream', '--config', JSON.stringify({ host: 'smtp2.example', auth: { user: 'u', pass: PASS } }));
    ok(reconfigured);
    notLeaked(reconfigured);
    assert.match(reconfigured.stdout, /"host":"smtp2\.example"/);

    const deleted = await cli('route', 'delete', 'acme', 'postal', '--json');
    ok(deleted);
    assert.equal(deleted.json.name, 'postal');
  });

  test('errors: invalid config lists the fields, bad JSON and flags are usage errors, unknown route', async () => {
    const [invalid, badJson, noTransport, badNumber, unknown, unknownTenant] = await Promise.all([
      cli('route', 'create', 'acme', 'broken', '--transport', 'smtp', '--config', JSON.stringify({ port: 'x', auth: { user: 'u', pass: PASS } })),
      cli('route', 'update', 'acme', 'upstream', '--config', '{host:'),
      cli('route', 'create', 'acme', 'x'),
      cli('route', 'update', 'acme', 'upstream', '--max-attempts', 'many'),
      cli('route', 'show', 'acme', 'nowhere'),
      cli('route', 'list', 'nobody'),
    ]);
    failed(invalid, 1, /^error: invalid config for transport smtp\n(  config\.\w+: .*\n)+$/);
    assert.match(invalid.stderr, /config\.host/);
    notLeaked(invalid);
    failed(badJson, 2, /--config is not valid JSON/);
    failed(noTransport, 2, /missing --transport/);
    failed(badNumber, 2, /--max-attempts takes a whole number, not "many"/);
    failed(unknown, 1, /route "nowhere" not found/);
    failed(unknownTenant, 1, /tenant "nobody" not found/);
  });
});

describe('message', () => {
  let first: string;
  let mime: Buffer;

  before(async () => {
    const tenant = await createTenant(tdb.db, { name: 'msgco' });
    const other = await createTenant(tdb.db, { name: 'msgco-other' });
    const insert = async (tenantId: string, tag: string, subject: string) => {
      const id = uuidv7();
      const bytes = Buffer.from(`From: a@example.com\r\nTo: b@example.org\r\nSubject: ${subject}\r\nMessage-ID: <${id}@relay.test>\r\n\r\n<p>héllo</p>\r\n`);
      await insertAcceptedMessages(tdb.db, [
        {
          message: {
            id,
            tenant_id: tenantId,
            api_key_id: null,
            status: 'queued',
            tag,
            route_id: null,
            route_name: 'main',
            template_id: null,
            template_name: null,
            test_mode: false,
            mail_from: 'a@example.com',
            from_address: 'a@example.com',
            subject,
            message_id_header: `<${id}@relay.test>`,
            size: bytes.length,
            mime: bytes,
            verdicts: [{ rule: 'header.x-mailer', action: 'dropped' }],
          },
          recipients: ['b@example.org'],
          attachments: [{ filename: 'report.pdf', content_type: 'application/pdf', size: 1234 }],
        },
      ]);
      return { id, bytes };
    };
    ({ id: first, bytes: mime } = await insert(tenant.id, 'welcome', 'Welcome!'));
    await insert(tenant.id, 'receipt', 'Your receipt');
    await insert(other.id, 'welcome', 'Elsewhere');
  });

  test('list with filters and pages, show, mime', async () => {
    const [all, filtered, page, human, show, showHuman, raw, rawJson] = await Promise.all([
      cli('message', 'list', '--json'),
      cli('message', 'list', '--tenant', 'msgco', '--tag', 'welcome', '--status', 'queued', '--since', '2000-01-01', '--json'),
      cli('message', 'list', '--tenant', 'msgco', '--limit', '1', '--json'),
      cli('message', 'list', '--tenant', 'msgco'),
      cli('message', 'show', first, '--json'),
      cli('message', 'show', first),
      cli('message', 'mime', first),
      cli('message', 'mime', first, '--json'),
    ]);
    ok(all);
    assert.equal(all.json.items.length, 3);
    assert.equal(all.json.next_cursor, null);
    ok(filtered);
    assert.deepEqual(filtered.json.items.map((m: { id: string }) => m.id), [first]);
    assert.equal(filtered.json.items[0].tenant, 'msgco');
    assert.deepEqual(filtered.json.items[0].recipients, [{ address: 'b@example.org', status: 'queued', response: null }]);
    const byRecipient = await cli('message', 'list', '--recipient', 'B@Example.org', '--tenant', 'msgco-other', '--json');
    ok(byRecipient);
    assert.deepEqual(byRecipient.json.items.map((m: { subject: string }) => m.subject), ['Elsewhere']);
    ok(page);
    assert.equal(page.json.items.length, 1);
    assert.ok(page.json.next_cursor);
    const next = await cli('message', 'list', '--tenant', 'msgco', '--limit', '1', '--cursor', page.json.next_cursor, '--json');
    ok(next);
    assert.deepEqual(next.json.items.map((m: { id: string }) => m.id), [first]);
    ok(human);
    assert.match(human.stdout, /^CREATED\s+TENANT\s+STATUS\s+TAG\s+FROM\s+TO\s+SUBJECT\s+ID$/m);
    assert.match(human.stdout, /msgco\s+queued\s+welcome\s+a@example\.com\s+b@example\.org\s+Welcome!/);

    ok(show);
    assert.equal(show.json.id, first);
    assert.equal(show.json.subject, 'Welcome!');
    assert.deepEqual(show.json.events.map((e: { type: string }) => e.type), ['accepted']);
    assert.deepEqual(show.json.attachments, [{ filename: 'report.pdf', content_type: 'application/pdf', size: 1234 }]);
    assert.ok(!('mime' in show.json));
    ok(showHuman);
    assert.match(showHuman.stdout, /^subject\s+Welcome!$/m);
    assert.match(showHuman.stdout, /\nrecipients\n  b@example\.org  queued  -\n/);
    assert.match(showHuman.stdout, /\nverdicts\n  header\.x-mailer  dropped\n/);

    ok(raw);
    assert.equal(raw.stdout, mime.toString('utf8'));
    ok(rawJson);
    assert.deepEqual(Buffer.from(rawJson.json.mime_base64, 'base64'), mime);
  });

  test('errors: unknown message, unknown tenant, invalid filters', async () => {
    const [unknown, malformed, noMime, unknownTenant, badFilters] = await Promise.all([
      cli('message', 'show', '0190b6a4-0000-7000-8000-000000000000'),
      cli('message', 'show', "1' or 1=1"),
      cli('message', 'mime', '0190b6a4-0000-7000-8000-000000000000'),
      cli('message', 'list', '--tenant', 'nobody'),
      cli('message', 'list', '--status', 'lost', '--since', 'yesterday'),
    ]);
    failed(unknown, 1, /message "0190b6a4-0000-7000-8000-000000000000" not found/);
    failed(malformed, 1, /message "1' or 1=1" not found/);
    failed(noMime, 1, /not found/);
    failed(unknownTenant, 1, /tenant "nobody" not found/);
    failed(badFilters, 1, /^error: .*\n  (status|since): [^]*\n  (status|since): /);
  });
});
