// SPEC §2, §3: a tenant over rate_limit_per_minute gets 451 4.7.1, counted in PostgreSQL so the
// limit holds across relay processes. Real PostgreSQL, two real relays on one database, SMTP on
// loopback.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { consume, consumeGroups, peek, release } from '../../src/db/rate-limits.repository.ts';
import { createTenant, updateTenant } from '../../src/services/tenants.service.ts';
import { addRoute, sendForReply, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';

const ACCEPTED = /^250 2\.0\.0 Ok: queued as [0-9a-f-]{36}$/;
const RATE_LIMITED = /^451 4\.7\.1 Rate limit of \d+ messages? per minute exceeded for this tenant, try again in \d+ seconds/;

let relay: TestRelay;
let other: TestRelay; // a second relay process on the same database
let tenants = 0;

before(async () => {
  relay = await startTestRelay({ TXRELAY_ROLES: 'smtp' });
  other = await startTestRelay({ TXRELAY_ROLES: 'smtp' }, relay.tdb);
});
after(async () => {
  await other?.close();
  await relay?.close();
});

/** A tenant with a verified domain, a capture route and the given limit (null: unlimited). */
async function limitedTenant(limit: number | null): Promise<TenantSetup & { domain: string }> {
  const name = `t${++tenants}`;
  const domain = `${name}.example`;
  const t = await setupTenant(relay.ctx, name, domain);
  await addRoute(relay.ctx, t.tenantId, { name: 'main', transport: 'capture' });
  await updateTenant(relay.ctx.db, t.tenantId, { rate_limit_per_minute: limit });
  return { ...t, domain };
}

/** Header authentication: the key is checked, and the message counted, at the end of DATA. */
async function sendWithHeader(t: { key: string; domain: string }, port = relay.smtpPort, headers: Record<string, string> = {}): Promise<string> {
  const reply = await sendForReply(port, undefined, {
    from: `app@${t.domain}`,
    to: 'user@dest.example',
    subject: 'Hi',
    text: 'Hello',
    headers: { 'X-Auth-APIKey': t.key, ...headers },
  });
  return reply.trim();
}

async function counters(tenantId: string): Promise<{ count: number; window_start: Date }[]> {
  const { rows } = await sql<{ count: number; window_start: Date }>`
    SELECT count, window_start FROM rate_counters WHERE tenant_id = ${tenantId} ORDER BY window_start
  `.execute(relay.ctx.db);
  return rows;
}

/**
 * Windows are calendar minutes by the database clock. A test that must stay inside one window
 * starts early in a minute rather than a few seconds before the next one.
 */
async function startOfWindow(): Promise<void> {
  const { rows } = await sql<{ s: number }>`SELECT extract(second FROM now())::float8 AS s`.execute(relay.ctx.db);
  if (rows[0].s > 40) await new Promise((r) => setTimeout(r, (61 - rows[0].s) * 1000));
}

async function smtpAuth(key: string, port = relay.smtpPort): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  await c.cmd('EHLO test');
  assert.match(await c.cmd(`AUTH PLAIN ${plain(key)}`), /^235 /);
  return c;
}

const message = (domain: string) => `From: app@${domain}\r\nTo: user@dest.example\r\nSubject: Hi\r\n\r\nHello\r\n`;

describe('SMTP', () => {
  test('limit 3 with header authentication: three 250s, then 451 4.7.1 at the end of DATA', async () => {
    await startOfWindow();
    const t = await limitedTenant(3);
    for (let i = 0; i < 3; i++) assert.match(await sendWithHeader(t), ACCEPTED);
    const refused = await sendWithHeader(t);
    assert.match(refused, RATE_LIMITED);
    assert.match(refused, /Rate limit of 3 messages per minute/);
  });

  test('limit 3 with SMTP AUTH: the 4th MAIL FROM is refused before DATA', async () => {
    await startOfWindow();
    const t = await limitedTenant(3);
    const c = await smtpAuth(t.key);
    try {
      for (let i = 0; i < 3; i++) {
        assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), /^250 /);
        assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
        assert.match(await c.data(message(t.domain)), ACCEPTED);
      }
      assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), RATE_LIMITED);
      // The session goes on: the client may try again later on the same connection.
      assert.match(await c.cmd('NOOP'), /^250 /);
    } finally {
      c.close();
    }
  });

  test('a window filled while a session is past MAIL FROM still refuses at the end of DATA', async () => {
    await startOfWindow();
    const t = await limitedTenant(1);
    const c = await smtpAuth(t.key);
    try {
      assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), /^250 /);
      assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
      assert.match(await sendWithHeader(t), ACCEPTED); // another client takes the only slot
      assert.match(await c.data(message(t.domain)), /^451 4\.7\.1 Rate limit of 1 message per minute/);
    } finally {
      c.close();
    }
    assert.deepEqual((await counters(t.tenantId)).map((r) => r.count), [1]);
  });

  test('two relay processes on one database share the count', async () => {
    await startOfWindow();
    const t = await limitedTenant(4);
    for (const port of [relay.smtpPort, other.smtpPort, relay.smtpPort, other.smtpPort]) {
      assert.match(await sendWithHeader(t, port), ACCEPTED);
    }
    assert.match(await sendWithHeader(t, relay.smtpPort), RATE_LIMITED);
    assert.match(await sendWithHeader(t, other.smtpPort), RATE_LIMITED);
    const c = await smtpAuth(t.key, other.smtpPort);
    try {
      assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), RATE_LIMITED);
    } finally {
      c.close();
    }
  });

  test('an unlimited tenant is never refused and leaves no counter behind', async () => {
    const t = await limitedTenant(null);
    for (let i = 0; i < 5; i++) assert.match(await sendWithHeader(t), ACCEPTED);
    const c = await smtpAuth(t.key);
    try {
      assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), /^250 /);
    } finally {
      c.close();
    }
    assert.deepEqual(await counters(t.tenantId), []);
  });

  test('test keys are counted too', async () => {
    await startOfWindow();
    const t = await limitedTenant(1);
    assert.match(await sendWithHeader({ key: t.testKey, domain: t.domain }), ACCEPTED);
    assert.match(await sendWithHeader(t), RATE_LIMITED);
  });

  test('the next minute opens a new window; the old one is dropped', async () => {
    await startOfWindow();
    const t = await limitedTenant(2);
    assert.match(await sendWithHeader(t), ACCEPTED);
    assert.match(await sendWithHeader(t), ACCEPTED);
    assert.match(await sendWithHeader(t), RATE_LIMITED);
    // Pretend a minute went by: the full window becomes the previous one.
    await sql`UPDATE rate_counters SET window_start = window_start - interval '1 minute' WHERE tenant_id = ${t.tenantId}`.execute(relay.ctx.db);
    assert.match(await sendWithHeader(t), ACCEPTED);
    const rows = await counters(t.tenantId);
    assert.equal(rows.length, 1, 'the previous window is deleted');
    assert.equal(rows[0].count, 1);
  });

  test('refused attempts are not counted', async () => {
    await startOfWindow();
    const t = await limitedTenant(2);
    assert.match(await sendWithHeader(t), ACCEPTED);
    assert.match(await sendWithHeader(t), ACCEPTED);
    for (let i = 0; i < 3; i++) assert.match(await sendWithHeader(t), RATE_LIMITED);
    assert.deepEqual((await counters(t.tenantId)).map((r) => r.count), [2]);
    // Once a minute has passed, the retrying client gets its full limit back.
    await sql`UPDATE rate_counters SET window_start = window_start - interval '1 minute' WHERE tenant_id = ${t.tenantId}`.execute(relay.ctx.db);
    assert.match(await sendWithHeader(t), ACCEPTED);
    assert.match(await sendWithHeader(t), ACCEPTED);
    assert.match(await sendWithHeader(t), RATE_LIMITED);
  });

  test('a message refused by a later stage, or an idempotent duplicate, gives its slot back', async () => {
    await startOfWindow();
    const t = await limitedTenant(2);
    const unverified = await sendForReply(relay.smtpPort, undefined, {
      from: 'app@not-theirs.example',
      to: 'user@dest.example',
      subject: 'Hi',
      text: 'Hello',
      headers: { 'X-Auth-APIKey': t.key },
    });
    assert.match(unverified, /^550 5\.7\.1 /);
    const first = await sendWithHeader(t, relay.smtpPort, { 'X-Transactional-Idempotency-Key': 'order-1' });
    assert.match(first, ACCEPTED);
    assert.equal(await sendWithHeader(t, relay.smtpPort, { 'X-Transactional-Idempotency-Key': 'order-1' }), first);
    assert.deepEqual((await counters(t.tenantId)).map((r) => r.count), [1]);
    assert.match(await sendWithHeader(t), ACCEPTED);
    assert.match(await sendWithHeader(t), RATE_LIMITED);
  });

  test('messages arriving together are counted together: exactly the limit is accepted', async () => {
    await startOfWindow();
    const t = await limitedTenant(5);
    const u = await limitedTenant(50);
    // Counted in groups (one statement for what arrives during a count): a group with no room
    // for all of a tenant's messages is counted one by one, so the window's last places are used.
    const replies = await Promise.all(Array.from({ length: 24 }, (_, i) => sendWithHeader(i % 2 ? t : u, i % 3 ? relay.smtpPort : other.smtpPort)));
    const ofT = replies.filter((_, i) => i % 2);
    assert.equal(ofT.filter((r) => ACCEPTED.test(r)).length, 5, ofT.join('\n'));
    assert.equal(ofT.filter((r) => RATE_LIMITED.test(r)).length, 7);
    assert.ok(replies.filter((_, i) => !(i % 2)).every((r) => ACCEPTED.test(r)));
    assert.deepEqual((await counters(t.tenantId)).map((r) => r.count), [5]);
    assert.deepEqual((await counters(u.tenantId)).map((r) => r.count), [12]);
  });

  test('MAIL FROM answers from what this relay last counted: refused at once when full, and seen again after a second', async () => {
    await startOfWindow();
    const t = await limitedTenant(2);
    const c = await smtpAuth(t.key);
    try {
      assert.match(await sendWithHeader(t), ACCEPTED);
      assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), /^250 /);
      await c.cmd('RSET');
      // Another process fills the window; this relay's knowledge is under a second old...
      await consume(other.ctx.db, t.tenantId, 2);
      // ...and it is asked again once that second has passed.
      await new Promise((r) => setTimeout(r, 1_100));
      assert.match(await c.cmd('MAIL FROM:<app@' + t.domain + '>'), RATE_LIMITED);
    } finally {
      c.close();
    }
  });

  test('one tenant at its limit does not affect another', async () => {
    await startOfWindow();
    const a = await limitedTenant(1);
    const b = await limitedTenant(1);
    assert.match(await sendWithHeader(a), ACCEPTED);
    assert.match(await sendWithHeader(a), RATE_LIMITED);
    assert.match(await sendWithHeader(b), ACCEPTED);
    assert.match(await sendWithHeader(b), RATE_LIMITED);
  });
});

describe('rate-limits repository', () => {
  test('concurrent consumes never exceed the limit', async () => {
    await startOfWindow();
    const { id } = await createTenant(relay.ctx.db, { name: `r${++tenants}` });
    // Both relays' pools, so the increments race on separate connections.
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => consume((i % 2 ? other : relay).ctx.db, id, 7)),
    );
    assert.equal(results.filter((r) => r.counted).length, 7);
    assert.deepEqual(results.filter((r) => r.counted).map((r) => r.count).sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7]);
    for (const r of results) assert.ok(r.retryAfterSeconds >= 1 && r.retryAfterSeconds <= 60, String(r.retryAfterSeconds));
    assert.equal((await peek(relay.ctx.db, id)).count, 7);
  });

  test('consumeGroups counts all of a tenant\'s messages or none, and never exceeds the limit', async () => {
    await startOfWindow();
    const a = (await createTenant(relay.ctx.db, { name: `r${++tenants}` })).id;
    const b = (await createTenant(relay.ctx.db, { name: `r${++tenants}` })).id;
    const first = await consumeGroups(relay.ctx.db, [{ tenantId: a, limit: 10, n: 3 }, { tenantId: b, limit: 2, n: 3 }]);
    assert.deepEqual([first.get(a)?.counted, first.get(a)?.count], [true, 3]);
    assert.equal(first.get(b)?.counted, false, 'three do not fit in a window of two: none is counted');
    assert.deepEqual(await counters(b), []);
    assert.equal((await consumeGroups(relay.ctx.db, [{ tenantId: a, limit: 10, n: 7 }])).get(a)?.count, 10);
    assert.equal((await consumeGroups(relay.ctx.db, [{ tenantId: a, limit: 10, n: 1 }])).get(a)?.counted, false);
    assert.equal((await peek(relay.ctx.db, a)).count, 10);
    // Racing on both relays' pools: what is counted adds up to the window, within the limit.
    const c = (await createTenant(relay.ctx.db, { name: `r${++tenants}` })).id;
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => consumeGroups((i % 2 ? other : relay).ctx.db, [{ tenantId: c, limit: 9, n: 2 }])));
    const counted = results.filter((r) => r.get(c)?.counted).length;
    assert.equal(counted, 4, 'four groups of two fit in nine');
    assert.equal((await peek(relay.ctx.db, c)).count, 8);
  });

  test('peek counts nothing; release gives one back and never goes below zero', async () => {
    await startOfWindow();
    const { id } = await createTenant(relay.ctx.db, { name: `r${++tenants}` });
    assert.equal((await peek(relay.ctx.db, id)).count, 0);
    assert.equal((await peek(relay.ctx.db, id)).count, 0);
    const c = await consume(relay.ctx.db, id, 5);
    assert.equal(c.count, 1);
    assert.equal(c.windowStart.getUTCSeconds(), 0);
    await release(relay.ctx.db, id, c.windowStart);
    await release(relay.ctx.db, id, c.windowStart);
    assert.equal((await peek(relay.ctx.db, id)).count, 0);
  });

  test('deleting a tenant deletes its counters', async () => {
    const { id } = await createTenant(relay.ctx.db, { name: `r${++tenants}` });
    await consume(relay.ctx.db, id, 5);
    await sql`DELETE FROM tenants WHERE id = ${id}`.execute(relay.ctx.db);
    assert.deepEqual(await counters(id), []);
  });
});

// Last: stops the database under both relays, then starts it again.
test('a database fault at MAIL FROM lets the transaction go on; the end of DATA answers 451 4.3.0', async (t) => {
  if (!relay.tdb.server) return t.skip('needs the embedded server (DATABASE_URL is set)');
  const tenant = await limitedTenant(3);
  const c = await smtpAuth(tenant.key);
  await relay.tdb.server.stop();
  try {
    assert.match(await c.cmd('MAIL FROM:<app@' + tenant.domain + '>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<user@dest.example>'), /^250 /);
    assert.match(await c.data(message(tenant.domain)), /^451 4\.3\.0 /);
  } finally {
    c.close();
    await relay.tdb.restart();
  }
});
