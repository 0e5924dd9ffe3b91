// DKIM end to end: a message sent through the real relay reaches a loopback upstream signed,
// and mailauth verifies the signature against the record the domain's API view asks the
// customer to publish. Tampering breaks it, so the check can fail.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';
// mailauth is CommonJS; its deep module carries the one function we need.
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { simpleParser } from 'mailparser';
import { findMessage } from '../../src/db/messages.repository.ts';
import { PIECE_BYTES } from '../../src/pipeline/build.ts';
import { addDomain, domainView } from '../../src/services/domains.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { chunk } from '../helpers/dns.ts';
import { addRoute, client, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const DOMAIN = 'signed.example.com';

describe('DKIM signing', () => {
  let relay: TestRelay;
  let upstream: Upstream;
  let published: { name: string; value: string };
  let selector: string;
  let raw: Buffer;
  let key: string;

  /** A DNS answering only the published DKIM record, as mailauth's resolver option expects. */
  const resolver = (records: Map<string, string>) => async (name: string, rr: string) => {
    const value = records.get(name.toLowerCase());
    if (rr !== 'TXT' || value === undefined) throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    return [chunk(value)];
  };

  const verify = async (message: Buffer | string, records = new Map([[published.name, published.value]])) =>
    (await dkimVerify(message, { resolver: resolver(records) as never })).results;

  before(async () => {
    upstream = await startUpstream();
    relay = await startTestRelay();
    const t = await createTenant(relay.ctx.db, { name: 'signer' });
    const d = await addDomain(relay.ctx.db, relay.ctx.box, t.id, { name: DOMAIN, verified: true });
    const record = domainView(d).dns_records.find((r) => r.purpose === 'dkim');
    assert.ok(record && d.dkim_selector);
    published = record;
    selector = d.dkim_selector;
    await addRoute(relay.ctx, t.id, { name: 'upstream', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port } });
    key = (await createKey(relay.ctx.db, t.id, { scope: 'send', mode: 'live' })).key;
    const transport = client(relay.smtpPort, key);
    try {
      const info = await transport.sendMail({
        from: `Signer <app@${DOMAIN}>`,
        to: 'customer@example.org',
        subject: 'Your receipt',
        html: '<p>Thanks for your order.</p>',
      });
      assert.match(info.response, /^250 /);
    } finally {
      transport.close();
    }
    raw = (await upstream.waitFor(1))[0].raw;
  });

  after(async () => {
    if (relay) await relay.close();
    if (upstream) await upstream.close();
  });

  test('the published record is a 2048-bit RSA key under a txrelay-chosen selector', () => {
    assert.equal(published.name, `${selector}._domainkey.${DOMAIN}`);
    const p = /(?:^|;)\s*p=([^;]+)/.exec(published.value)?.[1];
    assert.ok(p);
    const key = crypto.createPublicKey({ key: Buffer.from(p, 'base64'), format: 'der', type: 'spki' });
    assert.equal(key.asymmetricKeyType, 'rsa');
    assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
    assert.match(published.value, /^v=DKIM1; k=rsa; p=/);
  });

  test('the delivered message verifies with mailauth against the published record', async () => {
    assert.match(raw.toString('latin1'), /^DKIM-Signature: /m);
    const results = await verify(raw);
    assert.equal(results.length, 1);
    const [r] = results;
    assert.equal(r.status.result, 'pass', JSON.stringify(r.status));
    assert.equal(r.signingDomain, DOMAIN);
    assert.equal(r.selector, selector);
    assert.equal(r.status.aligned, DOMAIN, 'd= aligns with the From domain (DMARC)');
    assert.equal((r as { modulusLength?: number }).modulusLength, 2048);
  });

  test('tampering fails: changed body, changed signed header, another key', async () => {
    const text = raw.toString('latin1');
    const body = await verify(text.replace('Thanks for your order.', 'Thanks for your money.'));
    assert.notEqual(body[0].status.result, 'pass');
    assert.match(String(body[0].status.comment), /body hash did not verify/);

    const header = await verify(text.replace('Subject: Your receipt', 'Subject: Your refund'));
    assert.equal(header[0].status.result, 'fail');

    const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const other = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
    const wrongKey = await verify(raw, new Map([[published.name, other]]));
    assert.equal(wrongKey[0].status.result, 'fail');

    const unpublished = await verify(raw, new Map());
    assert.notEqual(unpublished[0].status.result, 'pass');
  });

  test('a message of several pieces (attachments of 2 MiB) is signed over all of them, stored and sent whole', async () => {
    const pdfs = [1, 2, 3].map(() => crypto.randomBytes(2 * 1024 * 1024));
    const transport = client(relay.smtpPort, key);
    let id: string;
    try {
      const info = await transport.sendMail({
        from: `Signer <app@${DOMAIN}>`,
        to: 'customer@example.org',
        subject: 'Your invoices',
        html: `<p>Invoices attached.</p>\r\n${'<p>Line with trailing spaces   </p>\r\n'.repeat(2000)}`,
        attachments: pdfs.map((content, i) => ({ filename: `invoice-${i}.pdf`, content, contentType: 'application/pdf' })),
      });
      id = /queued as ([0-9a-f-]{36})/.exec(info.response)![1];
    } finally {
      transport.close();
    }
    const sent = (await upstream.waitFor(2))[1].raw;
    assert.ok(sent.length > 4 * PIECE_BYTES, 'more than a few pieces');
    const [r] = await verify(sent);
    assert.equal(r.status.result, 'pass', JSON.stringify(r.status));
    const stored = await findMessage(relay.ctx.db, id, undefined);
    assert.ok(stored);
    assert.ok(stored.mime.equals(sent), 'what was sent is what was stored');
    assert.equal(stored.size, sent.length);
    const mail = await simpleParser(sent);
    assert.deepEqual(mail.attachments.map((a) => a.filename), ['invoice-0.pdf', 'invoice-1.pdf', 'invoice-2.pdf']);
    mail.attachments.forEach((a, i) => assert.ok(a.content.equals(pdfs[i]), `attachment ${i} arrives unchanged`));
    assert.match(String(mail.html), /^<p>Invoices attached\.<\/p>/);
    assert.equal(sent.toString('latin1').split('\r\n').filter((l) => l.length > 998).length, 0, 'no line over 998 octets');
  });
});
