// executePrepared (src/db/database.ts): a registered statement runs as a named prepared
// statement on each connection, other statements as before, and a name stands for one text.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { executePrepared } from '../../src/db/database.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;

before(async () => {
  ctx = await testContext();
});

after(async () => {
  await ctx?.close();
});

const preparedOnThisConnection = async (trx: Parameters<typeof executePrepared>[0]) =>
  (await sql<{ name: string; from_sql: boolean }>`SELECT name, from_sql FROM pg_prepared_statements`.execute(trx)).rows;

test('a statement run through executePrepared is prepared once per connection under its name, then reused', async () => {
  await ctx.db.transaction().execute(async (trx) => {
    const first = await executePrepared(trx, 'test_double', sql<{ n: number }>`SELECT ${21}::int * 2 AS n`.compile(trx));
    const again = await executePrepared(trx, 'test_double', sql<{ n: number }>`SELECT ${50}::int * 2 AS n`.compile(trx));
    assert.deepEqual([first.rows, again.rows], [[{ n: 42 }], [{ n: 100 }]]);
    const statements = await preparedOnThisConnection(trx);
    assert.deepEqual(statements.filter((s) => s.name === 'test_double'), [{ name: 'test_double', from_sql: false }], 'prepared once, by the protocol');
  });
});

test('other statements stay unnamed', async () => {
  await ctx.db.transaction().execute(async (trx) => {
    await sql`SELECT ${1}::int AS one`.execute(trx);
    await trx.selectFrom('tenants').select('id').limit(1).execute();
    const names = (await preparedOnThisConnection(trx)).map((s) => s.name);
    assert.ok(names.every((n) => n === 'test_double' || n === 'load_for_delivery' || n === 'record_final_attempt'), `unexpected: ${names}`);
  });
});

test('a name given another SQL text throws before anything runs', async () => {
  await assert.rejects(executePrepared(ctx.db, 'test_double', sql`SELECT ${1}::int AS other`.compile(ctx.db)), /"test_double" was given another SQL text/);
});
