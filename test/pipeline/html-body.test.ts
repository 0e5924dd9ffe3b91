// The HTML part's own encoder (src/pipeline/html-body.ts): what it writes decodes to exactly the
// HTML, keeps every line within RFC 2045's 76 characters, and is chosen as nodemailer would.
// Then whole messages: what buildMime writes parses back to the same HTML, signed or not.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import MailComposer from 'nodemailer/lib/mail-composer';
import { buildMime, spliceHtmlBody } from '../../src/pipeline/build.ts';
import { encodeHtmlBody, quotedPrintable } from '../../src/pipeline/html-body.ts';
import { newSubmission, type Attachment } from '../../src/pipeline/submission.ts';
import { SecretBox } from '../../src/crypto.ts';

/** RFC 2045 §6.7 decoding, written out here so the test does not trust the code under test. */
function decodeQp(encoded: Buffer): Buffer {
  const text = encoded.toString('latin1').replace(/=\r\n/g, '');
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '=') {
      assert.match(text.slice(i + 1, i + 3), /^[0-9A-F]{2}$/, `a "=" not followed by two hex digits at ${i}`);
      out.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      out.push(text.charCodeAt(i));
    }
  }
  return Buffer.from(out);
}

function assertWellFormedQp(encoded: Buffer): void {
  for (const line of encoded.toString('latin1').split('\r\n')) {
    assert.ok(line.length <= 76, `line of ${line.length} characters: ${JSON.stringify(line)}`);
    assert.doesNotMatch(line, /[^\t\x20-\x7e]/, 'only printable ASCII, space and tab');
    assert.doesNotMatch(line, /[ \t]$/, 'no whitespace at the end of a line');
    assert.doesNotMatch(line, /=(?![0-9A-F]{2}|$)/, '"=" starts an escape or a soft break');
  }
}

const PIECES = ['a', 'Z', ' ', '\t', '=', '.', '<p>', 'é', '€', '😀', '\r\n', '\r\n\r\n', 'x'.repeat(80), ' \r\n', '=\r\n', '\u0000', '\u007f', '=3D'];
const randomText = () => Array.from({ length: randomInt(0, 60) }, () => PIECES[randomInt(PIECES.length)]).join('');

describe('HTML body encoding', () => {
  test('quoted-printable decodes to the same bytes and is well formed, for 2,000 random texts', () => {
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.from(randomText(), 'utf8');
      const encoded = quotedPrintable(bytes).body;
      assertWellFormedQp(encoded);
      assert.deepEqual(decodeQp(encoded), bytes, JSON.stringify(bytes.toString('utf8')));
    }
  });

  test('soft breaks never split an escape; lines fill up to 76 characters', () => {
    const qp = (text: string) => quotedPrintable(Buffer.from(text, 'utf8')).body.toString('latin1');
    const encoded = qp('é'.repeat(100));
    const lines = encoded.split('\r\n');
    assert.ok(lines.slice(0, -1).every((l) => l.endsWith('=') && l.length <= 76));
    assert.ok(lines.slice(0, -1).every((l) => l.length >= 73), 'each soft-broken line is filled');
    assert.equal(qp('a'.repeat(76)), 'a'.repeat(76), 'a line of exactly 76 needs no break');
    assert.equal(qp('a'.repeat(77)), `${'a'.repeat(75)}=\r\naa`);
    assert.equal(qp('a = b \r\nc\t'), 'a =3D b=20\r\nc=09');
  });

  test('"relaxedAsIs" holds exactly when DKIM\'s relaxed canonicalization would change no line of the body', () => {
    // What the hash may skip searching for: a tab, two spaces together, a space at a line's end.
    const changedByRelaxed = (body: Buffer) => /\t|  | \r\n| $/.test(body.toString('latin1'));
    const seen = { asIs: 0, changed: 0 };
    for (let i = 0; i < 5000; i++) {
      const html = randomText().replace(/\r\n\r\n|\r\n/g, (m) => (i % 2 ? m : '\r\n')) + (i % 3 ? '' : ' ');
      const { body, relaxedAsIs } = encodeHtmlBody(i % 4 ? html : html.replace(/[^\x20-\x7e\t\r\n]|x{80}/g, 'y'));
      assert.equal(relaxedAsIs, !changedByRelaxed(body), JSON.stringify(html));
      seen[relaxedAsIs ? 'asIs' : 'changed']++;
    }
    assert.ok(seen.asIs > 500 && seen.changed > 500, `both kinds are tested: ${JSON.stringify(seen)}`);
    assert.equal(encodeHtmlBody('<p>a  b</p>').relaxedAsIs, false, '7bit, two spaces');
    assert.equal(encodeHtmlBody('<p>a b</p> \r\n<p>c</p>').relaxedAsIs, false, '7bit, a space at a line end');
    assert.equal(encodeHtmlBody(`<p>${'x'.repeat(80)} \r\n</p>`).relaxedAsIs, true, 'quoted-printable encodes the space at a line end');
    assert.equal(encodeHtmlBody(`<p>${'x'.repeat(80)}\t</p>`).relaxedAsIs, false, 'quoted-printable keeps a tab mid-line');
  });

  test('the encoding is nodemailer\'s choice: 7bit for short ASCII lines, quoted-printable otherwise', () => {
    assert.deepEqual(encodeHtmlBody('<p>hello</p>\r\n<p>there</p>'), { encoding: '7bit', body: Buffer.from('<p>hello</p>\r\n<p>there</p>'), relaxedAsIs: true });
    assert.equal(encodeHtmlBody(`<p>${'x'.repeat(80)}</p>`).encoding, 'quoted-printable');
    assert.equal(encodeHtmlBody('<p>café</p>').encoding, 'quoted-printable');
    assert.equal(encodeHtmlBody('<p>a\u0001b</p>').encoding, 'quoted-printable');
  });
});

describe('buildMime with the HTML body spliced in', () => {
  const box = new SecretBox('test-secret-0123456789-0123456789-0123456789');
  const submission = (html: string, attachments = false) =>
    newSubmission({
      source: 'smtp',
      envelope: { mailFrom: 'app@acme.example', rcptTo: ['b@example.org'] },
      from: [{ address: 'app@acme.example', name: 'Acme' }],
      to: [{ address: 'b@example.org', name: '' }],
      subject: 'Receipt ✓',
      html,
      attachments: attachments ? [{ filename: 'r.pdf', contentType: 'application/pdf', content: Buffer.from('%PDF-1.4 txrelay-html- 7bit') }] : [],
    });

  test('nodemailer writes the placeholder part as the splice expects, alone or beside an attachment', async () => {
    for (const attachments of [[], [{ filename: 'a.pdf', content: Buffer.from('x'), contentType: 'application/pdf' }]]) {
      const placeholder = 'txrelay-html-0123';
      const composed = await new MailComposer({ from: 'a@acme.example', to: 'b@example.org', subject: 's', html: placeholder, attachments }).compile().build();
      const spliced = spliceHtmlBody(composed, placeholder, encodeHtmlBody('<p>café</p>'));
      assert.ok(spliced, 'spliced, not composed again by nodemailer');
      assert.equal(String((await simpleParser(spliced)).html).replace(/\n$/, ''), '<p>café</p>');
      assert.match(spliced.toString('latin1'), /^Content-Transfer-Encoding: quoted-printable\r\n(?:[^\r]+\r\n)*\r\n<p>caf=C3=A9<\/p>/m);
    }
    // Where both choose 7bit, the bytes are nodemailer's own, line breaks at the end included.
    const tail = (mime: Buffer) => {
      const text = mime.toString('latin1');
      const start = text.indexOf('\r\n\r\n', text.indexOf('text/html')) + 4;
      return text.slice(start).replace(/----_NmP[\s\S]*$/, '');
    };
    for (const html of ['<p>x</p>', '<p>x</p>\r\n', '<p>x</p>\r\n\r\n', '']) {
      for (const attachments of [[], [{ filename: 'a.pdf', content: Buffer.from('x'), contentType: 'application/pdf' }]]) {
        const placeholder = 'txrelay-html-4567';
        const own = (html: string) => new MailComposer({ from: 'a@acme.example', to: 'b@example.org', subject: 's', html, attachments }).compile().build();
        const spliced = spliceHtmlBody(await own(placeholder), placeholder, encodeHtmlBody(html));
        assert.ok(spliced);
        if (html) assert.equal(tail(spliced), tail(await own(html)), JSON.stringify({ html, attachments: attachments.length }));
      }
    }
    // Written any other way, it is left to nodemailer.
    assert.equal(spliceHtmlBody(Buffer.from('Content-Type: text/html\r\n\r\nx-txrelay'), 'x-txrelay', encodeHtmlBody('<p/>')), undefined);
  });

  test('a message of one part, written at once, is byte for byte what nodemailer\'s stream writes', async () => {
    const date = new Date('2026-11-21T10:00:00Z');
    const variants = [
      { html: '<p>x</p>' },
      { html: '<p>x</p>\r\n' },
      { html: '' },
      { html: `<p>${'é'.repeat(300)}</p>\r\n<p>b</p>` },
      { html: '<p>y</p>', subject: `Ünïcödé ${'long '.repeat(40)}`, fromName: 'Jöhn "the" Dœ', replyTo: true },
      { html: '<p>z</p>', subject: 'w'.repeat(950), to: [{ address: 'c@example.org', name: 'Ç' }, { address: 'd@example.org', name: '' }] },
      // Large enough to be encoded on the signing thread (build.ts HTML_OFF_THREAD_CHARS).
      { html: `<p>${'é a  b\t'.repeat(6000)}</p>\r\n<p>${'x'.repeat(100)}</p>` },
      { html: '<p>short ASCII lines: 7bit</p>\r\n'.repeat(2000) },
    ];
    for (const [i, v] of variants.entries()) {
      const sub = () => {
        const s = submission(v.html);
        if (v.subject) s.subject = v.subject;
        if (v.fromName) s.from = [{ address: 'app@acme.example', name: v.fromName }];
        if (v.replyTo) s.replyTo = [{ address: 'help@acme.example', name: 'Help' }];
        if (v.to) s.to = v.to;
        return s;
      };
      const atOnce = await buildMime(box, 'relay.test', `once-${i}`, sub(), { date });
      const streamed = await buildMime(box, 'relay.test', `once-${i}`, sub(), { date, streamed: true });
      assert.equal(Buffer.concat(atOnce.mime).toString('latin1'), Buffer.concat(streamed.mime).toString('latin1'), JSON.stringify(v));
      assert.equal(atOnce.size, streamed.size);
    }
  });

  test('a message with attachments, spliced around placeholders, is byte for byte what nodemailer\'s stream writes', async () => {
    const date = new Date('2026-11-21T10:00:00Z');
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7919 + n) % 256));
    const block = 57 * 1024;
    const variants: { html: string; attachments: Attachment[] }[] = [
      // Sizes around base64's groups of 3, its lines of 57 bytes, and the encoder's blocks.
      ...[0, 1, 2, 3, 56, 57, 58, 114, block - 1, block, block + 1, 3 * block + 5].map((n) => ({
        html: '<p>x</p>',
        attachments: [{ filename: `f${n}.bin`, contentType: 'application/octet-stream', content: bytes(n) }],
      })),
      {
        html: `<p>${'é'.repeat(300)}</p>\r\n`,
        attachments: [
          { filename: 'Rechnung März.pdf', contentType: 'application/pdf', content: bytes(5000) },
          { filename: 'rows.csv', contentType: 'text/csv', content: Buffer.from('a,b\r\n1,2\r\n') },
          { filename: null, contentType: 'application/pdf', content: bytes(10) },
        ],
      },
      // Related (a content id): the HTML part and the attachment go in a multipart/related.
      { html: '<p><a href="cid:doc">doc</a></p>', attachments: [{ filename: 'd.pdf', contentType: 'application/pdf', content: bytes(300), contentId: 'doc', inline: true }] },
      // Over a piece (PIECE_BYTES): the message comes in several pieces of whole lines.
      { html: '', attachments: [{ filename: 'big.bin', contentType: 'application/octet-stream', content: bytes(1_500_000) }, { filename: 'b.txt', contentType: 'text/plain', content: bytes(70) }] },
    ];
    for (const [i, v] of variants.entries()) {
      const sub = () => {
        const s = submission(v.html);
        s.attachments = v.attachments.map((a) => ({ ...a }));
        return s;
      };
      const spliced = sub();
      const built = await buildMime(box, 'relay.test', `att-${i}`, spliced, { date, baseBoundary: '0123456789abcdef' });
      const streamed = await buildMime(box, 'relay.test', `att-${i}`, sub(), { date, baseBoundary: '0123456789abcdef', streamed: true });
      const label = JSON.stringify({ i, sizes: v.attachments.map((a) => a.content.length) });
      assert.equal(built.written, 'spliced', label);
      assert.equal(streamed.written, 'streamed', label);
      assert.equal(Buffer.concat(built.mime).toString('latin1'), Buffer.concat(streamed.mime).toString('latin1'), label);
      assert.equal(built.size, streamed.size);
      assert.deepEqual(spliced.attachments, [], 'buildMime took the attachments');
      for (const piece of built.mime.slice(0, -1)) assert.equal(piece.subarray(-2).toString(), '\r\n', 'every piece but the last ends a line');
      if (built.size > 1_500_000) assert.ok(built.mime.length > 1, 'a large message in pieces');
      const parsed = await simpleParser(Buffer.concat(built.mime));
      assert.deepEqual(
        parsed.attachments.map((a) => a.content.toString('hex')),
        v.attachments.map((a) => a.content.toString('hex')),
      );
    }
    // An attached message travels unencoded, written by nodemailer.
    const forwarded = submission('<p>fwd</p>');
    forwarded.attachments = [{ filename: 'm.eml', contentType: 'message/rfc822', content: Buffer.from('Subject: hi\r\n\r\nbody\r\n') }];
    assert.equal((await buildMime(box, 'relay.test', 'fwd', forwarded, { date })).written, 'streamed');
  });

  test('each multipart message gets boundaries of its own (64 random bits, as nodemailer draws them)', async () => {
    const boundaries = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const mime = Buffer.concat((await buildMime(box, 'relay.test', `b-${i}`, submission('<p>x</p>', true))).mime).toString('latin1');
      const boundary = /boundary="(--_NmP-([0-9a-f]{16})-Part_1)"/.exec(mime);
      assert.ok(boundary, 'a boundary with a 16-hex-digit random part');
      assert.ok(mime.includes(`\r\n--${boundary[1]}--\r\n`), 'the multipart ends with it');
      boundaries.add(boundary[2]);
    }
    assert.equal(boundaries.size, 20);
  });

  for (const attachments of [false, true]) {
    test(`parses back to the same HTML${attachments ? ', beside an attachment' : ''}, whatever the text`, async () => {
      for (let i = 0; i < 60; i++) {
        const html = `<p>${randomText()}</p>`.replace(/\r(?!\n)|(?<!\r)\n/g, '\r\n');
        if (html.includes('\u0000')) continue; // mailparser drops NUL from the HTML it returns: nothing to compare
        const built = await buildMime(box, 'relay.test', `id-${i}`, submission(html, attachments));
        const mime = Buffer.concat(built.mime);
        assert.equal(mime.length, built.size);
        const parsed = await simpleParser(mime);
        // mailparser gives line ends as LF, and a single part's last line end as its own.
        assert.equal(String(parsed.html).replace(/\n$/, ''), html.replace(/\r\n/g, '\n'));
        assert.equal(parsed.subject, 'Receipt ✓');
        assert.equal(parsed.attachments.length, attachments ? 1 : 0);
        const text = mime.toString('latin1');
        assert.doesNotMatch(text, /txrelay-html-[0-9a-f-]{36}/, 'no placeholder left behind');
        assert.equal(text.match(/^Content-Transfer-Encoding: (7bit|quoted-printable)\r$/gm)?.length, 1, 'one encoding header for the HTML part');
      }
    });
  }
});
