// A route's max_per_second and concurrency hold across every worker process (issue 5): two
// workers — this process and a second relay process started with TXRELAY_ROLES=worker — share
// nothing but PostgreSQL, and a real SMTP upstream counts what reaches it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import * as messages from '../../src/db/messages.repository.ts';
import { reserveSendTime } from '../../src/db/route-limits.repository.ts';
import type { Route, Tenant } from '../../src/db/schema.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { assertAlive, startRelay, stopRelay, type RelayProcess } from '../helpers/process.ts';
import { startCountingUpstream, type CountingUpstream } from './counting-upstream.ts';
import { queueMessage, waitFor } from './upstream.ts';

/** EHLO names: which process delivered a message. */
const HERE = 'relay.test';
const CHILD = 'worker-b.test';

const RATE = 10;
const RATE_MESSAGES = 130;
/** Measured after the first delivery plus this warm-up, over WINDOW_MS. */
const WARM_UP_MS = 1_000;
const WINDOW_MS = 10_000;

let ctx: TestContext;
let tenant: Tenant;
let worker: DeliveryWorker | undefined;
let child: RelayProcess | undefined;
let dataDir: string;
let paced: CountingUpstream;
let slow: CountingUpstream;
let trickle: CountingUpstream;
let pacedRoute: Route;
let narrowRoute: Route;
let trickleRoute: Route;

/** A second worker process on the same database: `node src/cli.ts start` with only the worker role. */
function startWorkerProcess(): Promise<RelayProcess> {
  return startRelay('worker-b', dataDir, { DATABASE_URL: ctx.tdb.url, TXRELAY_ROLES: 'worker', TXRELAY_HOSTNAME: CHILD, TXRELAY_DATA_DIR: dataDir });
}

/** Queues `count` messages on the route, a few commits at a time; their ids. */
async function queueMany(route: Route, count: number, prefix: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 20) {
    const batch = await Promise.all(Array.from({ length: Math.min(20, count - i) }, (_, k) => queueMessage(ctx, route, [`${prefix}-${i + k}@example.net`])));
    ids.push(...batch.map((m) => m.id));
  }
  return ids;
}

const byClient = (list: { client: string }[]) => Object.fromEntries([HERE, CHILD].map((c) => [c, list.filter((a) => a.client === c).length]));

before(async () => {
  ctx = await testContext();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-throttle-'));
  tenant = await createTenant(ctx.db, { name: 'paced' });
  paced = await startCountingUpstream();
  // 300 ms per message: long enough for deliveries from both processes to overlap if allowed.
  slow = await startCountingUpstream({ dataDelayMs: 300 });
  trickle = await startCountingUpstream();
  // Created before the second process starts: it starts their consumers at boot.
  pacedRoute = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'paced', transport: 'smtp', config: { host: '127.0.0.1', port: paced.port }, max_per_second: RATE });
  narrowRoute = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'narrow', transport: 'smtp', config: { host: '127.0.0.1', port: slow.port }, concurrency: 2 });
  trickleRoute = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'trickle', transport: 'smtp', config: { host: '127.0.0.1', port: trickle.port }, max_per_second: 1 });
  child = await startWorkerProcess();
  worker = await startDelivery(ctx, { routePollMs: 500 });
});

after(async () => {
  await worker?.stop(2_000);
  if (child) await stopRelay(child);
  await paced?.close();
  await slow?.close();
  await trickle?.close();
  await ctx?.close();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

describe('route limits across worker processes', () => {
  test(`max_per_second ${RATE}: two worker processes deliver ${RATE}/s ± 10% over ${WINDOW_MS / 1000} s`, { timeout: 60_000 }, async (t) => {
    await queueMany(pacedRoute, RATE_MESSAGES, 'paced');
    const first = await waitFor('the first delivery', async () => paced.accepted[0]?.at, 15_000);
    const from = first + WARM_UP_MS;
    const to = from + WINDOW_MS;
    await waitFor('the end of the measuring window', async () => (Date.now() >= to + 200 ? true : undefined), WARM_UP_MS + WINDOW_MS + 10_000);
    assertAlive(child!);

    const inWindow = paced.accepted.filter((a) => a.at >= from && a.at < to);
    const rate = inWindow.length / (WINDOW_MS / 1000);
    t.diagnostic(`delivered ${rate.toFixed(1)}/s over ${WINDOW_MS / 1000} s (limit ${RATE}/s); by process: ${JSON.stringify(byClient(inWindow))}`);
    // Still a backlog at the end of the window: the rate was the limit's, not the queue's.
    assert.ok(paced.accepted.length < RATE_MESSAGES, 'messages were still waiting when the window closed');
    assert.ok(rate >= RATE * 0.9 && rate <= RATE * 1.1, `delivered ${rate}/s, limit ${RATE}/s`);
    const counts = byClient(inWindow);
    assert.ok(counts[HERE] > 0 && counts[CHILD] > 0, `both worker processes delivered: ${JSON.stringify(counts)}`);

    await waitFor('the whole backlog', async () => (paced.accepted.length >= RATE_MESSAGES ? true : undefined), 20_000);
  });

  test('concurrency 2: two worker processes never hold more than 2 upstream transactions at once', { timeout: 60_000 }, async (t) => {
    const count = 24;
    await queueMany(narrowRoute, count, 'narrow');
    await waitFor('every message to reach the upstream', async () => (slow.accepted.length >= count ? true : undefined), 40_000);
    assertAlive(child!);
    t.diagnostic(`at most ${slow.transactions.max} transactions and ${slow.connections.max} connections at once; by process: ${JSON.stringify(byClient(slow.accepted))}`);
    assert.ok(slow.transactions.max <= 2, `at most 2 transactions at once, saw ${slow.transactions.max}`);
    assert.equal(slow.transactions.max, 2, 'the route used both of its slots');
  });

  test('a send time too far off is not slept on: the job goes back until then and keeps its time', { timeout: 60_000 }, async (t) => {
    // The next 8 s of the 1/s schedule are taken, as other deliveries would take them.
    let last: Date | undefined;
    for (let i = 0; i < 8; i++) last = (await reserveSendTime(ctx.db, trickleRoute.id, 1)).at;
    const ids = await queueMany(trickleRoute, 2, 'trickle');
    await waitFor('both messages to reach the upstream', async () => (trickle.accepted.length >= 2 ? true : undefined), 30_000);
    assertAlive(child!);

    const rows = await Promise.all(
      ids.map((id) =>
        waitFor(`message ${id} recorded`, async () => {
          const m = await messages.findMessage(ctx.db, id);
          return m?.status === 'sent' ? m : undefined;
        }),
      ),
    );
    const early = trickle.accepted.map((a) => a.at - last!.getTime());
    t.diagnostic(`delivered ${early.map((ms) => `${ms} ms`).join(' and ')} after the last send time taken before them (1 s apart expected)`);
    for (const m of rows) {
      assert.notEqual(m.job_id, m.id, 'the job was put back as a new one');
      assert.equal(m.attempts, 1, 'a job put back unsent counts no attempt');
    }
    assert.equal(trickle.accepted.length, 2);
    // Their own send times come after the taken ones (the clock is the database's, on this machine).
    assert.ok(early.every((ms) => ms >= 900), `no message went out before its send time: ${early.join(', ')} ms`);
  });
});
