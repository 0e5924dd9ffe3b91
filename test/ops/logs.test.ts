// SPEC §9: logs are JSON lines, one per SMTP transaction and per delivery attempt, with tenant,
// message id, route, outcome and duration — and never keys, passwords, secrets or bodies. A full
// run at LOG_LEVEL=trace: admin API calls with the admin token (tenant, keys, domain, route with
// upstream credentials), sends over SMTP AUTH, the X-Auth-APIKey header and POST /v1/messages,
// refusals (a wrong key, a wrong admin token), deliveries to an upstream that requires AUTH, and
// a metrics scrape with its token. Then every secret and the body marker are searched for.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createLogger } from '../../src/log.ts';
import { startUpstream, type Upstream } from '../delivery/upstream.ts';
import { callJson } from '../helpers/http.ts';
import { eventually, sendForReply, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';

const unique = (prefix: string) => `${prefix}${randomBytes(12).toString('hex')}`;
const ADMIN_TOKEN = unique('admintok-');
const SECRET = unique('secret-') + unique('-');
const METRICS_TOKEN = unique('metricstok-');
const ROUTE_USER = unique('routeuser-');
const ROUTE_PASS = unique('routepass-');
const MARKER = unique('BODYMARKER');

const lines: string[] = [];
let buffered = '';
const sink = new Writable({
  write(chunk, _enc, done) {
    buffered += String(chunk);
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    lines.push(...parts.filter(Boolean));
    done();
  },
});

let relay: TestRelay;
let upstream: Upstream;
let base: string;

const admin = (method: string, path: string, body?: unknown) => callJson(base, method, path, { token: ADMIN_TOKEN, ...(body === undefined ? {} : { body }) });

before(async () => {
  upstream = await startUpstream({ auth: { user: ROUTE_USER, pass: ROUTE_PASS } });
  relay = await startTestRelay(
    { TXRELAY_ADMIN_TOKEN: ADMIN_TOKEN, TXRELAY_SECRET: SECRET, TXRELAY_METRICS_TOKEN: METRICS_TOKEN, LOG_LEVEL: 'trace' },
    undefined,
    { log: createLogger('trace', sink) },
  );
  base = `http://127.0.0.1:${relay.httpPort}`;
});

after(async () => {
  await relay?.close();
  await upstream?.close();
});

test('a full run logs each transaction and attempt, and no key, password, secret or body', { timeout: 120_000 }, async () => {
  // Admin API: everything set up over HTTP with the admin token.
  const tenant = await admin('POST', '/admin/tenants', { name: 'acme' });
  assert.equal(tenant.status, 201, tenant.text);
  assert.equal((await admin('POST', '/admin/tenants/acme/domains', { name: 'acme.example', verified: true })).status, 201);
  const route = await admin('POST', '/admin/tenants/acme/routes', {
    name: 'main',
    transport: 'smtp',
    config: { host: '127.0.0.1', port: upstream.port, pool: false, auth: { user: ROUTE_USER, pass: ROUTE_PASS } },
  });
  assert.equal(route.status, 201, route.text);
  const keys: string[] = [];
  for (let i = 0; i < 3; i++) {
    const k = await admin('POST', '/admin/tenants/acme/keys', { scope: 'full', mode: 'live' });
    assert.equal(k.status, 201, k.text);
    keys.push(k.body.key);
  }
  const [authKey, headerKey, httpKey] = keys;
  const template = await admin('POST', '/admin/tenants/acme/templates', { name: 'welcome', subject: 'Hi {{ name }}', html: `<p>Welcome {{ name }} ${MARKER}-template</p>` });
  assert.equal(template.status, 201, template.text);
  const wrongAdmin = await callJson(base, 'GET', '/admin/tenants', { token: `${ADMIN_TOKEN}x` });
  assert.equal(wrongAdmin.status, 401);

  const mail = (extra: Record<string, unknown> = {}) => ({
    from: 'App <app@acme.example>',
    to: 'user@dest.example',
    subject: 'logs',
    html: `<p>${MARKER}-smtp</p>`,
    ...extra,
  });
  // SMTP AUTH, with a template rendered from variables.
  const viaAuth = await sendForReply(relay.smtpPort, authKey, mail({ headers: { 'X-Transactional-Template': 'welcome', 'X-Transactional-Variables': JSON.stringify({ name: `${MARKER}-var` }) } }));
  assert.match(viaAuth, /^250 /);
  // The X-Auth-APIKey header, no AUTH.
  const viaHeader = await sendForReply(relay.smtpPort, undefined, mail({ headers: { 'X-Auth-APIKey': headerKey } }));
  assert.match(viaHeader, /^250 /);
  // POST /v1/messages, with an attachment.
  const viaHttp = await callJson(base, 'POST', '/v1/messages', {
    token: httpKey,
    body: { from: 'app@acme.example', to: ['user@dest.example'], subject: 'logs', html: `<p>${MARKER}-http</p>`, attachments: [{ filename: 'a.txt', content_type: 'text/plain', content_base64: Buffer.from(`${MARKER}-attachment`).toString('base64') }] },
  });
  assert.equal(viaHttp.status, 202, viaHttp.text);
  // Refusals: a wrong key over AUTH and in the header, a refused message (unverified sender).
  const wrongKey = `txr_live_${randomBytes(16).toString('hex')}`;
  const c = await RawSmtp.connect(relay.smtpPort);
  await c.cmd('EHLO logs.test');
  assert.match(await c.cmd(`AUTH PLAIN ${plain(wrongKey)}`), /^535 /);
  c.close();
  assert.match(await sendForReply(relay.smtpPort, undefined, mail({ headers: { 'X-Auth-APIKey': wrongKey } })), /^535 /);
  assert.match(await sendForReply(relay.smtpPort, authKey, mail({ from: 'app@elsewhere.example' })), /^550 /);
  // A scrape with the metrics token.
  const scrape = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  assert.equal(scrape.status, 200);
  await scrape.arrayBuffer();

  // Deliveries through the route's credentials.
  await eventually(async () => upstream.received.length >= 3, 20_000, 'three deliveries');
  assert.ok(upstream.received.every((r) => r.user === ROUTE_USER), 'the upstream saw the route credentials');
  const ids = [viaAuth, viaHeader].map((r) => /queued as ([0-9a-f-]{36})/.exec(r)![1]).concat(viaHttp.body.id);
  const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  await eventually(async () => parsed().filter((l) => l.msg === 'delivery attempt').length >= 3, 20_000, 'three delivery attempts logged');

  const log = parsed();
  const tenantId = tenant.body.id;
  // One line per SMTP transaction and per HTTP send, with the fields an operator greps for.
  for (const [id, source] of [[ids[0], 'smtp'], [ids[1], 'smtp'], [ids[2], 'http']] as const) {
    const line = log.filter((l) => l.message === id && (source === 'smtp' ? l.smtp === 'transaction' : l.http === 'send'));
    assert.equal(line.length, 1, `one ${source} line for ${id}`);
    assert.equal(line[0].tenant, tenantId);
    assert.equal(line[0].route, 'main');
    assert.equal(line[0].outcome, 'accepted');
    assert.equal(typeof line[0].duration_ms, 'number');
  }
  const refused = log.filter((l) => l.smtp === 'transaction' && l.outcome === 'rejected');
  assert.deepEqual(refused.map((l) => l.reason).sort(), ['domain_not_verified', 'invalid_key']);
  // One line per delivery attempt.
  for (const id of ids) {
    const attempts = log.filter((l) => l.msg === 'delivery attempt' && l.message === id);
    assert.equal(attempts.length, 1, `one attempt line for ${id}`);
    assert.deepEqual([attempts[0].tenant, attempts[0].route, attempts[0].outcome, typeof attempts[0].duration_ms], [tenantId, 'main', 'sent', 'number']);
  }

  // And nothing secret, anywhere in the log.
  const text = lines.join('\n') + buffered;
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const needles: Record<string, string> = {
    'admin token': ADMIN_TOKEN,
    'TXRELAY_SECRET': SECRET,
    'metrics token': METRICS_TOKEN,
    'route password': ROUTE_PASS,
    'route AUTH PLAIN': b64(`\0${ROUTE_USER}\0${ROUTE_PASS}`),
    'body marker': MARKER,
    'wrong key': wrongKey,
    ...Object.fromEntries(keys.map((k, i) => [`key ${i}`, k])),
    ...Object.fromEntries(keys.map((k, i) => [`key ${i} as AUTH PLAIN`, plain(k)])),
    'key secret part': keys[0].slice(-20),
  };
  for (const [what, needle] of Object.entries(needles)) assert.ok(!text.includes(needle), `the log holds the ${what}`);
});
