// SPEC §9: SIGTERM stops accepting connections, lets SMTP transactions and deliveries in flight
// finish (up to the shutdown timeout), then exits 0. A real relay process (`node src/cli.ts
// start`) gets SIGTERM with a client in the middle of its DATA and deliveries in flight to an
// upstream: one that answers within the grace, one that never answers. New connections are
// refused; the client's message gets its 250 and is stored; the quick deliveries are recorded
// as sent; the stuck one goes back to the queue with its attempt not counted; the process exits
// 0. Restarted, the relay delivers everything, each message exactly once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import type { TestDatabase } from '../helpers/db.ts';
import { assertAlive, type RelayProcess } from '../helpers/process.ts';
import { RawSmtp } from '../helpers/smtp-client.ts';
import type { FaultUpstream } from './fault-upstream.ts';
import { copiesById, messagesWithoutLiveJob, pendingWork, statusOf, until } from './invariants.ts';
import { createRig, QUEUED, type Rig } from './rig.ts';

/** TXRELAY_SHUTDOWN_TIMEOUT_SECONDS for the relay: short, so the stuck delivery's cut comes soon. */
const SHUTDOWN_SECONDS = 6;
/** How long the upstream takes to answer the quick deliveries: well inside the grace. */
const SLOW_MS = 2_000;
const SLOW_MESSAGES = 3;

let rig: Rig;
let tdb: TestDatabase;
let upstream: FaultUpstream;
/** While true, messages whose subject starts with "stuck" get no answer. */
let holding = true;

const start = () => rig.start({ TXRELAY_SHUTDOWN_TIMEOUT_SECONDS: String(SHUTDOWN_SECONDS) });
const session = () => rig.session();

const body = (subject: string) => `From: App <app@acme.example>\r\nTo: user@dest.example\r\nSubject: ${subject}\r\nContent-Type: text/html\r\n\r\n<p>${subject}</p>\r\n`;

async function send(subject: string): Promise<string> {
  const c = await session();
  assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
  const reply = await c.data(body(subject));
  c.close();
  const id = QUEUED.exec(reply)?.[1];
  assert.ok(id, `${subject}: ${reply}`);
  return id;
}

function exited(relay: RelayProcess, ms: number): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const done = () => resolve({ code: relay.child.exitCode, signal: relay.child.signalCode });
    if (relay.child.exitCode !== null || relay.child.signalCode !== null) return done();
    const timer = setTimeout(() => reject(new Error(`${relay.name} still running ${ms} ms after SIGTERM; log tail:\n${relay.log().slice(-3000)}`)), ms);
    relay.child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
  });
}

before(async () => {
  rig = await createRig('shutdown', { concurrency: 5 });
  ({ tdb, upstream } = rig);
  upstream.decide = (a) => (a.subject?.startsWith('stuck') && holding ? { kind: 'hold' } : a.subject?.startsWith('slow') ? { kind: 'delay', ms: SLOW_MS } : { kind: 'accept' });
});

after(() => rig?.close());

test('SIGTERM: no new connections, the transaction in flight completes, deliveries finish or go back unspent, exit 0; then each message is delivered once', { timeout: 120_000 }, async (t) => {
  const first = await start();

  // Deliveries in flight: the stuck one held by the upstream (first, so that it holds a worker
  // slot of its own), and a quick one being answered.
  const stuck = await send('stuck 0');
  await until('the stuck message at the upstream', () => (upstream.arrivals.some((a) => a.id === stuck) ? true : undefined), 30_000);
  const slow: string[] = [];
  for (let i = 0; i < SLOW_MESSAGES; i++) slow.push(await send(`slow ${i}`));
  await until('a quick one at the upstream', () => (upstream.arrivals.some((a) => a.subject?.startsWith('slow')) ? true : undefined), 30_000);

  // A client in the middle of its DATA.
  const client = await session();
  assert.match(await client.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
  assert.match(await client.cmd('RCPT TO:<user@dest.example>'), /^250 /);
  assert.match(await client.cmd('DATA'), /^354 /);
  const inFlight = body('in flight at SIGTERM');
  const cut = inFlight.indexOf('<p>');
  client.write(inFlight.slice(0, cut));

  const slowInFlight = upstream.arrivals.filter((a) => a.subject?.startsWith('slow') && !upstream.accepted.includes(a)).map((a) => a.id);
  const termAt = Date.now();
  assertAlive(first);
  first.child.kill('SIGTERM');
  await until('the relay to log its shutdown', () => (first.log().includes('"shutting down"') ? true : undefined), 10_000);

  // No new connections: refused outright, or told 421.
  let newConnection: string;
  try {
    const late = await RawSmtp.connect(rig.smtpPort);
    newConnection = late.greeting;
    late.close();
  } catch (err) {
    newConnection = (err as NodeJS.ErrnoException).code ?? String(err);
  }
  assert.match(newConnection, /^(ECONNREFUSED|421 )/, 'a connection after SIGTERM is refused');

  // The transaction in flight completes: 250, then the session is told the relay is going.
  client.write(inFlight.slice(cut) + '.\r\n');
  const reply = await client.reply(30_000);
  const lateId = QUEUED.exec(reply)?.[1];
  assert.ok(lateId, `the transaction in flight got ${JSON.stringify(reply)}; log tail:\n${first.log().slice(-3000)}`);
  assert.equal(await client.reply(10_000), '421 4.3.2 Service shutting down, try again later');
  assert.ok((await statusOf(tdb.db, lateId)) !== undefined, 'its message is stored');

  const exit = await exited(first, 30_000);
  const exitMs = Date.now() - termAt;
  assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM; log tail:\n${first.log().slice(-2000)}`);

  // Quick deliveries in flight finished and were recorded; the stuck one went back unspent.
  assert.ok(slowInFlight.length > 0, 'a quick delivery was in flight at SIGTERM');
  for (const id of slowInFlight) assert.deepEqual(await statusOf(tdb.db, id!), { status: 'sent', attempts: 1 }, `quick delivery ${id} in flight at SIGTERM was recorded`);
  // Those not started yet stayed in the queue, none of their attempts spent.
  const slowStates = await Promise.all(slow.map((id) => statusOf(tdb.db, id)));
  for (const s of slowStates) assert.ok(s?.status === 'sent' ? s.attempts === 1 : s?.status === 'queued' && s.attempts === 0, JSON.stringify(slowStates));
  assert.deepEqual(await statusOf(tdb.db, stuck), { status: 'queued', attempts: 0 }, 'the stuck delivery went back to the queue, its attempt not counted');
  const stuckAttempts = await sql<{ n: number }>`SELECT count(*)::int AS n FROM attempts WHERE message_id = ${stuck}`.execute(tdb.db);
  assert.equal(stuckAttempts.rows[0].n, 0);
  assert.deepEqual(await messagesWithoutLiveJob(tdb.db), [], 'every waiting message has a live job');
  assert.ok(upstream.notAccepted.some((a) => a.id === stuck), 'the upstream saw the stuck copy abandoned, not accepted');

  // Restarted, the relay delivers what was left, each message once.
  holding = false;
  const second = await start();
  const restartedAt = Date.now();
  const all = [...slow, stuck, lateId];
  await until(
    'every acknowledged message delivered and the queue drained',
    async () => {
      assertAlive(second);
      const accepted = new Set(upstream.accepted.map((a) => a.id));
      return all.every((id) => accepted.has(id)) && (await pendingWork(tdb.db)) === 0 ? true : undefined;
    },
    45_000,
    async () => JSON.stringify({ accepted: upstream.accepted.map((a) => a.subject), statuses: await Promise.all(all.map((id) => statusOf(tdb.db, id))) }),
  );
  const deliveredAfterRestartMs = Date.now() - restartedAt;
  const copies = copiesById(upstream.accepted.map((a) => a.id));
  for (const id of all) assert.equal(copies.get(id), 1, `message ${id} delivered once`);
  assert.deepEqual(upstream.overlaps, [], 'no message in two deliveries at once');

  second.child.kill('SIGTERM');
  assert.deepEqual(await exited(second, 30_000), { code: 0, signal: null }, 'an idle relay exits 0 on SIGTERM');
  const report = {
    exit_after_sigterm_ms: exitMs,
    quick_in_flight: slowInFlight.length,
    quick_sent_before_exit: slowStates.filter((s) => s?.status === 'sent').length,
    quick_put_back: slowStates.filter((s) => s?.status === 'queued').length,
    delivered_after_restart_ms: deliveredAfterRestartMs, duplicates: [...copies.values()].filter((n) => n > 1).length };
  t.diagnostic(`shutdown: ${JSON.stringify(report)}`);
});
