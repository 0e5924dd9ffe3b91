// Upstreams that fail in the ways real ones do (issue 7): refusing (5xx: reported failed at
// once), blackholing (accepts TCP, never greets), tarpitting (greets, or answers the final dot,
// one byte a second: every byte resets an idle timeout, so only a deadline ends the attempt),
// and hanging up right after the final dot. Each one that may pass is deferred, never lost: the
// message keeps a live job, and once the fault ends it goes out. Where the upstream had the
// whole message before the fault (after the final dot), a second copy is possible: the
// window no relay can close; it is counted. Two workers sharing the queue never deliver one
// message at once. The delivery worker runs in this process on a test database, with a short
// overall deadline per attempt (its default is 10 minutes).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import * as messages from '../../src/db/messages.repository.ts';
import type { Route, Tenant } from '../../src/db/schema.ts';
import { startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { messagesWithoutLiveJob, until } from './invariants.ts';
import { startScriptedUpstream, type Mode, type ScriptedUpstream } from './scripted-upstream.ts';

/** The worker's overall deadline per attempt: what ends a tarpit that answers the final dot. */
const ATTEMPT_DEADLINE_MS = 3_000;

let ctx: TestContext;
let tenant: Tenant;
let worker: DeliveryWorker;
const closers: (() => Promise<void>)[] = [];

async function upstream(mode: Mode): Promise<ScriptedUpstream> {
  const u = await startScriptedUpstream(mode);
  closers.push(u.close);
  return u;
}

async function route(name: string, port: number, extra: Record<string, unknown> = {}): Promise<Route> {
  return await createRoute(ctx.db, ctx.box, tenant.id, {
    name,
    transport: 'smtp',
    config: { host: '127.0.0.1', port, pool: false, connection_timeout_seconds: 1, socket_timeout_seconds: 2 },
    max_attempts: 6,
    retry_delay_seconds: 1,
    ...extra,
  });
}

/** Commits a message as the SMTP listener does; its MIME carries the relay Message-ID. */
async function queue(r: Route): Promise<string> {
  const id = randomUUID();
  const mime = Buffer.from(`From: app@acme.example\r\nTo: user@dest.example\r\nMessage-ID: <${id}@relay.test>\r\nSubject: fault\r\nContent-Type: text/html\r\n\r\n<p>fault</p>\r\n`);
  await commitMessage(ctx, {
    id,
    tenantId: tenant.id,
    apiKeyId: null,
    tag: 'faults',
    routeId: r.id,
    routeName: r.name,
    templateId: null,
    templateName: null,
    testMode: false,
    mailFrom: 'app@acme.example',
    fromAddress: 'app@acme.example',
    subject: 'fault',
    messageIdHeader: `<${id}@relay.test>`,
    mime: [mime],
    size: mime.length,
    verdicts: [],
    recipients: ['user@dest.example'],
    attachments: [],
  });
  return id;
}

async function firstAttempt(id: string) {
  return await until(`a first attempt of ${id}`, async () => (await messages.listAttempts(ctx.db, id))[0], 20_000);
}

async function settled(id: string) {
  return await until(`message ${id} settled`, async () => {
    const m = await messages.findMessageMeta(ctx.db, id);
    return m?.status === 'sent' || m?.status === 'failed' ? m : undefined;
  }, 30_000);
}

/**
 * The fault deferred the message, it still has a live job; then the fault ends and the message
 * goes out, its attempts all on record.
 */
async function deferredThenSent(kind: Mode, response: RegExp): Promise<{ up: ScriptedUpstream; id: string }> {
  const up = await upstream(kind);
  const r = await route(kind, up.port);
  const id = await queue(r);
  const first = await firstAttempt(id);
  assert.equal(first.outcome, 'deferred', `${kind}: ${JSON.stringify(first)}`);
  assert.match(first.response ?? '', response);
  assert.deepEqual(await messagesWithoutLiveJob(ctx.db), [], `${kind}: the deferred message has a live job`);
  up.mode = 'accept';
  const m = await settled(id);
  assert.equal(m.status, 'sent', `${kind}: sent once the fault ended`);
  assert.equal(up.accepted.filter((x) => x === id).length, 1, `${kind}: accepted once`);
  assert.deepEqual(up.overlaps, []);
  const attempts = await messages.listAttempts(ctx.db, id);
  assert.equal(attempts.at(-1)?.outcome, 'sent');
  assert.ok(attempts.slice(0, -1).every((a) => a.outcome === 'deferred'), JSON.stringify(attempts));
  return { up, id };
}

before(async () => {
  ctx = await testContext();
  tenant = await createTenant(ctx.db, { name: 'acme' });
  worker = await startDelivery(ctx, { reconcileIntervalMs: 500, routePollMs: 200, deliveryDeadlineMs: ATTEMPT_DEADLINE_MS });
});

after(async () => {
  await worker?.stop(2_000);
  for (const close of closers) await close();
  await ctx?.close();
});

describe('an upstream that', () => {
  test('refuses with 5xx: failed at once, reported, nothing left waiting', async () => {
    const up = await upstream('refuse');
    const id = await queue(await route('refusing', up.port));
    const m = await settled(id);
    assert.equal(m.status, 'failed');
    assert.equal(m.attempts, 1);
    const events = await messages.listEvents(ctx.db, id);
    assert.ok(events.some((e) => e.type === 'failed'), 'the failure is reported as an event');
    assert.deepEqual(up.accepted, []);
    assert.deepEqual(await messagesWithoutLiveJob(ctx.db), []);
  });

  test('blackholes (accepts TCP, never greets): deferred on the greeting timeout, then sent', async (t) => {
    const { up } = await deferredThenSent('blackhole', /greeting|timeout|timed out/i);
    t.diagnostic(`blackhole: ${JSON.stringify({ connections: up.connections })}`);
  });

  test('greets one byte a second: deferred on the greeting timeout, then sent', async (t) => {
    const { up } = await deferredThenSent('tarpit-greeting', /greeting|timeout|timed out/i);
    t.diagnostic(`tarpit_greeting: ${JSON.stringify({ connections: up.connections })}`);
  });

  test('answers the final dot one byte a second: the attempt deadline ends it, deferred, then sent; a second copy is counted', async (t) => {
    const { up, id } = await deferredThenSent('tarpit-reply', /abort|deadline|timeout|timed out/i);
    const copies = up.arrivals.filter((x) => x === id).length;
    // The tarpit read the whole message before stalling: it may have kept that copy.
    assert.ok(copies >= 2, `the upstream read the message ${copies} times`);
    const [first] = await messages.listAttempts(ctx.db, id);
    assert.ok(first.duration_ms !== null && first.duration_ms < ATTEMPT_DEADLINE_MS + 5_000, `the stalled attempt took ${first.duration_ms} ms`);
    t.diagnostic(`tarpit_reply: ${JSON.stringify({ possible_duplicates: copies - 1, stalled_attempt_ms: first.duration_ms })}`);
  });

  test('hangs up right after the final dot: deferred, retried, sent; a second copy is counted', async (t) => {
    const { up, id } = await deferredThenSent('drop-after-dot', /connection|closed|ECONNRESET|unexpected/i);
    const copies = up.arrivals.filter((x) => x === id).length;
    assert.ok(copies >= 2, `the upstream read the message ${copies} times`);
    t.diagnostic(`drop_after_dot: ${JSON.stringify({ possible_duplicates: copies - 1 })}`);
  });
});

test('two workers on one queue never deliver a message at once, and deliver each once', async () => {
  const up = await upstream('accept');
  const r = await route('shared', up.port, { concurrency: 4 });
  const second = await startDelivery(ctx, { reconcileIntervalMs: 300, routePollMs: 200, orphanAfterSeconds: 1, deliveryDeadlineMs: ATTEMPT_DEADLINE_MS });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await queue(r));
    await until('every message sent', async () => {
      const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages WHERE route_id = ${r.id} AND status = 'sent'`.execute(ctx.db);
      return rows.rows[0].n === ids.length ? true : undefined;
    }, 45_000);
    assert.deepEqual(up.overlaps, [], 'no message in two deliveries at once');
    for (const id of ids) assert.equal(up.accepted.filter((x) => x === id).length, 1, `message ${id} delivered once`);
    assert.deepEqual(await messagesWithoutLiveJob(ctx.db), []);
  } finally {
    await second.stop(2_000);
  }
});
