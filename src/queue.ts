// pg-boss plumbing: one queue per route, named `route.<route id>`, and job sends that join
// the caller's Kysely transaction so a message row and its job commit together.
import { fromKysely, PgBoss } from 'pg-boss';
import type { Executor } from './db/database.ts';

export const queueName = (routeId: string): string => `route.${routeId}`;

/**
 * pg-boss settings for delivery queues. Our own retry schedule lives in the worker (each
 * attempt is recorded and re-enqueued in one transaction); pg-boss's retries only cover a
 * worker that died or a handler that threw before it could record anything.
 */
export const DELIVERY_QUEUE_OPTIONS = {
  // Longer than the longest SMTP transaction the smtp transport allows (see its timeouts).
  expireInSeconds: 15 * 60,
  // A killed worker's job is picked up again after this much silence.
  heartbeatSeconds: 10,
  retryLimit: 50,
  retryDelay: 10,
  retryBackoff: true,
  retryDelayMax: 600,
  // pg-boss deletes queued and retrying jobs after retentionSeconds and does not extend it
  // on retry: keep it far beyond our retry horizon (about 6 h for the default policy).
  retentionSeconds: 30 * 24 * 3600,
  deleteAfterSeconds: 2 * 24 * 3600,
} as const;

export async function createBoss(url: string, options: { max?: number; supervise?: boolean } = {}): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: url,
    max: options.max ?? 10,
    application_name: 'txrelay-queue',
    supervise: options.supervise ?? true,
    superviseIntervalSeconds: 10,
    // Jobs whose heartbeat stopped are failed (and retried) only when the monitor runs; its
    // default of 60 s would leave a dead worker's jobs waiting over a minute.
    monitorIntervalSeconds: 10,
    schedule: false,
    connectionTimeoutMillis: 5_000,
  });
  return boss;
}

export async function ensureQueue(boss: PgBoss, routeId: string): Promise<void> {
  const name = queueName(routeId);
  const existing = await boss.getQueue(name);
  if (!existing) {
    try {
      await boss.createQueue(name, { ...DELIVERY_QUEUE_OPTIONS });
    } catch (err) {
      // Another process created it between our look and our create.
      if (!(await boss.getQueue(name))) throw err;
    }
  }
}

export interface EnqueueInput {
  routeId: string;
  messageId: string;
  jobId: string;
  startAfter?: Date;
}

/** Sends the delivery job through `db` (a transaction). A null from pg-boss is a failure. */
export async function enqueueDelivery(boss: PgBoss, db: Executor, input: EnqueueInput): Promise<void> {
  const id = await boss.send(queueName(input.routeId), { messageId: input.messageId }, {
    id: input.jobId,
    db: fromKysely(db),
    ...(input.startAfter ? { startAfter: input.startAfter } : {}),
  });
  if (id === null) throw new Error(`pg-boss refused the job for message ${input.messageId}`);
}
