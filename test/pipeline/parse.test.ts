// The parse stage on its own: regressions from real clients (test/fixtures/*.eml). Its bounds
// (parts, nesting, header size) are tested end to end in test/hostile/mime-bombs.test.ts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { applyHeaders, removeCidImages, textToHtml } from '../../src/pipeline/apply-headers.ts';
import { parse } from '../../src/pipeline/parse.ts';
import { newSubmission } from '../../src/pipeline/submission.ts';

const submission = (raw: Buffer) => newSubmission({ source: 'smtp', envelope: { mailFrom: 'a@b.example', rcptTo: ['x@dest.example'] }, raw });

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
