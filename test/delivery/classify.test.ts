// The failure catalog on its own (STYLE §3): real-world replies and errors, and the table's shape.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { classify, parseReply, RULES, type Reply, type Verdict } from '../../src/delivery/classify.ts';
import { DeliveryError } from '../../src/delivery/transports/transport.ts';

const EXAMPLES: [Reply, Verdict][] = [
  // connection-level failures, no SMTP reply
  [{ errorCode: 'EABORT', response: 'Message sending aborted' }, 'retry'],
  [{ errorCode: 'ETIMEDOUT', response: 'Greeting never received' }, 'retry'],
  [{ errorCode: 'ECONNREFUSED', response: 'connect ECONNREFUSED 127.0.0.1:25' }, 'retry'],
  [{ errorCode: 'ECONNRESET', response: 'read ECONNRESET' }, 'retry'],
  [{ errorCode: 'EDNS', response: 'getaddrinfo ENOTFOUND relay.invalid' }, 'retry'],
  [{ errorCode: 'ETLS', response: '500 5.5.2 Error: command not recognized' }, 'retry'],
  [{ errorCode: 'DEPTH_ZERO_SELF_SIGNED_CERT', response: 'self-signed certificate' }, 'retry'],
  [{ errorCode: 'EAUTH', response: '535 5.7.8 Authentication credentials invalid' }, 'retry'],
  [{ errorCode: 'ENOROUTE', response: 'route "x" no longer exists' }, 'fail'],
  [{ errorCode: 'EMESSAGE', response: 'Message size larger than allowed 1000' }, 'fail'],
  [{ errorCode: 'EENVELOPE', response: 'Invalid recipient "a@@b"' }, 'fail'],
  // HTTP transports
  [{ errorCode: 'EHTTP', response: 'HTTP 429 Too Many Requests (Retry-After: 30)' }, 'slow_down'],
  [{ errorCode: 'EPOSTAL', response: 'HTTP 413 Payload Too Large: <html>' }, 'fail'],
  [{ errorCode: 'EPOSTAL', response: 'Postal error InvalidServerAPIKey: The API token provided in X-Server-API-Key was not valid.' }, 'retry'],
  [{ errorCode: 'EPOSTAL', response: 'Postal error UnauthenticatedFromAddress' }, 'fail'],
  [{ errorCode: 'EPOSTAL', response: 'Postal parameter-error: `rcpt_to` parameter is required but is missing' }, 'fail'],
  [{ errorCode: 'EHTTP', response: 'HTTP 401 Unauthorized' }, 'retry'],
  [{ errorCode: 'EHTTP', response: 'HTTP 408 Request Timeout' }, 'retry'],
  [{ errorCode: 'EHTTP', response: 'HTTP 422 Unprocessable Entity: {"error":"bad address"}' }, 'fail'],
  [{ errorCode: 'EHTTP', response: 'HTTP 503 Service Unavailable' }, 'retry'],
  [{ errorCode: 'EPOSTAL', response: 'HTTP 404 Not Found' }, 'retry'],
  // 4yz
  [{ response: '421 4.7.0 Too many connections, slow down' }, 'slow_down'],
  [{ response: '451 4.7.1 Rate limited, try again later' }, 'slow_down'],
  [{ response: '450 4.2.1 The user you are trying to contact is receiving mail too quickly' }, 'retry'],
  [{ response: '452 4.2.2 Throttling: too many messages for this account' }, 'slow_down'],
  [{ response: '452 4.5.3 Too many recipients' }, 'retry'],
  [{ response: '451 4.3.0 Temporary local problem' }, 'retry'],
  [{ code: 450 }, 'retry'],
  // 5yz that are not final
  [{ response: '552 5.5.3 Too many recipients' }, 'retry'],
  [{ response: '552 Too many recipients in this transaction' }, 'retry'],
  [{ response: '503 5.5.1 Bad sequence of commands' }, 'retry'],
  [{ response: '550 5.4.5 Daily user sending quota exceeded' }, 'slow_down'],
  [{ response: '554 Rate limit exceeded for this sender' }, 'slow_down'],
  [{ response: '554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org' }, 'retry'],
  // 5yz
  [{ response: '550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown' }, 'fail'],
  [{ response: '554 5.7.1 Relay access denied' }, 'fail'],
  [{ response: '550 5.1.1 Recipient unlisted in directory' }, 'fail'],
  [{ response: '552 5.3.4 Message size exceeds fixed limit' }, 'fail'],
  [{ code: 550, enhanced: '5.7.1', response: 'Sender not allowed' }, 'fail'],
  // never seen before
  [{ errorCode: 'EWHATEVER', response: 'something odd' }, 'retry'],
  [{}, 'retry'],
];

describe('classify', () => {
  for (const [reply, verdict] of EXAMPLES) {
    test(`${reply.response ?? reply.errorCode ?? reply.code ?? '(nothing)'} → ${verdict}`, () => {
      assert.equal(classify(reply).verdict, verdict);
    });
  }

  test('every row of the table is reached by some example (no row is shadowed)', () => {
    const hit = new Set(EXAMPLES.map(([r]) => classify(r).rule));
    const missed = RULES.map((rule, i) => [i, rule.reason] as const).filter(([i]) => !hit.has(i));
    assert.deepEqual(missed, []);
  });

  test('no 4yz reply is ever permanent, whatever its enhanced code or text', () => {
    for (let code = 400; code <= 499; code++) {
      for (const enhanced of ['', '4.0.0', '4.7.1', '5.1.1', '4.5.3']) {
        for (const text of ['try later', 'user unknown', 'rate limited']) {
          const response = `${code} ${enhanced} ${text}`.replace(/ +/g, ' ');
          assert.notEqual(classify({ response }).verdict, 'fail', response);
        }
      }
    }
  });

  test('a throttling reply is never permanent', () => {
    for (const response of ['421 4.7.0 Try again later', '451 4.7.1 Please slow down', '550 5.4.5 Sending quota exceeded', '554 5.7.1 rate limit reached']) {
      assert.equal(classify({ response }).verdict, 'slow_down', response);
    }
  });

  test('every row has a reason', () => {
    for (const rule of RULES) assert.ok(rule.reason.length > 10, JSON.stringify(rule));
  });

  test('the last row catches everything', () => {
    const last = RULES[RULES.length - 1];
    assert.deepEqual(Object.keys(last).sort(), ['reason', 'verdict']);
  });
});

describe('parseReply', () => {
  test('basic and enhanced codes', () => {
    assert.deepEqual(parseReply('550 5.1.1 User unknown'), { code: 550, enhanced: '5.1.1' });
    assert.deepEqual(parseReply('250-2.0.0 Ok'), { code: 250, enhanced: '2.0.0' });
    assert.deepEqual(parseReply('421 Service not available'), { code: 421 });
    assert.deepEqual(parseReply('connect ECONNREFUSED'), {});
    assert.deepEqual(parseReply(undefined), {});
  });
});

describe('DeliveryError', () => {
  test('takes its codes and verdict from the reply', () => {
    const e = new DeliveryError({ response: '451 4.7.1 Slow down', command: 'DATA' });
    assert.equal(e.code, 451);
    assert.equal(e.enhanced, '4.7.1');
    assert.equal(e.verdict, 'slow_down');
    assert.equal(e.transient, true);
    assert.equal(e.command, 'DATA');
    const p = new DeliveryError({ response: '554 5.7.1 Rejected', command: 'MAIL FROM' });
    assert.equal(p.transient, false);
    assert.equal(new DeliveryError({ response: 'connect ECONNREFUSED', errorCode: 'ECONNREFUSED' }).transient, true);
  });
});
