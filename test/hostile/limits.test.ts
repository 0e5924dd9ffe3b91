// Size attacks on the session and the message: long command lines, lines without an end, long
// header lines, a huge header block, and thousands of pipelined commands from a client that
// never reads its replies. Each gets a clear reply, and the relay's memory stays bounded (the
// relay runs in this process, so its RSS is ours; the bound is generous, never a timing).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { findMessage } from '../../src/db/messages.repository.ts';
import { MAX_LINE_OCTETS } from '../../src/pipeline/build.ts';
import { eventually, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { headerFields, longestLine, queuedId, rssMb, session, startAcmeRelay, stopAcmeRelay, submitData } from './raw-smtp.ts';

const RSS_GROWTH_BOUND_MB = 200;

let relay: TestRelay;
let acme: TenantSetup;

before(async () => ({ relay, acme } = await startAcmeRelay()));
after(() => stopAcmeRelay({ relay }));

/** DATA with a test key (captured, nothing leaves); the reply to the final dot. */
const submit = (message: string) => submitData(relay.smtpPort, acme.testKey, message);

const head = (extra = '') => `From: App <app@acme.example>\r\nTo: user@dest.example\r\n${extra}Content-Type: text/html\r\n\r\n<p>body</p>`;

describe('command lines', () => {
  test('a command line over 512 bytes: read whole and answered on its merits (RFC 5321 §4.5.3.1)', async () => {
    const c = await session(relay.smtpPort, acme.key);
    assert.match(await c.cmd(`NOOP ${'x'.repeat(600)}`), /^250 /);
    // RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
    assert.match(await c.cmd(`MAIL FROM:<${'a'.repeat(600)}@acme.example>`), /^501 5\.1\.7 /);
    assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
    assert.match(await c.cmd(`RCPT TO:<${'b'.repeat(600)}@dest.example>`), /^501 5\.1\.3 /);
    c.close();
  });

  test('1 MiB without a line end: 421 once the 16 KiB line limit is passed, connection closed, memory bounded', async () => {
    const rss = rssMb();
    const c = await session(relay.smtpPort, acme.key);
    c.write(Buffer.alloc(1024 * 1024, 'A'));
    assert.match(await c.reply(), /^421 4\.4\.2 Error: Command line too long/);
    await eventually(async () => c.closed, 10_000, 'connection closed');
    assert.ok(rssMb() - rss < RSS_GROWTH_BOUND_MB, `RSS grew by ${Math.round(rssMb() - rss)} MB`);
    // The relay still answers.
    const probe = await session(relay.smtpPort);
    probe.close();
  });

  test('10,000 pipelined RCPTs, replies unread: every one answered in order, the envelope capped', async () => {
    const rss = rssMb();
    const c = await session(relay.smtpPort, acme.key);
    assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
    const count = 10_000;
    // The client stops reading: smtp-server must stop reading commands while its replies are
    // unsent (it waits for 'drain'), so nothing piles up in the relay's memory.
    c.socket.pause();
    const lines = Array.from({ length: count }, (_, i) => `RCPT TO:<recipient-${i}@dest.example>\r\n`).join('');
    c.write(lines + 'NOOP\r\n');
    // Meanwhile another client is served.
    const other = await session(relay.smtpPort);
    assert.match(await other.cmd('NOOP'), /^250 /);
    other.close();
    assert.ok(rssMb() - rss < RSS_GROWTH_BOUND_MB, `RSS grew by ${Math.round(rssMb() - rss)} MB`);
    c.socket.resume();
    const codes = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      const r = await c.reply(30_000);
      const key = r.slice(0, 9);
      codes.set(key, (codes.get(key) ?? 0) + 1);
    }
    assert.match(await c.reply(), /^250 2\.0\.0 OK/, 'then the NOOP');
    const max = relay.ctx.config.maxRecipients;
    assert.deepEqual(Object.fromEntries(codes), { '250 2.1.5': max, '452 4.5.3': count - max });
    c.close();
  });
});

describe('header lines and blocks', () => {
  test(`a Subject of one 2,000-character word arrives whole, no line over ${MAX_LINE_OCTETS} octets`, async () => {
    const subject = 'S'.repeat(2000);
    const id = queuedId(await submit(head(`Subject: ${subject}\r\n`)));
    const msg = await findMessage(relay.ctx.db, id);
    assert.ok(longestLine(msg!.mime) <= MAX_LINE_OCTETS, `longest line ${longestLine(msg!.mime)}`);
    assert.equal((await simpleParser(msg!.mime)).subject, subject);
  });

  test('a 5,000-byte header the relay drops anyway: accepted, and it does not travel', async () => {
    const id = queuedId(await submit(head(`Subject: long\r\nX-Long: ${'L'.repeat(5000)}\r\n`)));
    const msg = await findMessage(relay.ctx.db, id);
    assert.ok(!headerFields(msg!.mime).some(([name]) => name === 'x-long'));
    assert.ok(longestLine(msg!.mime) <= MAX_LINE_OCTETS);
  });

  test('a word too long to fold in a display name or file name: 554 5.6.0 naming the header, nothing stored', async () => {
    const before = await relay.ctx.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    assert.match(
      await submit(`From: ${'N'.repeat(1500)} <app@acme.example>\r\nTo: user@dest.example\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n<p>x</p>`),
      /^554 5\.6\.0 From holds a word longer than 998 characters/,
    );
    const attachment = [
      'From: app@acme.example', 'To: user@dest.example', 'Subject: s', 'Content-Type: multipart/mixed; boundary=b', '',
      '--b', 'Content-Type: text/html', '', '<p>x</p>',
      '--b', `Content-Type: application/pdf; name="${'f'.repeat(1500)}.pdf"`, 'Content-Transfer-Encoding: base64', '', 'JVBERi0xLjQK', '--b--',
    ].join('\r\n');
    assert.match(await submit(attachment), /^554 5\.6\.0 Content-Type holds a word longer than 998 characters/);
    const afterCount = await relay.ctx.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    assert.equal(Number(afterCount.n), Number(before.n));
  });

  test('an attached message (sent unencoded) with a line over 998 octets: 554 5.6.0 naming it', async () => {
    const raw = [
      'From: app@acme.example', 'To: user@dest.example', 'Subject: s', 'Content-Type: multipart/mixed; boundary=b', '',
      '--b', 'Content-Type: text/html', '', '<p>x</p>',
      '--b', 'Content-Type: message/rfc822; name=long.eml', '', `From: x@inner.example\r\nX-Long: ${'w'.repeat(1200)}\r\n\r\nbody`, '--b--',
    ].join('\r\n');
    assert.match(await submit(raw), /^554 5\.6\.0 The attached message long\.eml has a line longer than 998 characters/);
  });

  test('a header block over 1 MiB, as one line or as many: 552 5.3.4, memory bounded', async () => {
    const rss = rssMb();
    assert.match(await submit(head(`Subject: big\r\nX-Big: ${'b'.repeat(1_100_000)}\r\n`)), /^552 5\.3\.4 A header block of the message is larger than 1 MiB/);
    const many = Array.from({ length: 25_000 }, (_, i) => `X-H${i}: ${'v'.repeat(40)}\r\n`).join('');
    assert.match(await submit(head(`Subject: many\r\n${many}`)), /^552 5\.3\.4 /);
    assert.ok(rssMb() - rss < RSS_GROWTH_BOUND_MB, `RSS grew by ${Math.round(rssMb() - rss)} MB`);
  });
});
