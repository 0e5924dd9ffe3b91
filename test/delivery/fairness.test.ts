// One tenant's backlog never starves another tenant's route (issue 5): tenant A has thousands of
// messages waiting on a route held to 5/s and 2 at a time by a slow upstream; tenant B's one
// message on its own route still goes out within seconds, while A's backlog is mostly waiting.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import type { Route } from '../../src/db/schema.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { startCountingUpstream, type CountingUpstream } from './counting-upstream.ts';
import { queueMessage, waitFor } from './upstream.ts';

const BACKLOG = 2_000;
const B_WITHIN_MS = 10_000;

let ctx: TestContext;
let worker: DeliveryWorker | undefined;
let upstreamA: CountingUpstream;
let upstreamB: CountingUpstream;
let routeA: Route;
let routeB: Route;

async function waiting(route: Route): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM messages WHERE route_id = ${route.id} AND status IN ('queued', 'deferred')`.execute(ctx.db);
  return rows[0].n;
}

before(async () => {
  ctx = await testContext();
  const a = await createTenant(ctx.db, { name: 'tenant-a' });
  const b = await createTenant(ctx.db, { name: 'tenant-b' });
  upstreamA = await startCountingUpstream({ dataDelayMs: 200 });
  upstreamB = await startCountingUpstream();
  routeA = await createRoute(ctx.db, ctx.box, a.id, { name: 'bulk', transport: 'smtp', config: { host: '127.0.0.1', port: upstreamA.port }, max_per_second: 5, concurrency: 2 });
  routeB = await createRoute(ctx.db, ctx.box, b.id, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstreamB.port } });
});

after(async () => {
  // A's jobs still waiting on the route's limits go back unsent: stopping stays quick.
  await worker?.stop(2_000);
  await upstreamA?.close();
  await upstreamB?.close();
  await ctx?.close();
});

test(`tenant B's message is delivered within seconds behind tenant A's backlog of ${BACKLOG}`, { timeout: 120_000 }, async (t) => {
  const queuing = Date.now();
  for (let i = 0; i < BACKLOG; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, BACKLOG - i) }, (_, k) => queueMessage(ctx, routeA, [`a-${i + k}@example.net`])));
  }
  t.diagnostic(`${BACKLOG} messages queued for tenant A in ${Date.now() - queuing} ms`);

  worker = await startDelivery(ctx, { routePollMs: 500 });
  // A's backlog is being worked on (and held back by its limits) before B sends.
  await waitFor("tenant A's first deliveries", async () => (upstreamA.accepted.length >= 5 ? true : undefined), 20_000);

  const sentAt = Date.now();
  await queueMessage(ctx, routeB, ['b@example.org']);
  await waitFor("tenant B's message", async () => (upstreamB.accepted.length >= 1 ? true : undefined), B_WITHIN_MS + 5_000);
  const latency = upstreamB.accepted[0].at - sentAt;
  const aWaiting = await waiting(routeA);
  t.diagnostic(`tenant B delivered ${latency} ms after queueing; tenant A then: ${upstreamA.accepted.length} delivered, ${aWaiting} waiting`);

  assert.ok(latency < B_WITHIN_MS, `tenant B waited ${latency} ms`);
  assert.ok(aWaiting > BACKLOG * 0.9, `tenant A's backlog was still mostly waiting (${aWaiting} of ${BACKLOG})`);
  assert.deepEqual(upstreamB.accepted[0].rcptTo, ['b@example.org']);
  // A kept to its own limits meanwhile.
  assert.ok(upstreamA.transactions.max <= 2, `tenant A's route at most 2 at once, saw ${upstreamA.transactions.max}`);
});
