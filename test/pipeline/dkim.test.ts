// The DKIM signer (src/pipeline/dkim.ts) against an independent verifier, mailauth: random
// messages with folded and repeated headers, whitespace runs, tabs, trailing whitespace, empty
// lines at the end and no final line break all verify; a changed body or signed header fails.
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomInt } from 'node:crypto';
import { test } from 'node:test';
// mailauth is CommonJS; its deep module carries the one function we need.
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { SecretBox } from '../../src/crypto.ts';
import type { Domain } from '../../src/db/schema.ts';
import { buildMime } from '../../src/pipeline/build.ts';
import { dkimSignature, relaxedBodyHash } from '../../src/pipeline/dkim.ts';
import { encodeHtmlBody } from '../../src/pipeline/html-body.ts';
import { newSubmission } from '../../src/pipeline/submission.ts';
import { chunk } from '../helpers/dns.ts';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const record = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
const resolver = async (name: string, rr: string) => {
  if (rr !== 'TXT' || name !== 'sel._domainkey.acme.example') throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
  return [chunk(record)];
};
const verify = async (message: Buffer) => (await dkimVerify(message, { resolver: resolver as never })).results;
/** The message with a DKIM-Signature field in front. */
const sign = async (message: Buffer) => Buffer.concat([await dkimSignature([message], { domain: 'acme.example', selector: 'sel', key: privateKey }), message]);

const WORDS = ['a', 'Zz', ' ', '  ', '\t', ' \t ', '=', 'é', '<p>', 'x'.repeat(90)];
const line = () => Array.from({ length: randomInt(0, 8) }, () => WORDS[randomInt(WORDS.length)]).join('');

function randomMessage(): Buffer {
  const headers = [
    `From: "Acme \t Shop"  <app@acme.example>`,
    `To: one@example.org,\r\n\t two@example.org`,
    ...(randomInt(2) ? ['To: three@example.org'] : []),
    `Subject: ${line() || 'x'}  `,
    'Date: Sat, 21 Nov 2026 10:00:00 +0000',
    'Message-ID: <1@relay.test>',
    'X-Unsigned: anything',
    'MIME-Version: 1.0',
    'Content-Type: text/html; charset=utf-8',
  ];
  const lines = Array.from({ length: randomInt(0, 30) }, line);
  const trailing = ['', '\r\n', '\r\n\r\n', '\r\n \r\n\t\r\n'][randomInt(4)];
  return Buffer.from(`${headers.join('\r\n')}\r\n\r\n${lines.join('\r\n')}${trailing}`, 'utf8');
}

test('300 random messages verify with mailauth', async () => {
  for (let i = 0; i < 300; i++) {
    const message = randomMessage();
    const signed = await sign(message);
    const [result] = await verify(signed);
    assert.equal(result?.status.result, 'pass', `${JSON.stringify(result?.status)} for ${JSON.stringify(message.toString('latin1'))}`);
    assert.ok(signed.subarray(signed.length - message.length).equals(message), 'the message follows the signature unchanged');
    for (const l of signed.toString('latin1').split('\r\n', 12)) assert.ok(l.length <= 998);
  }
});

test('one-part messages buildMime writes and signs verify, whatever whitespace their HTML has', async () => {
  const box = new SecretBox('test-secret-0123456789-0123456789-0123456789');
  const sealed = box.seal(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  let asIs = 0;
  for (let i = 0; i < 150; i++) {
    const lines = Array.from({ length: randomInt(0, 20) }, line).join('\r\n') + ['', '\r\n', ' \r\n\r\n'][i % 3];
    // Half of them with single spaces only, as most HTML is.
    const html = i % 2 ? lines : lines.replace(/[ \t]+/g, ' ');
    const sub = newSubmission({
      source: 'smtp',
      envelope: { mailFrom: 'app@acme.example', rcptTo: ['b@example.org'] },
      from: [{ address: 'app@acme.example', name: 'Acme' }],
      to: [{ address: 'b@example.org', name: '' }],
      subject: 'Receipt',
      html,
      attachments: [],
    });
    sub.senderDomain = { name: 'acme.example', dkim_selector: 'sel', dkim_private_key_enc: sealed } as Domain;
    const mime = Buffer.concat((await buildMime(box, 'relay.test', `m-${i}`, sub)).mime);
    const [result] = await verify(mime);
    assert.equal(result?.status.result, 'pass', `${JSON.stringify(result?.status)} for ${JSON.stringify(html)}`);
    if (encodeHtmlBody(html).relaxedAsIs) asIs++;
  }
  assert.ok(asIs > 20 && asIs < 130, `bodies hashed unsearched and searched both verify (${asIs} of 150 unsearched)`);
});

test('the relaxed body hash: whitespace runs and ends, empty trailing lines, a missing final CRLF', () => {
  const same = ['a  b\t\r\nc \r\n\r\n\r\n', 'a b\r\nc', 'a b \r\nc\r\n \r\n\t\r\n'];
  const hashes = same.map((b) => relaxedBodyHash(Buffer.from(b)));
  assert.deepEqual(new Set(hashes).size, 1, 'one canonical form');
  assert.notEqual(relaxedBodyHash(Buffer.from('a b\r\n\r\nc\r\n')), hashes[0], 'an empty line inside the body counts');
  assert.notEqual(relaxedBodyHash(Buffer.from('ab\r\nc\r\n')), hashes[0], 'a space between words counts');
  // RFC 6376 §3.4.4: an empty body hashes as the empty string.
  assert.equal(relaxedBodyHash(Buffer.alloc(0)), '47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
  assert.equal(relaxedBodyHash(Buffer.from('\r\n\r\n')), '47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
});

/** RFC 6376 §3.4.4 read literally, line by line: the reference the one-pass hash must match. */
function literalRelaxedHash(body: Buffer): string {
  const lines = body.toString('latin1').split('\r\n').map((l) => l.replace(/[ \t]+/g, ' ').replace(/ $/, ''));
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return createHash('sha256').update(Buffer.from(lines.length ? `${lines.join('\r\n')}\r\n` : '', 'latin1')).digest('base64');
}

test('the relaxed body hash matches the RFC read line by line on 20,000 random bodies (bare CR and LF, 8-bit bytes included)', () => {
  // \xa0 is whitespace to JavaScript's trim, not to DKIM; a bare LF ends no line in DKIM.
  const pieces = ['a', 'b', ' ', ' ', '\t', '\r\n', '\r\n', '\r', '\n', '=', '\xa0', '\xe9'];
  for (let n = 0; n < 20_000; n++) {
    const body = Buffer.from(Array.from({ length: randomInt(0, 40) }, () => pieces[randomInt(pieces.length)]).join(''), 'latin1');
    assert.equal(relaxedBodyHash(body), literalRelaxedHash(body), JSON.stringify(body.toString('latin1')));
  }
});

test('a body whose lines relaxed canonicalization leaves alone hashes the same unsearched ("linesAsIs")', () => {
  const pieces = ['a', 'b', ' ', '\r\n', '\r\n\r\n', '=', '\xe9'];
  let tested = 0;
  for (let n = 0; n < 5_000; n++) {
    const body = Buffer.from(Array.from({ length: randomInt(0, 40) }, () => pieces[randomInt(pieces.length)]).join(''), 'latin1');
    if (/  | \r\n| $/.test(body.toString('latin1'))) continue;
    tested++;
    assert.equal(relaxedBodyHash(body, true), literalRelaxedHash(body), JSON.stringify(body.toString('latin1')));
  }
  assert.ok(tested > 1000, `${tested} bodies`);
});

test('a changed body or signed header fails; an unsigned header may change', async () => {
  const signed = await sign(Buffer.from('From: app@acme.example\r\nTo: b@example.org\r\nSubject: Receipt\r\nX-Unsigned: 1\r\n\r\n<p>Total: 10 EUR</p>\r\n'));
  const text = signed.toString('latin1');
  const status = async (t: string) => (await verify(Buffer.from(t, 'latin1')))[0]?.status;
  assert.equal((await status(text))?.result, 'pass');
  // mailauth calls a body hash mismatch "neutral", naming it.
  const body = await status(text.replace('10 EUR', '99 EUR'));
  assert.notEqual(body?.result, 'pass');
  assert.match(String(body?.comment), /body hash did not verify/);
  assert.equal((await status(text.replace('Subject: Receipt', 'Subject: Invoice')))?.result, 'fail');
  assert.equal((await status(text.replace('X-Unsigned: 1', 'X-Unsigned: 2')))?.result, 'pass');
});

test('over pieces of whole lines, the body hash is the hash of the whole body, however it is cut', () => {
  const words = ['a', 'b', ' ', '  ', '\t', '\r\n', '\r\n', '\r\n\r\n', ' \r\n', '\xe9'];
  for (let n = 0; n < 5_000; n++) {
    const body = Buffer.from(Array.from({ length: randomInt(0, 60) }, () => words[randomInt(words.length)]).join(''), 'latin1');
    // Cut after CRLFs chosen at random, as build.ts cuts a large message: whole lines per piece,
    // pieces of nothing but empty lines or whitespace included.
    const cuts: number[] = [];
    for (let at = body.indexOf('\r\n'); at >= 0; at = body.indexOf('\r\n', at + 2)) if (randomInt(3) === 0) cuts.push(at + 2);
    const pieces = [0, ...cuts].map((start, i) => body.subarray(start, cuts[i] ?? body.length));
    assert.equal(relaxedBodyHash(pieces), relaxedBodyHash(body), JSON.stringify(pieces.map((p) => p.toString('latin1'))));
    assert.equal(relaxedBodyHash(body), literalRelaxedHash(body));
  }
});
