// Upstreams that misbehave at the worst moments: one that drops the connection right after the
// final dot (the message may or may not have been taken: retry, never lose it), and one that
// tarpits (answers so slowly the socket timeout must end the attempt).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startDelivery, type DeliveryWorker } from '../../src/delivery/worker.ts';
import * as messages from '../../src/db/messages.repository.ts';
import type { Tenant } from '../../src/db/schema.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { serveSmtpSession } from '../helpers/raw-smtp-server.ts';
import { queueMessage, startUpstream, waitFor } from './upstream.ts';

/**
 * A hand-written SMTP server: it reads whole commands and the message, and on the final dot of
 * the first `dropAfterDot` sessions closes the socket without a reply; later sessions get 250.
 */
async function droppingServer(dropAfterDot: number) {
  let sessions = 0;
  const messagesSeen: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const session = ++sessions;
    socket.write('220 dropper ESMTP\r\n');
    serveSmtpSession(socket, 'dropper', {
      onMessage(body) {
        messagesSeen.push(body);
        if (session <= dropAfterDot) {
          socket.destroy();
          return false;
        }
        socket.write('250 2.0.0 Ok: taken\r\n');
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    messagesSeen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('misbehaving upstreams', () => {
  let ctx: TestContext;
  let tenant: Tenant;
  let worker: DeliveryWorker;
  const closers: (() => Promise<void>)[] = [];

  before(async () => {
    ctx = await testContext();
    tenant = await createTenant(ctx.db, { name: 'acme' });
    worker = await startDelivery(ctx, { reconcileIntervalMs: 500, routePollMs: 200 });
  });

  after(async () => {
    await worker?.stop();
    for (const close of closers) await close();
    await ctx?.close();
  });

  test('a connection dropped after the final dot is a transient failure: retried, then sent', async () => {
    const upstream = await droppingServer(1);
    closers.push(upstream.close);
    const route = await createRoute(ctx.db, ctx.box, tenant.id, {
      name: 'dropper',
      transport: 'smtp',
      config: { host: '127.0.0.1', port: upstream.port, pool: false },
      max_attempts: 3,
      retry_delay_seconds: 1,
    });
    const { id } = await queueMessage(ctx, route, ['drop@example.net']);
    const m = await waitFor(`message ${id} sent`, async () => {
      const row = await messages.findMessageMeta(ctx.db, id);
      return row?.status === 'sent' || row?.status === 'failed' ? row : undefined;
    }, 30_000);
    assert.equal(m.status, 'sent');
    const attempts = await messages.listAttempts(ctx.db, id);
    assert.equal(attempts.length, 2, JSON.stringify(attempts));
    assert.notEqual(attempts[0].outcome, 'sent');
    assert.match(attempts[0].response ?? '', /connection|closed|ECONNRESET|unexpected/i);
    assert.equal(attempts[1].outcome, 'sent');
    // The upstream saw the message twice: the one duplicate window no relay can close (it may
    // have taken the first copy). Never zero: nothing is lost.
    assert.equal(upstream.messagesSeen.length, 2);
  });

  test('a tarpit that never answers the final dot: the socket timeout ends the attempt instead of holding the worker', async () => {
    const tarpit = await startUpstream({ dataDelayMs: 60_000 });
    closers.push(tarpit.close);
    const route = await createRoute(ctx.db, ctx.box, tenant.id, {
      name: 'tarpit',
      transport: 'smtp',
      config: { host: '127.0.0.1', port: tarpit.port, pool: false, socket_timeout_seconds: 1 },
      max_attempts: 1,
    });
    const { id } = await queueMessage(ctx, route, ['slow@example.net']);
    const m = await waitFor(`message ${id} settled`, async () => {
      const row = await messages.findMessageMeta(ctx.db, id);
      return row?.status === 'failed' || row?.status === 'sent' ? row : undefined;
    }, 20_000);
    assert.equal(m.status, 'failed', 'one attempt allowed: failed once it timed out');
    const [a] = await messages.listAttempts(ctx.db, id);
    assert.match(a.response ?? '', /timeout|timed out/i);
    assert.ok(a.duration_ms !== null && a.duration_ms < 15_000, `the attempt took ${a.duration_ms} ms`);
    assert.equal(tarpit.received.length, 0);
  });
});
