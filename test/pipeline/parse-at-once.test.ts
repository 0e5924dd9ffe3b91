// The parse stage's one-part path (src/pipeline/parse.ts, parsedAtOnce) against mailparser: every
// message the path takes must come out as mailparser gives it, field by field (header lines,
// addresses, subject, HTML, text). Over the robustness corpus (../shared/corpus, when it is beside
// the repository) and over variants built here of what the path looks at: header folding, encoded
// words, address lists and groups, charsets, transfer encodings, broken quoted-printable, bare
// line ends, NULs and invalid UTF-8. Whatever the path declines goes to mailparser whole.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parsedAtOnce, parsedByMailparser, type Parsed } from '../../src/pipeline/parse.ts';
import { buildMessage } from '../../bench/load.ts';

const CORPUS_DIR = path.resolve(import.meta.dirname, '../../../shared/corpus');
const corpus = fs.existsSync(CORPUS_DIR) ? fs.readdirSync(CORPUS_DIR).filter((f) => f.endsWith('.eml')).sort() : [];

/** Whether the path took `raw`, having checked that it gave what mailparser gives. */
async function agrees(raw: Buffer, label: string): Promise<boolean> {
  const fast = parsedAtOnce(raw);
  if (!fast) return false;
  const slow = await parsedByMailparser(raw);
  const fields = (p: Parsed) => ({
    headerLines: p.headerLines,
    from: p.from,
    to: p.to,
    replyTo: p.replyTo,
    subject: p.subject,
    html: p.html,
    text: p.text,
    attachments: p.attachments.length,
  });
  assert.deepEqual(fields(fast), fields(slow), label);
  return true;
}

/** As SMTP hands it over: no mbox "From " line, CRLF line ends. */
const asSubmitted = (raw: Buffer) => Buffer.from(raw.toString('latin1').replace(/^From [^\n]*\n/, '').replace(/\r?\n/g, '\r\n'), 'latin1');

test('the corpus: every message the one-part path takes parses as mailparser parses it', { skip: corpus.length === 0 && `corpus not found at ${CORPUS_DIR}` }, async () => {
  let taken = 0;
  for (const file of corpus) {
    const raw = fs.readFileSync(path.join(CORPUS_DIR, file));
    for (const [form, bytes] of [['CRLF', asSubmitted(raw)], ['as stored', raw]] as const) {
      if (await agrees(bytes, `${file} (${form})`)) taken++;
    }
  }
  assert.ok(taken > 0, 'some corpus messages take the path');
});

const FROMS = [
  'From: app@acme.example',
  'From: "Acme, Inc." <app@acme.example>',
  'From: =?UTF-8?B?w4lsw6l2ZQ==?= <app@acme.example>',
  'From: =?UTF-8?Q?J=C3=B6rg?= <app@acme.example> (comment)',
  'From: app@xn--bcher-kva.example',
  'From: a@acme.example, b@acme.example',
  'From:\r\n  "Folded Name"\r\n  <app@acme.example>',
];
const TOS = [
  '',
  'To: b@example.org\r\n',
  'To: Customers:;\r\n',
  'To: list: c@example.org, "D" <d@example.org>;, e@example.org\r\n',
  'To: =?UTF-8?B?PGF0dGFja2VyQGV2aWwuZXhhbXBsZT4=?=\r\n',
  'To: b@example.org\r\nTo: c@example.org\r\n',
  'Reply-To: help@acme.example\r\nTo: "x" <x@example.org>\r\n',
];
const SUBJECTS = ['', 'Subject: hello\r\n', 'Subject: =?UTF-8?Q?caf=C3=A9?= and =?ISO-8859-1?Q?caf=E9?=\r\n', `Subject: long ${'word '.repeat(60)}\r\n  folded\r\n`, 'Subject: a\r\nSubject: b\r\n', 'Subject:\r\n'];
const TYPES = [
  'Content-Type: text/html',
  'Content-Type: text/html; charset=utf-8',
  'Content-Type: TEXT/HTML; charset="UTF-8"',
  'Content-Type: text/html; charset=us-ascii',
  'Content-Type: text/html; charset=iso-8859-1',
  'Content-Type: text/html; charset=utf-8; format=flowed',
  'Content-Type: text/plain; charset=utf-8',
  'Content-Type: multipart/alternative; boundary=b',
];
const ENCODINGS = ['', 'Content-Transfer-Encoding: 7bit\r\n', 'Content-Transfer-Encoding: 8BIT\r\n', 'Content-Transfer-Encoding: Quoted-Printable\r\n', 'Content-Transfer-Encoding: base64\r\n', 'Content-Transfer-Encoding: quoted-printable (c)\r\n'];
const BODIES = [
  '<p>hello</p>\r\n',
  '<p>caf\u00e9 \u2013 \u{1f600}</p>\r\n',
  '<p>a=3D"b" soft=\r\nbreak =C3=A9 =ZZ =\r\n</p>\r\n',
  '<p>trailing spaces   \r\nand\ttabs\t\r\n</p>',
  '<p>bare\nLF and bare\rCR</p>\r\n\r\n\r\n',
  '<p>NUL\u0000 and invalid \u00ff\u00fe UTF-8</p>\r\n',
  '',
  '\r\n',
];

test('variants: every one the one-part path takes parses as mailparser parses it', async () => {
  let taken = 0;
  let tried = 0;
  for (const [f, from] of FROMS.entries()) {
    for (const [t, to] of TOS.entries()) {
      for (const [s, subject] of SUBJECTS.entries()) {
        // Every type, encoding and body with each address and subject variant would be 30,000
        // parses; the rest are crossed in turn, so each still meets each of the others.
        const type = TYPES[(f + t + s) % TYPES.length];
        for (const [e, encoding] of ENCODINGS.entries()) {
          const body = BODIES[(f + t + s + e) % BODIES.length];
          const raw = Buffer.from(`${from}\r\n${to}${subject}MIME-Version: 1.0\r\n${type}\r\n${encoding}X-Transactional-Tag: t\r\n\r\n${body}`, 'latin1');
          tried++;
          if (await agrees(raw, JSON.stringify({ from, to, subject, type, encoding, body }))) taken++;
        }
      }
    }
  }
  assert.ok(taken > tried / 4, `the path took ${taken} of ${tried}`);
});

test('the path takes the usual message and declines what mailparser must read', async () => {
  const usual = buildMessage(5 * 1024, 'app@acme.example', 'b@example.org');
  assert.ok(await agrees(usual.subarray(0, usual.length - 3), 'the bench message'));
  const decline = (raw: string) => assert.equal(parsedAtOnce(Buffer.from(raw, 'latin1')), undefined, JSON.stringify(raw));
  decline('From: a@acme.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n');
  decline('From: a@acme.example\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=x.html\r\n\r\n<p>x</p>\r\n');
  decline('From: a@acme.example\r\nContent-Type: text/html; charset=windows-1252\r\n\r\n<p>caf\u00e9</p>\r\n');
  decline('From: a@acme.example\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPHA+eDwvcD4=\r\n');
  decline('From: a@acme.example\nContent-Type: text/html\n\n<p>bare LF headers</p>\n');
  decline('From: J\u00f6rg <a@acme.example>\r\nContent-Type: text/html\r\n\r\n<p>8-bit header</p>\r\n');
  decline('From a@acme.example Mon Jan  1 00:00:00 2026\r\nFrom: a@acme.example\r\nContent-Type: text/html\r\n\r\n<p>mbox</p>\r\n');
  decline('From: a@acme.example\r\nContent-Type: text/plain; format=flowed\r\n\r\nflowed \r\ntext\r\n');
  decline('From: a@acme.example\r\nSubject: no Content-Type, so text/plain by default\r\n\r\ntext\r\n');
  decline('From: a@acme.example\r\nContent-Type: text/html\r\n\r\n');
  decline('From: a@acme.example\r\nSubject: no body separator\r\n');
  decline('From: a@acme.example\r\nContent-Type: text/html\r\nContent-Type: text/plain\r\n\r\n<p>two types</p>\r\n');
});
