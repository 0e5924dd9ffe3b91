// Header injection: CR, LF, NUL and the Unicode line separators in values that end up in a
// header — template variables rendered into the Subject (SMTP and HTTP), a Subject sent over HTTP,
// encoded-words in a message's own headers that decode to a line break. Whatever the value, the
// message that goes out has exactly the header fields txrelay writes: never one of the
// attacker's, never a raw NUL, never a bare CR or LF. (The renderer turns line breaks in a
// rendered subject into spaces; nodemailer encodes any other control character as an
// encoded-word.)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { findMessage } from '../../src/db/messages.repository.ts';
import { addRoute, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { callJson } from '../helpers/http.ts';
import { BARE_LINE_END, headerFields, openData, queuedId, session } from './raw-smtp.ts';

let relay: TestRelay;
let acme: TenantSetup;
let api: string;

before(async () => {
  relay = await startTestRelay({ TXRELAY_ROLES: 'smtp,api' });
  acme = await setupTenant(relay.ctx, 'acme', 'acme.example');
  await addRoute(relay.ctx, acme.tenantId, { name: 'cap', transport: 'capture' });
  api = `http://127.0.0.1:${relay.httpPort}`;
});

after(async () => relay?.close());

/** Each tries to end the Subject and start a header (or the body) of its own. */
const PAYLOADS: Record<string, string> = {
  CRLF: 'x\r\nBcc: victim@evil.example',
  LF: 'x\nBcc: victim@evil.example',
  CR: 'x\rBcc: victim@evil.example',
  'CRLF CRLF': 'x\r\n\r\n<p>injected body</p>',
  'CRLF + fold': 'x\r\n X-Injected: folded',
  NUL: 'x\u0000Bcc: victim@evil.example',
  'U+2028': 'x\u2028Bcc: victim@evil.example',
  'U+2029': 'x\u2029Bcc: victim@evil.example',
  'U+0085': 'x\u0085Bcc: victim@evil.example',
};

/** The header fields a message from this test may carry at its top level. */
const OWN_FIELDS = new Set(['from', 'to', 'subject', 'date', 'message-id', 'mime-version', 'content-type', 'content-transfer-encoding']);

async function assertNoInjection(id: string, label: string): Promise<string> {
  const msg = await findMessage(relay.ctx.db, id);
  const mime = msg!.mime;
  const names = headerFields(mime).map(([name]) => name);
  assert.deepEqual(names.filter((n) => !OWN_FIELDS.has(n)), [], `${label}: only txrelay's own header fields`);
  assert.equal(names.filter((n) => n === 'subject').length, 1, `${label}: one Subject`);
  const text = mime.toString('latin1');
  assert.ok(!text.includes('\0'), `${label}: no raw NUL`);
  assert.ok(!BARE_LINE_END.test(text), `${label}: no bare CR or LF`);
  assert.ok(!/^(bcc|x-injected):/im.test(text), `${label}: no injected line anywhere`);
  const mail = await simpleParser(mime);
  assert.ok(!mail.headers.has('bcc'), label);
  assert.ok(!/[\r\n]/.test(String(mail.subject)), `${label}: the decoded Subject holds no line break`);
  assert.match(String(mail.html), /<p>the body<\/p>/, `${label}: the body is the one sent`);
  assert.ok(!String(mail.html).includes('injected body'), label);
  return String(mail.subject);
}

describe('variables rendered into the Subject', () => {
  test('over SMTP (X-Transactional-Variables with the message’s own Subject)', async () => {
    for (const [label, value] of Object.entries(PAYLOADS)) {
      const c = await session(relay.smtpPort, acme.testKey);
      await openData(c);
      const variables = JSON.stringify({ name: value });
      c.write(`From: app@acme.example\r\nTo: user@dest.example\r\nSubject: Hello {{ name }}\r\nX-Transactional-Variables: ${variables}\r\nContent-Type: text/html\r\n\r\n<p>the body</p>\r\n.\r\n`);
      const subject = await assertNoInjection(queuedId(await c.reply(30_000)), label);
      assert.match(subject, /^Hello x.*(victim@evil\.example|injected body|X-Injected: folded)/s, `${label}: the value is kept as text`);
      c.close();
    }
  });

  test('over HTTP (POST /v1/messages with variables, and as the Subject itself)', async () => {
    for (const [label, value] of Object.entries(PAYLOADS)) {
      for (const body of [
        { subject: 'Hello {{ name }}', variables: { name: value } },
        { subject: `Hello ${value}` },
      ]) {
        const r = await callJson(api, 'POST', '/v1/messages', {
          token: acme.testKey,
          body: { from: 'app@acme.example', to: ['user@dest.example'], html: '<p>the body</p>', ...body },
        });
        assert.equal(r.status, 202, `${label}: ${r.text}`);
        await assertNoInjection(r.body.id, `${label} (${body.variables ? 'variables' : 'subject'})`);
      }
    }
  });
});

describe("encoded-words in a message's own headers", () => {
  const ew = (s: string) => `=?UTF-8?B?${Buffer.from(s).toString('base64')}?=`;

  test('Subject, From and To display names, a file name and the tag that decode to a line break or NUL: accepted, nothing injected', async () => {
    for (const [label, value] of Object.entries(PAYLOADS)) {
      const c = await session(relay.smtpPort, acme.testKey);
      await openData(c);
      const raw = [
        `From: ${ew(`App${value}`)} <app@acme.example>`,
        `To: ${ew(`User${value}`)} <user@dest.example>`,
        `Subject: ${ew(`Hi${value}`)}`,
        // Not a header that travels, but stored: a NUL here once failed the commit (451 forever).
        `X-Transactional-Tag: ${ew(`tag${value}`)}`,
        'Content-Type: multipart/mixed; boundary=b',
        '',
        '--b', 'Content-Type: text/html', '', '<p>the body</p>',
        '--b', `Content-Type: application/pdf; name="${ew(`a${value}.pdf`)}"`, 'Content-Transfer-Encoding: base64', '', 'JVBERi0xLjQK',
        '--b--', '.', '',
      ].join('\r\n');
      c.write(raw);
      await assertNoInjection(queuedId(await c.reply(30_000)), label);
      c.close();
    }
  });
});
