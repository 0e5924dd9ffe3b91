// Group commit (src/pipeline/commit.ts createCommitter): messages that reach the commit together
// share transactions (one statement each, insertAcceptedMessages), each still gets its job, and
// one message the database refuses fails alone.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import type { Route } from '../../src/db/schema.ts';
import { commitMessage, createCommitter, type AcceptedMessage } from '../../src/pipeline/commit.ts';
import { deliveryJobsInsert, ensureQueue, queueName } from '../../src/queue.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { acceptedMessage } from '../helpers/accepted.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
let route: Route;

const message = (overrides: Partial<AcceptedMessage> = {}): AcceptedMessage =>
  acceptedMessage(route, {
    tag: 'group',
    subject: 'group commit',
    recipients: ['b@example.org', 'c@example.org'],
    attachments: [{ filename: 'a.pdf', content_type: 'application/pdf', size: 10 }],
    ...overrides,
  });

/** How many transactions wrote these messages (rows one transaction inserts share its xmin). */
async function transactionsOf(ids: string[]): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(DISTINCT xmin::text)::int AS n FROM messages WHERE id = ANY(${ids}::uuid[])`.execute(ctx.db);
  return rows[0].n;
}

/** Per message: its row, recipients, attachments, `accepted` event and queued job. */
async function stored(ids: string[]) {
  const count = async (table: string, column: string) => {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql.table(table)} WHERE ${sql.ref(column)} = ANY(${ids}::uuid[])`.execute(ctx.db);
    return rows[0].n;
  };
  const { rows: jobs } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pgboss.job WHERE name = ${queueName(route.id)} AND id = ANY(${ids}::uuid[]) AND data->>'messageId' = id::text`.execute(ctx.db);
  const { rows: events } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM events WHERE message_id = ANY(${ids}::uuid[]) AND type = 'accepted'`.execute(ctx.db);
  return {
    messages: await count('messages', 'id'),
    recipients: await count('recipients', 'message_id'),
    attachments: await count('attachments', 'message_id'),
    events: events[0].n,
    jobs: jobs[0].n,
  };
}

before(async () => {
  ctx = await testContext();
  const tenant = await createTenant(ctx.db, { name: 'groupco' });
  route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'main', transport: 'capture' });
});

after(async () => {
  await ctx?.close();
});

describe('group commit', () => {
  test('messages arriving together share a few transactions; each has its rows, event and job', async () => {
    const commit = createCommitter(ctx);
    const batch = Array.from({ length: 40 }, () => message());
    const ids = await Promise.all(batch.map((m) => commit(m)));
    assert.deepEqual(ids, batch.map((m) => m.id));
    assert.deepEqual(await stored(ids), { messages: 40, recipients: 80, attachments: 40, events: 40, jobs: 40 });
    // The first starts alone (nothing waits yet); the 39 behind it commit together.
    assert.equal(await transactionsOf(ids), 2);
  });

  test('a message alone commits at once, in its own transaction', async () => {
    const commit = createCommitter(ctx);
    const m = message();
    assert.equal(await commit(m), m.id);
    assert.deepEqual(await stored([m.id]), { messages: 1, recipients: 2, attachments: 1, events: 1, jobs: 1 });
  });

  test('a message over 1 MiB commits in a transaction of its own, beside a batch', async () => {
    const commit = createCommitter(ctx);
    const small = Array.from({ length: 10 }, () => message());
    // Pieces of whole lines, as buildMime gives them: the stored message is all of them in order.
    const line = (n: number) => `${String(n).padStart(6, '0')} ${'x'.repeat(69)}\r\n`;
    const pieces = [Buffer.from('Subject: big\r\n\r\n'), ...[0, 1].map((p) => Buffer.from(Array.from({ length: 10_000 }, (_, n) => line(p * 10_000 + n)).join('')))];
    const big = message({ mime: pieces, size: pieces.reduce((sum, p) => sum + p.length, 0) });
    assert.ok(big.size > 1024 * 1024);
    const ids = await Promise.all([...small.slice(0, 5), big, ...small.slice(5)].map((m) => commit(m)));
    assert.equal(ids.length, 11);
    assert.deepEqual(await stored(ids), { messages: 11, recipients: 22, attachments: 11, events: 11, jobs: 11 });
    const bytes = await ctx.db.selectFrom('messages').select(['mime', 'size', 'mime_compression']).where('id', '=', big.id).executeTakeFirstOrThrow();
    assert.ok(bytes.mime.equals(Buffer.concat(pieces)), 'stored whole, pieces in order');
    assert.equal(bytes.mime_compression, 'none', 'a message in pieces is never held whole to be compressed');
    assert.equal(bytes.size, big.size);
    const left = await ctx.db.selectFrom('mime_pieces').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
    assert.equal(Number(left.n), 0, 'no piece outlives the transaction');
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM messages o
      WHERE o.id = ANY(${ids}::uuid[]) AND o.id <> ${big.id} AND o.xmin::text = (SELECT xmin::text FROM messages WHERE id = ${big.id})`.execute(ctx.db);
    assert.equal(rows[0].n, 0, 'no other message shares its transaction');
    assert.ok((await transactionsOf(ids)) < 11, 'the small ones were still grouped');
  });

  test('one message the database refuses fails alone: the others of its batch are committed', async () => {
    const taken = message();
    await commitMessage(ctx, taken);
    const commit = createCommitter(ctx);
    const good = Array.from({ length: 6 }, () => message());
    // Same id as a stored message: its INSERT violates the primary key and fails the batch.
    const clash = message({ id: taken.id, subject: 'clash' });
    const results = await Promise.allSettled([...good.slice(0, 3), clash, ...good.slice(3)].map((m) => commit(m)));
    const refused = results.filter((r) => r.status === 'rejected');
    assert.equal(refused.length, 1, 'only the clashing message is refused');
    assert.equal(results[3].status, 'rejected');
    assert.match(String((results[3] as PromiseRejectedResult).reason), /duplicate key|unique/i);
    const ids = good.map((m) => m.id);
    assert.deepEqual(await stored(ids), { messages: 6, recipients: 12, attachments: 6, events: 6, jobs: 6 });
    const first = await ctx.db.selectFrom('messages').select('subject').where('id', '=', taken.id).executeTakeFirstOrThrow();
    assert.equal(first.subject, 'group commit', 'the stored message is untouched');
  });

  test('a job pg-boss skips (its id taken) fails the whole statement: no message is stored without its job', async () => {
    const m = message();
    // A job already holds the message's id: pg-boss's insert skips it (ON CONFLICT DO NOTHING).
    await ctx.boss.send(queueName(route.id), { messageId: 'someone else' }, { id: m.id });
    await assert.rejects(commitMessage(ctx, m), /companion0 inserted 0 rows of 1/);
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages WHERE id = ${m.id}`.execute(ctx.db);
    assert.equal(rows[0].n, 0);
    const events = await ctx.db.selectFrom('events').select('id').where('message_id', '=', m.id).execute();
    assert.equal(events.length, 0);
  });

  test('a batch over five routes commits in one statement, each message with a job on its own route', async () => {
    // Five routes: five of pg-boss's inserts in the one statement.
    const others = await Promise.all([1, 2, 3, 4].map((n) => createRoute(ctx.db, ctx.box, route.tenant_id, { name: `more-${n}-${Date.now()}`, transport: 'capture' })));
    const commit = createCommitter(ctx);
    const batch = Array.from({ length: 20 }, (_, i) => (i % 5 ? acceptedMessage(others[(i % 5) - 1], { tag: 'group' }) : message()));
    const ids = await Promise.all(batch.map((m) => commit(m)));
    assert.deepEqual(ids, batch.map((m) => m.id));
    const { rows } = await sql<{ id: string; name: string }>`SELECT id::text, name FROM pgboss.job WHERE id = ANY(${ids}::uuid[])`.execute(ctx.db);
    const queueOf = new Map(rows.map((r) => [r.id, r.name]));
    for (const m of batch) assert.equal(queueOf.get(m.id), queueName(m.routeId!), 'its job is on its own route');
    assert.equal(await transactionsOf(ids), 2, 'the first alone, the other 19 (over five routes) together');
  });

  test('pg-boss\'s job insert joins the accepting statement: a single INSERT, one text for every route', async () => {
    const other = await createRoute(ctx.db, ctx.box, route.tenant_id, { name: `third-${Date.now()}`, transport: 'capture' });
    for (const r of [route, other]) await ensureQueue(ctx.boss, r.id);
    const a = await deliveryJobsInsert(ctx.boss, route.id, ['0190a0a0-0000-7000-8000-000000000001']);
    const b = await deliveryJobsInsert(ctx.boss, other.id, ['0190a0a0-0000-7000-8000-000000000002', '0190a0a0-0000-7000-8000-000000000003']);
    assert.match(a.text, /^\s*INSERT INTO/);
    assert.equal(a.text, b.text, 'the queue name is a parameter, so one prepared statement serves every route');
    assert.ok(a.values.includes(queueName(route.id)) && b.values.includes(queueName(other.id)));
    assert.deepEqual([a.expected, b.expected], [1, 2]);
  });

  test('when the database refuses every message, each is refused and nothing of any is stored', async () => {
    // A trigger stands in for a database that fails the transaction (whatever the batch holds).
    await sql`CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`.execute(ctx.db);
    await sql`CREATE TRIGGER refuse_doomed BEFORE INSERT ON messages FOR EACH ROW WHEN (NEW.tag = 'doomed') EXECUTE FUNCTION refuse_doomed()`.execute(ctx.db);
    try {
      const commit = createCommitter(ctx);
      const batch = Array.from({ length: 8 }, () => message({ tag: 'doomed' }));
      const results = await Promise.allSettled(batch.map((m) => commit(m)));
      assert.deepEqual(results.map((r) => r.status), Array(8).fill('rejected'));
      for (const r of results) assert.match(String((r as PromiseRejectedResult).reason), /refused by the test/);
      assert.deepEqual(await stored(batch.map((m) => m.id)), { messages: 0, recipients: 0, attachments: 0, events: 0, jobs: 0 });
    } finally {
      await sql`DROP TRIGGER refuse_doomed ON messages`.execute(ctx.db);
      await sql`DROP FUNCTION refuse_doomed()`.execute(ctx.db);
    }
  });
});
