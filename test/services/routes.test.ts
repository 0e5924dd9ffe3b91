// Route rules that live in the service: PATCH changes only what it names; credentials are
// sealed; a route with waiting mail cannot be deleted.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { acceptedMessage } from '../helpers/accepted.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { createRoute, deleteRoute, getRoute, routeConfig, updateRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
let tenantId: string;
before(async () => {
  ctx = await testContext();
  tenantId = (await createTenant(ctx.db, { name: 'routes-co' })).id;
});
after(async () => ctx?.close());

test('PATCH changes only the fields it names', async () => {
  await createRoute(ctx.db, ctx.box, tenantId, { name: 'spare', transport: 'capture' });
  const r = await createRoute(ctx.db, ctx.box, tenantId, {
    name: 'up', transport: 'smtp', config: { host: 'mx.example', port: 2525, auth: { user: 'u', pass: 'p4ss' } }, max_attempts: 3, retry_delay_seconds: 5, enabled: false,
  });
  await updateRoute(ctx.db, ctx.box, tenantId, 'up', { fallback: 'spare' });
  const after = await getRoute(ctx.db, tenantId, r.id);
  assert.equal(after.max_attempts, 3);
  assert.equal(after.retry_delay_seconds, 5);
  assert.equal(after.enabled, false);
  assert.equal(after.config.host, 'mx.example');
  assert.deepEqual((routeConfig(after, ctx.box).auth as { pass: string }).pass, 'p4ss');
  assert.ok(!after.secrets_enc!.includes('p4ss'));
  assert.ok(after.fallback_route_id);
});

test('a route with queued mail cannot be deleted; an idle one can', async () => {
  const r = await createRoute(ctx.db, ctx.box, tenantId, { name: 'busy', transport: 'capture' });
  await commitMessage(ctx, acceptedMessage(r, { mailFrom: 'a@b.example', fromAddress: 'a@b.example', subject: 's', recipients: ['r@c.example'] }));
  await assert.rejects(deleteRoute(ctx.db, tenantId, 'busy'), (err: { status?: number; message: string }) => err.status === 409 && /1 queued or deferred/.test(err.message));
  await createRoute(ctx.db, ctx.box, tenantId, { name: 'idle', transport: 'capture' });
  await deleteRoute(ctx.db, tenantId, 'idle');
  await assert.rejects(getRoute(ctx.db, tenantId, 'idle'), (err: { status?: number }) => err.status === 404);
});
