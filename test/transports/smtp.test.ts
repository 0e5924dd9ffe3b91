// The SMTP transport (src/delivery/transports/smtp.ts) hands the stored bytes to nodemailer's
// transport itself, without sendMail: the upstream must see what sendMail would have sent it
// (the envelope as nodemailer normalizes it, the bytes unchanged), and the worker's signal must
// still stop a delivery, before it starts or mid-DATA.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { DeliveryError } from '../../src/delivery/transports/transport.ts';
import { smtpTransportTo, startUpstream, type Upstream } from '../helpers/upstream.ts';

let upstream: Upstream;

before(async () => {
  upstream = await startUpstream();
});
after(async () => {
  await upstream?.close();
});

const envelopes: { what: string; mailFrom: string; recipients: string[] }[] = [
  { what: 'plain addresses', mailFrom: 'bounces@acme.example', recipients: ['a@dest.example', 'b@dest.example'] },
  { what: 'the null reverse-path', mailFrom: '', recipients: ['a@dest.example'] },
  { what: 'an IDN domain (punycoded)', mailFrom: 'bounces@acme.example', recipients: ['kasutaja@jõgeva.ee', 'user@bücher.example'] },
  { what: 'a recipient twice', mailFrom: 'bounces@acme.example', recipients: ['same@dest.example', 'other@dest.example', 'same@dest.example'] },
];

describe('SmtpTransport', () => {
  for (const pool of [false, 2]) {
    test(`${pool ? 'pooled' : 'a connection per message'}: the upstream gets what nodemailer's sendMail sends, for each envelope`, async () => {
      const ours = smtpTransportTo(upstream.port, pool);
      const theirs = nodemailer.createTransport({ host: '127.0.0.1', port: upstream.port, secure: false, ignoreTLS: true, logger: false });
      try {
        for (const [i, e] of envelopes.entries()) {
          const mime = Buffer.from(`Subject: ${e.what}\r\nMessage-ID: <m${i}@relay.test>\r\n\r\n<p>${e.what}</p>\r\n.leading dot\r\n`);
          const result = await ours.deliver({ messageId: `m${i}`, mime, mailFrom: e.mailFrom, recipients: e.recipients, signal: AbortSignal.timeout(10_000) });
          const got = upstream.received.at(-1)!;
          await theirs.sendMail({ envelope: { from: e.mailFrom, to: e.recipients }, raw: mime });
          const expected = upstream.received.at(-1)!;
          assert.notEqual(got, expected);
          assert.deepEqual({ mailFrom: got.mailFrom, rcptTo: got.rcptTo }, { mailFrom: expected.mailFrom, rcptTo: expected.rcptTo }, e.what);
          assert.ok(got.raw.equals(mime) && expected.raw.equals(mime), `${e.what}: the bytes unchanged`);
          // One result per recipient asked for, each accepted with the upstream's reply: an IDN
          // recipient too, which nodemailer reports by its punycoded name.
          assert.deepEqual(result.recipients.map((r) => [r.address, r.accepted]), e.recipients.map((a) => [a, true]));
          assert.match(result.recipients[0].response ?? '', /^250 /);
        }
      } finally {
        await ours.close();
        theirs.close();
      }
    });
  }

  test("a signal aborted before the delivery starts sends nothing; one aborted mid-DATA ends it with a DeliveryError", async () => {
    const before = upstream.received.length;
    for (const pool of [false, 2]) {
      const t = smtpTransportTo(upstream.port, pool);
      try {
        const mime = Buffer.from('Subject: never\r\n\r\n<p>never</p>\r\n');
        const err = await t.deliver({ messageId: 'x', mime, mailFrom: 'a@acme.example', recipients: ['b@dest.example'], signal: AbortSignal.abort() }).then(
          () => assert.fail('resolved'),
          (e: unknown) => e,
        );
        assert.ok(err instanceof DeliveryError, String(err));
      } finally {
        await t.close();
      }
    }
    assert.equal(upstream.received.length, before, 'nothing was sent');

    const slow = await startUpstream();
    const t = smtpTransportTo(slow.port);
    try {
      // A body large enough that DATA is still being written when the signal fires.
      const mime = Buffer.from(`Subject: cut\r\n\r\n${'<p>0123456789abcdef</p>\r\n'.repeat(400_000)}`);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 5);
      const err = await t.deliver({ messageId: 'y', mime, mailFrom: 'a@acme.example', recipients: ['b@dest.example'], signal: ac.signal }).then(
        () => assert.fail('resolved'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof DeliveryError, String(err));
      assert.equal(slow.received.length, 0);
    } finally {
      await t.close();
      await slow.close();
    }
  });
});
