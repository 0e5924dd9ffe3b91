// API keys are cached with their tenants (pipeline/authenticate.ts, on db/sending-cache.ts):
// a cached key costs no round trip, a change made in this process is seen at once, and one
// made by another process within the cache's TTL.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import type { Executor } from '../../src/db/database.ts';
import { SENDING_CACHE_TTL_MS } from '../../src/db/sending-cache.ts';
import { lookupKey } from '../../src/pipeline/authenticate.ts';
import { createKey, createTenant, revokeKey, updateTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;

/** An executor that fails the test if the lookup reaches the database at all. */
const noDatabase = new Proxy({}, {
  get(_target, property) {
    throw new Error(`the database was used (${String(property)}) where the cache should have answered`);
  },
}) as Executor;

before(async () => {
  ctx = await testContext();
});

after(async () => {
  await ctx?.close();
});

test('a key looked up once is answered from the cache, without the database', async () => {
  const t = await createTenant(ctx.db, { name: 'cached-co' });
  const k = await createKey(ctx.db, t.id, {});
  const first = await lookupKey(ctx.db, k.key);
  assert.equal(first?.key.id, k.id);
  const again = await lookupKey(noDatabase, k.key);
  assert.equal(again?.key.id, k.id);
  assert.equal(again?.tenant.name, 'cached-co');
  // A malformed key never gets as far as the cache or the database.
  assert.equal(await lookupKey(noDatabase, 'not-a-key'), undefined);
});

test('a revocation or a suspension made in this process is seen at once', async () => {
  const t = await createTenant(ctx.db, { name: 'changing-co' });
  const revoked = await createKey(ctx.db, t.id, {});
  const kept = await createKey(ctx.db, t.id, {});
  assert.ok(await lookupKey(ctx.db, revoked.key));
  assert.equal((await lookupKey(ctx.db, kept.key))?.tenant.status, 'active');

  await revokeKey(ctx.db, t.id, revoked.id);
  assert.equal(await lookupKey(ctx.db, revoked.key), undefined);

  await updateTenant(ctx.db, t.id, { status: 'suspended' });
  assert.equal((await lookupKey(ctx.db, kept.key))?.tenant.status, 'suspended');
});

test("another process's revocation is seen within the TTL", async () => {
  const t = await createTenant(ctx.db, { name: 'elsewhere-co' });
  const k = await createKey(ctx.db, t.id, {});
  assert.ok(await lookupKey(ctx.db, k.key));
  // As another relay process or the CLI would: a write this process's repositories never saw.
  const revokedAt = Date.now();
  await sql`UPDATE api_keys SET revoked_at = now() WHERE id = ${k.id}`.execute(ctx.db);
  for (;;) {
    if ((await lookupKey(ctx.db, k.key)) === undefined) break;
    assert.ok(Date.now() - revokedAt < SENDING_CACHE_TTL_MS + 1_000, 'the revoked key was still accepted after the cache TTL');
    await new Promise((r) => setTimeout(r, 50));
  }
});
