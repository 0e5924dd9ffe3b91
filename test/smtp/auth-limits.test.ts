// SPEC §3: more than 20 failed AUTHs from one IP within a minute → 421 4.7.0 and the connection
// closes; new connections from that IP are refused for the rest of the minute. Its own relay:
// the lockout is per listener process and would otherwise spill into other tests.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AUTH_FAILURES_PER_IP_PER_MINUTE } from '../../src/smtp/server.ts';
import { eventually, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';

let relay: TestRelay;
before(async () => {
  relay = await startTestRelay({ TXRELAY_ROLES: 'smtp' });
});
after(async () => relay?.close());

test('the 21st failure from one IP in a minute gets 421 4.7.0; the IP is then refused at connect', async () => {
  let failures = 0;
  // Two failures per connection stay under the per-connection limit of three.
  while (failures < AUTH_FAILURES_PER_IP_PER_MINUTE) {
    const c = await RawSmtp.connect(relay.smtpPort);
    await c.cmd('EHLO test');
    for (let i = 0; i < 2 && failures < AUTH_FAILURES_PER_IP_PER_MINUTE; i++, failures++) {
      assert.match(await c.cmd(`AUTH PLAIN ${plain('txr_live_' + 'z'.repeat(32))}`), /^535 5\.7\.8 /);
    }
    c.close();
  }
  const c = await RawSmtp.connect(relay.smtpPort);
  await c.cmd('EHLO test');
  assert.match(await c.cmd(`AUTH PLAIN ${plain('txr_live_' + 'y'.repeat(32))}`), /^421 4\.7\.0 /);
  await eventually(async () => c.closed, 5000, 'connection closed');

  // A new connection from the same IP gets no further: the greeting itself is the 421.
  const late = await import('node:net').then(({ default: net }) => net.connect(relay.smtpPort, '127.0.0.1'));
  const greeting = await new Promise<string>((resolve) => {
    let buf = '';
    late.setEncoding('utf8');
    late.on('data', (d: string) => (buf += d));
    late.on('close', () => resolve(buf));
    setTimeout(() => resolve(buf), 5000);
  });
  late.destroy();
  assert.match(greeting, /^421 4\.7\.0 /);
});
