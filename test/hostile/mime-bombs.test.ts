// MIME bombs: messages built to make the parser spend time or memory. Each gets a reply in bounded
// time — a 250 for a message delivered whole, or a 5xx naming the limit — and none is cut short
// by a limit and then delivered as if whole. The limits are mailparser's (mailsplit: 1,000
// parts, a 1 MiB header block per part) plus our own count of Content-Type headers before parsing
// (src/pipeline/parse.ts); the header block limit is in limits.test.ts.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { findMessage } from '../../src/db/messages.repository.ts';
import { MAX_LINE_OCTETS } from '../../src/pipeline/build.ts';
import { MAX_MIME_PARTS } from '../../src/pipeline/parse.ts';
import type { TenantSetup, TestRelay } from '../helpers/relay.ts';
import { longestLine, queuedId, rssMb, startAcmeRelay, stopAcmeRelay, submitData } from './raw-smtp.ts';

let relay: TestRelay;
let acme: TenantSetup;

before(async () => ({ relay, acme } = await startAcmeRelay()));
after(() => stopAcmeRelay({ relay }));

/** DATA with a test key (captured, nothing leaves); the reply to the final dot. */
const submit = (message: string) => submitData(relay.smtpPort, acme.testKey, message, { encoding: 'latin1', timeoutMs: 60_000 });

async function stored(reply: string) {
  const msg = await findMessage(relay.ctx.db, queuedId(reply));
  return { mime: msg!.mime, mail: await simpleParser(msg!.mime) };
}

const FROM = 'From: app@acme.example\r\nTo: user@dest.example\r\nSubject: bomb\r\n';

test(`${MAX_MIME_PARTS + 1} sibling parts: 554 5.6.0, counted before parsing`, async () => {
  let raw = `${FROM}Content-Type: multipart/mixed; boundary=b\r\n\r\n`;
  for (let i = 0; i <= MAX_MIME_PARTS; i++) raw += `--b\r\nContent-Type: text/plain\r\n\r\npart ${i}\r\n`;
  assert.match(await submit(raw + '--b--'), /^554 5\.6\.0 Message has more than 1000 MIME parts/);
});

test('20,000 sibling parts without a Content-Type header: 554 5.6.0 from the parser, not a 451', async () => {
  let raw = `${FROM}Content-Type: multipart/mixed; boundary=b\r\n\r\n`;
  for (let i = 0; i < 20_000; i++) raw += `--b\r\n\r\n${i}\r\n`;
  assert.match(await submit(raw + '--b--'), /^554 5\.6\.0 Message has more than 1000 MIME parts/);
});

/** `depth` nested multiparts with an HTML part at the bottom. */
function nested(depth: number): string {
  let raw = FROM;
  for (let i = 0; i < depth; i++) raw += `Content-Type: multipart/mixed; boundary=n${i}\r\n\r\n--n${i}\r\n`;
  raw += 'Content-Type: text/html\r\n\r\n<p>the bottom</p>\r\n';
  for (let i = depth - 1; i >= 0; i--) raw += `--n${i}--\r\n`;
  return raw;
}

test('nesting 1,000 deep: 554 5.6.0; 900 deep: parsed in full and the innermost part delivered', async () => {
  assert.match(await submit(nested(1000)), /^554 5\.6\.0 Message has more than 1000 MIME parts/);
  const { mail } = await stored(await submit(nested(900)));
  assert.match(String(mail.html), /<p>the bottom<\/p>/);
});

test('inline message/rfc822 parts, empty or not, are sent as attachments; the reply is immediate, not a parse timeout', async () => {
  // mailparser 3.9.31 waited forever on the empty one, so the relay answered 451 after 20 s and
  // a client would have retried it for ever.
  for (const inner of ['', 'From: x@inner.example\r\nSubject: inner\r\n\r\n<p>inner body</p>\r\n']) {
    const raw = [
      FROM.trimEnd(), 'Content-Type: multipart/mixed; boundary=b', '',
      '--b', 'Content-Type: text/html', '', '<p>outer</p>',
      '--b', 'Content-Type: message/rfc822', 'Content-Disposition: inline', '', inner + '--b--',
    ].join('\r\n');
    const { mail, mime } = await stored(await submit(raw));
    assert.match(mime.toString(), /Content-Type: message\/rfc822\r\n(.+\r\n)*Content-Disposition: attachment/, 'sent as an attachment');
    assert.match(String(mail.html), /<p>outer<\/p>/);
    assert.doesNotMatch(String(mail.html), /inner body/, 'the attached message is not merged into the HTML');
    assert.deepEqual(mail.attachments.map((a) => a.contentType), ['message/rfc822']);
  }
});

test('broken base64 is decoded leniently, like any MUA would, and the rest of the message is whole', async () => {
  const raw = [
    FROM.trimEnd(), 'Content-Type: multipart/mixed; boundary=b', '',
    '--b', 'Content-Type: text/html', '', '<p>see attached</p>',
    '--b', 'Content-Type: application/pdf; name=a.pdf', 'Content-Transfer-Encoding: base64', '',
    'JVBER!!i0x*LjQK%%', 'not-base64 at all ===', 'SGVsbG8',
    '--b', 'Content-Type: application/octet-stream; name=b.bin', 'Content-Transfer-Encoding: base64', '', 'AAEC', '--b--',
  ].join('\r\n');
  const { mail } = await stored(await submit(raw));
  assert.match(String(mail.html), /see attached/);
  assert.deepEqual(mail.attachments.map((a) => a.filename), ['a.pdf', 'b.bin'], 'both attachments, in order');
  assert.ok(mail.attachments[0].content.subarray(0, 5).equals(Buffer.from('%PDF-')), 'the valid prefix decoded');
  assert.deepEqual([...mail.attachments[1].content], [0, 1, 2], 'the part after the broken one intact');
});

test('unknown charsets, in the body and in encoded-words: accepted, the ASCII text intact', async () => {
  const raw = `From: app@acme.example\r\nTo: user@dest.example\r\nSubject: =?x-no-such-charset?Q?caf=E9?= plain\r\nContent-Type: text/html; charset=x-no-such-charset\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>caf\xe9 au lait \xff\xfe</p>`;
  const { mail, mime } = await stored(await submit(raw));
  assert.match(String(mail.html), /<p>caf.* au lait/);
  assert.match(String(mail.subject), /plain$/);
  assert.ok(longestLine(mime) <= MAX_LINE_OCTETS);
});

test('an encoded-word flood (50,000 in the Subject, just under the header limit): decoded whole, re-folded', async () => {
  const rss = rssMb();
  const words = 50_000;
  const raw = `From: app@acme.example\r\nTo: user@dest.example\r\nSubject:${' =?UTF-8?B?w6k=?='.repeat(words)}\r\nContent-Type: text/html\r\n\r\n<p>x</p>`;
  const { mail, mime } = await stored(await submit(raw));
  assert.equal(mail.subject, 'é'.repeat(words));
  assert.ok(longestLine(mime) <= MAX_LINE_OCTETS);
  assert.ok(rssMb() - rss < 200, `RSS grew by ${Math.round(rssMb() - rss)} MB`);
});
