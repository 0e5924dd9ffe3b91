// Message statistics: events recorded by the real commit and delivery code, folded into
// stats_hourly by the roll-up, read back per tag and bucket, over a fresh migrated PostgreSQL.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { createApiApp } from '../../src/api/app.ts';
import { insertEvent } from '../../src/db/messages.repository.ts';
import type { Route, Tenant } from '../../src/db/schema.ts';
import { queryStats, rollUp } from '../../src/db/stats.repository.ts';
import { processJob, type DeliveryDeps } from '../../src/delivery/deliver.ts';
import { createTransport, TransportCache } from '../../src/delivery/transports/index.ts';
import { startRollUp } from '../../src/events/rollup.ts';
import { acceptedMessage } from '../helpers/accepted.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { getStats } from '../../src/services/stats.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { reply, startUpstream, type Upstream } from '../delivery/upstream.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { callJson, type Reply } from '../helpers/http.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const at = (base: string, offsetMs = 0): Date => new Date(new Date(base).getTime() + offsetMs);
const iso = (d: Date): string => d.toISOString();

const COUNTS = { accepted: 0, sent: 0, deferred: 0, failed: 0, unique_opens: 0, unique_clicks: 0 };
const point = (when: Date, counts: Partial<typeof COUNTS>) => ({ at: iso(when), ...COUNTS, ...counts });

let ctx: TestContext;
let deps: DeliveryDeps;
let upstream: Upstream;
const flakySeen = new Set<string>();

async function tenantWithRoutes(name: string): Promise<{ tenant: Tenant; capture: Route; smtp: Route }> {
  const tenant = await createTenant(ctx.db, { name });
  const capture = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'capture', transport: 'capture' });
  const smtp = await createRoute(ctx.db, ctx.box, tenant.id, {
    name: 'upstream',
    transport: 'smtp',
    config: { host: '127.0.0.1', port: upstream.port },
    max_attempts: 3,
  });
  return { tenant, capture, smtp };
}

/** Accepts a message the way the SMTP listener does: message row, `accepted` event and job. */
async function accept(route: Route, tag: string, to = ['someone@example.net']): Promise<string> {
  return await commitMessage(ctx, acceptedMessage(route, { tag, subject: 'stats', recipients: to }));
}

/** One delivery attempt by the worker's own code: records sent, deferred or failed and its event. */
async function deliver(messageId: string): Promise<string> {
  const m = await ctx.db.selectFrom('messages').select(['job_id', 'status']).where('id', '=', messageId).executeTakeFirstOrThrow();
  assert.ok(m.job_id, 'the message has a job');
  await processJob(deps, { id: m.job_id, data: { messageId } });
  const after = await ctx.db.selectFrom('messages').select('status').where('id', '=', messageId).executeTakeFirstOrThrow();
  return after.status;
}

/** Moves a message's events (all, or those of some types) to a chosen time. */
async function moveEvents(messageId: string, when: Date, types?: string[]): Promise<void> {
  const only = types ? sql`AND type IN (${sql.join(types)})` : sql``;
  await sql`UPDATE events SET at = ${when} WHERE message_id = ${messageId} ${only}`.execute(ctx.db);
}

/** Rolls up until nothing is left; returns how many events that took. */
async function rollUpAll(batchSize = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await rollUp(ctx.db, batchSize);
    total += n;
    if (n === 0) return total;
  }
}

async function unrolled(tenantId: string): Promise<number> {
  const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM events WHERE tenant_id = ${tenantId} AND NOT rolled_up`.execute(ctx.db);
  return r.rows[0].n;
}

before(async () => {
  ctx = await testContext();
  // Recipients decide the upstream's answer: soft@ is told to try later, hard@ is refused.
  upstream = await startUpstream({
    rcptTo(address) {
      if (address.startsWith('soft@')) return reply(451, '4.3.0 try again later');
      // flaky@ is told to try later once, then accepted.
      if (address.startsWith('flaky') && !flakySeen.has(address)) {
        flakySeen.add(address);
        return reply(451, '4.3.0 try again later');
      }
      if (address.startsWith('hard@')) return reply(550, '5.1.1 no such user');
      return undefined;
    },
  });
  const transports = new TransportCache((route) => createTransport(route, { box: ctx.box, hostname: 'relay.test' }));
  deps = { ctx, transports, deadlineMs: 10_000, shutdown: new AbortController().signal };
});

after(async () => {
  await deps?.transports.closeAll();
  await upstream?.close();
  await ctx?.close();
});

describe('stats roll-up and query', () => {
  test('counts per tag and bucket from the roll-up, by the hour and by the day', async () => {
    const { tenant, capture, smtp } = await tenantWithRoutes('alpha');
    const T0 = '2026-03-10T00:00:00Z';

    const w1 = await accept(capture, 'welcome');
    const w2 = await accept(capture, 'welcome');
    const w3 = await accept(capture, 'welcome');
    for (const id of [w1, w2, w3]) assert.equal(await deliver(id), 'sent');
    const r1 = await accept(smtp, 'reset', ['soft@example.net']);
    const r2 = await accept(smtp, 'reset', ['hard@example.net']);
    assert.equal(await deliver(r1), 'deferred');
    assert.equal(await deliver(r2), 'failed');

    // Opens and clicks as tracking records them: `first: true` on a message's first one only.
    const ref = (id: string) => ({ id, tenant_id: tenant.id, tag: 'welcome', route_name: 'capture' });
    await insertEvent(ctx.db, ref(w1), { type: 'opened', detail: { first: true } });
    await insertEvent(ctx.db, ref(w1), { type: 'opened', detail: { first: false } });
    await insertEvent(ctx.db, ref(w1), { type: 'clicked', detail: { first: true, url: 'https://example.com/' } });
    await insertEvent(ctx.db, ref(w2), { type: 'opened', detail: { first: true } });
    await insertEvent(ctx.db, ref(w2), { type: 'clicked', detail: {} });
    // A type stats do not count is marked rolled up and changes nothing.
    await insertEvent(ctx.db, ref(w2), { type: 'webhook.note' });

    await moveEvents(w1, at(T0, 10 * 60_000));
    await moveEvents(w2, at(T0, 50 * 60_000));
    await moveEvents(w3, at(T0, DAY + 3 * HOUR + 20 * 60_000));
    await moveEvents(r1, at(T0, HOUR + 5 * 60_000));
    await moveEvents(r2, at(T0, HOUR + 59 * 60_000));

    assert.equal(await unrolled(tenant.id), 16);
    assert.ok((await rollUpAll()) >= 16);
    assert.equal(await unrolled(tenant.id), 0);

    const raw = await ctx.db.selectFrom('stats_hourly').selectAll().where('tenant_id', '=', tenant.id).where('tag', '=', 'welcome').where('hour', '=', new Date(T0)).executeTakeFirstOrThrow();
    assert.deepEqual(
      { opened: raw.opened, clicked: raw.clicked, unique_opened: raw.unique_opened, unique_clicked: raw.unique_clicked },
      { opened: 3, clicked: 2, unique_opened: 2, unique_clicked: 1 },
    );

    const hourly = await getStats(ctx.db, { from: T0, to: iso(at(T0, 2 * DAY)), interval: 'hour' }, tenant.id);
    assert.deepEqual(hourly, {
      from: iso(at(T0)),
      to: iso(at(T0, 2 * DAY)),
      interval: 'hour',
      tags: [
        {
          tag: 'reset',
          totals: { ...COUNTS, accepted: 2, deferred: 1, failed: 1, delivery_rate: 0 },
          series: [point(at(T0, HOUR), { accepted: 2, deferred: 1, failed: 1 })],
        },
        {
          tag: 'welcome',
          totals: { ...COUNTS, accepted: 3, sent: 3, unique_opens: 2, unique_clicks: 1, delivery_rate: 1 },
          series: [
            point(at(T0), { accepted: 2, sent: 2, unique_opens: 2, unique_clicks: 1 }),
            point(at(T0, DAY + 3 * HOUR), { accepted: 1, sent: 1 }),
          ],
        },
      ],
    });

    const daily = await getStats(ctx.db, { from: T0, to: iso(at(T0, 2 * DAY)) }, tenant.id);
    assert.equal(daily.interval, 'day');
    assert.deepEqual(
      daily.tags.map((t) => [t.tag, t.series]),
      [
        ['reset', [point(at(T0), { accepted: 2, deferred: 1, failed: 1 })]],
        ['welcome', [point(at(T0), { accepted: 2, sent: 2, unique_opens: 2, unique_clicks: 1 }), point(at(T0, DAY), { accepted: 1, sent: 1 })]],
      ],
    );
    assert.deepEqual(daily.tags.map((t) => t.totals), hourly.tags.map((t) => t.totals));

    // A period that ends before the second day leaves that day out.
    const firstDay = await getStats(ctx.db, { from: T0, to: iso(at(T0, DAY)), interval: 'day' }, tenant.id);
    assert.equal(firstDay.tags.find((t) => t.tag === 'welcome')?.totals.accepted, 2);

    // Filters by tag and by route read the same roll-up rows: welcome went over `capture`, reset
    // over `upstream`; the opens and clicks count on the message's route.
    const period = { from: T0, to: iso(at(T0, 2 * DAY)) };
    const byRoute = async (route: string) => (await getStats(ctx.db, { ...period, route }, tenant.id)).tags.map((t) => [t.tag, t.totals.accepted, t.totals.sent, t.totals.unique_opens]);
    assert.deepEqual(await byRoute('capture'), [['welcome', 3, 3, 2]]);
    assert.deepEqual(await byRoute('upstream'), [['reset', 2, 0, 0]]);
    assert.deepEqual(await byRoute('no-such-route'), []);
    const onlyReset = await getStats(ctx.db, { ...period, tag: 'reset' }, tenant.id);
    assert.deepEqual(onlyReset.tags.map((t) => t.tag), ['reset']);
    assert.deepEqual(onlyReset.tags[0].totals, hourly.tags[0].totals);
  });

  test('mixed outcomes: sent, failed and deferred-then-sent, each counted once in the roll-up', async () => {
    const { tenant, smtp } = await tenantWithRoutes('mixed');
    const ok = await accept(smtp, 'mixed', ['ok@example.net']);
    const bad = await accept(smtp, 'mixed', ['hard@example.net']);
    const flaky = await accept(smtp, 'mixed', ['flaky@example.net']);
    assert.equal(await deliver(ok), 'sent');
    assert.equal(await deliver(bad), 'failed');
    assert.equal(await deliver(flaky), 'deferred');
    assert.equal(await deliver(flaky), 'sent');
    const types = await ctx.db.selectFrom('events').select('type').where('message_id', '=', flaky).orderBy('id').execute();
    assert.deepEqual(types.map((e) => e.type), ['accepted', 'deferred', 'sent'], 'one event per status change');

    const expected = { ...COUNTS, accepted: 3, sent: 2, deferred: 1, failed: 1, delivery_rate: 0.6667 };
    // Before the roll-up (counted from the events) and after it (from stats_hourly): the same.
    assert.deepEqual((await getStats(ctx.db, {}, tenant.id)).tags.map((t) => [t.tag, t.totals]), [['mixed', expected]]);
    await rollUpAll();
    assert.equal(await unrolled(tenant.id), 0);
    assert.deepEqual((await getStats(ctx.db, {}, tenant.id)).tags.map((t) => [t.tag, t.totals]), [['mixed', expected]]);
    const byRoute = await getStats(ctx.db, { route: 'upstream' }, tenant.id);
    assert.deepEqual(byRoute.tags.map((t) => t.totals), [expected]);
  });

  test('events not rolled up yet are counted, once, before and after the roll-up', async () => {
    const { tenant, capture } = await tenantWithRoutes('beta');
    const a = await accept(capture, 'news');
    const b = await accept(capture, 'news');
    await deliver(a);
    await deliver(b);
    assert.equal(await unrolled(tenant.id), 4);

    const fresh = await getStats(ctx.db, {}, tenant.id);
    assert.equal(fresh.interval, 'day');
    assert.deepEqual(fresh.tags.map((t) => [t.tag, t.totals]), [['news', { ...COUNTS, accepted: 2, sent: 2, delivery_rate: 1 }]]);
    // Default period: the 7 days before now, in whole UTC days, today included.
    assert.equal(new Date(fresh.to).getTime() - new Date(fresh.from).getTime(), 8 * DAY);
    assert.ok(new Date(fresh.to).getTime() > Date.now());

    await rollUpAll();
    assert.equal(await unrolled(tenant.id), 0);
    assert.deepEqual((await getStats(ctx.db, {}, tenant.id)).tags, fresh.tags);

    // Rolled-up and fresh events of one bucket add up.
    await accept(capture, 'news');
    const mixed = await getStats(ctx.db, {}, tenant.id);
    assert.deepEqual(mixed.tags[0].totals, { ...COUNTS, accepted: 3, sent: 2, delivery_rate: 1 });
    const summed = mixed.tags[0].series.reduce((n, p) => n + p.accepted, 0);
    assert.equal(summed, 3);
  });

  test('concurrent roll-ups count every event exactly once', async () => {
    const { tenant, capture } = await tenantWithRoutes('gamma');
    const m = await accept(capture, 'bulk');
    await rollUpAll();
    const T0 = '2026-03-20T00:00:00Z';
    const N = 6000;
    // Six types over three tags and five hours: every batch adds to the same 15 counter rows.
    await sql`
      INSERT INTO events (message_id, tenant_id, type, tag, at, detail)
      SELECT ${m}::uuid, ${tenant.id}::uuid,
             (ARRAY['accepted', 'sent', 'deferred', 'failed', 'opened', 'clicked'])[1 + i % 6],
             'tag-' || (i % 3),
             ${new Date(T0)}::timestamptz + (i % 5) * interval '1 hour' + (i % 59) * interval '1 minute',
             jsonb_build_object('first', i % 12 < 6)
        FROM generate_series(1, ${N}) AS i`.execute(ctx.db);

    const expected = await sql<{ tag: string; hour: Date; accepted: number; sent: number; deferred: number; failed: number; opened: number; clicked: number; unique_opened: number; unique_clicked: number }>`
      SELECT tag, date_trunc('hour', at, 'UTC') AS hour,
             count(*) FILTER (WHERE type = 'accepted')::int AS accepted, count(*) FILTER (WHERE type = 'sent')::int AS sent,
             count(*) FILTER (WHERE type = 'deferred')::int AS deferred, count(*) FILTER (WHERE type = 'failed')::int AS failed,
             count(*) FILTER (WHERE type = 'opened')::int AS opened, count(*) FILTER (WHERE type = 'clicked')::int AS clicked,
             count(*) FILTER (WHERE type = 'opened' AND detail->>'first' = 'true')::int AS unique_opened,
             count(*) FILTER (WHERE type = 'clicked' AND detail->>'first' = 'true')::int AS unique_clicked
        FROM events WHERE tenant_id = ${tenant.id} AND at >= ${new Date(T0)} AND at < ${at(T0, DAY)}
       GROUP BY 1, 2 ORDER BY 1, 2`.execute(ctx.db);
    assert.equal(expected.rows.length, 15);

    // Before: the answer comes from the events alone.
    const before = await getStats(ctx.db, { from: T0, to: iso(at(T0, DAY)), interval: 'hour' }, tenant.id);

    const workers = Array.from({ length: 8 }, async () => {
      let mine = 0;
      for (;;) {
        const n = await rollUp(ctx.db, 50);
        if (n === 0) return mine;
        mine += n;
      }
    });
    const taken = await Promise.all(workers);
    assert.equal(taken.reduce((a, b) => a + b, 0), N, `${taken.join(' + ')} events rolled up`);
    assert.ok(taken.filter((n) => n > 0).length > 1, 'several roll-ups took part');
    assert.equal(await unrolled(tenant.id), 0);
    assert.equal(await rollUp(ctx.db, 50), 0);

    const rows = await ctx.db
      .selectFrom('stats_hourly')
      .select(['tag', 'hour', 'accepted', 'sent', 'deferred', 'failed', 'opened', 'clicked', 'unique_opened', 'unique_clicked'])
      .where('tenant_id', '=', tenant.id)
      .where('hour', '>=', new Date(T0))
      .where('hour', '<', at(T0, DAY))
      .orderBy('tag')
      .orderBy('hour')
      .execute();
    assert.deepEqual(rows, expected.rows);

    // After: the same answer from the roll-up alone.
    const afterwards = await getStats(ctx.db, { from: T0, to: iso(at(T0, DAY)), interval: 'hour' }, tenant.id);
    assert.deepEqual(afterwards, before);
    assert.equal(afterwards.tags.reduce((n, t) => n + t.totals.accepted + t.totals.sent + t.totals.deferred + t.totals.failed, 0), (N / 6) * 4);
  });

  test("tenant isolation: one tenant's stats never include another's", async () => {
    const delta = await tenantWithRoutes('delta');
    const epsilon = await tenantWithRoutes('epsilon');
    const T1 = '2026-04-01T08:00:00Z';
    for (const route of [delta.capture, delta.capture, epsilon.capture]) {
      const id = await accept(route, 'welcome');
      await deliver(id);
      await moveEvents(id, at(T1));
    }
    await rollUpAll();
    // And one of epsilon's still fresh, in the same tag and hour.
    const fresh = await accept(epsilon.capture, 'welcome');
    await moveEvents(fresh, at(T1, 30 * 60_000));

    const period = { from: T1, to: iso(at(T1, HOUR)), interval: 'hour' };
    const totals = async (query: Record<string, string>, tenantId?: string) =>
      (await getStats(ctx.db, query, tenantId)).tags.map((t) => [t.tag, t.totals.accepted, t.totals.sent]);

    assert.deepEqual(await totals(period, delta.tenant.id), [['welcome', 2, 2]]);
    assert.deepEqual(await totals(period, epsilon.tenant.id), [['welcome', 2, 1]]);
    // A tenant's own view ignores `tenant` in its query.
    assert.deepEqual(await totals({ ...period, tenant: 'delta' }, epsilon.tenant.id), [['welcome', 2, 1]]);
    // The admin sees one tenant by name or id, or every tenant with same-named tags added up.
    assert.deepEqual(await totals({ ...period, tenant: 'delta' }), [['welcome', 2, 2]]);
    assert.deepEqual(await totals({ ...period, tenant: epsilon.tenant.id }), [['welcome', 2, 1]]);
    assert.deepEqual(await totals(period), [['welcome', 4, 3]]);
    const rows = await queryStats(ctx.db, { tenantId: delta.tenant.id, from: new Date(T1), to: at(T1, HOUR), interval: 'hour' });
    assert.deepEqual(rows.map((r) => r.accepted), [2]);
  });

  test('day buckets are UTC days whatever the input offset or the session time zone', async () => {
    const { tenant, capture } = await tenantWithRoutes('eta');
    const late = await accept(capture, 'tz');
    const early = await accept(capture, 'tz');
    await deliver(late);
    await deliver(early);
    await moveEvents(late, new Date('2026-06-01T23:30:00Z'));
    await moveEvents(early, new Date('2026-06-02T00:30:00Z'));
    await rollUpAll();
    const third = await accept(capture, 'tz');
    await moveEvents(third, new Date('2026-06-02T00:45:00Z'));

    // 2026-06-01T01:00+02:00 is 2026-05-31T23:00Z: the period starts at that UTC day.
    const daily = await getStats(ctx.db, { from: '2026-06-01T01:00:00+02:00', to: '2026-06-02T12:00:00Z', interval: 'day' }, tenant.id);
    assert.equal(daily.from, '2026-05-31T00:00:00.000Z');
    assert.equal(daily.to, '2026-06-03T00:00:00.000Z');
    assert.deepEqual(daily.tags[0].series, [
      point(new Date('2026-06-01T00:00:00Z'), { accepted: 1, sent: 1 }),
      point(new Date('2026-06-02T00:00:00Z'), { accepted: 2, sent: 1 }),
    ]);
    const hourly = await getStats(ctx.db, { from: '2026-06-01T23:10:00Z', to: '2026-06-02T00:50:00Z', interval: 'hour' }, tenant.id);
    assert.equal(hourly.from, '2026-06-01T23:00:00.000Z');
    assert.equal(hourly.to, '2026-06-02T01:00:00.000Z');
    assert.deepEqual(hourly.tags[0].series, [
      point(new Date('2026-06-01T23:00:00Z'), { accepted: 1, sent: 1 }),
      point(new Date('2026-06-02T00:00:00Z'), { accepted: 2, sent: 1 }),
    ]);

    // A session in a half-hour zone neither moves buckets when querying nor when rolling up.
    const filter = { tenantId: tenant.id, from: new Date('2026-06-01T00:00:00Z'), to: new Date('2026-06-03T00:00:00Z'), interval: 'day' as const };
    const baseline = await queryStats(ctx.db, filter);
    for (const zone of ['Asia/Kolkata', 'America/St_Johns']) {
      await ctx.db.transaction().execute(async (trx) => {
        await sql`SELECT set_config('TimeZone', ${zone}, true)`.execute(trx);
        assert.deepEqual(await queryStats(trx, filter), baseline, zone);
      });
    }
    await ctx.db.transaction().execute(async (trx) => {
      await sql`SELECT set_config('TimeZone', 'Asia/Kolkata', true)`.execute(trx);
      assert.ok((await rollUp(trx, 1000)) >= 1);
    });
    assert.deepEqual(await queryStats(ctx.db, filter), baseline);
    const hours = await ctx.db.selectFrom('stats_hourly').select('hour').where('tenant_id', '=', tenant.id).orderBy('hour').execute();
    assert.deepEqual(hours.map((h) => iso(h.hour)), ['2026-06-01T23:00:00.000Z', '2026-06-02T00:00:00.000Z']);
  });

  test('the roll-up loop folds events in the background and stops cleanly', async () => {
    const { tenant, capture } = await tenantWithRoutes('theta');
    await rollUpAll();
    for (let i = 0; i < 3; i++) await deliver(await accept(capture, 'loop'));
    assert.equal(await unrolled(tenant.id), 6);
    // Batches of 2: one pass loops until a batch comes back short.
    const loop = startRollUp(ctx, { intervalMs: 20, batchSize: 2 });
    try {
      const deadline = Date.now() + 10_000;
      while ((await unrolled(tenant.id)) > 0) {
        assert.ok(Date.now() < deadline, 'the loop rolled the events up');
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await loop.stop();
    }
    await accept(capture, 'loop');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await unrolled(tenant.id), 1, 'no pass after stop()');
  });
});

describe('GET /admin/stats', () => {
  let server: http.Server;
  let base: string;
  const call = (path: string, token?: string | null): Promise<Reply> => callJson(base, 'GET', path, token === undefined ? {} : { token });

  function assertError(r: Reply, status: number, code: string, field?: string): void {
    assert.equal(r.status, status, r.text);
    assert.equal(r.body?.error?.code, code, r.text);
    if (field) assert.ok(r.body.error.details.fields.some((f: { path: string }) => f.path === field), r.text);
  }

  let tenant: Tenant;
  before(async () => {
    server = createApiApp(ctx).listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    ({ tenant } = await tenantWithRoutes('zeta'));
    const capture = await ctx.db.selectFrom('routes').selectAll().where('tenant_id', '=', tenant.id).where('name', '=', 'capture').executeTakeFirstOrThrow();
    for (let i = 0; i < 2; i++) {
      const id = await accept(capture, 'http');
      await deliver(id);
      await moveEvents(id, new Date('2026-05-05T10:15:00Z'));
    }
    await rollUpAll();
  });

  after(async () => {
    server?.closeAllConnections();
    if (server) await new Promise((resolve) => server.close(resolve));
  });

  test('filters by tenant (name or id), period and interval', async () => {
    const r = await call('/admin/stats?tenant=zeta&from=2026-05-05&to=2026-05-06&interval=hour');
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(r.body, {
      from: '2026-05-05T00:00:00.000Z',
      to: '2026-05-06T00:00:00.000Z',
      interval: 'hour',
      tags: [
        {
          tag: 'http',
          totals: { ...COUNTS, accepted: 2, sent: 2, delivery_rate: 1 },
          series: [point(new Date('2026-05-05T10:00:00Z'), { accepted: 2, sent: 2 })],
        },
      ],
    });
    assert.deepEqual((await call(`/admin/stats?tenant=${tenant.id}&from=2026-05-05&to=2026-05-06&interval=hour`)).body, r.body);

    const daily = await call('/admin/stats?tenant=zeta&from=2026-05-05&to=2026-05-06');
    assert.equal(daily.body.interval, 'day');
    assert.deepEqual(daily.body.tags[0].series, [point(new Date('2026-05-05T00:00:00Z'), { accepted: 2, sent: 2 })]);

    // Outside the period, nothing; without a tenant, every tenant's tags; empty values mean defaults.
    assert.deepEqual((await call('/admin/stats?tenant=zeta&from=2026-05-05T11:00:00Z&to=2026-05-06')).body.tags, [
      { tag: 'http', totals: { ...COUNTS, accepted: 2, sent: 2, delivery_rate: 1 }, series: [point(new Date('2026-05-05T00:00:00Z'), { accepted: 2, sent: 2 })] },
    ]);
    assert.deepEqual((await call('/admin/stats?tenant=zeta&from=2026-05-05T11:00:00Z&to=2026-05-06&interval=hour')).body.tags, []);
    const all = await call('/admin/stats?from=2026-05-05&to=2026-05-06&interval=hour');
    assert.deepEqual(all.body.tags.map((t: { tag: string }) => t.tag), ['http']);
    assert.equal((await call('/admin/stats?tenant=zeta&from=&to=&interval=')).status, 200);
  });

  test('401 without the admin token, 404 for an unknown tenant, 422 for a bad query', async () => {
    assertError(await call('/admin/stats', null), 401, 'unauthorized');
    assertError(await call('/admin/stats', 'not-the-admin-token'), 401, 'unauthorized');
    assertError(await call('/admin/stats?tenant=nobody'), 404, 'not_found');
    assertError(await call('/admin/stats?tenant=00000000-0000-4000-8000-000000000000'), 404, 'not_found');
    assertError(await call('/admin/stats?interval=week'), 422, 'validation_error', 'interval');
    assertError(await call('/admin/stats?interval=hour&interval=day'), 422, 'validation_error', 'interval');
    assertError(await call('/admin/stats?from=2026-05-06&to=2026-05-05'), 422, 'validation_error', 'from');
    assertError(await call('/admin/stats?from=yesterday'), 422, 'validation_error', 'from');
    assertError(await call('/admin/stats?to=2026-13-45'), 422, 'validation_error', 'to');
    // A future `from` is after the default `to` (now).
    assertError(await call(`/admin/stats?from=${new Date(Date.now() + 2 * DAY).toISOString()}`), 422, 'validation_error', 'from');
    // Too many buckets: a year by the hour; the same year by the day is fine.
    assertError(await call('/admin/stats?from=2025-01-01&to=2026-01-01&interval=hour'), 422, 'validation_error', 'from');
    assert.equal((await call('/admin/stats?from=2025-01-01&to=2026-01-01&interval=day')).status, 200);
  });
});
