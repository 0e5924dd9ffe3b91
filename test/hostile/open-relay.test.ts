// Open-relay attempts. Sessions may reach DATA without AUTH (the key can come in an
// X-Auth-APIKey header), so the end of DATA is where an unauthenticated message is refused:
// 530 5.7.0, nothing stored, nothing delivered. The old relay tricks — `user%host@relay`, bang
// paths, source routes — buy nothing either: txrelay never routes by recipient address (every
// message goes to its tenant's route), smtp-server drops source routes (RFC 5321 §3.3 and
// Appendix C: accept, ignore), and the rest are passed on as literal addresses, only for a
// tenant that authenticated. (test/smtp/relay.test.ts has the nodemailer-level 530 and the
// refusals of read keys and suspended tenants.)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { TenantSetup, TestRelay } from '../helpers/relay.ts';
import type { Upstream } from '../helpers/upstream.ts';
import { openData, queuedId, session, startAcmeRelay, stopAcmeRelay, storedCount, type AcmeRelay } from './raw-smtp.ts';

let relay: TestRelay;
let upstream: Upstream;
let acme: TenantSetup;

before(async () => ({ relay, acme, upstream } = (await startAcmeRelay({ upstream: true })) as Required<AcmeRelay>));
after(() => stopAcmeRelay({ relay, upstream }));

const stored = () => storedCount(relay);

/** One transaction on a fresh session, with AUTH when `key` is given; the final reply. */
async function relayAttempt(key: string | undefined, rcpt: string[], message: string): Promise<string> {
  const c = await session(relay.smtpPort, key);
  await openData(c, 'app@acme.example', rcpt);
  c.write(message + '\r\n.\r\n');
  const reply = await c.reply(30_000);
  c.close();
  return reply;
}

const MESSAGE = 'From: app@acme.example\r\nTo: victim@evil.example\r\nSubject: relay me\r\nContent-Type: text/html\r\n\r\n<p>x</p>';
const TRICKS = ['victim@evil.example', 'victim%evil.example@relay.test', 'evil.example!victim@relay.test', 'victim@[127.0.0.1]', 'postmaster'];

describe('without a key', () => {
  test('MAIL, RCPT and DATA are accepted, the end of DATA is not: 530 5.7.0, nothing stored or sent', async () => {
    const before = await stored();
    for (const rcpt of [...TRICKS, '@relay.test,@evil.example:victim@dest.example']) {
      assert.match(await relayAttempt(undefined, [rcpt], MESSAGE), /^530 5\.7\.0 Authentication required/, rcpt);
    }
    assert.match(await relayAttempt(undefined, TRICKS, MESSAGE), /^530 5\.7\.0 /, 'all at once');
    assert.equal(await stored(), before);
  });

  test('a key anywhere but the top-level header block does not authenticate', async () => {
    const before = await stored();
    const inBody = `From: app@acme.example\r\nTo: victim@evil.example\r\nSubject: s\r\nContent-Type: text/html\r\n\r\nX-Auth-APIKey: ${acme.key}\r\n<p>x</p>`;
    assert.match(await relayAttempt(undefined, ['victim@evil.example'], inBody), /^530 5\.7\.0 /);
    const inPart = [
      'From: app@acme.example', 'To: victim@evil.example', 'Subject: s', 'Content-Type: multipart/mixed; boundary=b', '',
      '--b', `X-Auth-APIKey: ${acme.key}`, 'Content-Type: text/html', '', '<p>x</p>', '--b--',
    ].join('\r\n');
    assert.match(await relayAttempt(undefined, ['victim@evil.example'], inPart), /^530 5\.7\.0 /);
    // After a blank line that ends the header block early.
    const afterBlank = `From: app@acme.example\r\n\r\nX-Auth-APIKey: ${acme.key}\r\nSubject: s\r\n\r\n<p>x</p>`;
    assert.match(await relayAttempt(undefined, ['victim@evil.example'], afterBlank), /^530 5\.7\.0 /);
    // Delivery sends only stored messages: none stored, none sent.
    assert.equal(await stored(), before);
  });
});

describe('with a key', () => {
  test('%-hacks and bang paths are literal addresses handed to the route; source routes are dropped', async () => {
    const source = '@relay.test,@evil.example:victim@dest.example';
    const id = queuedId(await relayAttempt(acme.key, ['victim%evil.example@relay.test', 'evil.example!victim@relay.test', source], MESSAGE));
    const got = await upstream.waitFor(1);
    const msg = got.find((m) => m.raw.includes(`<${id}@relay.test>`));
    assert.ok(msg, 'delivered through the route');
    assert.deepEqual(msg.rcptTo.sort(), ['evil.example!victim@relay.test', 'victim%evil.example@relay.test', 'victim@dest.example']);
    assert.equal(msg.mailFrom, 'app@acme.example');
  });
});
