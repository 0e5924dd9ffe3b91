// `txrelay route pause|resume|queue`, `txrelay message retry|cancel|requeue` and
// `txrelay classify`, run as child processes against a test database. No worker runs, so
// messages stay where the commands put them; the CLI enqueues through a PgBoss it never starts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import type { PgBoss } from 'pg-boss';
import { SecretBox, uuidv7 } from '../../src/crypto.ts';
import type { Context } from '../../src/context.ts';
import { findMessageMeta, updateMessage } from '../../src/db/messages.repository.ts';
import { TrackingTokens } from '../../src/events/tracking-tokens.ts';
import { createLogger } from '../../src/log.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { createBoss } from '../../src/queue.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { TEST_SECRET, testConfig } from '../helpers/context.ts';
import { assertFailed as failed, assertOk as ok, type CliResult, runCli } from '../helpers/cli.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-cli-queue-'));

let tdb: TestDatabase;
let boss: PgBoss;
let ctx: Context;
const ids: string[] = [];


const cli = (...args: string[]): Promise<CliResult> => runCli({ databaseUrl: tdb.url, dataDir: dir }, args);


/** The pg-boss job the message points at, on its route's queue. */
async function job(messageId: string) {
  const m = await findMessageMeta(tdb.db, messageId);
  const r = await sql<{ name: string; state: string }>`SELECT name, state FROM pgboss.job WHERE id = ${m?.job_id}::uuid`.execute(tdb.db);
  return { message: m, job: r.rows[0] };
}

before(async () => {
  tdb = await testDatabase();
  // A started PgBoss creates pg-boss's schema, as any relay that ran would have.
  boss = await createBoss(tdb.url, { supervise: false });
  boss.on('error', () => {});
  await boss.start();
  const config = testConfig({ DATABASE_URL: tdb.url });
  ctx = { config, db: tdb.db, boss, box: new SecretBox(TEST_SECRET), tracking: new TrackingTokens(TEST_SECRET), log: createLogger('silent'), adminToken: 'x' };
  const tenant = await createTenant(tdb.db, { name: 'qco' });
  const other = await createTenant(tdb.db, { name: 'qco-other' });
  const main = await createRoute(tdb.db, ctx.box, tenant.id, { name: 'main', transport: 'capture' });
  // No queue yet for `backup`: the CLI creates it when it first enqueues there.
  await createRoute(tdb.db, ctx.box, tenant.id, { name: 'backup', transport: 'capture' });
  await createRoute(tdb.db, ctx.box, other.id, { name: 'theirs', transport: 'capture' });
  for (let i = 0; i < 3; i++) {
    const id = uuidv7();
    const mime = Buffer.from(`From: a@example.com\r\nTo: b@example.org\r\nSubject: ${i}\r\nMessage-ID: <${id}@relay.test>\r\n\r\n<p>hi</p>\r\n`);
    ids.push(
      await commitMessage(ctx, {
        id, tenantId: tenant.id, apiKeyId: null, tag: 'q', routeId: main.id, routeName: main.name, templateId: null, templateName: null,
        testMode: false, mailFrom: 'a@example.com', fromAddress: 'a@example.com', subject: String(i), messageIdHeader: `<${id}@relay.test>`,
        mime: [mime], size: mime.length, verdicts: [], recipients: ['b@example.org'], attachments: [],
      }),
    );
  }
  // The second waits for a retry in an hour.
  await updateMessage(tdb.db, ids[1], { status: 'deferred', attempts: 1, next_attempt_at: new Date(Date.now() + 3600_000) });
});

after(async () => {
  await boss?.stop({ graceful: false, timeout: 1000 }).catch(() => {});
  await tdb?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('route pause, resume, queue', () => {
  test('pause and resume flip the flag; queue shows the depth', async () => {
    const [paused, queueJson, queueHuman] = await Promise.all([cli('route', 'pause', 'qco', 'main', '--json'), cli('route', 'queue', 'qco', 'main', '--json'), cli('route', 'queue', 'qco', 'main')]);
    ok(paused);
    assert.equal(paused.json.name, 'main');
    assert.equal(paused.json.paused, true);
    ok(queueJson);
    assert.equal(queueJson.json.route, 'main');
    assert.equal(queueJson.json.tenant, 'qco');
    assert.equal(queueJson.json.queued, 2);
    assert.equal(queueJson.json.deferred, 1);
    assert.ok(queueJson.json.oldest_queued_at);
    assert.ok(Date.parse(queueJson.json.next_attempt_at) > Date.now() + 3500_000);
    ok(queueHuman);
    assert.match(queueHuman.stdout, /^queued\s+2$/m);
    assert.match(queueHuman.stdout, /^deferred\s+1$/m);
    assert.match(queueHuman.stdout, /^oldest\s+\S+Z \(\d+ s ago\)$/m);

    const [show, resumed, again] = await Promise.all([cli('route', 'show', 'qco', 'main'), cli('route', 'resume', 'qco', 'main'), cli('route', 'queue', 'qco', 'backup', '--json')]);
    ok(show);
    ok(resumed);
    assert.match(resumed.stdout, /^route main resumed$/m);
    ok(again);
    assert.deepEqual([again.json.queued, again.json.deferred, again.json.oldest_queued_at, again.json.next_attempt_at], [0, 0, null, null]);
    const view = await cli('route', 'show', 'qco', 'main', '--json');
    assert.equal(view.json.paused, false);

    const [unknown, theirs, missing] = await Promise.all([cli('route', 'pause', 'qco', 'nowhere'), cli('route', 'queue', 'qco', 'theirs'), cli('route', 'resume', 'qco')]);
    failed(unknown, 1, /route "nowhere" not found/);
    failed(theirs, 1, /route "theirs" not found/);
    failed(missing, 2, /missing <route>/);
  });
});

describe('message retry, cancel, requeue', () => {
  test('retry gives a waiting message a new job now; cancel fails it; requeue queues it on another route', async () => {
    const before = await job(ids[1]);
    const retried = await cli('message', 'retry', ids[1], '--json');
    ok(retried);
    assert.equal(retried.json.status, 'deferred');
    assert.equal(retried.json.events.at(-1).type, 'retried');
    assert.equal(retried.json.events.at(-1).detail.via, 'cli');
    const afterRetry = await job(ids[1]);
    assert.notEqual(afterRetry.message?.job_id, before.message?.job_id);
    assert.equal(afterRetry.job.state, 'created');
    assert.equal(afterRetry.job.name, before.job.name);

    const [cancelled, cancelledHuman] = await Promise.all([cli('message', 'cancel', ids[0], '--json'), cli('message', 'cancel', ids[2])]);
    ok(cancelled);
    assert.equal(cancelled.json.status, 'failed');
    assert.deepEqual(cancelled.json.recipients, [{ address: 'b@example.org', status: 'failed', response: 'cancelled' }]);
    assert.equal(cancelled.json.events.at(-1).detail.reason, 'cancelled by admin');
    ok(cancelledHuman);
    assert.match(cancelledHuman.stdout, new RegExp(`^message ${ids[2]} cancelled\\nstatus\\s+failed`));

    const requeued = await cli('message', 'requeue', ids[0], '--route', 'backup', '--json');
    ok(requeued);
    assert.equal(requeued.json.status, 'queued');
    assert.equal(requeued.json.route, 'backup');
    assert.equal(requeued.json.recipients[0].status, 'queued');
    const afterRequeue = await job(ids[0]);
    assert.equal(afterRequeue.message?.route_name, 'backup');
    assert.equal(afterRequeue.job.state, 'created');
    assert.equal(afterRequeue.job.name, `route.${afterRequeue.message?.route_id}`);

    const sameRoute = await cli('message', 'requeue', ids[2]);
    ok(sameRoute);
    assert.match(sameRoute.stdout, /requeued on route main/);

    const [notFailed, theirRoute, unknown, garbage] = await Promise.all([
      cli('message', 'requeue', ids[1]),
      cli('message', 'requeue', ids[1], '--route', 'theirs'),
      cli('message', 'retry', '0190b6a4-0000-7000-8000-000000000000'),
      cli('message', 'cancel', 'not-an-id'),
    ]);
    failed(notFailed, 1, /only a failed message can be requeued/);
    failed(theirRoute, 1, /route "theirs" does not exist[^]*\n  route: unknown route/);
    failed(unknown, 1, /message "0190b6a4-0000-7000-8000-000000000000" not found/);
    failed(garbage, 1, /message "not-an-id" not found/);

    const again = await cli('message', 'cancel', ids[1]);
    ok(again);
    failed(await cli('message', 'cancel', ids[1]), 1, /already failed/);
    failed(await cli('message', 'retry', ids[1]), 1, /only a queued or deferred message can be retried/);
  });
});

describe('classify', () => {
  test('prints the verdict and reason of the failure catalog', async () => {
    const [throttle, unknownUser, reset, human, missing] = await Promise.all([
      cli('classify', '421 4.7.0 Try again later', '--json'),
      cli('classify', '550 5.1.1 <x@example.net>: User unknown', '--json'),
      cli('classify', '', '--error-code', 'ECONNRESET', '--json'),
      cli('classify', '451 4.3.0 Temporary local problem'),
      cli('classify'),
    ]);
    ok(throttle);
    assert.deepEqual({ ...throttle.json, rule: undefined }, {
      reply: '421 4.7.0 Try again later', error_code: null, code: 421, enhanced: '4.7.0', verdict: 'slow_down', reason: 'upstream is shedding load (421, RFC 5321 §3.8)', rule: undefined,
    });
    assert.equal(typeof throttle.json.rule, 'number');
    ok(unknownUser);
    assert.equal(unknownUser.json.verdict, 'fail');
    assert.match(unknownUser.json.reason, /permanent/);
    ok(reset);
    assert.equal(reset.json.verdict, 'retry');
    assert.equal(reset.json.reply, null);
    assert.equal(reset.json.error_code, 'ECONNRESET');
    assert.equal(reset.json.reason, 'connection to the upstream failed');
    ok(human);
    assert.match(human.stdout, /^verdict\s+retry$/m);
    assert.match(human.stdout, /^reason\s+transient failure \(4yz, RFC 5321 §4\.2\.1\)$/m);
    assert.match(human.stdout, /^reply code\s+451 4\.3\.0$/m);
    failed(missing, 2, /missing <reply>/);
  });
});
