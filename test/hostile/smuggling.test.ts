// SMTP smuggling (CVE-2023-51764 and kin): a client ends DATA with a bare-LF or bare-CR variant
// of <CRLF>.<CRLF> and follows it with forged commands, hoping that one hop ends the message
// there and the next does not. txrelay, like smtp-server, ends DATA only at <CRLF>.<CRLF>
// (RFC 5321 §4.1.1.4); every other variant is message content. It rebuilds every message, and
// the builder writes CRLF for any bare CR or LF (the Postfix-style normalisation, rather than a
// refusal), so the bytes stored and sent upstream never carry a bare line end another server
// could take for the end of data.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { findMessage } from '../../src/db/messages.repository.ts';
import { eventually, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import type { Upstream } from '../helpers/upstream.ts';
import { BARE_LINE_END, openData, queuedId, repliesBefore, session, startAcmeRelay, stopAcmeRelay, storedCount, writeInPieces, type AcmeRelay } from './raw-smtp.ts';

let relay: TestRelay;
let upstream: Upstream;
let acme: TenantSetup;

before(async () => ({ relay, acme, upstream } = (await startAcmeRelay({ upstream: true })) as Required<AcmeRelay>));
after(() => stopAcmeRelay({ relay, upstream }));

const messageCount = () => storedCount(relay, acme.tenantId);

/** End-of-data look-alikes that some servers have honoured. */
const VARIANTS: Record<string, string> = {
  'LF.LF': '\n.\n',
  'LF.CRLF': '\n.\r\n',
  'CRLF.LF': '\r\n.\n',
  'CR.CR': '\r.\r',
  'CR.CRLF': '\r.\r\n',
  'CRLF.CR': '\r\n.\r',
};

/** A message whose body holds `variant` followed by a whole forged transaction. */
function smuggler(label: string, variant: string): Buffer {
  const forged = [
    'MAIL FROM:<ceo@acme.example>',
    'RCPT TO:<victim@evil.example>',
    'DATA',
    'From: CEO <ceo@acme.example>',
    'To: victim@evil.example',
    'Subject: smuggled',
    '',
    `smuggled body ${label}`,
    '.',
    'QUIT',
    '',
  ].join('\r\n');
  // "." alone on a CRLF line inside the forged part is dot-stuffed, as any client would send it.
  const stuffed = forged.replace(/\r\n\.\r\n/g, '\r\n..\r\n');
  return Buffer.from(
    `From: App <app@acme.example>\r\nTo: user@dest.example\r\nSubject: carrier ${label}\r\nContent-Type: text/plain\r\n\r\nfirst part${variant}${stuffed}\r\n.\r\n`,
    'latin1',
  );
}

describe('bare-LF and bare-CR end-of-data variants', () => {
  test('each variant followed by a forged transaction: one 250, one message, no bare CR or LF upstream', async () => {
    const before = await messageCount();
    const ids = new Map<string, string>();
    for (const [label, variant] of Object.entries(VARIANTS)) {
      const c = await session(relay.smtpPort, acme.key);
      await openData(c);
      c.write(smuggler(label, variant));
      // Exactly one reply (the real end of data), then the NOOP's: the forged MAIL, RCPT, DATA
      // and QUIT were never read as commands.
      const replies = await repliesBefore(c);
      assert.equal(replies.length, 1, `${label}: ${JSON.stringify(replies)}`);
      ids.set(label, queuedId(replies[0]));
      c.close();
    }
    assert.equal(await messageCount(), before + ids.size, 'one stored message per carrier');

    const got = await upstream.waitFor(ids.size);
    for (const [label, id] of ids) {
      const msg = got.find((m) => m.raw.includes(`<${id}@relay.test>`));
      assert.ok(msg, `${label}: delivered`);
      assert.deepEqual(msg.rcptTo, ['user@dest.example'], `${label}: only the real recipient`);
      assert.equal(msg.mailFrom, 'app@acme.example');
      assert.ok(!BARE_LINE_END.test(msg.raw.toString('latin1')), `${label}: no bare CR or LF sent upstream`);
      const stored = await findMessage(relay.ctx.db, id);
      assert.ok(!BARE_LINE_END.test(stored!.mime.toString('latin1')), `${label}: no bare CR or LF stored`);
      // The would-be second message is content of the first, kept whole.
      const mail = await simpleParser(msg.raw);
      assert.equal(mail.subject, `carrier ${label}`);
      assert.match(String(mail.html), new RegExp(`first part[\\s\\S]*RCPT TO:&lt;victim@evil\\.example&gt;[\\s\\S]*smuggled body ${label}`));
    }
    assert.ok(!upstream.received.some((m) => m.rcptTo.includes('victim@evil.example')), 'no forged recipient reached upstream');
    assert.equal(upstream.received.length, ids.size);
  });

  test('an attached message, which travels unencoded, carrying every variant: CRLF only, stored and upstream', async () => {
    const inner = `From: x@inner.example\nSubject: inner\n\n${Object.values(VARIANTS).map((v, i) => `line ${i}${v}MAIL FROM:<x@inner.example>`).join('\n')}\n`;
    const c = await session(relay.smtpPort, acme.key);
    await openData(c);
    const outer = [
      'From: app@acme.example', 'To: user@dest.example', 'Subject: forwarded', 'Content-Type: multipart/mixed; boundary=b', '',
      '--b', 'Content-Type: text/html', '', '<p>see attached</p>',
      '--b', 'Content-Type: message/rfc822; name=inner.eml', 'Content-Disposition: attachment; filename=inner.eml', '', inner,
      '--b--', '.', '',
    ].join('\r\n');
    c.write(Buffer.from(outer, 'latin1'));
    const id = queuedId(await c.reply(30_000));
    c.close();
    const stored = await findMessage(relay.ctx.db, id);
    assert.ok(!BARE_LINE_END.test(stored!.mime.toString('latin1')), 'no bare CR or LF stored');
    const got = await eventually(async () => upstream.received.find((m) => m.raw.includes(`<${id}@relay.test>`)), 20_000, 'delivery upstream');
    assert.ok(!BARE_LINE_END.test(got.raw.toString('latin1')), 'no bare CR or LF upstream');
    // The attached message is there, whole, each variant now an ordinary (dot-stuffed) line.
    const text = got.raw.toString('latin1');
    Object.keys(VARIANTS).forEach((_, i) => assert.ok(text.includes(`line ${i}\r\n.\r\nMAIL FROM:<x@inner.example>`), `variant ${i}`));
  });
});

describe('the end of data split across TCP writes', () => {
  const body = (label: string) => `From: app@acme.example\r\nTo: user@dest.example\r\nSubject: ${label}\r\nContent-Type: text/html\r\n\r\n<p>${label}</p>\r\n.\r\n`;

  /** Sends `bytes` cut at `cuts` on one session (test key: captured); returns the stored HTML. */
  async function sendCut(bytes: Buffer, cuts: number[]): Promise<string> {
    const c = await session(relay.smtpPort, acme.testKey);
    await openData(c);
    await writeInPieces(c, bytes, cuts);
    const replies = await repliesBefore(c);
    c.close();
    assert.equal(replies.length, 1, JSON.stringify(replies));
    const msg = await findMessage(relay.ctx.db, queuedId(replies[0]));
    const mail = await simpleParser(msg!.mime);
    return String(mail.html);
  }

  test('<CRLF>.<CRLF> cut at every byte offset, and one byte per write: each message whole, once', async () => {
    const before = await messageCount();
    let sent = 0;
    for (let back = 6; back >= 1; back--) {
      const bytes = Buffer.from(body(`cut-${back}`));
      assert.equal(await sendCut(bytes, [bytes.length - back]), `<p>cut-${back}</p>\n`);
      sent++;
    }
    const bytes = Buffer.from(body('bytewise'));
    const cuts = Array.from({ length: 6 }, (_, i) => bytes.length - 6 + i);
    assert.equal(await sendCut(bytes, cuts), '<p>bytewise</p>\n');
    sent++;
    assert.equal(await messageCount(), before + sent);
  });

  test('each smuggling variant cut at every offset still ends nothing early', async () => {
    const before = await messageCount();
    let sent = 0;
    for (const [label, variant] of Object.entries(VARIANTS)) {
      const bytes = smuggler(label, variant);
      const at = bytes.indexOf(`first part${variant}`) + 'first part'.length;
      for (let i = 0; i <= variant.length; i++) {
        const html = await sendCut(bytes, [at + i]);
        assert.match(html, new RegExp(`first part[\\s\\S]*smuggled body ${label}`), `${label} cut at +${i}`);
        sent++;
      }
    }
    assert.equal(await messageCount(), before + sent, 'one message per carrier, none smuggled');
  });
});
