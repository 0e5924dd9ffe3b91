// The http transport against real HTTP endpoints on 127.0.0.1 port 0.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { headerField, HttpTransport } from '../../src/delivery/transports/http.ts';
import { DeliveryError, type DeliveryRequest } from '../../src/delivery/transports/transport.ts';
import { buildMime } from '../delivery/upstream.ts';
import { closedPort, startEndpoint, type Answer, type Recorded, type Server } from './servers.ts';

const TOKEN = 'Bearer http-endpoint-token-8e2f4a';
const closers: (() => Promise<void>)[] = [];

async function endpoint(script?: (req: Recorded, n: number) => Answer): Promise<Server> {
  const s = await startEndpoint(script);
  closers.push(s.close);
  return s;
}

function transport(url: string, headers: Record<string, string> = { authorization: TOKEN }, timeoutMs?: number): HttpTransport {
  return new HttpTransport({ route: 'http-test', config: { url, headers }, ...(timeoutMs ? { timeoutMs } : {}) });
}

function request(to: string[], extra: Partial<DeliveryRequest> = {}): DeliveryRequest & { id: string } {
  const id = randomUUID();
  return { id, mime: buildMime(id, to), mailFrom: 'bounces@example.com', recipients: to, ...extra };
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

after(async () => {
  for (const close of closers) await close();
});

describe('http transport', () => {
  test('POSTs the message as JSON with the route headers; 2xx accepts every recipient with the answer as reply', async () => {
    const ep = await endpoint(() => ({ status: 202, body: '{\n  "queued": true,\n  "ref": "abc"\n}' }));
    const to = ['alice@example.net', 'bob@example.org'];
    const req = request(to, { messageId: 'f5b3c1d2-0000-4000-8000-000000000001' });
    const result = await transport(`${ep.url}/hooks/mail?x=1`, { authorization: TOKEN, 'X-Tenant': 'acme' }).deliver(req);

    const [sent] = ep.requests;
    assert.equal(sent.method, 'POST');
    assert.equal(sent.path, '/hooks/mail?x=1');
    assert.equal(sent.headers.authorization, TOKEN);
    assert.equal(sent.headers['x-tenant'], 'acme');
    assert.equal(sent.headers['content-type'], 'application/json');
    assert.equal(sent.headers['user-agent'], 'txrelay');
    const body = JSON.parse(sent.body.toString('utf8')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ['id', 'mail_from', 'rcpt_to', 'message_id_header', 'subject', 'mime_base64']);
    assert.equal(body.id, 'f5b3c1d2-0000-4000-8000-000000000001');
    assert.equal(body.mail_from, 'bounces@example.com');
    assert.deepEqual(body.rcpt_to, to);
    assert.equal(body.message_id_header, `<${req.id}@relay.test>`);
    assert.equal(body.subject, 'Delivery test');
    assert.ok(Buffer.from(body.mime_base64 as string, 'base64').equals(req.mime), 'the endpoint gets exactly the stored bytes');

    assert.deepEqual(result.recipients.map((r) => [r.address, r.accepted, r.response]), to.map((a) => [a, true, 'HTTP 202 Accepted: { "queued": true, "ref": "abc" }']));
  });

  test('id is null when the worker gives none; an empty 204 is a success', async () => {
    const ep = await endpoint(() => ({ status: 204 }));
    const r = await transport(ep.url).deliver(request(['n@example.net']));
    assert.equal((JSON.parse(ep.requests[0].body.toString('utf8')) as { id: unknown }).id, null);
    assert.equal(r.recipients[0].response, 'HTTP 204 No Content');
  });

  test('the reply text is the first 500 characters of the answer', async () => {
    const ep = await endpoint(() => ({ status: 200, body: 'y'.repeat(5_000) }));
    const r = await transport(ep.url).deliver(request(['long@example.net']));
    assert.ok(r.recipients[0].response.length <= 'HTTP 200 OK: '.length + 500);
    assert.match(r.recipients[0].response, /^HTTP 200 OK: y+…$/);
  });

  const verdicts: [number, string, string][] = [
    [400, 'fail', 'Bad Request'],
    [403, 'fail', 'Forbidden'],
    [404, 'fail', 'Not Found'],
    [413, 'fail', 'Payload Too Large'],
    [422, 'fail', 'Unprocessable Entity'],
    [401, 'retry', 'Unauthorized'],
    [408, 'retry', 'Request Timeout'],
    [429, 'slow_down', 'Too Many Requests'],
    [500, 'retry', 'Internal Server Error'],
    [502, 'retry', 'Bad Gateway'],
    [503, 'retry', 'Service Unavailable'],
  ];
  for (const [status, verdict, text] of verdicts) {
    test(`HTTP ${status} → ${verdict}`, async () => {
      const ep = await endpoint(() => ({ status, body: `{"error":"${text}"}` }));
      const err = await failure(transport(ep.url).deliver(request(['v@example.net'])));
      assert.equal(err.errorCode, 'EHTTP');
      assert.equal(err.verdict, verdict);
      assert.equal(err.response, `HTTP ${status} ${text}: {"error":"${text}"}`);
      assert.equal(err.code, undefined, 'an HTTP status is never read as an SMTP code');
    });
  }

  test('Retry-After is kept in the reply text', async () => {
    const ep = await endpoint(() => ({ status: 503, headers: { 'retry-after': '30' } }));
    const err = await failure(transport(ep.url).deliver(request(['ra@example.net'])));
    assert.equal(err.response, 'HTTP 503 Service Unavailable (Retry-After: 30)');
  });

  test('a redirect is not followed (the credentials stay put) and is retried', async () => {
    const target = await endpoint();
    const ep = await endpoint(() => ({ status: 307, headers: { location: `${target.url}/elsewhere` } }));
    const err = await failure(transport(ep.url).deliver(request(['rd@example.net'])));
    assert.equal(err.verdict, 'retry');
    assert.match(err.response, /^HTTP 307/);
    assert.equal(target.requests.length, 0);
  });

  test('connection refused is transient', async () => {
    const port = await closedPort();
    const err = await failure(transport(`http://127.0.0.1:${port}/`).deliver(request(['c@example.net'])));
    assert.equal(err.errorCode, 'ECONNREFUSED');
    assert.equal(err.verdict, 'retry');
  });

  test('an endpoint that never answers times out, transient', async () => {
    const ep = await endpoint(() => 'hang');
    const started = Date.now();
    const err = await failure(transport(ep.url, {}, 300).deliver(request(['h@example.net'])));
    assert.ok(Date.now() - started < 2_000);
    assert.equal(err.errorCode, 'ETIMEDOUT');
    assert.equal(err.verdict, 'retry');
    assert.equal(err.response, 'no complete answer from the endpoint within 300 ms');
  });

  test("the worker's signal aborts a request in flight", async () => {
    const ep = await endpoint(() => 'hang');
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const started = Date.now();
    const err = await failure(transport(ep.url).deliver(request(['ab@example.net'], { signal: ac.signal })));
    assert.ok(Date.now() - started < 2_000);
    assert.equal(err.errorCode, 'EABORT');
    assert.equal(err.verdict, 'retry');
  });

  test('route header values never reach a reply text, even when the endpoint echoes them', async () => {
    const ep = await endpoint((req) => ({ status: 400, body: `bad auth ${String(req.headers.authorization)} and token ${TOKEN.split(' ')[1]}` }));
    const err = await failure(transport(ep.url).deliver(request(['s@example.net'])));
    assert.ok(!err.response.includes('http-endpoint-token-8e2f4a'), err.response);
    assert.equal(err.response, 'HTTP 400 Bad Request: bad auth [redacted] and token [redacted]');
  });

  test('an invalid header in the route config is refused by name, never quoting its value', () => {
    assert.throws(
      () => transport('http://127.0.0.1:9/', { authorization: 'Bearer secret-value\r\nX-Injected: 1' }),
      (err: unknown) => err instanceof DeliveryError && err.errorCode === 'ECONFIG' && /"authorization"/.test(err.response) && !err.response.includes('secret-value'),
    );
  });
});

describe('headerField', () => {
  test('unfolds and finds a header in the header block only', () => {
    const mime = Buffer.from('Subject: first line\r\n second line\r\nX-A: 1\r\n\r\nSubject: not a header\r\n');
    assert.equal(headerField(mime, 'subject'), 'first line second line');
    assert.equal(headerField(mime, 'message-id'), null);
  });
});
