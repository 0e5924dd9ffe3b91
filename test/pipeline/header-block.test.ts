// The header block written without nodemailer (src/pipeline/header-block.ts) is nodemailer's,
// byte for byte, for every message it takes; the others are left to nodemailer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SecretBox } from '../../src/crypto.ts';
import { buildMime } from '../../src/pipeline/build.ts';
import { plainHeaderBlock } from '../../src/pipeline/header-block.ts';
import { newSubmission, type Address } from '../../src/pipeline/submission.ts';
import { seeded } from '../helpers/seeded.ts';

const box = new SecretBox('test-secret-0123456789-0123456789-0123456789');
const date = new Date('2026-11-21T10:00:00Z');

// Plain values (written by plainHeaderBlock when all of a message's are) and odd ones (left to
// nodemailer), drawn so that both kinds of message are common.
const NAMES = { plain: ['', 'Bench', 'Carl Smith', 'A1 b2 C3', 'x'.repeat(40)], odd: ['Jöhn', 'A "q"', "O'Brien", 'Dr. X', 'a  b', ' lead', 'trail ', 'Name, Inc', 'a=?utf-8?q?x?='] };
const ADDRESSES = {
  plain: ['a@b.example', 'first.last+tag@sub.example.org', 'UPPER@Example.COM', "o'hara@x.example", `${'x'.repeat(30)}@long.example`, 'a@x'],
  odd: ['a@bücher.example', 'ü@b.example', '"q u"@b.example', 'a..b@x.example', 'a@-x.example'],
};
const SUBJECTS = {
  plain: ['Hi', 'txrelay bench message', 'Re: [ticket #12] (urgent) 100% done; ok?', 'quote "x" \\ back', 'a <b> {c} |d| ~e~ `f`', 'x'.repeat(67), 'a=b?c'],
  odd: ['x'.repeat(68), 'Receipt ✓', 'a =?utf-8?q?x?= b', 'two  spaces', ' leading', 'trailing ', 'tab\tin', '', '=?'],
};


test('a plain header block is byte for byte what nodemailer writes; other messages go to nodemailer', async () => {
  const taken = { plain: 0, nodemailer: 0 };
  for (let seed = 1; seed <= 1000; seed++) {
    const next = seeded(seed);
    const pick = (lists: { plain: string[]; odd: string[] }): string => {
      const list = next() < 0.95 ? lists.plain : lists.odd;
      return list[Math.floor(next() * list.length)];
    };
    const address = (): Address => ({ address: pick(ADDRESSES), name: pick(NAMES) });
    const list = (min: number, max: number) => Array.from({ length: min + Math.floor(next() * (max - min + 1)) }, address);
    const fields = { from: [address()], to: list(next() < 0.05 ? 0 : 1, 3), replyTo: list(0, 2), subject: pick(SUBJECTS) };
    const sub = () => newSubmission({ source: 'smtp', envelope: { mailFrom: 'app@acme.example', rcptTo: ['b@example.org'] }, ...fields, html: '<p>Hello</p>' });
    const options = { date, baseBoundary: '0123456789abcdef' };
    const ours = await buildMime(box, 'relay.test', `id-${seed}`, sub(), options);
    const theirs = await buildMime(box, 'relay.test', `id-${seed}`, sub(), { ...options, nodemailerHeaders: true });
    assert.equal(theirs.headers, 'nodemailer');
    assert.equal(Buffer.concat(ours.mime).toString('latin1'), Buffer.concat(theirs.mime).toString('latin1'), `seed ${seed}: ${JSON.stringify(fields)}`);
    taken[ours.headers]++;
  }
  // Both paths are exercised, so the comparison cannot pass by never taking the plain one.
  assert.ok(taken.plain > 80 && taken.nodemailer > 80, JSON.stringify(taken));
});

test('what is plain, and what is left to nodemailer', () => {
  const frame = { messageIdHeader: '<m@relay.test>', date };
  const block = (fields: { from?: Address[]; to?: Address[]; replyTo?: Address[]; subject?: string }) =>
    plainHeaderBlock(newSubmission({ source: 'smtp', envelope: { mailFrom: 'a@b.example', rcptTo: ['c@d.example'] }, from: [{ address: 'a@b.example', name: 'App' }], to: [{ address: 'c@d.example', name: '' }], subject: 'Hi', ...fields }), frame);
  assert.equal(
    block({}),
    'From: App <a@b.example>\r\nTo: c@d.example\r\nSubject: Hi\r\nMessage-ID: <m@relay.test>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n' +
      'Content-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8',
  );
  assert.equal(block({ subject: 'Café' }), undefined, 'a non-ASCII subject is encoded by nodemailer');
  assert.equal(block({ subject: 'x'.repeat(80) }), undefined, 'a line that needs folding');
  assert.equal(block({ from: [{ address: 'a@b.example', name: 'Dr. No' }] }), undefined, 'a name nodemailer quotes');
  assert.equal(block({ to: [{ address: 'c@bücher.example', name: '' }] }), undefined, 'an IDN domain nodemailer converts');
  assert.equal(block({ to: [] }), undefined, 'no To');
});
