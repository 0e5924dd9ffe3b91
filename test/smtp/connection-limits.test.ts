// Connection limits (README, Security): sessions per client address and in all, an absolute
// session deadline, an absolute DATA deadline that a client trickling bytes cannot stretch,
// AUTH failures throttled per key prefix across addresses, and one reply for every bad key.
// Other loopback addresses (127.0.0.2, …) play other client machines. Two relays on one
// database: one with small connection limits, one with short deadlines.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { keyPrefix } from '../../src/crypto.ts';
import { addressKey } from '../../src/smtp/limits.ts';
import { AUTH_FAILURES_PER_KEY_PER_MINUTE } from '../../src/smtp/server.ts';
import { createKey, revokeKey, updateTenant } from '../../src/services/tenants.service.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { addRoute, eventually, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';

const MAX_PER_IP = 3;
const MAX_CLIENTS = 6;
const SESSION_SECONDS = 4;
const DATA_SECONDS = 1;
const TRICKLE_MS = 300;
/** The one reply for every key that does not authenticate (SPEC §3). */
const INVALID = '535 5.7.8 Authentication credentials invalid';

let tdb: TestDatabase;
/** Small connection limits, the default deadlines. */
let limited: TestRelay;
/** Short deadlines, the default connection limits. */
let hurried: TestRelay;
let acme: TenantSetup;
const open: RawSmtp[] = [];

async function connect(relay: TestRelay, localAddress = '127.0.0.1'): Promise<RawSmtp> {
  const c = await RawSmtp.connect(relay.smtpPort, { localAddress });
  open.push(c);
  return c;
}

/** QUIT on every open session, so the relay has let each go before the next test counts sessions. */
async function closeAll(): Promise<void> {
  for (const c of open.splice(0)) {
    if (!c.closed) c.write('QUIT\r\n');
    await eventually(async () => c.closed, 5_000, 'the relay closed the session').catch(() => c.close());
  }
}

/** A random 32-character base62 tail, for keys that exist nowhere. */
const tail = () => Array.from({ length: 32 }, () => 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'[Math.floor(Math.random() * 62)]).join('');

before(async () => {
  tdb = await testDatabase();
  limited = await startTestRelay({ TXRELAY_ROLES: 'smtp', TXRELAY_SMTP_MAX_PER_IP: String(MAX_PER_IP), TXRELAY_SMTP_MAX_CLIENTS: String(MAX_CLIENTS) }, tdb);
  hurried = await startTestRelay({ TXRELAY_ROLES: 'smtp', TXRELAY_SMTP_SESSION_TIMEOUT_SECONDS: String(SESSION_SECONDS), TXRELAY_SMTP_DATA_TIMEOUT_SECONDS: String(DATA_SECONDS) }, tdb);
  acme = await setupTenant(limited.ctx, 'acme', 'acme.example');
  await addRoute(limited.ctx, acme.tenantId, { name: 'cap', transport: 'capture' });
});

after(async () => {
  await closeAll();
  await limited?.close();
  await hurried?.close();
  await tdb?.close();
});

describe('connections', () => {
  test(`a client address gets ${MAX_PER_IP} sessions at once; the next gets 421 4.7.0 and is closed, other addresses are not affected`, async () => {
    for (let i = 0; i < MAX_PER_IP; i++) assert.match((await connect(limited)).greeting, /^220 /);
    const refused = await connect(limited);
    assert.equal(refused.greeting, '421 4.7.0 Too many connections from your address, try again later');
    await eventually(async () => refused.closed, 5_000, 'the refused connection closed');
    assert.match((await connect(limited, '127.0.0.2')).greeting, /^220 /, 'another address is served');

    // A session that ends frees its place.
    open[0].write('QUIT\r\n');
    await eventually(async () => open[0].closed, 5_000, 'QUIT closed the session');
    await eventually(async () => {
      const c = await RawSmtp.connect(limited.smtpPort);
      open.push(c);
      return c.greeting.startsWith('220');
    }, 10_000, 'a place for 127.0.0.1 again');
    await closeAll();
  });

  test(`at most ${MAX_CLIENTS} sessions in all: the next gets 421 4.7.0`, async () => {
    const addresses = ['127.0.0.3', '127.0.0.4'];
    for (const a of addresses) for (let i = 0; i < MAX_PER_IP; i++) assert.match((await connect(limited, a)).greeting, /^220 /);
    const refused = await connect(limited, '127.0.0.5');
    assert.match(refused.greeting, /^421 4\.7\.0 .*Too many connected clients/);
    await eventually(async () => refused.closed, 5_000, 'the refused connection closed');
    await closeAll();
  });

  test('IPv6 clients count per /64, IPv4 (also IPv4-mapped) per address', () => {
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'));
    assert.notEqual(addressKey('2001:db8:1:2::1'), addressKey('2001:db8:1:3::1'));
    assert.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.notEqual(addressKey('192.0.2.7'), addressKey('192.0.2.8'));
    assert.equal(addressKey('::1'), addressKey('0:0:0:0:0:0:0:1'));
  });
});

describe('deadlines', () => {
  test(`a session lasts at most ${SESSION_SECONDS} s even while busy: 421 4.4.2, closed`, async () => {
    const c = await connect(hurried);
    assert.match(await c.cmd('EHLO busy.test'), /^250/);
    const started = Date.now();
    let last = '';
    // NOOPs keep the idle timeout away; only the absolute deadline can end this session.
    while (!c.closed && Date.now() - started < SESSION_SECONDS * 1000 + 10_000) {
      last = await c.cmd('NOOP');
      if (!last.startsWith('250')) break;
      await new Promise((r) => setTimeout(r, TRICKLE_MS));
    }
    // The 421 may have come between two NOOPs, after the last one's 250.
    if (last.startsWith('250')) last = await c.reply(5_000);
    assert.equal(last, '421 4.4.2 Session time limit exceeded, closing connection');
    await eventually(async () => c.closed, 10_000, 'the session closed');
  });

  test(`a DATA upload trickled a byte every ${TRICKLE_MS} ms is cut at ${DATA_SECONDS} s with 421 4.4.2, and nothing is stored`, async () => {
    const subject = `trickle ${tail()}`;
    const c = await connect(hurried);
    assert.match(await c.cmd('EHLO trickle.test'), /^250/);
    assert.match(await c.cmd(`AUTH PLAIN ${plain(acme.testKey)}`), /^235 /);
    assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
    assert.match(await c.cmd('DATA'), /^354 /);
    const message = `From: app@acme.example\r\nTo: user@dest.example\r\nSubject: ${subject}\r\nContent-Type: text/html\r\n\r\n<p>${'x'.repeat(200)}</p>\r\n.\r\n`;
    let sent = 0;
    const trickle = setInterval(() => {
      if (c.closed || sent >= message.length) return clearInterval(trickle);
      c.write(message[sent++]);
    }, TRICKLE_MS);
    try {
      assert.equal(await c.reply(DATA_SECONDS * 1000 + 15_000), '421 4.4.2 DATA time limit exceeded, closing connection');
    } finally {
      clearInterval(trickle);
    }
    assert.ok(sent < message.length, 'the upload was cut before its final dot');
    await eventually(async () => c.closed, 10_000, 'the session closed');
    const stored = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages WHERE subject = ${subject}`.execute(tdb.db);
    assert.equal(stored.rows[0].n, 0, 'nothing of the cut message was stored');

    // The relay still takes a message sent at normal speed.
    const ok = await connect(hurried);
    await ok.cmd('EHLO normal.test');
    assert.match(await ok.cmd(`AUTH PLAIN ${plain(acme.testKey)}`), /^235 /);
    assert.match(await ok.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
    assert.match(await ok.cmd('RCPT TO:<user@dest.example>'), /^250 /);
    assert.match(await ok.data(`From: app@acme.example\nTo: user@dest.example\nSubject: normal\nContent-Type: text/html\n\n<p>hi</p>\n`), /^250 2\.0\.0 Ok: queued as /);
    await closeAll();
  });
});

describe('AUTH', () => {
  test('unknown, revoked, malformed and username-only keys all get the same reply', async () => {
    const revoked = await createKey(limited.ctx.db, acme.tenantId, { scope: 'send', mode: 'live' });
    await revokeKey(limited.ctx.db, acme.tenantId, revoked.id);
    const attempts = {
      unknown: plain(`txr_live_${tail()}`),
      revoked: plain(revoked.key),
      malformed: plain('not-a-key'),
      'one character short': plain(`txr_live_${tail().slice(1)}`),
      'unknown key as the username, blank password': Buffer.from(`\0txr_live_${tail()}\0`).toString('base64'),
    };
    for (const [what, credentials] of Object.entries(attempts)) {
      // One attempt per connection: the per-connection limit is not what is tested here.
      const c = await connect(limited);
      await c.cmd('EHLO auth.test');
      assert.equal(await c.cmd(`AUTH PLAIN ${credentials}`), INVALID, what);
      c.close();
      await eventually(async () => c.closed, 5_000, 'closed');
    }
    // AUTH LOGIN fails the same way.
    const c = await connect(limited);
    await c.cmd('EHLO auth.test');
    assert.match(await c.cmd('AUTH LOGIN'), /^334 /);
    assert.match(await c.cmd(Buffer.from('someone').toString('base64')), /^334 /);
    assert.equal(await c.cmd(Buffer.from(revoked.key).toString('base64')), INVALID);
    await closeAll();
  });

  test("a valid key of a suspended tenant authenticates, and MAIL FROM says why it may not send (after AUTH it reveals nothing to a guesser)", async () => {
    const other = await setupTenant(limited.ctx, 'dormant', 'dormant.example');
    await updateTenant(limited.ctx.db, other.tenantId, { status: 'suspended' });
    const c = await connect(limited);
    await c.cmd('EHLO auth.test');
    assert.match(await c.cmd(`AUTH PLAIN ${plain(other.key)}`), /^235 /);
    assert.match(await c.cmd('MAIL FROM:<app@dormant.example>'), /^550 5\.7\.1 Tenant dormant is suspended/);
    await closeAll();
  });

  test(`more than ${AUTH_FAILURES_PER_KEY_PER_MINUTE} failures for one key prefix, from many addresses, get 421 4.7.0; the key itself still works`, async () => {
    const prefix = keyPrefix(acme.key);
    const replies: string[] = [];
    for (let i = 0; i <= AUTH_FAILURES_PER_KEY_PER_MINUTE; i++) {
      // One failure per address: neither the per-connection nor the per-address limit is reached.
      const c = await connect(limited, `127.0.1.${i + 1}`);
      await c.cmd('EHLO guess.test');
      replies.push(await c.cmd(`AUTH PLAIN ${plain(prefix + tail().slice(prefix.length - 9))}`));
      c.close();
      await eventually(async () => c.closed, 5_000, 'closed');
    }
    assert.deepEqual(replies.slice(0, AUTH_FAILURES_PER_KEY_PER_MINUTE), Array(AUTH_FAILURES_PER_KEY_PER_MINUTE).fill(INVALID));
    assert.match(replies[AUTH_FAILURES_PER_KEY_PER_MINUTE], /^421 4\.7\.0 /);

    // Another guess from a fresh address is throttled too; the real key is not locked out.
    const guess = await connect(limited, '127.0.2.1');
    await guess.cmd('EHLO guess.test');
    assert.match(await guess.cmd(`AUTH PLAIN ${plain(prefix + tail().slice(prefix.length - 9))}`), /^421 4\.7\.0 /);
    const owner = await connect(limited, '127.0.2.2');
    await owner.cmd('EHLO owner.test');
    assert.match(await owner.cmd(`AUTH PLAIN ${plain(acme.key)}`), /^235 /);
    await closeAll();
  });
});

describe('shutdown', () => {
  test('idle sessions are told 421 4.3.2 at once; a transaction still open at the deadline is cut, nothing stored; new connections refused', async () => {
    const stopping = await startTestRelay({ TXRELAY_ROLES: 'smtp' }, tdb);
    try {
      const idle = await RawSmtp.connect(stopping.smtpPort);
      assert.match(await idle.cmd('EHLO idle.test'), /^250/);
      const busy = await RawSmtp.connect(stopping.smtpPort);
      await busy.cmd('EHLO busy.test');
      assert.match(await busy.cmd(`AUTH PLAIN ${plain(acme.testKey)}`), /^235 /);
      assert.match(await busy.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
      assert.match(await busy.cmd('RCPT TO:<user@dest.example>'), /^250 /);
      assert.match(await busy.cmd('DATA'), /^354 /);
      const subject = `never finished ${tail()}`;
      busy.write(`From: app@acme.example\r\nSubject: ${subject}\r\n\r\n<p>`);

      // A short deadline: the open transaction never finishes, so it is what the deadline cuts.
      const stopped = stopping.app.stop(1_500);
      assert.equal(await idle.reply(5_000), '421 4.3.2 Service shutting down, try again later');
      await assert.rejects(RawSmtp.connect(stopping.smtpPort), { code: 'ECONNREFUSED' });
      assert.equal(await busy.reply(15_000), '421 4.3.2 Service shutting down, try again later');
      await stopped;
      await eventually(async () => idle.closed && busy.closed, 10_000, 'both sessions closed');
      const stored = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages WHERE subject = ${subject}`.execute(tdb.db);
      assert.equal(stored.rows[0].n, 0);
    } finally {
      await stopping.close();
    }
  });
});
