// /metrics from a real relay: after messages accepted, refused, rendered and delivered to a real
// upstream, the named series exist with their labels and count exactly what happened. Then a
// worker-only relay serves the operations endpoints on TXRELAY_METRICS_PORT, behind the token.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { TEST_ADMIN_TOKEN } from '../helpers/context.ts';
import { callJson } from '../helpers/http.ts';
import { createOpsApp } from '../../src/api/ops.ts';
import { Metrics, rejectReason } from '../../src/metrics.ts';
import { SmtpError } from '../../src/smtp/smtp-error.ts';
import { addRoute, eventually, sendForReply, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { counter, labelSets, parseExposition, series, type Sample } from './prometheus.ts';

const METRICS_TOKEN = 'metrics-token-0123456789abcdef';

let relay: TestRelay;
let upstream: Upstream;
let acme: TenantSetup;
let slow: TenantSetup;
let base: string;

async function scrape(url = `${base}/metrics`, token?: string): Promise<{ status: number; type: string | null; text: string; samples: Sample[] }> {
  const res = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), text, samples: res.status === 200 ? parseExposition(text) : [] };
}

const html = (body: string) => ({ from: 'App <app@acme.example>', to: 'user@dest.example', subject: 'metrics', html: body });

before(async () => {
  upstream = await startUpstream();
  relay = await startTestRelay();
  base = `http://127.0.0.1:${relay.httpPort}`;
  acme = await setupTenant(relay.ctx, 'acme');
  await addRoute(relay.ctx, acme.tenantId, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: false } });
  // A second tenant whose only route is paused: its message waits, for the queue gauges.
  slow = await setupTenant(relay.ctx, 'slow');
  await addRoute(relay.ctx, slow.tenantId, { name: 'held', transport: 'capture' });
  const paused = await callJson(base, 'POST', `/admin/tenants/slow/routes/held/pause`);
  assert.equal(paused.status, 200, paused.text);
});

after(async () => {
  await relay?.close();
  await upstream?.close();
});

test('the relay counts SMTP and HTTP submissions, refusals, renders and deliveries', async () => {
  const before = await scrape();
  assert.equal(before.status, 200, before.text);
  assert.match(before.type ?? '', /^text\/plain; version=0\.0\.4/);

  // Accepted: two over SMTP (one rendered with variables), one over HTTP.
  assert.match(await sendForReply(relay.smtpPort, acme.key, html('<p>plain</p>')), /^250 /);
  const rendered = { ...html('<p>Hello {{ name }}</p>'), headers: { 'X-Transactional-Variables': '{"name":"Ada"}' } };
  assert.match(await sendForReply(relay.smtpPort, acme.key, rendered), /^250 /);
  const http = await callJson(base, 'POST', '/v1/messages', { token: acme.key, body: { from: 'app@acme.example', to: ['user@dest.example'], subject: 'metrics', html: '<p>http</p>' } });
  assert.equal(http.status, 202, http.text);
  // Refused: a sender domain that is not verified (550), a template that does not render (554).
  assert.match(await sendForReply(relay.smtpPort, acme.key, { ...html('<p>x</p>'), from: 'app@elsewhere.example' }), /^550 5\.7\.1 /);
  const broken = { ...html('<p>{{ name( }}</p>'), headers: { 'X-Transactional-Variables': '{"name":"Ada"}' } };
  assert.match(await sendForReply(relay.smtpPort, acme.key, broken), /^554 5\.6\.0 /);
  // One waiting on the paused route.
  assert.match(await sendForReply(relay.smtpPort, slow.key, { ...html('<p>waits</p>'), from: 'app@slow.example' }), /^250 /);

  await upstream.waitFor(3);
  // The upstream has the messages a moment before the worker has recorded the attempts, and the
  // queue gauges are read from the database at most every 5 s.
  const now = await eventually(async () => {
    const s = await scrape();
    const sent = counter(s.samples, 'txrelay_delivery_attempts_total', { tenant: acme.tenantId, route: 'main', result: 'sent' });
    return sent >= 3 && series(s.samples, 'txrelay_queue_messages', { tenant: slow.tenantId, route: 'held', status: 'queued' }) === 1 ? s : undefined;
  }, 20_000, 'three sent attempts counted and the waiting message seen');
  const delta = (name: string, labels: Record<string, string> = {}) => counter(now.samples, name, labels) - counter(before.samples, name, labels);

  assert.equal(delta('txrelay_messages_accepted_total', { source: 'smtp' }), 3);
  assert.equal(delta('txrelay_messages_accepted_total', { source: 'http' }), 1);
  assert.equal(delta('txrelay_messages_rejected_total', { source: 'smtp', reason: 'sender' }), 1);
  assert.equal(delta('txrelay_messages_rejected_total', { source: 'smtp', reason: 'template' }), 1);
  assert.equal(delta('txrelay_smtp_transactions_total', { outcome: 'accepted', reply_class: '2xx' }), 3);
  assert.equal(delta('txrelay_smtp_transactions_total', { outcome: 'rejected', reply_class: '5xx' }), 2);
  // nodemailer opens one connection per message here, and authenticates on each.
  assert.equal(delta('txrelay_smtp_connections_total', { outcome: 'accepted' }), 5);
  assert.equal(delta('txrelay_smtp_auth_total', { outcome: 'ok' }), 5);
  assert.equal(delta('txrelay_render_duration_seconds_count', { outcome: 'ok' }), 1);
  assert.equal(delta('txrelay_render_duration_seconds_count', { outcome: 'error' }), 1);
  assert.equal(delta('txrelay_delivery_attempts_total', { tenant: acme.tenantId, route: 'main', result: 'sent' }), 3);
  assert.equal(delta('txrelay_delivery_latency_seconds_count'), 3);
  assert.ok(delta('txrelay_delivery_latency_seconds_sum') > 0, 'latencies are positive');
  assert.equal(counter(now.samples, 'txrelay_delivery_latency_seconds_bucket', { le: '+Inf' }), counter(now.samples, 'txrelay_delivery_latency_seconds_count'));

  // Queue gauges, read from the database: the paused route holds one message, the other none.
  assert.equal(series(now.samples, 'txrelay_queue_messages', { tenant: slow.tenantId, route: 'held', status: 'queued' }), 1);
  assert.equal(series(now.samples, 'txrelay_queue_messages', { tenant: slow.tenantId, route: 'held', status: 'deferred' }), 0);
  assert.equal(series(now.samples, 'txrelay_route_paused', { tenant: slow.tenantId, route: 'held' }), 1);
  assert.equal(series(now.samples, 'txrelay_route_paused', { tenant: acme.tenantId, route: 'main' }), 0);
  assert.equal(series(now.samples, 'txrelay_queue_messages', { tenant: acme.tenantId, route: 'main', status: 'queued' }), 0);
  const oldest = series(now.samples, 'txrelay_queue_oldest_age_seconds', { tenant: slow.tenantId, route: 'held' });
  assert.ok(oldest !== undefined && oldest >= 0 && oldest < 3600, `oldest age ${oldest}`);
  assert.equal(series(now.samples, 'txrelay_queue_oldest_age_seconds', { tenant: acme.tenantId, route: 'main' }), 0);
  assert.equal(series(now.samples, 'txrelay_ready'), 1);

  // Node's default metrics, under their usual names.
  assert.ok(series(now.samples, 'process_cpu_user_seconds_total') !== undefined);
  assert.ok(labelSets(now.samples, 'nodejs_heap_size_used_bytes').length === 1);

  // Labels from fixed sets, tenant ids and route names: never a tag, a recipient or a key.
  const labelNames = new Set(now.samples.filter((s) => s.name.startsWith('txrelay_')).flatMap((s) => Object.keys(s.labels)));
  assert.deepEqual([...labelNames].sort(), ['le', 'outcome', 'reason', 'reply_class', 'result', 'route', 'source', 'status', 'tenant']);
  for (const secret of [acme.key, slow.key, TEST_ADMIN_TOKEN, 'user@dest.example', 'acme.example']) assert.ok(!now.text.includes(secret), `the exposition holds ${secret}`);
});

test('the queue gauges are read at most once per cache period, and follow the queue after it', async () => {
  // A registry of its own over the relay's database, with a cache far longer than this test.
  const cached = new Metrics({ db: relay.ctx.db, log: relay.ctx.log }, { queueCacheMs: 600_000 });
  const fresh = new Metrics({ db: relay.ctx.db, log: relay.ctx.log }, { queueCacheMs: 0 });
  const held = { tenant: slow.tenantId, route: 'held', status: 'queued' };
  const read = async (m: Metrics) => series(parseExposition((await m.exposition()).text), 'txrelay_queue_messages', held);
  const waiting = await read(cached);
  assert.equal(await read(fresh), waiting);
  assert.match(await sendForReply(relay.smtpPort, slow.key, { ...html('<p>waits too</p>'), from: 'app@slow.example' }), /^250 /);
  assert.equal(await read(cached), waiting, 'the cached snapshot is served again');
  assert.equal(await read(fresh), waiting! + 1, 'a new read sees the new message');
});

test('SMTP refusals before DATA are counted: size over the limit', async () => {
  const before = await scrape();
  const small = await startTestRelay({ TXRELAY_ROLES: 'smtp,api', TXRELAY_MAX_MESSAGE_BYTES: '1024' }, relay.tdb);
  try {
    const s0 = await scrape(`http://127.0.0.1:${small.httpPort}/metrics`);
    const reply = await sendForReply(small.smtpPort, acme.key, html(`<p>${'x'.repeat(4096)}</p>`));
    assert.match(reply, /^552 5\.3\.4 /);
    const s1 = await scrape(`http://127.0.0.1:${small.httpPort}/metrics`);
    assert.equal(counter(s1.samples, 'txrelay_messages_rejected_total', { source: 'smtp', reason: 'size' }) - counter(s0.samples, 'txrelay_messages_rejected_total', { source: 'smtp', reason: 'size' }), 1);
    assert.equal(counter(s1.samples, 'txrelay_smtp_transactions_total', { outcome: 'rejected', reply_class: '5xx' }) - counter(s0.samples, 'txrelay_smtp_transactions_total', { outcome: 'rejected', reply_class: '5xx' }), 1);
  } finally {
    await small.close();
  }
  // Each relay has its own registry: the first one saw none of that.
  const after = await scrape();
  assert.equal(counter(after.samples, 'txrelay_messages_rejected_total', { source: 'smtp', reason: 'size' }), counter(before.samples, 'txrelay_messages_rejected_total', { source: 'smtp', reason: 'size' }));
});

test('a worker-only relay serves /metrics, /healthz and /readyz on TXRELAY_METRICS_PORT, behind TXRELAY_METRICS_TOKEN', async () => {
  const worker = await startTestRelay({ TXRELAY_ROLES: 'worker', TXRELAY_METRICS_PORT: '0', TXRELAY_METRICS_TOKEN: METRICS_TOKEN }, relay.tdb);
  try {
    assert.equal(worker.app.httpPort, undefined, 'no API without the api role');
    const port = worker.app.metricsPort;
    assert.ok(port, 'the metrics listener is up');
    const ops = `http://127.0.0.1:${port}`;

    const none = await scrape(`${ops}/metrics`);
    assert.equal(none.status, 401);
    assert.equal(JSON.parse(none.text).error.code, 'unauthorized');
    const wrong = await scrape(`${ops}/metrics`, 'metrics-token-0123456789abcdeX');
    assert.equal(wrong.status, 401);
    const adminToken = await scrape(`${ops}/metrics`, TEST_ADMIN_TOKEN);
    assert.equal(adminToken.status, 401, 'the admin token is not the metrics token');
    const ok = await scrape(`${ops}/metrics`, METRICS_TOKEN);
    assert.equal(ok.status, 200, ok.text);
    assert.ok(series(ok.samples, 'txrelay_ready') === 1);
    assert.ok(labelSets(ok.samples, 'txrelay_queue_messages').length >= 4, 'queue gauges on a worker too');

    assert.equal((await callJson(ops, 'GET', '/healthz', { token: null })).status, 200);
    const ready = await callJson(ops, 'GET', '/readyz', { token: null });
    assert.equal(ready.status, 200, ready.text);
    assert.deepEqual(ready.body.checks, { database: 'ok', queue: 'ok' });
    // Nothing else is served there.
    assert.equal((await callJson(ops, 'GET', '/admin/tenants')).status, 404);
    assert.equal((await callJson(ops, 'GET', '/openapi.json', { token: null })).status, 404);
  } finally {
    await worker.close();
  }
});

test('with TXRELAY_METRICS_TOKEN set, the API port asks for it too; unset, /metrics is open', async () => {
  assert.equal((await scrape()).status, 200, 'open without a token configured');
  const guarded = await startTestRelay({ TXRELAY_ROLES: 'api', TXRELAY_METRICS_TOKEN: METRICS_TOKEN }, relay.tdb);
  try {
    const url = `http://127.0.0.1:${guarded.httpPort}/metrics`;
    const res = await fetch(url);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="txrelay-metrics"/);
    await res.arrayBuffer();
    assert.equal((await scrape(url, METRICS_TOKEN)).status, 200);
  } finally {
    await guarded.close();
  }
});

test('a process that collects no metrics answers /metrics with 404', async () => {
  const app = createOpsApp({ ...relay.ctx, metrics: undefined });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const r = await callJson(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'GET', '/metrics', { token: null });
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, 'not_found');
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

test('docs/metrics.md documents every txrelay_ series, and the docs and the dashboard name no other', async () => {
  const { text } = await scrape();
  const exported = new Set([...text.matchAll(/^# TYPE (txrelay_\w+) /gm)].map((m) => m[1]));
  assert.ok(exported.size >= 13, `${exported.size} txrelay_ metrics`);
  const named = (file: string) => new Set([...fs.readFileSync(new URL(`../../docs/${file}`, import.meta.url), 'utf8').matchAll(/txrelay_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, '')));
  const documented = named('metrics.md');
  for (const name of exported) assert.ok(documented.has(name), `${name} is documented in docs/metrics.md`);
  for (const file of ['metrics.md', 'grafana-dashboard.json']) {
    for (const name of named(file)) assert.ok(exported.has(name), `${file} names ${name}, which is not exported`);
  }
});

test('every refusal code in src/ has a reason of its own (none falls into "other")', () => {
  const codes = new Set<string>(['rate_limited']);
  const walk = (dir: URL): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(new URL(`${entry.name}/`, dir));
      else if (entry.name.endsWith('.ts')) {
        for (const line of fs.readFileSync(new URL(entry.name, dir), 'utf8').split('\n')) {
          const m = /new SmtpError\(.*'([a-z_]+)'\)/.exec(line);
          if (m) codes.add(m[1]);
        }
      }
    }
  };
  walk(new URL('../../src/', import.meta.url));
  // Connection refusals and session cuts (src/smtp/limits.ts), not message refusals.
  for (const code of ['unavailable', 'per_ip_limit', 'session_timeout', 'data_timeout', 'shutting_down']) codes.delete(code);
  assert.ok(codes.size >= 20, `found ${codes.size} codes`);
  for (const code of codes) assert.notEqual(rejectReason(new SmtpError(550, '5.0.0', 'x', code)), 'other', code);
  assert.equal(rejectReason(new Error('boom')), 'internal');
  assert.equal(rejectReason(new SmtpError(550, '5.0.0', 'x')), 'other');
});
