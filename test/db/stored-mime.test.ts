// How messages.mime is stored (src/db/stored-mime.ts): from 16 KiB compressed with zstd by the
// relay, read back whole for delivery and the API, and an unreadable frame is a fault of ours
// (the attempt is retried), never a message sent wrong or failed for good.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { findMessage } from '../../src/db/messages.repository.ts';
import type { Route } from '../../src/db/schema.ts';
import { COMPRESS_FROM_BYTES, messageBytes, StoredMimeError, storedMime } from '../../src/db/stored-mime.ts';
import { processJob, type DeliveryDeps } from '../../src/delivery/deliver.ts';
import { createTransport, TransportCache } from '../../src/delivery/transports/index.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';
import { getMessageMime } from '../../src/services/messages.service.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { startUpstream, type Upstream } from '../delivery/upstream.ts';
import { acceptedMessage } from '../helpers/accepted.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

/** A built message of about `bytes` in pieces of whole lines, as buildMime gives them: HTML with some random text. */
function builtMessage(id: string, bytes: number): Buffer[] {
  const head = Buffer.from(`From: a@example.com\r\nTo: b@example.org\r\nSubject: stored\r\nMessage-ID: <${id}@relay.test>\r\nContent-Type: text/html\r\n\r\n`);
  const lines: string[] = [];
  for (let n = head.length; n < bytes; ) {
    const line = `<p>${n} ${randomBytes(24).toString('hex')} lorem ipsum dolor sit amet</p>\r\n`;
    lines.push(line);
    n += line.length;
  }
  const half = Math.floor(lines.length / 2);
  return [head, Buffer.from(lines.slice(0, half).join('')), Buffer.from(lines.slice(half).join(''))];
}

const sizeOf = (pieces: readonly Buffer[]) => pieces.reduce((sum, p) => sum + p.length, 0);

describe('storedMime and messageBytes', () => {
  test('below COMPRESS_FROM_BYTES, or with compression off, the pieces are stored as they are', () => {
    const small = builtMessage('s', COMPRESS_FROM_BYTES - 200);
    assert.ok(sizeOf(small) < COMPRESS_FROM_BYTES);
    assert.deepEqual(storedMime(small, sizeOf(small), 'zstd'), { mime: small, mime_compression: 'none' });
    const large = builtMessage('l', 100_000);
    assert.deepEqual(storedMime(large, sizeOf(large), 'none'), { mime: large, mime_compression: 'none' });
  });

  test('from COMPRESS_FROM_BYTES, one zstd frame that reads back as the pieces joined', () => {
    for (const bytes of [COMPRESS_FROM_BYTES + 100, 100_000, 900_000]) {
      const pieces = builtMessage('z', bytes);
      const size = sizeOf(pieces);
      const stored = storedMime(pieces, size, 'zstd');
      assert.equal(stored.mime_compression, 'zstd');
      assert.ok(Buffer.isBuffer(stored.mime));
      assert.ok(stored.mime.length < size * 0.75, `${size} bytes stored in ${stored.mime.length}`);
      assert.ok(messageBytes({ mime: stored.mime, mime_compression: 'zstd', size }).equals(Buffer.concat(pieces)));
    }
  });

  test('a frame that does not decompress, or not to its size, is a StoredMimeError', () => {
    const pieces = builtMessage('e', 50_000);
    const size = sizeOf(pieces);
    const { mime } = storedMime(pieces, size, 'zstd') as { mime: Buffer };
    assert.throws(() => messageBytes({ mime: Buffer.from('not a zstd frame'), mime_compression: 'zstd', size }), StoredMimeError);
    assert.throws(() => messageBytes({ mime: mime.subarray(0, mime.length - 10), mime_compression: 'zstd', size }), StoredMimeError);
    assert.throws(() => messageBytes({ mime, mime_compression: 'zstd', size: size + 1 }), /decompresses to \d+ bytes, not \d+/);
    assert.throws(() => messageBytes({ mime, mime_compression: 'zstd', size: size - 1 }), StoredMimeError);
  });
});

describe('stored messages in the database', () => {
  let ctx: TestContext;
  let route: Route;
  let upstream: Upstream;
  let deps: DeliveryDeps;

  before(async () => {
    ctx = await testContext();
    upstream = await startUpstream();
    const tenant = await createTenant(ctx.db, { name: 'storedco' });
    route = await createRoute(ctx.db, ctx.box, tenant.id, { name: 'up', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port }, max_attempts: 5 });
    deps = { ctx, transports: new TransportCache((r) => createTransport(r, { box: ctx.box, hostname: 'relay.test' })), deadlineMs: 10_000, shutdown: new AbortController().signal };
  });

  after(async () => {
    await deps?.transports.closeAll();
    await upstream?.close();
    await ctx?.close();
  });

  async function row(id: string) {
    const { rows } = await sql<{ mime_compression: string; stored: number; size: number; status: string; job_id: string }>`
      SELECT mime_compression, octet_length(mime) AS stored, size, status, job_id FROM messages WHERE id = ${id}`.execute(ctx.db);
    return rows[0];
  }

  test('a large message is stored compressed and delivered, and read by the API, byte for byte', async () => {
    const m = acceptedMessage(route);
    m.mime = builtMessage(m.id, 120_000);
    m.size = sizeOf(m.mime);
    await commitMessage(ctx, m);
    const stored = await row(m.id);
    assert.equal(stored.mime_compression, 'zstd');
    assert.ok(stored.stored < m.size / 2, `${m.size} bytes stored in ${stored.stored}`);
    const original = Buffer.concat(m.mime);
    assert.ok((await getMessageMime(ctx.db, m.id, route.tenant_id)).equals(original));
    assert.ok((await findMessage(ctx.db, m.id))!.mime.equals(original));

    await processJob(deps, { id: stored.job_id, data: { messageId: m.id } });
    assert.equal((await row(m.id)).status, 'sent');
    const got = upstream.received.find((r) => r.data.includes(`<${m.id}@relay.test>`));
    assert.ok(got, 'the upstream got it');
    assert.ok(got.data.equals(original), 'what went out is what was built');
  });

  test('a small message, and any with TXRELAY_STORE_COMPRESSION=none, is stored as it is', async () => {
    const small = acceptedMessage(route);
    await commitMessage(ctx, small);
    assert.deepEqual(await row(small.id).then((r) => [r.mime_compression, r.stored]), ['none', small.size]);

    const off = { ...ctx, config: { ...ctx.config, storeCompression: 'none' as const } };
    const large = acceptedMessage(route);
    large.mime = builtMessage(large.id, 60_000);
    large.size = sizeOf(large.mime);
    await commitMessage(off, large);
    assert.deepEqual(await row(large.id).then((r) => [r.mime_compression, r.stored]), ['none', large.size]);
    assert.ok((await getMessageMime(ctx.db, large.id)).equals(Buffer.concat(large.mime)));
  });

  test('a stored frame that cannot be read defers the attempt as our fault: nothing goes out, nothing fails for good', async () => {
    const m = acceptedMessage(route);
    m.mime = builtMessage(m.id, 40_000);
    m.size = sizeOf(m.mime);
    await commitMessage(ctx, m);
    await sql`UPDATE messages SET mime = ${Buffer.from('damaged')} WHERE id = ${m.id}`.execute(ctx.db);
    const before = upstream.seen.mailFrom;

    await processJob(deps, { id: (await row(m.id)).job_id, data: { messageId: m.id } });
    assert.equal((await row(m.id)).status, 'deferred');
    assert.equal(upstream.seen.mailFrom, before, 'no transaction with the upstream');
    const attempt = await ctx.db.selectFrom('attempts').select('response').where('message_id', '=', m.id).executeTakeFirstOrThrow();
    assert.match(attempt.response ?? '', /internal error: the stored message does not decompress/);
    await assert.rejects(getMessageMime(ctx.db, m.id), StoredMimeError);
  });
});
