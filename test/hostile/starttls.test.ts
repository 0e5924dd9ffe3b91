// STARTTLS command injection (CVE-2011-0411 and its many re-discoveries): commands a client, or a
// man in the middle, pipelines in clear text after STARTTLS must not run inside the TLS session,
// and nothing learnt before TLS (EHLO, AUTH, a started transaction) survives it (RFC 3207 §4.2).
// smtp-server retires its command parser at STARTTLS and resets the session once the handshake
// completes; these tests pin that behaviour against the relay as it is configured.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { plain } from '../helpers/smtp-client.ts';
import type { TenantSetup, TestRelay } from '../helpers/relay.ts';
import { repliesBefore, session, startAcmeRelay, stopAcmeRelay } from './raw-smtp.ts';

let relay: TestRelay;
let acme: TenantSetup;

before(async () => ({ relay, acme } = await startAcmeRelay()));
after(() => stopAcmeRelay({ relay }));

test('commands pipelined after STARTTLS in the same packet are discarded, not run inside TLS', async () => {
  const c = await session(relay.smtpPort);
  const injected = `EHLO evil.test\r\nAUTH PLAIN ${plain(acme.key)}\r\nMAIL FROM:<app@acme.example>\r\nRCPT TO:<victim@dest.example>\r\n`;
  assert.match(await c.starttls(injected), /^220 /);
  // Inside TLS no reply is owed for the injected lines: the next reply is the NOOP's.
  assert.deepEqual(await repliesBefore(c), []);
  // The injected EHLO did not run: MAIL needs one first.
  assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^503 /);
  const ehlo = await c.cmd('EHLO client.test');
  assert.match(ehlo, /^250/);
  assert.ok(!ehlo.includes('STARTTLS'), 'STARTTLS is not offered twice');
  // The injected MAIL did not run: RCPT has no transaction to join.
  assert.match(await c.cmd('RCPT TO:<victim@dest.example>'), /^503 /);
  // The injected AUTH did not run: this one is the first and succeeds.
  assert.match(await c.cmd(`AUTH PLAIN ${plain(acme.key)}`), /^235 /);
  assert.match(await c.cmd('STARTTLS'), /^503 /);
  c.close();
});

test('AUTH and a transaction started before STARTTLS are forgotten once TLS is up', async () => {
  const c = await session(relay.smtpPort, acme.key);
  assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<someone@dest.example>'), /^250 /);
  assert.match(await c.starttls(), /^220 /);
  assert.match(await c.cmd('EHLO client.test'), /^250/);
  // No transaction survived...
  assert.match(await c.cmd('RCPT TO:<someone@dest.example>'), /^503 /);
  assert.match(await c.cmd('DATA'), /^503 /);
  // ...and no identity: a message without a key is refused at the end of DATA.
  assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<someone@dest.example>'), /^250 /);
  const reply = await c.data('From: app@acme.example\r\nTo: someone@dest.example\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n<p>x</p>');
  assert.match(reply, /^530 5\.7\.0 Authentication required/);
  // A fresh AUTH inside TLS is accepted (it would be "503 No identity changes" had the old one stuck).
  assert.match(await c.cmd(`AUTH PLAIN ${plain(acme.key)}`), /^235 /);
  c.close();
});
