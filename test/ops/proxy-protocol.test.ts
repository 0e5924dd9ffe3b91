// TXRELAY_SMTP_PROXY_PROTOCOL: behind a TCP load balancer the client's address comes from the
// PROXY v1 header (smtp-server's useProxy), from the listed balancers only; off by default.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestRelay } from '../helpers/relay.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { RawSmtp } from '../helpers/smtp-client.ts';

const HEADER = 'PROXY TCP4 203.0.113.9 127.0.0.1 40000 2525';

let tdb: TestDatabase;

before(async () => {
  tdb = await testDatabase();
});

after(async () => {
  await tdb?.close();
});

async function withRelay(value: string | undefined, fn: (port: number) => Promise<void>): Promise<void> {
  const relay = await startTestRelay({ TXRELAY_ROLES: 'smtp', ...(value === undefined ? {} : { TXRELAY_SMTP_PROXY_PROTOCOL: value }) }, tdb);
  try {
    await fn(relay.smtpPort);
  } finally {
    await relay.close();
  }
}

test('from a listed balancer, the PROXY header gives the client address', async () => {
  await withRelay('127.0.0.1', async (port) => {
    const c = await RawSmtp.connect(port, { proxy: HEADER });
    try {
      assert.match(c.greeting, /^220 /);
      assert.match(await c.cmd('EHLO client.test'), /Nice to meet you, \[203\.0\.113\.9\]/);
    } finally {
      c.close();
    }
    // A listed peer that sends no header is not served.
    const bare = await RawSmtp.connect(port, { proxy: 'EHLO client.test' });
    bare.close();
    assert.doesNotMatch(bare.greeting, /^220 /);
  });
});

test('`true`: every peer must send the header', async () => {
  await withRelay('true', async (port) => {
    const c = await RawSmtp.connect(port, { proxy: HEADER });
    try {
      assert.match(await c.cmd('EHLO client.test'), /\[203\.0\.113\.9\]/);
    } finally {
      c.close();
    }
  });
});

test('off by default, and for peers not listed: a PROXY line is just an unknown command', async () => {
  for (const value of [undefined, '10.9.9.9']) {
    await withRelay(value, async (port) => {
      const c = await RawSmtp.connect(port);
      try {
        assert.match(c.greeting, /^220 /, `${value}: greeted without a header`);
        assert.match(await c.cmd(HEADER), /^5\d\d /, `${value}: PROXY refused as a command`);
        assert.match(await c.cmd('EHLO client.test'), /\[127\.0\.0\.1\]/, `${value}: the socket's own address`);
      } finally {
        c.close();
      }
    });
  }
});
