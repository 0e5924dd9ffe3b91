// Targeted SIGKILLs of a real relay process (`node src/cli.ts start`) while it delivers
// (issue 7; SPEC §3, §9). The upstream itself pulls the trigger at the worst moments:
// - when the final dot of a message arrives, before it answers: the upstream never accepts that
//   copy (its sender is gone), and the restarted relay delivers the message once;
// - right after it wrote its 250: the relay dies before it can record the delivery, so the
//   restarted relay sends it again. That duplicate is the second window no relay can close; it is
//   allowed once, only for that message, and counted.
// Throughout: every waiting message has a live job (the dead process's jobs stay `active` until
// pg-boss's heartbeat check hands them out again), and no message is in two deliveries at once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import type { TestDatabase } from '../helpers/db.ts';
import { assertAlive } from '../helpers/process.ts';
import type { FaultUpstream } from './fault-upstream.ts';
import { copiesById, messagesWithoutLiveJob, pendingWork, until } from './invariants.ts';
import { createRig, QUEUED, type Rig } from './rig.ts';

/**
 * A dead process's job comes back after its heartbeat (10 s) lapsed, at the next pg-boss
 * monitor pass (every 10 s), after the retry delay (10 s): well under this.
 */
const RECOVERY_WAIT_MS = 75_000;

let rig: Rig;
let tdb: TestDatabase;
let upstream: FaultUpstream;
const start = () => rig.start();

async function send(subject: string): Promise<string> {
  const c = await rig.session();
  assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
  const reply = await c.data(`From: App <app@acme.example>\nTo: user@dest.example\nSubject: ${subject}\nContent-Type: text/html\n\n<p>${subject}</p>\n`);
  c.close();
  const id = QUEUED.exec(reply)?.[1];
  assert.ok(id, `${subject}: ${reply}`);
  return id;
}

before(async () => {
  rig = await createRig('kill-delivery');
  ({ tdb, upstream } = rig);
});

after(() => rig?.close());

test('SIGKILL during an upstream delivery and right after the upstream 250: nothing lost, one counted duplicate at most', { timeout: 120_000 }, async (t) => {
  // 1. Killed once the upstream has read the final dot, before it answers. The upstream then
  // hangs up without a reply, as an MTA whose client vanished discards the message.
  const first = await start();
  let killedAtDot = 0;
  let dropped = false;
  upstream.onFinalDot = (a) => {
    if (a.subject !== 'kill at dot' || killedAtDot) return;
    killedAtDot = Date.now();
    first.child.kill('SIGKILL');
  };
  upstream.decide = (a) => {
    if (a.subject !== 'kill at dot' || dropped) return { kind: 'accept' };
    dropped = true;
    return { kind: 'drop' };
  };
  const atDot = await send('kill at dot');
  await until('the relay killed at the final dot', () => (first.child.signalCode === 'SIGKILL' ? true : undefined), 30_000);
  assert.deepEqual(await messagesWithoutLiveJob(tdb.db), [], 'after the kill, every waiting message has a live job');
  assert.ok(upstream.notAccepted.some((a) => a.id === atDot), 'the copy in flight at the kill was not accepted');

  // 2. Killed right after the upstream answered 250.
  const second = await start();
  let killedAfter250 = 0;
  upstream.onAccepted = (a) => {
    if (a.subject !== 'kill after 250' || killedAfter250) return;
    killedAfter250 = Date.now();
    second.child.kill('SIGKILL');
  };
  const after250 = await send('kill after 250');
  await until('the relay killed after the 250', () => (second.child.signalCode === 'SIGKILL' ? true : undefined), 30_000);
  assert.deepEqual(await messagesWithoutLiveJob(tdb.db), [], 'after the second kill, every waiting message has a live job');

  // 3. Restarted: both delivered, the queue drained.
  const third = await start();
  const restartedAt = Date.now();
  await until(
    'both messages delivered and the queue drained',
    async () => {
      assertAlive(third);
      const accepted = new Set(upstream.accepted.map((a) => a.id));
      return accepted.has(atDot) && accepted.has(after250) && (await pendingWork(tdb.db)) === 0 ? true : undefined;
    },
    RECOVERY_WAIT_MS,
    async () => JSON.stringify({ accepted: upstream.accepted.map((a) => a.subject), jobs: (await sql`SELECT state, data FROM pgboss.job WHERE name LIKE 'route.%' AND state <> 'completed'`.execute(tdb.db)).rows }),
  );
  const copies = copiesById(upstream.accepted.map((a) => a.id));
  assert.equal(copies.get(atDot), 1, 'the message killed at its final dot was accepted once');

  // The second window: accepted, then the relay died before recording it. It may go out twice,
  // never more, and only if the first copy is the one accepted as the relay was killed.
  const y = copies.get(after250) ?? 0;
  assert.ok(y === 1 || y === 2, `the message killed after its 250 reached the upstream ${y} times`);
  const sentAttempts = await sql<{ n: number }>`SELECT count(*)::int AS n FROM attempts WHERE message_id = ${after250} AND outcome = 'sent'`.execute(tdb.db);
  assert.equal(sentAttempts.rows[0].n, 1, 'one delivery on record');
  if (y === 2) {
    const firstCopy = upstream.accepted.find((a) => a.id === after250)!;
    assert.ok(firstCopy.at <= killedAfter250, 'the first copy is the one accepted just before the kill');
  }
  for (const [id, n] of copies) if (id !== after250) assert.equal(n, 1, `message ${id} delivered once`);
  assert.deepEqual(upstream.overlaps, [], 'no message in two deliveries at once');

  const acceptedAt = (id: string) => upstream.accepted.filter((a) => a.id === id).at(-1)!.at;
  const report = {
    duplicates_after_upstream_250: y - 1,
    recovery_after_kill_at_dot_ms: acceptedAt(atDot) - killedAtDot,
    recovery_after_kill_after_250_ms: acceptedAt(after250) - killedAfter250,
    restart_to_drained_ms: Date.now() - restartedAt,
  };
  t.diagnostic(`kill during delivery: ${JSON.stringify(report)}`);
});
