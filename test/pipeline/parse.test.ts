// The parse stage on its own: regressions from real clients (test/fixtures/*.eml). Its bounds
// (parts, nesting, header size) are tested end to end in test/hostile/mime-bombs.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';
import { applyHeaders, removeCidImages, textToHtml } from '../../src/pipeline/apply-headers.ts';
import { MAX_MIME_PARTS, parse } from '../../src/pipeline/parse.ts';
import { newSubmission } from '../../src/pipeline/submission.ts';

const submission = (raw: Buffer | Buffer[]) => newSubmission({ source: 'smtp', envelope: { mailFrom: 'a@b.example', rcptTo: ['x@dest.example'] }, raw });

test('a UTF-8 byte order mark before the first header does not hide From', async () => {
  const sub = await parse(submission(fs.readFileSync('test/fixtures/bom-before-headers.eml')));
  assert.equal(sub.from?.[0].address, 'app@acme.example');
  assert.equal(sub.subject, 'BOM first');
});

test('RFC 2047 encoded platform headers are decoded', async () => {
  const raw = 'From: a@acme.example\r\nX-Transactional-Tag: =?UTF-8?B?w6lsw6ll?=\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n';
  const sub = applyHeaders(await parse(submission(Buffer.from(raw))));
  assert.equal(sub.tag, 'élée');
});

test('cid image tags go, other images stay; text becomes escaped HTML', () => {
  const { html, removed } = removeCidImages('<p><img src="cid:a@b"><IMG alt=x SRC=\'cid:c\'><img src="https://x.example/i.png"></p>');
  assert.equal(removed, 2);
  assert.equal(html, '<p><img src="https://x.example/i.png"></p>');
  assert.match(textToHtml('a < b\nc'), /a &lt; b<br>\nc/);
});

/** A multipart message of `attachments` base64 parts of `size` random bytes each. */
function largeMessage(attachments: number, size: number): { raw: Buffer; contents: Buffer[] } {
  const contents = Array.from({ length: attachments }, () => crypto.randomBytes(size));
  const parts = contents.map(
    (c, i) => `--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="f${i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${c.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n`,
  );
  const raw = `From: a@acme.example\r\nSubject: large\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n${parts.join('')}--b--\r\n`;
  return { raw: Buffer.from(raw, 'latin1'), contents };
}

const chunked = (raw: Buffer, size: number) => Array.from({ length: Math.ceil(raw.length / size) }, (_, i) => Buffer.from(raw.subarray(i * size, (i + 1) * size)));

test('a large message parses from its chunks as from one buffer, and its chunks are let go as they are read', async () => {
  const { raw, contents } = largeMessage(3, 700 * 1024);
  assert.ok(raw.length > 2 * 1024 * 1024);
  const chunks = chunked(raw, 65_536);
  const fromChunks = await parse(submission(chunks));
  const whole = await parse(submission(raw));
  assert.equal(chunks.length, 0, 'the parser took every chunk off the list');
  assert.equal(fromChunks.raw, undefined);
  for (const sub of [fromChunks, whole]) {
    assert.equal(sub.subject, 'large');
    assert.equal(sub.html, '<p>x</p>');
    assert.deepEqual(sub.attachments.map((a) => a.filename), ['f0.pdf', 'f1.pdf', 'f2.pdf']);
    sub.attachments.forEach((a, i) => assert.ok(a.content.equals(contents[i])));
  }
});

test('Content-Type lines are counted across chunk boundaries, a byte order mark cut in two included', async () => {
  let raw = '\ufeffFrom: a@acme.example\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n';
  for (let i = 0; i < MAX_MIME_PARTS; i++) raw += `--b\r\nContent-Type: text/plain\r\n\r\n${i}\r\n`;
  for (const size of [1, 7, 13, 4096]) {
    await assert.rejects(parse(submission(chunked(Buffer.from(raw), size))), /more than 1000 MIME parts/, `chunks of ${size}`);
  }
  // One part fewer passes the count (and the parse).
  const fewer = raw.slice(0, raw.lastIndexOf('--b\r\n'));
  const sub = await parse(submission(chunked(Buffer.from(fewer), 7)));
  assert.equal(sub.from?.[0].address, 'a@acme.example');
});
