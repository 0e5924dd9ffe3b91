// The two statements of a delivery's common case (src/db/messages.repository.ts): loadForDelivery
// reads a message with its recipients and route in one query (loadManyForDelivery a fetched
// batch's at once), and recordFinalAttempt writes a final attempt in one statement, only while
// the message still waits on the job that made it; recordFinalAttempts several at once, as
// FinalRecords (src/delivery/final-records.ts) groups the deliveries that end together.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as messages from '../../src/db/messages.repository.ts';
import type { Route } from '../../src/db/schema.ts';
import { CompiledQuery, sql } from 'kysely';
import { BatchLoad } from '../../src/delivery/deliver.ts';
import { FinalRecords } from '../../src/delivery/final-records.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { deleteRoute } from '../../src/db/routes.repository.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { acceptedMessage } from '../helpers/accepted.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
let route: Route;
let otherRoute: Route;

before(async () => {
  ctx = await testContext();
  const tenant = await createTenant(ctx.db, { name: 'rowsco' });
  route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'main', transport: 'capture' });
  const other = await createTenant(ctx.db, { name: 'otherco' });
  otherRoute = await createRoute(ctx.db, ctx.box, other.id, { name: 'theirs', transport: 'capture' });
});

after(async () => {
  await ctx?.close();
});

const recipients = ['first@example.org', 'second@example.org', 'third@example.org'];

/** A queued message on `route`; its first job's id is its own id. */
async function queued(): Promise<string> {
  return await commitMessage(ctx, acceptedMessage(route, { recipients }));
}

function finalAttempt(id: string, overrides: Partial<messages.FinalAttempt> = {}): messages.FinalAttempt {
  return {
    jobId: id,
    message: { id, tenant_id: route.tenant_id, tag: 'untagged', route_name: route.name },
    status: 'sent',
    attempt: { route_id: route.id, route_name: route.name, number: 1, response: '250 ok', duration_ms: 12 },
    recipients: [
      { address: 'first@example.org', status: 'sent', response: '250 ok' },
      { address: 'second@example.org', status: 'failed', response: '550 no such user' },
      { address: 'third@example.org', status: 'sent', response: '250 ok' },
    ],
    event: { type: 'sent', detail: { attempt: 1, delivered: 2 } },
    ...overrides,
  };
}

async function written(id: string) {
  return {
    message: (await messages.findMessageMeta(ctx.db, id))!,
    recipients: await messages.listRecipients(ctx.db, id),
    attempts: await messages.listAttempts(ctx.db, id),
    events: (await messages.listEvents(ctx.db, id)).map((e) => e.type),
  };
}

describe('loadForDelivery', () => {
  test('reads the message, its recipients in order and its route', async () => {
    const id = await queued();
    const loaded = await messages.loadForDelivery(ctx.db, id);
    assert.ok(loaded);
    assert.equal(loaded.message.id, id);
    assert.equal(loaded.message.status, 'queued');
    assert.ok(Buffer.isBuffer(loaded.message.mime) && loaded.message.mime.includes('<p>hello</p>'));
    assert.ok(loaded.message.created_at instanceof Date);
    assert.deepEqual(loaded.recipients, recipients.map((address) => ({ address, status: 'queued', response: null })));
    // The route as findRouteById reads it, timestamps included (the transport cache keys on updated_at).
    assert.deepEqual(loaded.route, route);
  });

  test('no route once it was deleted; undefined for an unknown message', async () => {
    const scratch = await createRoute(ctx.db, ctx.box, route.tenant_id, { name: 'scratch', transport: 'capture' });
    const id = await commitMessage(ctx, acceptedMessage(scratch));
    // Straight from the table: the service refuses while messages wait on the route.
    await deleteRoute(ctx.db, route.tenant_id, scratch.id);
    const loaded = await messages.loadForDelivery(ctx.db, id);
    assert.ok(loaded);
    assert.equal(loaded.route, undefined);
    assert.equal(await messages.loadForDelivery(ctx.db, '00000000-0000-7000-8000-000000000000'), undefined);
  });

  test("never joins another tenant's route, whatever route_id says", async () => {
    const id = await queued();
    await messages.updateMessage(ctx.db, id, { route_id: otherRoute.id });
    const loaded = await messages.loadForDelivery(ctx.db, id);
    assert.ok(loaded);
    assert.equal(loaded.route, undefined);
  });
});

describe('loadManyForDelivery and a batch load', () => {
  test('reads each message of a batch as loadForDelivery does, but none over the size bound', async () => {
    const ids = [await queued(), await queued(), await queued()];
    const big = await commitMessage(ctx, acceptedMessage(route, { recipients, size: 300 * 1024 }));
    const loads = await messages.loadManyForDelivery(ctx.db, [...ids, big, '00000000-0000-7000-8000-000000000000'], 256 * 1024);
    assert.deepEqual([...loads.keys()].sort(), [...ids].sort(), 'the large one and the unknown id are left out');
    for (const id of ids) assert.deepEqual(loads.get(id), await messages.loadForDelivery(ctx.db, id));
  });

  test('a job takes its message from the batch once, and only while the load is fresh', async () => {
    const [a, b] = [await queued(), await queued()];
    const batch = new BatchLoad(ctx, [a, b]);
    assert.equal((await batch.take(a))?.message.id, a);
    assert.equal(await batch.take(a), undefined, 'taken once');
    const stale = new BatchLoad(ctx, [a, b], 20);
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(await stale.take(b), undefined, 'loaded too long ago: the job loads it again');
  });
});

describe('recordFinalAttempt', () => {
  test('writes the attempt, each recipient, the status and the event', async () => {
    const id = await queued();
    assert.equal(await messages.recordFinalAttempt(ctx.db, finalAttempt(id)), true);
    const w = await written(id);
    assert.equal(w.message.status, 'sent');
    assert.equal(w.message.attempts, 1);
    assert.ok(w.message.sent_at instanceof Date);
    assert.equal(w.message.next_attempt_at, null);
    assert.deepEqual(
      w.recipients.map((r) => [r.address, r.status, r.response]),
      [
        ['first@example.org', 'sent', '250 ok'],
        ['second@example.org', 'failed', '550 no such user'],
        ['third@example.org', 'sent', '250 ok'],
      ],
    );
    assert.deepEqual(
      w.attempts.map((a) => [a.number, a.outcome, a.response, a.duration_ms, a.route_id]),
      [[1, 'sent', '250 ok', 12, route.id]],
    );
    assert.deepEqual(w.events, ['accepted', 'sent']);
  });

  test('failed: no sent_at; the recipients not in the attempt are left as they were', async () => {
    const id = await queued();
    const attempt = finalAttempt(id, {
      status: 'failed',
      recipients: [{ address: 'second@example.org', status: 'failed', response: '550 no such user' }],
      event: { type: 'failed', detail: { reason: 'refused' } },
    });
    assert.equal(await messages.recordFinalAttempt(ctx.db, attempt), true);
    const w = await written(id);
    assert.equal(w.message.status, 'failed');
    assert.equal(w.message.sent_at, null);
    assert.deepEqual(w.recipients.map((r) => r.status), ['queued', 'failed', 'queued']);
    assert.deepEqual(w.attempts.map((a) => a.outcome), ['failed']);
    assert.deepEqual(w.events, ['accepted', 'failed']);
  });

  test('writes nothing for a job the message no longer waits on, or once it is final', async () => {
    const id = await queued();
    const before = await written(id);
    assert.equal(await messages.recordFinalAttempt(ctx.db, finalAttempt(id, { jobId: '00000000-0000-7000-8000-000000000001' })), false);
    assert.deepEqual(await written(id), before, 'a stale job wrote nothing');

    assert.equal(await messages.recordFinalAttempt(ctx.db, finalAttempt(id)), true);
    const after = await written(id);
    assert.equal(await messages.recordFinalAttempt(ctx.db, finalAttempt(id, { status: 'failed' })), false);
    assert.deepEqual(await written(id), after, 'a second record of the same job wrote nothing');
  });

  test('two workers recording the same job at once: exactly one writes', async () => {
    for (let round = 0; round < 5; round++) {
      const id = await queued();
      const results = await Promise.all([messages.recordFinalAttempt(ctx.db, finalAttempt(id)), messages.recordFinalAttempt(ctx.db, finalAttempt(id, { status: 'failed' }))]);
      assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${results}`);
      const w = await written(id);
      assert.equal(w.attempts.length, 1);
      assert.equal(w.events.length, 2);
      assert.equal(w.message.status, results[0] ? 'sent' : 'failed');
    }
  });
});

/** How many transactions last wrote these messages' rows (rows one transaction writes share its xmin). */
async function transactionsOf(ids: string[]): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(DISTINCT xmin::text)::int AS n FROM messages WHERE id = ANY(${ids}::uuid[])`.execute(ctx.db);
  return rows[0].n;
}

describe('recordFinalAttempts and their grouping (FinalRecords)', () => {
  test('several in one statement: each with its own recipients, status and event; stale or final ones are left out', async () => {
    const [a, b, stale, done] = [await queued(), await queued(), await queued(), await queued()];
    assert.equal(await messages.recordFinalAttempt(ctx.db, finalAttempt(done)), true);
    const beforeStale = await written(stale);
    const beforeDone = await written(done);
    const results = await messages.recordFinalAttempts(ctx.db, [
      finalAttempt(a),
      finalAttempt(stale, { jobId: '00000000-0000-7000-8000-000000000002' }),
      finalAttempt(b, {
        status: 'failed',
        attempt: { route_id: null, route_name: 'gone', number: 3, response: '550 no', duration_ms: 7 },
        recipients: [{ address: 'third@example.org', status: 'failed', response: '550 no' }],
        event: { type: 'failed', detail: { reason: 'refused' } },
      }),
      finalAttempt(done, { status: 'failed' }),
    ]);
    assert.deepEqual(results, [true, false, true, false]);
    const wa = await written(a);
    assert.equal(wa.message.status, 'sent');
    assert.ok(wa.message.sent_at instanceof Date);
    assert.deepEqual(wa.recipients.map((r) => r.status), ['sent', 'failed', 'sent']);
    assert.deepEqual(wa.events, ['accepted', 'sent']);
    const wb = await written(b);
    assert.equal(wb.message.status, 'failed');
    assert.equal(wb.message.attempts, 3);
    assert.equal(wb.message.sent_at, null);
    assert.deepEqual(wb.recipients.map((r) => [r.status, r.response]), [['queued', null], ['queued', null], ['failed', '550 no']], "only b's own recipient");
    assert.deepEqual(wb.attempts.map((x) => [x.number, x.outcome, x.route_id, x.route_name, x.duration_ms]), [[3, 'failed', null, 'gone', 7]]);
    assert.deepEqual(wb.events, ['accepted', 'failed']);
    assert.equal(await transactionsOf([a, b]), 1, 'a and b in one transaction');
    assert.deepEqual(await written(stale), beforeStale, 'a stale job wrote nothing');
    assert.deepEqual(await written(done), beforeDone, 'a final message is left as it was');
  });

  test('records that end together share a statement; each learns whether its own was written', async () => {
    const finals = new FinalRecords(ctx.db);
    const ids = await Promise.all(Array.from({ length: 30 }, () => queued()));
    // A second record of the first message in the same burst goes in a later group: too late.
    const results = await Promise.all([...ids.map((id) => finals.record(finalAttempt(id))), finals.record(finalAttempt(ids[0], { status: 'failed' }))]);
    assert.deepEqual(results, [...ids.map(() => true), false]);
    // The first is written at once, alone; the 29 that came meanwhile go together after it.
    assert.equal(await transactionsOf(ids), 2);
    for (const id of ids) {
      const w = await written(id);
      assert.equal(w.message.status, 'sent');
      assert.equal(w.attempts.length, 1);
      assert.deepEqual(w.events, ['accepted', 'sent']);
    }
  });

  test("reads only its own messages' rows, however large the backlog and however stale the statistics", async () => {
    // Statistics taken while every message was delivered, then a backlog (a slow upstream, a
    // burst) that grew faster than autovacuum's ANALYZE. With a join, the planner took the
    // waiting messages for a handful and hashed the input against all of them: a scan of the
    // whole backlog per record, slowing delivery most when the backlog is largest.
    await Promise.all(Array.from({ length: 300 }, () => queued()));
    await sql`UPDATE messages SET status = 'sent' WHERE status IN ('queued', 'deferred')`.execute(ctx.db);
    await sql`ANALYZE messages, recipients`.execute(ctx.db);
    const ids = await Promise.all(Array.from({ length: 2000 }, () => queued()));
    const statement = messages.finalAttemptsStatement(ctx.db, [finalAttempt(ids[0]), finalAttempt(ids[1])]);
    const plan = await ctx.db.connection().execute(async (conn) => {
      await sql`BEGIN`.execute(conn);
      try {
        const r = await conn.executeQuery<{ 'QUERY PLAN': unknown }>(CompiledQuery.raw(`EXPLAIN (ANALYZE, FORMAT JSON) ${statement.sql}`, [...statement.parameters]));
        return r.rows[0]['QUERY PLAN'];
      } finally {
        await sql`ROLLBACK`.execute(conn);
      }
    });
    const visited: string[] = [];
    const walk = (node: Record<string, unknown>) => {
      const on = String(node['Relation Name'] ?? node['Index Name'] ?? '');
      if (/^(messages|recipients)/.test(on)) {
        const rows = Number(node['Actual Rows']) + Number(node['Rows Removed by Filter'] ?? 0) + Number(node['Rows Removed by Index Recheck'] ?? 0);
        visited.push(`${node['Node Type']} on ${on}${node['Index Name'] ? ` (${String(node['Index Name'])})` : ''}: ${rows * Number(node['Actual Loops'])}`);
      }
      for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
    };
    walk((plan as { Plan: Record<string, unknown> }[])[0].Plan);
    assert.ok(visited.some((v) => v.includes('on messages')) && visited.some((v) => v.includes('on recipients')), visited.join('; '));
    // Two messages of three recipients each: a few dozen rows at most, against 2,000 messages and 6,000 recipients.
    for (const v of visited) assert.ok(Number(v.split(': ')[1]) <= 40, `${v} rows (${visited.join('; ')})`);
    assert.deepEqual(await messages.recordFinalAttempts(ctx.db, [finalAttempt(ids[0]), finalAttempt(ids[1])]), [true, true]);
  });

  test('a record the database refuses fails alone: the others of its group are written', async () => {
    const finals = new FinalRecords(ctx.db);
    const ids = await Promise.all(Array.from({ length: 8 }, () => queued()));
    // A route id that names no route breaks the attempts table's foreign key, and so the statement.
    const bad = finalAttempt(ids[4], { attempt: { route_id: '00000000-0000-7000-8000-0000000000ff', route_name: 'x', number: 1, response: null, duration_ms: 1 } });
    const results = await Promise.allSettled(ids.map((id, i) => finals.record(i === 4 ? bad : finalAttempt(id))));
    assert.deepEqual(results.map((r) => r.status), ids.map((_, i) => (i === 4 ? 'rejected' : 'fulfilled')));
    assert.match(String((results[4] as PromiseRejectedResult).reason), /foreign key/);
    for (const [i, id] of ids.entries()) assert.equal((await written(id)).message.status, i === 4 ? 'queued' : 'sent');
  });
});
