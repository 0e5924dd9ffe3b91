// The webhook role of a worker process: the dispatcher (events → deliveries and jobs) and the
// consumer of the `webhooks` queue, which makes one attempt per job and records it. A failed
// attempt fails the job, and pg-boss retries it on the policy's schedule (policy.ts).
import type { JobWithMetadata, PgBoss } from 'pg-boss';
import type { Context } from '../context.ts';
import type { Executor } from '../db/database.ts';
import * as webhooks from '../db/webhooks.repository.ts';
import { startDispatcher, type DispatcherOptions, type WebhookJobData } from './dispatcher.ts';
import { DEFAULT_DISABLE_POLICY, DEFAULT_RETRY_POLICY, WEBHOOK_JOB_OPTIONS, WEBHOOK_QUEUE, type DisablePolicy, type RetryPolicy } from './policy.ts';
import { DEFAULT_TIMEOUT_MS, sendWebhook, type AttemptResult } from './send.ts';
import { targetPolicy, type HostLookup } from './target.ts';

export interface WebhookOptions extends DispatcherOptions {
  /** Default: DEFAULT_RETRY_POLICY (31 attempts over at least 24 h). Tests use seconds. */
  retry?: RetryPolicy;
  /** Default: DEFAULT_DISABLE_POLICY. */
  disable?: DisablePolicy;
  /** Host name resolution for requests (tests inject one: no public DNS). */
  lookup?: HostLookup;
  /** Per request. Default 10 s. */
  timeoutMs?: number;
  /** Parallel requests of this process: pg-boss worker slots × jobs per fetch. */
  slots?: number;
}

export interface WebhookWorker {
  /** Stops dispatching and fetching, and waits for the requests in flight (at most their timeout). */
  stop(): Promise<void>;
}

/** Jobs per fetch; each slot sends its batch's requests at once. */
const FETCH_BATCH = 5;
/** Requests in flight per endpoint, across every worker process (pg-boss group concurrency). */
const PER_ENDPOINT = 4;

/** The queue's options are defaults only: each job carries the retry policy it was dispatched with. */
export async function ensureWebhookQueue(boss: PgBoss, retry: RetryPolicy = DEFAULT_RETRY_POLICY): Promise<void> {
  if (await boss.getQueue(WEBHOOK_QUEUE)) return;
  try {
    await boss.createQueue(WEBHOOK_QUEUE, { ...retry, ...WEBHOOK_JOB_OPTIONS });
  } catch (err) {
    // Another process created it between our look and our create.
    if (!(await boss.getQueue(WEBHOOK_QUEUE))) throw err;
  }
}

export async function startWebhooks(ctx: Context, options: WebhookOptions = {}): Promise<WebhookWorker> {
  const retry = options.retry ?? DEFAULT_RETRY_POLICY;
  await ensureWebhookQueue(ctx.boss, retry);
  const deps: SendDeps = {
    ctx,
    disable: options.disable ?? DEFAULT_DISABLE_POLICY,
    lookup: options.lookup,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  };
  // Each job of a batch is sent at once and settled on its own: one to be retried is failed
  // here (fenced to its attempt), and pg-boss completes the rest together once the handler
  // returns (its completion skips a job no longer active). Not pg-boss's perJobResults, which
  // settles them the same way but through a JSON recordset the planner takes for a hundred rows,
  // and so joins to a scan of the queue's whole table, a day of finished jobs included
  // (WEBHOOK_JOB_OPTIONS): the delivery queues had the same plan (src/delivery/worker.ts). A job
  // that could not even be failed fails the batch once every job has settled.
  const handler = async (jobs: JobWithMetadata<WebhookJobData>[]): Promise<void> => {
    let unfailed: unknown;
    await Promise.all(
      jobs.map(async (job) => {
        const output = await settle(deps, job);
        if (!output) return;
        try {
          await ctx.boss.fail(WEBHOOK_QUEUE, { id: job.id, retryCount: job.retryCount }, output);
        } catch (err) {
          ctx.log.error({ err: (err as Error).message, job: job.id }, 'failing a webhook job failed; its batch is failed');
          unfailed ??= err;
        }
      }),
    );
    if (unfailed !== undefined) throw unfailed;
  };
  const workId = await ctx.boss.work(
    WEBHOOK_QUEUE,
    {
      includeMetadata: true,
      batchSize: FETCH_BATCH,
      localConcurrency: Math.max(1, Math.ceil((options.slots ?? 20) / FETCH_BATCH)),
      groupConcurrency: PER_ENDPOINT,
      pollingIntervalSeconds: 0.5,
      burstWhenBatchFull: true,
    },
    handler,
  );
  const dispatcher = startDispatcher({ db: ctx.db, boss: ctx.boss, log: ctx.log, retry }, options);
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        await dispatcher.stop();
        await ctx.boss.offWork(WEBHOOK_QUEUE, { id: workId, wait: true });
      })();
      return stopped;
    },
  };
}

/**
 * Runs one job; never throws. Undefined when it is done (pg-boss completes it with its batch),
 * else the output to fail it with, for pg-boss to retry it.
 */
async function settle(deps: SendDeps, job: JobWithMetadata<WebhookJobData>): Promise<object | undefined> {
  const { ctx } = deps;
  try {
    const outcome = await processWebhookJob(deps, job);
    return outcome === 'retry' ? { outcome } : undefined;
  } catch (err) {
    // Our own trouble (the database, a secret that no longer opens): pg-boss retries the job and
    // the attempt is made again. After the last try the delivery must not stay pending.
    const last = job.retryCount >= job.retryLimit;
    const message = (err as Error).message;
    ctx.log.error({ err: message, job: job.id, final: last }, last ? 'webhook job failed; no retries left' : 'webhook job failed; pg-boss will retry it');
    if (last) {
      await webhooks
        .finishDelivery(ctx.db, job.data.deliveryId, 'failed', `internal error: ${message}`)
        .catch((e: unknown) => ctx.log.error({ err: (e as Error).message, job: job.id }, 'marking a webhook delivery failed did not work'));
    }
    return { error: message };
  }
}

export interface SendDeps {
  ctx: Context;
  disable: DisablePolicy;
  lookup?: HostLookup;
  timeoutMs: number;
}

/**
 * One job: one attempt of its delivery, recorded. 'retry' when pg-boss should try again;
 * 'done' when the delivery succeeded, failed for good, or has nothing left to send.
 */
export async function processWebhookJob(deps: SendDeps, job: Pick<JobWithMetadata<WebhookJobData>, 'id' | 'data' | 'retryCount' | 'retryLimit'>): Promise<'done' | 'retry'> {
  const { ctx } = deps;
  const d = await webhooks.findDeliveryToSend(ctx.db, job.data.deliveryId);
  // Deleted with its endpoint or tenant, or finished (a job pg-boss ran twice).
  if (!d || d.status !== 'pending') return 'done';
  if (d.endpoint_status !== 'active') {
    await webhooks.finishDelivery(ctx.db, d.id, 'cancelled', 'endpoint disabled');
    return 'done';
  }
  const result = await sendWebhook({
    url: d.url,
    body: d.payload,
    secret: ctx.box.open(d.secret_enc),
    deliveryId: d.id,
    target: targetPolicy(ctx.config, ctx.listening),
    lookup: deps.lookup,
    timeoutMs: deps.timeoutMs,
  });
  const last = job.retryCount >= job.retryLimit;
  const number = d.attempts + 1;
  const disabled = await ctx.db.transaction().execute(async (trx) => await recordAttempt(trx, deps, d, number, result, last));
  const fields = { tenant: d.tenant_id, webhook: d.endpoint_id, delivery: d.id, attempt: number, status_code: result.statusCode, duration_ms: result.durationMs };
  if (result.ok) {
    ctx.log.info(fields, 'webhook delivered');
    return 'done';
  }
  if (disabled) {
    ctx.log.warn({ ...fields, error: result.error, reason: disabled.disabled_reason }, 'webhook endpoint disabled after persistent failure');
    return 'done';
  }
  ctx.log.info({ ...fields, error: result.error, final: last }, last ? 'webhook delivery failed: no retries left' : 'webhook attempt failed; will retry');
  return last ? 'done' : 'retry';
}

/**
 * The attempt, the delivery's new state and the endpoint's failure count, together. Returns the
 * endpoint when this failure disabled it (its pending deliveries, this one included, are then
 * cancelled).
 */
async function recordAttempt(trx: Executor, deps: SendDeps, d: webhooks.DeliveryToSend, number: number, result: AttemptResult, last: boolean) {
  await webhooks.insertAttempt(trx, d.id, { number, at: result.at, status_code: result.statusCode, error: result.error, response: result.response, duration_ms: result.durationMs });
  if (result.ok) {
    await webhooks.noteDeliveryAttempt(trx, d.id, result.at, 'succeeded', null);
    await webhooks.noteEndpointSuccess(trx, d.endpoint_id);
    return undefined;
  }
  await webhooks.noteDeliveryAttempt(trx, d.id, result.at, last ? 'failed' : 'pending', last ? `gave up after ${number} attempts: ${result.error}` : null);
  const disabled = await webhooks.noteEndpointFailure(trx, d.endpoint_id, result.at, deps.disable, (failures, since) =>
    `${failures} failed attempts in a row since ${since.toISOString()}; last: ${result.error}`,
  );
  if (disabled) await webhooks.cancelPendingDeliveries(trx, d.endpoint_id, `endpoint disabled: ${disabled.disabled_reason}`);
  return disabled;
}
