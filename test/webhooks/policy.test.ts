// The parts of webhooks that hold without a relay around them: the signature a receiver checks,
// the retry schedule (modelled, and checked against the waits pg-boss really sets), and the
// URL rules.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { DEFAULT_DISABLE_POLICY, DEFAULT_RETRY_POLICY, retrySpan, retryWaits, WEBHOOK_JOB_OPTIONS, WEBHOOK_QUEUE } from '../../src/webhooks/policy.ts';
import { generateWebhookSecret, signature } from '../../src/webhooks/signature.ts';
import { checkWebhookUrl, guardedLookup, isNonPublicAddress, TargetRefused, type TargetPolicy } from '../../src/webhooks/target.ts';
import { ensureWebhookQueue } from '../../src/webhooks/worker.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { signatureValid } from './receiver.ts';

describe('signature', () => {
  const body = JSON.stringify({ id: '1', type: 'sent', at: '2026-11-21T09:00:00.000Z', message_id: null, tenant: 'acme', tag: 'x', detail: {} });

  test('verifies by recomputing the HMAC of "t.body" with the secret', () => {
    const secret = generateWebhookSecret();
    assert.match(secret, /^whsec_[0-9A-Za-z]{32}$/);
    const header = signature(secret, 1_790_000_000, body);
    assert.match(header, /^t=1790000000,v1=[0-9a-f]{64}$/);
    assert.equal(signatureValid(secret, header, body), true);
  });

  test('a wrong secret, an altered body or an altered timestamp fails', () => {
    const secret = generateWebhookSecret();
    const header = signature(secret, 1_790_000_000, body);
    assert.equal(signatureValid(generateWebhookSecret(), header, body), false);
    assert.equal(signatureValid(secret, header, body.replace('acme', 'acmf')), false);
    assert.equal(signatureValid(secret, header.replace('t=1790000000', 't=1790000001'), body), false);
  });
});

describe('retry schedule', () => {
  test('the default spans at least 24 hours: 31 attempts, 30 s doubling, capped at 1 h', () => {
    const span = retrySpan(DEFAULT_RETRY_POLICY);
    assert.equal(span.attempts, 31);
    assert.ok(span.minSeconds >= 24 * 3600, `shortest span ${span.minSeconds} s`);
    // The numbers the README and policy.ts state.
    assert.equal(span.minSeconds, 86_610);
    assert.equal(span.maxSeconds, 90_180);
    const waits = retryWaits(DEFAULT_RETRY_POLICY);
    assert.deepEqual(waits.slice(0, 8).map((w) => w.min), [30, 60, 120, 240, 480, 960, 1920, 3600]);
    assert.ok(waits.every((w) => w.max <= 3600));
    // The endpoint is disabled no later than the first delivery gives up.
    assert.ok(DEFAULT_DISABLE_POLICY.failures <= span.attempts && DEFAULT_DISABLE_POLICY.seconds <= span.minSeconds);
    // pg-boss must keep a waiting job for the whole schedule.
    assert.ok(WEBHOOK_JOB_OPTIONS.retentionSeconds > span.maxSeconds);
  });

  test('without backoff every wait is the fixed delay', () => {
    assert.deepEqual(retryWaits({ retryLimit: 3, retryDelay: 5, retryBackoff: false }), [{ min: 5, max: 5 }, { min: 5, max: 5 }, { min: 5, max: 5 }]);
  });

  describe('against pg-boss', () => {
    let ctx: TestContext;
    before(async () => {
      ctx = await testContext();
      await ensureWebhookQueue(ctx.boss);
    });
    after(async () => {
      await ctx?.close();
    });

    test('pg-boss waits within the modelled bounds before each retry, and fails the job after the last attempt', async () => {
      const id = randomUUID();
      const ids = await ctx.boss.insert(WEBHOOK_QUEUE, [{ id, data: { deliveryId: id }, ...DEFAULT_RETRY_POLICY, ...WEBHOOK_JOB_OPTIONS }], { returnId: true });
      assert.deepEqual(ids, [id]);
      const waits = retryWaits(DEFAULT_RETRY_POLICY);
      for (let attempt = 1; attempt <= DEFAULT_RETRY_POLICY.retryLimit + 1; attempt++) {
        // Make the retry due now instead of waiting for it.
        await sql`UPDATE pgboss.job SET start_after = now() WHERE id = ${id}::uuid`.execute(ctx.db);
        const [job] = await ctx.boss.fetch<{ deliveryId: string }>(WEBHOOK_QUEUE, { includeMetadata: true });
        assert.equal(job?.id, id, `attempt ${attempt} fetched`);
        // What the worker reads to know it makes the last attempt.
        assert.equal(job.retryCount, attempt - 1);
        assert.equal(job.retryLimit, DEFAULT_RETRY_POLICY.retryLimit);
        await ctx.boss.fail(WEBHOOK_QUEUE, id);
        const r = await sql<{ state: string; wait: number }>`
          SELECT state, extract(epoch FROM start_after - now())::float AS wait FROM pgboss.job WHERE id = ${id}::uuid`.execute(ctx.db);
        const row = r.rows[0];
        if (attempt <= DEFAULT_RETRY_POLICY.retryLimit) {
          const w = waits[attempt - 1];
          assert.equal(row.state, 'retry', `after attempt ${attempt}`);
          // A second of slack either way for the statements between pg-boss's now() and ours.
          assert.ok(row.wait >= w.min - 1 && row.wait <= w.max + 1, `wait after attempt ${attempt}: ${row.wait} s, modelled ${w.min}-${w.max} s`);
        } else {
          assert.equal(row.state, 'failed', 'no retry after the last attempt');
        }
      }
    });
  });
});

describe('URL rules', () => {
  const dev: TargetPolicy = { production: false, publicOrigin: 'https://relay.example.com', hostname: 'relay.test', ports: new Set([8080, 2525, 465]) };
  const prod: TargetPolicy = { ...dev, production: true };
  const refused = (url: string, policy: TargetPolicy, why: RegExp) =>
    assert.throws(() => checkWebhookUrl(url, policy), (err: unknown) => err instanceof TargetRefused && why.test(err.message), url);

  test('http and https only, no credentials, not too long', () => {
    refused('ftp://hooks.example.com/x', dev, /http:\/\/ or https:/);
    refused('javascript:alert(1)', dev, /http:\/\/ or https:/);
    refused('hooks.example.com/x', dev, /not a valid URL/);
    refused('https://user:pass@hooks.example.com/x', dev, /user name or password/);
    refused('https://user@hooks.example.com/x', dev, /user name or password/);
    refused(`https://hooks.example.com/${'a'.repeat(2048)}`, dev, /longer than/);
    assert.equal(checkWebhookUrl('https://Hooks.Example.com/in?x=1', dev), 'https://hooks.example.com/in?x=1');
  });

  test('never the relay itself: its public origin, its ports on loopback, localhost or its host name', () => {
    refused('https://relay.example.com/admin/tenants', dev, /TXRELAY_PUBLIC_URL/);
    refused('https://relay.example.com:443/x', dev, /TXRELAY_PUBLIC_URL/);
    for (const url of ['http://127.0.0.1:8080/', 'http://localhost:8080/', 'http://LOCALHOST.:2525/', 'http://[::1]:465/', 'http://0.0.0.0:8080/', 'http://127.9.9.9:8080/', 'http://2130706433:8080/', 'http://[::ffff:127.0.0.1]:8080/', 'http://relay.test:8080/', 'http://api.localhost:2525/']) {
      refused(url, dev, /relay itself/);
    }
    // Other ports on loopback are fine outside production; the relay's ports elsewhere too.
    assert.equal(checkWebhookUrl('http://127.0.0.1:9999/hook', dev), 'http://127.0.0.1:9999/hook');
    assert.equal(checkWebhookUrl('http://localhost:9999/hook', dev), 'http://localhost:9999/hook');
    assert.equal(checkWebhookUrl('https://hooks.example.com:8080/x', dev), 'https://hooks.example.com:8080/x');
  });

  test('in production: no private, loopback, link-local or unique-local literal, no localhost', () => {
    for (const url of ['http://10.1.2.3/', 'http://172.16.0.1/', 'http://192.168.1.1/', 'http://127.0.0.1:9999/', 'http://169.254.169.254/latest/meta-data', 'http://100.64.0.1/', 'http://[fd00::1]/', 'http://[fe80::1]/', 'http://[::1]:9999/', 'http://[::ffff:10.0.0.1]/', 'http://0.0.0.0:9999/']) {
      refused(url, prod, /private or local address/);
    }
    refused('http://localhost:9999/', prod, /localhost/);
    assert.equal(checkWebhookUrl('https://93.184.215.14/hook', prod), 'https://93.184.215.14/hook');
    assert.equal(checkWebhookUrl('https://hooks.example.com/hook', prod), 'https://hooks.example.com/hook');
    // Outside production the same private literals are allowed.
    assert.equal(checkWebhookUrl('http://10.1.2.3/', dev), 'http://10.1.2.3/');
  });

  test('address classes', () => {
    for (const a of ['10.0.0.1', '192.168.0.1', '172.31.255.255', '127.0.0.1', '169.254.1.1', 'fc00::1', 'fe80::1', '::1', '::ffff:192.168.0.1', '64:ff9b::a00:1', '224.0.0.1', '255.255.255.255']) {
      assert.equal(isNonPublicAddress(a), true, a);
    }
    for (const a of ['93.184.215.14', '8.8.8.8', '172.32.0.1', '2606:2800:21f:cb07:6820:80da:af6b:8b2c']) assert.equal(isNonPublicAddress(a), false, a);
  });

  describe('at connection time, on what a host name resolves to', () => {
    const resolve = (lookup: ReturnType<typeof guardedLookup>, host: string, options: { all?: boolean; family?: number } = {}) =>
      new Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family?: number }>((done) => {
        lookup(host, options as never, (err, address, family) => done({ err, address, family }));
      });
    const table = (answers: Record<string, string[]>) => async (host: string) =>
      (answers[host] ?? []).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

    test('in production one private address refuses the host, even among public ones', async () => {
      const lookup = guardedLookup(prod, 443, table({ 'hooks.example.com': ['93.184.215.14', '10.0.0.5'] }));
      const r = await resolve(lookup, 'hooks.example.com');
      assert.equal(r.err?.code, 'EFORBIDDEN');
      assert.match(r.err?.message ?? '', /resolves to a private or local address \(10\.0\.0\.5\)/);
    });

    test('a name resolving to loopback must not reach the relay\'s ports, in any mode', async () => {
      const lookup = guardedLookup(dev, 8080, table({ 'alias.example': ['127.0.0.1'] }));
      assert.match((await resolve(lookup, 'alias.example')).err?.message ?? '', /resolves to the relay itself \(port 8080\)/);
      const other = guardedLookup(dev, 9999, table({ 'alias.example': ['127.0.0.1'] }));
      assert.deepEqual(await resolve(other, 'alias.example'), { err: null, address: '127.0.0.1', family: 4 });
    });

    test('answers in the form node asks for, by family; no address is an error', async () => {
      const lookup = guardedLookup(prod, 443, table({ 'hooks.example.com': ['2606:2800:21f:cb07:6820:80da:af6b:8b2c', '93.184.215.14'] }));
      assert.deepEqual((await resolve(lookup, 'hooks.example.com', { all: true })).address, [
        { address: '2606:2800:21f:cb07:6820:80da:af6b:8b2c', family: 6 },
        { address: '93.184.215.14', family: 4 },
      ]);
      assert.deepEqual(await resolve(lookup, 'hooks.example.com', { family: 4 }), { err: null, address: '93.184.215.14', family: 4 });
      assert.equal((await resolve(lookup, 'nowhere.example')).err?.code, 'ENOTFOUND');
    });
  });
});
