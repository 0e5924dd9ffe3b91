// Targeted SIGKILLs of a real relay process (`node src/cli.ts start`) while it takes a message
// (issue 7; SPEC §3, §9), each followed by a restart and the client retrying as a real client
// does after a dropped connection:
// - during DATA: the client got no reply and nothing was stored; its retry is delivered once;
// - between our commit and the 250 (PostgreSQL has committed, the relay has not heard so: a
//   wire-protocol proxy holds the commit's reply back, test/faults/pg-proxy.ts): the client got
//   no 250 yet the message is stored with a live job and is delivered; the client's retry is a
//   second message. That duplicate is the first window no relay can close, and it is counted.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import type { TestDatabase } from '../helpers/db.ts';
import { assertAlive, killHard } from '../helpers/process.ts';
import type { RawSmtp } from '../helpers/smtp-client.ts';
import type { FaultUpstream } from './fault-upstream.ts';
import { copiesById, messagesWithoutLiveJob, pendingWork, until } from './invariants.ts';
import { startPgProxy, type PgProxy } from './pg-proxy.ts';
import { createRig, QUEUED, type Rig } from './rig.ts';

let rig: Rig;
let tdb: TestDatabase;
let proxy: PgProxy;
let upstream: FaultUpstream;
// Through the proxy, which passes everything unless a test arms it.
const start = () => rig.start({ DATABASE_URL: proxy.url });

const body = (subject: string) => `From: App <app@acme.example>\r\nTo: user@dest.example\r\nSubject: ${subject}\r\nContent-Type: text/html\r\n\r\n<p>${subject}</p>\r\n`;

/** Connected, authenticated, MAIL and RCPT given, DATA answered 354. */
async function openData(): Promise<RawSmtp> {
  const c = await rig.session();
  assert.match(await c.cmd('MAIL FROM:<app@acme.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  return c;
}

/** A whole message; the id from its 250. */
async function send(subject: string): Promise<string> {
  const c = await openData();
  c.write(body(subject) + '.\r\n');
  const reply = await c.reply(30_000);
  c.close();
  const id = QUEUED.exec(reply)?.[1];
  assert.ok(id, `${subject}: ${reply}`);
  return id;
}

async function storedWithSubject(subject: string): Promise<{ id: string; status: string }[]> {
  const r = await sql<{ id: string; status: string }>`SELECT id, status FROM messages WHERE subject = ${subject} ORDER BY created_at`.execute(tdb.db);
  return r.rows;
}

before(async () => {
  rig = await createRig('kill-submission');
  ({ tdb, upstream } = rig);
  proxy = await startPgProxy(tdb.url);
});

after(async () => {
  await rig?.close();
  await proxy?.close();
});

test('SIGKILL during DATA: no reply, nothing stored; the retry is delivered once', { timeout: 60_000 }, async (t) => {
  const relay = await start();
  const subject = 'killed during DATA';
  const c = await openData();
  const message = body(subject);
  c.write(message.slice(0, message.length / 2));
  await killHard(relay);
  assert.equal(relay.child.signalCode, 'SIGKILL');
  assert.equal(await c.reply(10_000), '', 'the client got no reply: the connection closed');
  assert.deepEqual(await storedWithSubject(subject), [], 'nothing of the interrupted message was stored');
  assert.deepEqual(await messagesWithoutLiveJob(tdb.db), []);

  const restarted = await start();
  const restartedAt = Date.now();
  const id = await send(subject);
  await until('the retry delivered', () => (upstream.accepted.some((a) => a.id === id) ? true : undefined), 30_000);
  assertAlive(restarted);
  assert.equal(copiesById(upstream.accepted.map((a) => a.id)).get(id), 1);
  assert.equal(upstream.accepted.filter((a) => a.subject === subject).length, 1, 'the interrupted upload never reached the upstream');
  t.diagnostic(`during DATA: ${JSON.stringify({ restart_to_delivered_ms: Date.now() - restartedAt })}`);
});

test('SIGKILL between commit and 250: stored and delivered though unacknowledged; the client retry is a counted duplicate', { timeout: 60_000 }, async (t) => {
  const relay = rig.relays.at(-1)!;
  assertAlive(relay);
  const subject = 'killed between commit and reply';
  let heldAt = 0;
  proxy.arm(() => {
    heldAt = Date.now();
    relay.child.kill('SIGKILL');
  });
  const c = await openData();
  c.write(body(subject) + '.\r\n');
  const reply = await c.reply(30_000);
  c.close();
  assert.ok(heldAt > 0, 'the proxy held the commit of the message back');
  assert.equal(reply, '', 'the client got no 250: the relay died first');
  await until('the relay gone', () => (relay.child.signalCode === 'SIGKILL' ? true : undefined), 5_000);

  // Committed all the same: the row and its live job.
  const stored = await storedWithSubject(subject);
  assert.equal(stored.length, 1, 'the committed message is in the database');
  assert.equal(stored[0].status, 'queued');
  assert.deepEqual(await messagesWithoutLiveJob(tdb.db), [], 'and it has a live job');

  // The client, told nothing, sends again; both are delivered, each once.
  const restarted = await start();
  const restartedAt = Date.now();
  const retryId = await send(subject);
  await until(
    'both copies delivered and the queue drained',
    async () => (upstream.accepted.filter((a) => a.subject === subject).length >= 2 && (await pendingWork(tdb.db)) === 0 ? true : undefined),
    30_000,
    async () => JSON.stringify({ stored: await storedWithSubject(subject), accepted: upstream.accepted.map((a) => a.subject) }),
  );
  assertAlive(restarted);
  const both = await storedWithSubject(subject);
  assert.deepEqual(both.map((m) => m.id).sort(), [stored[0].id, retryId].sort(), 'two messages: the unacknowledged one and the retry');
  const copies = copiesById(upstream.accepted.map((a) => a.id));
  for (const m of both) assert.equal(copies.get(m.id), 1, `message ${m.id} delivered once`);
  assert.deepEqual(upstream.overlaps, []);
  const report = { duplicates_in_window: 1, restart_to_both_delivered_ms: Date.now() - restartedAt };
  t.diagnostic(`between commit and 250: ${JSON.stringify(report)}`);
});
