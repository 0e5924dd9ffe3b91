// What an attempt means for the message and its recipients, without a database.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decide, MAX_RETRY_DELAY_SECONDS, retryDelaySeconds, type AttemptInput } from '../../src/delivery/outcome.ts';
import { DeliveryError } from '../../src/delivery/transports/transport.ts';

const now = new Date('2026-11-21T10:00:00Z');

function input(partial: Partial<AttemptInput> & Pick<AttemptInput, 'result'>): AttemptInput {
  return {
    recipients: [
      { address: 'a@example.net', status: 'queued' },
      { address: 'b@example.net', status: 'queued' },
    ],
    pending: ['a@example.net', 'b@example.net'],
    attempt: 1,
    maxAttempts: 3,
    retryDelaySeconds: 60,
    now,
    ...partial,
  };
}

const ok = (address: string) => ({ address, accepted: true, code: 250, response: '250 2.0.0 Ok: queued' });
const no = (address: string, response: string) => ({ address, accepted: false, response });

describe('retryDelaySeconds', () => {
  test('doubles from the first step, one step more when throttled, capped at 6 h', () => {
    assert.deepEqual([1, 2, 3, 4].map((n) => retryDelaySeconds(60, n, false)), [60, 120, 240, 480]);
    assert.equal(retryDelaySeconds(60, 1, true), 120);
    assert.equal(retryDelaySeconds(60, 20, false), MAX_RETRY_DELAY_SECONDS);
  });
});

describe('decide', () => {
  test('every recipient accepted → sent', () => {
    const d = decide(input({ result: { recipients: [ok('a@example.net'), ok('b@example.net')] } }));
    assert.equal(d.kind, 'sent');
    assert.deepEqual(d.updates.map((u) => u.status), ['sent', 'sent']);
    assert.equal(d.response, '250 2.0.0 Ok: queued');
  });

  test('one accepted, one refused for good → sent, each recipient keeps its reply', () => {
    const d = decide(input({ result: { recipients: [ok('a@example.net'), no('b@example.net', '550 5.1.1 User unknown')] } }));
    assert.equal(d.kind, 'sent');
    assert.deepEqual(d.updates.map((u) => [u.status, u.response]), [['sent', '250 2.0.0 Ok: queued'], ['failed', '550 5.1.1 User unknown']]);
    assert.match(d.response, /<b@example\.net>: 550 5\.1\.1/);
  });

  test('a transient whole-message failure with attempts left → deferred after the backoff', () => {
    const d = decide(input({ attempt: 2, result: new DeliveryError({ response: '451 4.3.0 Try later', command: 'DATA' }) }));
    assert.equal(d.kind, 'deferred');
    if (d.kind !== 'deferred') return;
    assert.equal(d.nextAttemptAt.getTime() - now.getTime(), 120_000);
    assert.equal(d.throttled, false);
    assert.deepEqual(d.updates.map((u) => u.status), ['deferred', 'deferred']);
    assert.equal(d.response, 'DATA: 451 4.3.0 Try later');
  });

  test('throttling waits one step longer', () => {
    const d = decide(input({ result: new DeliveryError({ response: '421 4.7.0 Slow down' }) }));
    assert.equal(d.kind, 'deferred');
    if (d.kind === 'deferred') {
      assert.equal(d.throttled, true);
      assert.equal(d.nextAttemptAt.getTime() - now.getTime(), 120_000);
    }
  });

  test('a permanent refusal of every recipient → exhausted (permanent), all handed over', () => {
    const d = decide(input({ result: new DeliveryError({ response: '550 5.7.1 Sender refused', command: 'MAIL FROM' }) }));
    assert.equal(d.kind, 'exhausted');
    if (d.kind !== 'exhausted') return;
    assert.equal(d.cause, 'permanent');
    assert.deepEqual(d.handoff, ['a@example.net', 'b@example.net']);
    assert.deepEqual(d.updates.map((u) => u.status), ['failed', 'failed']);
  });

  test('the last attempt failing transiently → exhausted (attempts), recipients failed', () => {
    const d = decide(input({ attempt: 3, result: new DeliveryError({ response: 'connect ECONNREFUSED', errorCode: 'ECONNREFUSED' }) }));
    assert.equal(d.kind, 'exhausted');
    if (d.kind !== 'exhausted') return;
    assert.equal(d.cause, 'attempts');
    assert.deepEqual(d.updates.map((u) => u.status), ['failed', 'failed']);
    assert.deepEqual(d.handoff, ['a@example.net', 'b@example.net']);
  });

  test('recipients delivered on an earlier attempt count: the rest refused → sent', () => {
    const d = decide(
      input({
        recipients: [
          { address: 'a@example.net', status: 'sent' },
          { address: 'b@example.net', status: 'deferred' },
        ],
        pending: ['b@example.net'],
        attempt: 2,
        result: new DeliveryError({ response: '554 5.6.0 Content rejected', command: 'DATA' }),
      }),
    );
    assert.equal(d.kind, 'sent');
    assert.equal(d.delivered, 1);
    assert.deepEqual(d.updates.map((u) => [u.address, u.status]), [['b@example.net', 'failed']]);
  });

  test('out of attempts after some were delivered: only the transient ones are handed over', () => {
    const d = decide(
      input({
        recipients: [
          { address: 'a@example.net', status: 'sent' },
          { address: 'b@example.net', status: 'deferred' },
          { address: 'c@example.net', status: 'failed' },
        ],
        pending: ['b@example.net'],
        attempt: 3,
        result: { recipients: [no('b@example.net', '450 4.2.1 Mailbox busy')] },
      }),
    );
    assert.equal(d.kind, 'exhausted');
    if (d.kind === 'exhausted') assert.deepEqual(d.handoff, ['b@example.net']);
  });

  test('a recipient the transport did not report on is retried, not lost', () => {
    const d = decide(input({ result: { recipients: [ok('a@example.net')] } }));
    assert.equal(d.kind, 'deferred');
    assert.deepEqual(d.updates.map((u) => [u.address, u.status]), [['a@example.net', 'sent'], ['b@example.net', 'deferred']]);
  });
});
