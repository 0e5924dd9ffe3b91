// The DKIM signing thread (src/pipeline/signer.ts): its signatures are crypto.sign's, under load
// and with several keys; its HTML encodings are encodeHtmlBody's; when the thread dies, the work
// it held is refused with a reason and the next job starts a new thread.
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { test } from 'node:test';
import { encodeHtmlBody } from '../../src/pipeline/html-body.ts';
import { encodeHtmlOffThread, rsaSign, stopSigningThread } from '../../src/pipeline/signer.ts';

const keys = [0, 1].map(() => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);

test('200 signatures at once, over two keys, are each what crypto.sign gives (RSA PKCS#1 v1.5 is deterministic)', async () => {
  // Every byte value, as latin1 text: what crosses to the thread is the bytes, not UTF-8 of them.
  const jobs = Array.from({ length: 200 }, (_, i) => ({ data: randomBytes(100 + i), key: keys[i % 2] }));
  const signatures = await Promise.all(jobs.map((j) => rsaSign(j.data.toString('latin1'), j.key)));
  for (const [i, j] of jobs.entries()) assert.equal(signatures[i], sign('sha256', j.data, j.key).toString('base64'), `signature ${i}`);
});

test('a signing thread that dies refuses what it held, and the next signature gets a new thread', async () => {
  const held = Array.from({ length: 20 }, () => rsaSign(randomBytes(64).toString('latin1'), keys[0]));
  await stopSigningThread();
  const results = await Promise.allSettled(held);
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  // Some may have been signed before the thread stopped; the rest are refused, none is lost.
  assert.ok(refused.length > 0, 'the thread stopped with signatures pending');
  for (const r of refused) assert.match(String(r.reason), /DKIM signing thread exited/);
  const data = randomBytes(64);
  assert.equal(await rsaSign(data.toString('latin1'), keys[0]), sign('sha256', data, keys[0]).toString('base64'), 'a new thread signs, with the key sent again');
});

test('HTML encoded on the thread is what encodeHtmlBody gives here, with signatures in between', async () => {
  const pieces = ['a', ' ', '  ', '\t', '=', 'é', '€', '\r\n', 'x'.repeat(90), ' \r\n', '<p>'];
  const htmls = Array.from({ length: 30 }, (_, i) => Array.from({ length: 2000 + i * 500 }, (_, k) => pieces[(k * 7 + i * 13 + ((k * k) % 11)) % pieces.length]).join(''));
  htmls.push('<p>ok</p>\r\n'.repeat(4000), '');
  const data = randomBytes(64);
  const [encoded, signature] = await Promise.all([Promise.all(htmls.map((h) => encodeHtmlOffThread(h))), rsaSign(data.toString('latin1'), keys[1])]);
  assert.equal(signature, sign('sha256', data, keys[1]).toString('base64'));
  for (const [i, html] of htmls.entries()) {
    const here = encodeHtmlBody(html);
    assert.equal(encoded[i].encoding, here.encoding, `html ${i}`);
    assert.equal(encoded[i].relaxedAsIs, here.relaxedAsIs, `html ${i}`);
    assert.deepEqual(encoded[i].body, here.body, `html ${i}`);
  }
  assert.ok(encoded.some((e) => e.encoding === '7bit') && encoded.some((e) => e.encoding === 'quoted-printable'));
  const held = Array.from({ length: 5 }, () => encodeHtmlOffThread(htmls[29]));
  await stopSigningThread();
  for (const r of await Promise.allSettled(held)) if (r.status === 'rejected') assert.match(String(r.reason), /DKIM signing thread exited/);
  assert.deepEqual((await encodeHtmlOffThread(htmls[3])).body, encodeHtmlBody(htmls[3]).body, 'a new thread encodes');
});
