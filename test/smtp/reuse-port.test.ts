// TXRELAY_SMTP_REUSE_PORT: several relay processes listen on one SMTP port (SO_REUSEPORT) and the
// kernel spreads the connections over them; without it, a second listener is refused.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { freePort } from '../../src/db/embedded.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { RawSmtp } from '../helpers/smtp-client.ts';

let tdb: TestDatabase;

before(async () => {
  tdb = await testDatabase();
});

after(async () => {
  await tdb?.close();
});

test('with reuse on, two relays share the port and both are greeted from', async () => {
  const port = await freePort();
  const env = (name: string) => ({ TXRELAY_ROLES: 'smtp', TXRELAY_SMTP_PORTS: String(port), TXRELAY_SMTP_REUSE_PORT: 'true', TXRELAY_HOSTNAME: name });
  const a = await startTestRelay(env('relay-a.test'), tdb);
  try {
    const b = await startTestRelay(env('relay-b.test'), tdb);
    try {
      assert.equal(a.smtpPort, port);
      assert.equal(b.smtpPort, port);
      const greeters = new Map<string, number>();
      // The kernel picks by a hash of each connection's addresses: 40 connections from 40
      // source ports all landing on one relay would be a 1 in 2^39 chance.
      for (let i = 0; i < 40; i++) {
        const c = await RawSmtp.connect(port);
        c.close();
        const name = /^220 (\S+)/.exec(c.greeting)?.[1] ?? c.greeting;
        greeters.set(name, (greeters.get(name) ?? 0) + 1);
      }
      assert.deepEqual([...greeters.keys()].sort(), ['relay-a.test', 'relay-b.test'], JSON.stringify(Object.fromEntries(greeters)));
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
});

test('with reuse off (the default), a second listener on the port fails to start', async () => {
  const port = await freePort();
  const env = { TXRELAY_ROLES: 'smtp', TXRELAY_SMTP_PORTS: String(port) };
  const a = await startTestRelay(env, tdb);
  try {
    await assert.rejects(startTestRelay(env, tdb), /EADDRINUSE/);
  } finally {
    await a.close();
  }
});

test('pipelined commands (RFC 2920) get every reply, in order', async () => {
  const relay = await startTestRelay({ TXRELAY_ROLES: 'smtp' }, tdb);
  try {
    const c = await RawSmtp.connect(relay.smtpPort);
    try {
      assert.match(await c.cmd('EHLO client.test'), /PIPELINING/);
      c.write('MAIL FROM:<app@example.com>\r\nRCPT TO:<one@example.org>\r\nRCPT TO:<two@example.org>\r\nDATA\r\n');
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^354 /);
      c.write('.\r\nRSET\r\nNOOP\r\n');
      // The empty message is refused (no key, nothing to send); RSET and NOOP still answer.
      assert.match(await c.reply(), /^5\d\d /);
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^250 /);
    } finally {
      c.close();
    }
  } finally {
    await relay.close();
  }
});
