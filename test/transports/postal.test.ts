// The postal transport against a real HTTP server playing Postal's documented send/raw contract.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { PostalTransport } from '../../src/delivery/transports/postal.ts';
import { DeliveryError, type DeliveryRequest } from '../../src/delivery/transports/transport.ts';
import { buildMime } from '../delivery/upstream.ts';
import { closedPort, startEndpoint, startFakePostal, type FakePostal, type Server } from './servers.ts';

const KEY = 'postal-server-key-5d1c9e7a2b';
let postal: FakePostal;
const closers: (() => Promise<void>)[] = [];

function transport(config: Partial<{ url: string; server_key: string }> = {}, timeoutMs?: number): PostalTransport {
  return new PostalTransport({ route: 'postal-test', config: { url: postal.url, server_key: KEY, ...config }, ...(timeoutMs ? { timeoutMs } : {}) });
}

function request(to: string[], extra: Partial<DeliveryRequest> = {}): DeliveryRequest {
  return { mime: buildMime(randomUUID(), to), mailFrom: 'bounces@example.com', recipients: to, ...extra };
}

async function failure(p: Promise<unknown>): Promise<DeliveryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof DeliveryError, `a DeliveryError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the delivery to fail');
}

async function endpoint(...args: Parameters<typeof startEndpoint>): Promise<Server> {
  const s = await startEndpoint(...args);
  closers.push(s.close);
  return s;
}

before(async () => {
  postal = await startFakePostal({ key: KEY, domains: ['example.com'] });
});

after(async () => {
  await postal.close();
  for (const close of closers) await close();
});

describe('postal transport', () => {
  test('sends the stored bytes unchanged with the envelope and the key; each recipient gets its Postal message id', async () => {
    const to = ['alice@example.net', 'bob@example.org'];
    const req = request(to);
    const before = postal.requests.length;
    const result = await transport().deliver(req);

    const [sent] = postal.requests.slice(before);
    assert.equal(sent.method, 'POST');
    assert.equal(sent.path, '/api/v1/send/raw');
    assert.equal(sent.headers['x-server-api-key'], KEY);
    assert.match(sent.headers['content-type'] ?? '', /^application\/json/);
    const body = JSON.parse(sent.body.toString('utf8')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body).sort(), ['data', 'mail_from', 'rcpt_to']);
    assert.equal(body.mail_from, 'bounces@example.com');
    assert.deepEqual(body.rcpt_to, to);
    assert.ok(Buffer.from(body.data as string, 'base64').equals(req.mime), 'Postal decodes exactly the stored bytes');

    const created = postal.messages.filter((m) => m.raw.equals(req.mime));
    assert.deepEqual(created.map((m) => m.rcptTo), to);
    assert.deepEqual(result.recipients.map((r) => [r.address, r.accepted]), to.map((a) => [a, true]));
    for (const r of result.recipients) {
      const m = created.find((x) => x.rcptTo === r.address)!;
      assert.match(r.response, new RegExp(`^Postal accepted as message ${m.id} \\(token ${m.token}, message_id ${m.messageId.replace(/[.]/g, '\\.')}\\)$`));
      assert.equal(r.code, undefined, 'no SMTP code is made up');
    }
  });

  test('a url with a path prefix and a trailing slash', async () => {
    const proxy = await endpoint(() => ({ status: 200, body: JSON.stringify({ status: 'success', time: 0, flags: {}, data: { message_id: 'x@y', messages: { 'p@example.net': { id: 7, token: 't' } } } }) }));
    const r = await transport({ url: `${proxy.url}/postal/` }).deliver(request(['p@example.net']));
    assert.equal(proxy.requests[0].path, '/postal/api/v1/send/raw');
    assert.equal(r.recipients[0].accepted, true);
  });

  test('a refused server key is retried, and the key Postal echoes back is never recorded', async () => {
    const err = await failure(transport({ server_key: 'wrong-key-0123456789' }).deliver(request(['k@example.net'])));
    assert.equal(err.errorCode, 'EPOSTAL');
    assert.equal(err.verdict, 'retry');
    assert.equal(err.transient, true);
    assert.match(err.response, /^Postal error InvalidServerAPIKey: The API token provided in X-Server-API-Key was not valid\.$/);
    assert.match(err.reason, /server key/);
    // The fake Postal, like the real one, put the key into data.token.
    assert.match(postal.requests.at(-1)!.headers['x-server-api-key'] as string, /wrong-key/);
    assert.ok(!JSON.stringify(err).includes('wrong-key-0123456789') && !err.message.includes('wrong-key-0123456789'));
  });

  test('a suspended Postal server is retried', async () => {
    postal.suspended = true;
    try {
      const err = await failure(transport().deliver(request(['s@example.net'])));
      assert.equal(err.response, 'Postal error ServerSuspended');
      assert.equal(err.verdict, 'retry');
    } finally {
      postal.suspended = false;
    }
  });

  test('a From domain the Postal server does not own is a permanent failure of the message', async () => {
    const mime = Buffer.from(request(['u@example.net']).mime.toString('utf8').replace('sender@example.com', 'sender@elsewhere.test'));
    const err = await failure(transport().deliver(request(['u@example.net'], { mime })));
    assert.equal(err.response, 'Postal error UnauthenticatedFromAddress');
    assert.equal(err.verdict, 'fail');
  });

  test('a parameter-error is permanent', async () => {
    postal.override = () => ({ status: 200, body: JSON.stringify({ status: 'parameter-error', time: 0, flags: {}, data: { message: '`rcpt_to` parameter is required but is missing' } }) });
    try {
      const err = await failure(transport().deliver(request(['pe@example.net'])));
      assert.equal(err.response, 'Postal parameter-error: `rcpt_to` parameter is required but is missing');
      assert.equal(err.verdict, 'fail');
    } finally {
      postal.override = undefined;
    }
  });

  test('the null reverse-path is refused before any request: Postal requires a mail_from', async () => {
    const before = postal.requests.length;
    const err = await failure(transport().deliver(request(['n@example.net'], { mailFrom: '' })));
    assert.equal(err.verdict, 'fail');
    assert.equal(postal.requests.length, before);
  });

  test('a recipient missing from a success answer is retried, the others are accepted', async () => {
    postal.override = () => ({ status: 200, body: JSON.stringify({ status: 'success', time: 0, flags: {}, data: { message_id: 'm@x', messages: { 'A@Example.net': { id: 1, token: 'tok', existing: true } } } }) });
    try {
      const r = await transport().deliver(request(['a@example.net', 'b@example.net']));
      assert.equal(r.recipients[0].accepted, true, 'matched case-insensitively');
      assert.match(r.recipients[0].response, /already known to Postal/);
      assert.equal(r.recipients[1].accepted, false);
      assert.match(r.recipients[1].response, /no message for this recipient/);
    } finally {
      postal.override = undefined;
    }
  });

  test('an unknown Postal error code is retried', async () => {
    postal.override = () => ({ status: 200, body: JSON.stringify({ status: 'error', time: 0, flags: {}, data: { code: 'SomethingNew', message: 'What is this' } }) });
    try {
      const err = await failure(transport().deliver(request(['x@example.net'])));
      assert.equal(err.response, 'Postal error SomethingNew: What is this');
      assert.equal(err.verdict, 'retry');
    } finally {
      postal.override = undefined;
    }
  });

  test('HTTP 500 from a proxy in front of Postal is transient', async () => {
    postal.override = () => ({ status: 500, body: '<html>Internal Server Error</html>', headers: { 'content-type': 'text/html' } });
    try {
      const err = await failure(transport().deliver(request(['e@example.net'])));
      assert.equal(err.verdict, 'retry');
      assert.match(err.response, /^HTTP 500 Internal Server Error: <html>/);
      assert.equal(err.code, undefined, 'an HTTP status is not an SMTP code');
    } finally {
      postal.override = undefined;
    }
  });

  test('HTTP 429 slows down and keeps Retry-After', async () => {
    postal.override = () => ({ status: 429, body: 'slow down', headers: { 'retry-after': '120' } });
    try {
      const err = await failure(transport().deliver(request(['r@example.net'])));
      assert.equal(err.verdict, 'slow_down');
      assert.match(err.response, /^HTTP 429 Too Many Requests \(Retry-After: 120\)/);
    } finally {
      postal.override = undefined;
    }
  });

  test('a wrong URL (404) and a non-JSON 200 are retried', async () => {
    const err = await failure(transport({ url: `${postal.url}/nowhere` }).deliver(request(['w@example.net'])));
    assert.equal(err.verdict, 'retry');
    assert.match(err.response, /^HTTP 404/);
    postal.override = () => ({ status: 200, body: '<html>login</html>', headers: { 'content-type': 'text/html' } });
    try {
      const e2 = await failure(transport().deliver(request(['w@example.net'])));
      assert.equal(e2.verdict, 'retry');
      assert.match(e2.response, /^unexpected answer from Postal, HTTP 200 OK: <html>login/);
    } finally {
      postal.override = undefined;
    }
  });

  test('connection refused is transient', async () => {
    const port = await closedPort();
    const err = await failure(transport({ url: `http://127.0.0.1:${port}` }).deliver(request(['c@example.net'])));
    assert.equal(err.errorCode, 'ECONNREFUSED');
    assert.equal(err.verdict, 'retry');
    assert.match(err.response, /ECONNREFUSED/);
  });

  test('a Postal that never answers times out, transient', async () => {
    postal.override = () => 'hang';
    try {
      const started = Date.now();
      const err = await failure(transport({}, 300).deliver(request(['h@example.net'])));
      assert.ok(Date.now() - started < 2_000);
      assert.equal(err.errorCode, 'ETIMEDOUT');
      assert.equal(err.verdict, 'retry');
    } finally {
      postal.override = undefined;
    }
  });

  test("the worker's signal aborts a request in flight", async () => {
    postal.override = () => 'hang';
    try {
      const ac = new AbortController();
      const started = Date.now();
      setTimeout(() => ac.abort(), 100);
      const err = await failure(transport().deliver(request(['ab@example.net'], { signal: ac.signal })));
      assert.ok(Date.now() - started < 2_000);
      assert.equal(err.errorCode, 'EABORT');
      assert.equal(err.verdict, 'retry');
    } finally {
      postal.override = undefined;
    }
  });

  test('the server key never appears in a reply text, even when an upstream echoes it', async () => {
    postal.override = (req) => ({ status: 502, body: `bad gateway for key ${String(req.headers['x-server-api-key'])}` });
    try {
      const err = await failure(transport().deliver(request(['e@example.net'])));
      assert.ok(!err.response.includes(KEY), err.response);
      assert.match(err.response, /\[redacted\]/);
    } finally {
      postal.override = undefined;
    }
  });
});
