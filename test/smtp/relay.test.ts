// SPEC §3 replies and §4 rules, end to end: nodemailer (or a bare socket) → txrelay over
// SMTP on loopback → PostgreSQL → delivery worker → a real upstream smtp-server.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { findMessage, listRecipients } from '../../src/db/messages.repository.ts';
import { updateTenant } from '../../src/services/tenants.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { addRoute, client, eventually, sendForReply, setupTenant, startTestRelay, type TestRelay, type TenantSetup } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
const PDF = Buffer.from('%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n');
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/;

let relay: TestRelay;
let upstream: Upstream;
let acme: TenantSetup;

function queuedId(response: string): string {
  const m = QUEUED.exec(response.trim());
  assert.ok(m, `expected "250 2.0.0 Ok: queued as <id>", got ${JSON.stringify(response)}`);
  return m[1];
}

/** Sends with nodemailer and returns the server's reply text or the error's response. */
async function send(key: string | undefined, mail: Record<string, unknown>, port = relay.smtpPort): Promise<string> {
  return await sendForReply(port, key, { from: 'App <app@acme.example>', to: 'user@dest.example', subject: 'Hi', html: '<p>Hello</p>', ...mail });
}

before(async () => {
  upstream = await startUpstream();
  relay = await startTestRelay();
  acme = await setupTenant(relay.ctx, 'acme', 'acme.example');
  await addRoute(relay.ctx, acme.tenantId, {
    name: 'main',
    transport: 'smtp',
    config: { host: '127.0.0.1', port: upstream.port, pool: false },
  });
});

after(async () => {
  await relay?.close();
  await upstream?.close();
});

describe('accepted messages', () => {
  test('multipart + PDF + PNG + inline cid image + custom headers arrive rewritten upstream', async () => {
    const before = upstream.received.length;
    const response = await send(acme.key, {
      from: 'Acme App <app@acme.example>',
      to: 'Alice <alice@dest.example>',
      bcc: 'hidden@dest.example',
      replyTo: 'support@acme.example',
      subject: 'Your invoice',
      text: 'Plain text version',
      html: '<html><body><p>Invoice attached</p><img src="cid:logo@acme"><img alt="x" src="https://cdn.example/pixel.png"></body></html>',
      headers: {
        'X-Transactional-Tag': 'invoice',
        'X-Custom-Thing': 'secret-internal',
        'X-Mailer': 'LegacyPHP 5.2',
      },
      attachments: [
        { filename: 'invoice.pdf', content: PDF, contentType: 'application/pdf' },
        { filename: 'photo.png', content: PNG, contentType: 'image/png' },
        { filename: 'logo.png', content: PNG, contentType: 'image/png', cid: 'logo@acme' },
        { filename: 'scan.JPG', content: PNG, contentType: 'application/octet-stream' },
      ],
    });
    const id = queuedId(response);
    const [got] = (await upstream.waitFor(before + 1)).slice(before);
    assert.deepEqual(got.rcptTo.sort(), ['alice@dest.example', 'hidden@dest.example']);
    assert.equal(got.mailFrom, 'app@acme.example');
    const raw = got.raw.toString('utf8');
    const mail = await simpleParser(got.raw);
    assert.equal(mail.from?.value[0].address, 'app@acme.example');
    assert.equal(mail.from?.value[0].name, 'Acme App');
    assert.equal((mail.to as { value: { address: string }[] }).value[0].address, 'alice@dest.example');
    assert.equal(mail.subject, 'Your invoice');
    assert.equal((mail.replyTo as { value: { address: string }[] }).value[0].address, 'support@acme.example');
    assert.equal(mail.messageId, `<${id}@relay.test>`);
    assert.ok(!/^bcc:/im.test(raw), 'no Bcc header');
    for (const h of ['x-custom-thing', 'x-mailer', 'x-transactional-tag', 'x-auth-apikey']) {
      assert.ok(!mail.headers.has(h), `${h} removed`);
    }
    assert.ok(!raw.includes('secret-internal'));
    assert.ok(!/text\/plain/i.test(raw), 'text part dropped');
    assert.match(String(mail.html), /Invoice attached/);
    assert.ok(!/cid:logo@acme/.test(String(mail.html)), 'cid image reference removed');
    assert.match(String(mail.html), /https:\/\/cdn\.example\/pixel\.png/, 'remote images stay');
    assert.deepEqual(mail.attachments.map((a) => [a.filename, a.contentType]), [['invoice.pdf', 'application/pdf']]);
    assert.deepEqual(mail.attachments[0].content, PDF);

    const msg = await eventually(async () => {
      const m = await findMessage(relay.ctx.db, id);
      return m?.status === 'sent' ? m : undefined;
    }, 20_000, 'message sent');
    assert.equal(msg.tag, 'invoice');
    assert.equal(msg.route_name, 'main');
    const rules = msg.verdicts.map((v) => `${v.rule}:${v.action}`);
    for (const r of ['headers:dropped', 'text-part:dropped', 'images:removed', 'cid-images:removed', 'platform-headers:removed']) {
      assert.ok(rules.includes(r), `verdict ${r} in ${rules.join(', ')}`);
    }
    const recipients = await listRecipients(relay.ctx.db, id);
    assert.deepEqual(recipients.map((r) => r.status), ['sent', 'sent']);
    assert.match(recipients[0].response ?? '', /250/);
  });

  test('text-only message becomes escaped HTML with line breaks', async () => {
    const before = upstream.received.length;
    queuedId(await send(acme.key, { html: undefined, text: 'Line 1 <b>not bold</b>\nLine 2 & more' }));
    const [got] = (await upstream.waitFor(before + 1)).slice(before);
    const mail = await simpleParser(got.raw);
    assert.match(String(mail.html), /Line 1 &lt;b&gt;not bold&lt;\/b&gt;<br>\s*Line 2 &amp; more/);
    assert.ok(!/text\/plain/i.test(got.raw.toString()), 'only an HTML part is delivered');
  });

  test('a literal {{ in ordinary mail is left alone', async () => {
    const before = upstream.received.length;
    queuedId(await send(acme.key, { subject: 'Use {{ name }}', html: '<p>{{ not a template }}</p>' }));
    const [got] = (await upstream.waitFor(before + 1)).slice(before);
    const mail = await simpleParser(got.raw);
    assert.equal(mail.subject, 'Use {{ name }}');
    assert.match(String(mail.html), /\{\{ not a template \}\}/);
  });

  test('a To header with only a display name gets the envelope recipients', async () => {
    const before = upstream.received.length;
    const transport = client(relay.smtpPort, acme.key);
    await transport.sendMail({
      envelope: { from: 'app@acme.example', to: ['bob@dest.example'] },
      raw: 'From: app@acme.example\r\nTo: Valued Customer:;\r\nSubject: Hi\r\nContent-Type: text/html\r\n\r\n<p>Hi</p>\r\n',
    });
    transport.close();
    const [got] = (await upstream.waitFor(before + 1)).slice(before);
    const mail = await simpleParser(got.raw);
    const to = (mail.to as { value: { address: string; name: string }[] }).value[0];
    assert.equal(to.address, 'bob@dest.example');
    assert.equal(to.name, 'Valued Customer');
  });

  test('X-Auth-APIKey header authenticates without AUTH and never travels downstream', async () => {
    const before = upstream.received.length;
    const response = await send(undefined, { headers: { 'X-Auth-APIKey': acme.key } });
    queuedId(response);
    const [got] = (await upstream.waitFor(before + 1)).slice(before);
    assert.ok(!got.raw.toString().toLowerCase().includes('x-auth-apikey'));
    assert.ok(!got.raw.toString().includes(acme.key));
  });

  test('a key in both AUTH username and password works', async () => {
    const transport = client(relay.smtpPort, undefined, { auth: { user: acme.key, pass: acme.key } });
    const info = await transport.sendMail({ from: 'app@acme.example', to: 'x@dest.example', subject: 's', html: '<p>x</p>' });
    transport.close();
    queuedId(info.response);
  });

  test('a test key captures: status sent, nothing delivered, whatever route it names', async () => {
    const id = queuedId(await send(acme.testKey, { from: 'app@unverified.example', headers: { 'X-Transactional-Route': 'nonexistent' } }));
    const msg = await findMessage(relay.ctx.db, id);
    assert.equal(msg?.status, 'sent');
    assert.equal(msg?.test_mode, true);
    assert.equal(msg?.job_id, null);
    assert.match(msg!.mime.toString(), /Hello/);
    await new Promise((r) => setTimeout(r, 300));
    // By its Message-ID (<id@host>): earlier tests' messages may still be arriving meanwhile.
    assert.ok(!upstream.received.some((m) => m.raw.toString().includes(id)), 'nothing reached the upstream');
  });

  test('the same idempotency key returns the first id and creates nothing new', async () => {
    const headers = { 'X-Transactional-Idempotency-Key': 'order-42' };
    const first = queuedId(await send(acme.testKey, { headers }));
    const second = queuedId(await send(acme.testKey, { headers }));
    assert.equal(second, first);
  });
});

describe('refusals (SPEC §3)', () => {
  test('AUTH with an unknown, malformed or revoked key: 535 5.7.8; the 3rd failure: 421 4.7.0 and close', async () => {
    const c = await RawSmtp.connect(relay.smtpPort);
    await c.cmd('EHLO test');
    assert.match(await c.cmd(`AUTH PLAIN ${plain('txr_live_' + 'x'.repeat(32))}`), /^535 5\.7\.8 /);
    assert.match(await c.cmd(`AUTH PLAIN ${plain('not-a-key')}`), /^535 5\.7\.8 /);
    assert.match(await c.cmd(`AUTH PLAIN ${plain('nope')}`), /^421 4\.7\.0 /);
    await eventually(async () => c.closed, 5000, 'connection closed');
  });

  test('AUTH LOGIN works with the key as password', async () => {
    const c = await RawSmtp.connect(relay.smtpPort);
    await c.cmd('EHLO test');
    assert.match(await c.cmd('AUTH LOGIN'), /^334/);
    assert.match(await c.cmd(Buffer.from('whatever').toString('base64')), /^334/);
    assert.match(await c.cmd(Buffer.from(acme.key).toString('base64')), /^235 /);
    c.close();
  });

  test('EHLO advertises the extensions of SPEC §3', async () => {
    const c = await RawSmtp.connect(relay.smtpPort);
    const ehlo = await c.cmd('EHLO test');
    for (const ext of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE 26214400', 'STARTTLS', 'AUTH PLAIN LOGIN']) {
      assert.ok(ehlo.includes(ext), `${ext} in ${ehlo}`);
    }
    c.close();
  });

  test('no AUTH and no header key: 530 5.7.0; an invalid header key: 535 5.7.8', async () => {
    assert.match(await send(undefined, {}), /^530 5\.7\.0 /);
    assert.match(await send(undefined, { headers: { 'X-Auth-APIKey': 'txr_live_' + 'A'.repeat(32) } }), /^535 5\.7\.8 /);
  });

  test('AUTH key and header key of different tenants: 550 5.7.1', async () => {
    const other = await setupTenant(relay.ctx, 'other');
    assert.match(await send(acme.key, { headers: { 'X-Auth-APIKey': other.key } }), /^550 5\.7\.1 .*different tenants/);
  });

  test('a key without send scope, or a suspended tenant: 550 5.7.1', async () => {
    const readKey = await createKey(relay.ctx.db, acme.tenantId, { scope: 'read' });
    assert.match(await send(readKey.key, {}), /^550 5\.7\.1 .*scope/);
    const sleepy = await setupTenant(relay.ctx, 'sleepy');
    await addRoute(relay.ctx, sleepy.tenantId, { name: 'cap', transport: 'capture' });
    await updateTenant(relay.ctx.db, sleepy.tenantId, { status: 'suspended' });
    assert.match(await send(sleepy.key, { from: 'a@sleepy.example' }), /^550 5\.7\.1 .*suspended/);
  });

  test('From missing or not an address: 550 5.1.7', async () => {
    const transport = client(relay.smtpPort, acme.key);
    const attempt = async (raw: string) => {
      try {
        await transport.sendMail({ envelope: { from: 'app@acme.example', to: ['x@dest.example'] }, raw });
        return 'accepted';
      } catch (err) {
        return String((err as { response?: string }).response);
      }
    };
    assert.match(await attempt('To: x@dest.example\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n'), /^550 5\.1\.7 /);
    assert.match(await attempt('From: Just A Name\r\nTo: x@dest.example\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n'), /^550 5\.1\.7 /);
    assert.match(await attempt('From: a@acme.example, b@acme.example\r\nTo: x@dest.example\r\nSubject: s\r\n\r\nx\r\n'), /^550 5\.1\.7 /);
    transport.close();
  });

  test('From domain not verified for the tenant (live key): 550 5.7.1 naming the domain', async () => {
    assert.match(await send(acme.key, { from: 'app@elsewhere.example' }), /^550 5\.7\.1 .*elsewhere\.example/);
  });

  test('route: required with several routes, unknown, disabled, none at all: 550 5.7.1 naming it', async () => {
    const multi = await setupTenant(relay.ctx, 'multi');
    await addRoute(relay.ctx, multi.tenantId, { name: 'one', transport: 'capture' });
    await addRoute(relay.ctx, multi.tenantId, { name: 'two', transport: 'capture', enabled: false });
    const from = 'a@multi.example';
    assert.match(await send(multi.key, { from }), /^550 5\.7\.1 X-Transactional-Route header required/);
    assert.match(await send(multi.key, { from, headers: { 'X-Transactional-Route': 'three' } }), /^550 5\.7\.1 Route "three" does not exist/);
    assert.match(await send(multi.key, { from, headers: { 'X-Transactional-Route': 'two' } }), /^550 5\.7\.1 Route "two" is disabled/);
    queuedId(await send(multi.key, { from, headers: { 'X-Transactional-Route': 'one' } }));
    const bare = await setupTenant(relay.ctx, 'bare');
    assert.match(await send(bare.key, { from: 'a@bare.example' }), /^550 5\.7\.1 Tenant bare has no route/);
  });

  test('unknown template and bad variables: 554 5.6.0 naming them', async () => {
    assert.match(await send(acme.key, { headers: { 'X-Transactional-Template': 'welcome-v9' } }), /^554 5\.6\.0 Template "welcome-v9" does not exist/);
    assert.match(await send(acme.key, { headers: { 'X-Transactional-Variables': '[1,2]' } }), /^554 5\.6\.0 X-Transactional-Variables must be a JSON object/);
    assert.match(await send(acme.key, { headers: { 'X-Transactional-Variables': '{"a":' } }), /^554 5\.6\.0 X-Transactional-Variables is not valid JSON/);
    assert.match(await send(acme.key, { headers: { 'X-Transactional-Variables': '{"__proto__":{"x":1}}' } }), /^554 5\.6\.0 X-Transactional-Variables may not use the key "__proto__"/);
  });

  test('no HTML, no text and no template: 554 5.6.0', async () => {
    const transport = client(relay.smtpPort, acme.key);
    await assert.rejects(
      transport.sendMail({ envelope: { from: 'app@acme.example', to: ['x@dest.example'] }, raw: 'From: app@acme.example\r\nTo: x@dest.example\r\nSubject: empty\r\nContent-Type: text/html\r\n\r\n' }),
      (err: { response?: string }) => /^554 5\.6\.0 Message has no HTML/.test(String(err.response)),
    );
    transport.close();
  });

  test('nothing is left behind by a refused message', async () => {
    const before = await relay.ctx.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    await send(acme.key, { from: 'app@elsewhere.example' });
    const afterCount = await relay.ctx.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    assert.equal(Number(afterCount.n), Number(before.n));
  });
});

describe('limits and TLS (a second relay on the same database)', () => {
  let strict: TestRelay;
  before(async () => {
    strict = await startTestRelay(
      { TXRELAY_MAX_RECIPIENTS: '3', TXRELAY_MAX_MESSAGE_BYTES: '20000', TXRELAY_REQUIRE_TLS: 'true', TXRELAY_ROLES: 'smtp' },
      relay.tdb,
    );
  });
  after(async () => {
    await strict?.close();
  });

  test('TLS required: MAIL and AUTH before STARTTLS get 530 5.7.0; AUTH is offered after STARTTLS', async () => {
    const c = await RawSmtp.connect(strict.smtpPort);
    const ehlo = await c.cmd('EHLO test');
    assert.ok(!ehlo.includes('AUTH'), 'AUTH not offered before TLS');
    assert.match(await c.cmd(`AUTH PLAIN ${plain(acme.key)}`), /^530 5\.7\.0 /);
    assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^530 5\.7\.0 /);
    assert.match(await c.starttls(), /^220/);
    const ehlo2 = await c.cmd('EHLO test');
    assert.ok(ehlo2.includes('AUTH PLAIN LOGIN'), ehlo2);
    assert.match(await c.cmd(`AUTH PLAIN ${plain(acme.key)}`), /^235 /);
    assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
    c.close();
  });

  test('more recipients than the maximum: 452 4.5.3 on the extra RCPT', async () => {
    const c = await RawSmtp.connect(strict.smtpPort);
    await c.cmd('EHLO test');
    await c.starttls();
    await c.cmd('EHLO test');
    await c.cmd(`AUTH PLAIN ${plain(acme.key)}`);
    await c.cmd('MAIL FROM:<app@acme.example>');
    for (let i = 0; i < 3; i++) assert.match(await c.cmd(`RCPT TO:<r${i}@dest.example>`), /^250 /);
    assert.match(await c.cmd('RCPT TO:<r3@dest.example>'), /^452 4\.5\.3 /);
    c.close();
  });

  test('a message larger than the maximum: 552 5.3.4', async () => {
    const transport = client(strict.smtpPort, acme.key, { ignoreTLS: false, requireTLS: true });
    await assert.rejects(
      transport.sendMail({ from: 'app@acme.example', to: 'x@dest.example', subject: 'big', html: `<p>${'x'.repeat(30_000)}</p>` }),
      (err: { response?: string }) => /^552 5\.3\.4/.test(String(err.response)),
    );
    transport.close();
  });
});

describe('tenant lifecycle', () => {
  test('a revoked key fails like an unknown one', async () => {
    const t = await createTenant(relay.ctx.db, { name: 'revoked-co' });
    const k = await createKey(relay.ctx.db, t.id, {});
    const { revokeKey } = await import('../../src/services/tenants.service.ts');
    await revokeKey(relay.ctx.db, t.id, k.id);
    assert.match(await send(k.key, {}), /^535 5\.7\.8 /);
  });
});
