// pg-boss plumbing: one queue per route, named `route.<route id>`, and job sends that join
// the caller's Kysely transaction so a message row and its job commit together.
import { fromKysely, PgBoss, type Db as BossDb } from 'pg-boss';
import { preparedBossDb, type Executor } from './db/database.ts';
import type { CompanionInsert } from './db/messages.repository.ts';

export const queueName = (routeId: string): string => `route.${routeId}`;

/**
 * pg-boss settings for delivery queues. Our own retry schedule lives in the worker (each
 * attempt is recorded and re-enqueued in one transaction); pg-boss's retries only cover a
 * worker that died or a handler that threw before it could record anything.
 */
export const DELIVERY_QUEUE_OPTIONS = {
  // Longer than the longest SMTP transaction the smtp transport allows (see its timeouts).
  expireInSeconds: 15 * 60,
  // A killed worker's job is picked up again after this much silence (pg-boss's least). Each
  // worker process's supervisor sweeps lapsed heartbeats every superviseIntervalSeconds, and the
  // job then waits out its first retry delay: a dead worker's jobs run again on another worker
  // 12–24 s after their last heartbeat (test/scale-out measures it).
  heartbeatSeconds: 10,
  retryLimit: 50,
  // The first pg-boss retry comes 2–4 s later, then doubling up to retryDelayMax. Short: these
  // retries only follow a dead worker or a handler that threw (the database away), never an
  // upstream's answer, and a dead worker's job has already waited out the heartbeat.
  retryDelay: 2,
  retryBackoff: true,
  retryDelayMax: 600,
  // pg-boss deletes a queued or retrying job retentionSeconds after its start_after and does not
  // extend it on retry. Each of our retries is a new job due at most 6 h later (the backoff cap in
  // outcome.ts), so a job only has to outlive one wait, its pg-boss retries (at most 50, each an
  // expiry of 15 min plus a backoff capped at 10 min: under a day) and the time it waits behind a
  // backlog or on a paused route: 30 days is far beyond that. The whole horizon (up to 99 waits
  // of 6 h ≈ 25 days with max_attempts 100) never rests on one job. A job deleted anyway (a
  // route paused for over 30 days) is replaced by the reconciler, which finds the waiting message
  // without a live job.
  retentionSeconds: 30 * 24 * 3600,
  deleteAfterSeconds: 2 * 24 * 3600,
} as const;

export async function createBoss(url: string, options: { max?: number; supervise?: boolean } = {}): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: url,
    max: options.max ?? 10,
    application_name: 'txrelay-queue',
    // Maintenance (expiry, heartbeat sweeps, retention) only where the workers are: app.ts turns
    // it off in smtp/api-only processes. Several workers may supervise at once: pg-boss claims
    // each queue's pass with a lock, so a pass runs once.
    supervise: options.supervise ?? true,
    superviseIntervalSeconds: 10,
    // Jobs whose heartbeat stopped are failed (and retried) only when the monitor runs; its
    // default of 60 s would leave a dead worker's jobs waiting over a minute.
    monitorIntervalSeconds: 10,
    // No cron schedules: the relay's periodic work runs in src/every.ts.
    schedule: false,
    // migrate stays on (pg-boss's default) in every process, whatever its roles: an smtp process
    // that starts first on an empty database must be able to send jobs. The install and its
    // upgrades run under pg-boss's advisory lock, so processes starting at once do it once.
    connectionTimeoutMillis: 5_000,
  });
  return boss;
}

/**
 * A PgBoss that is never started, for a process without the queue role (the CLI): it sends jobs
 * through the caller's transaction and creates queues through `db`, and runs no maintenance,
 * polling or connection pool of its own. The schema must exist: any relay that ran created it.
 */
export function offlineBoss(db: Executor): PgBoss {
  return new PgBoss({ db: fromKysely(db), schedule: false, supervise: false, migrate: false });
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
  /** A time, or a number of seconds from now on the database clock. */
  startAfter?: Date | number;
  /** A send time the message already holds (a job put back until then). */
  reserved?: SendReservation;
}

/** A send time reserved under a route's max_per_second (delivery/limits.ts). */
export interface SendReservation {
  /** Database clock. */
  at: Date;
  /** The max_per_second it was reserved under. */
  perSecond: number;
}

/** What a delivery job carries. */
export interface DeliveryJobData {
  messageId?: string;
  /** ISO time and rate of the send time reserved before the job was put back (EnqueueInput.reserved). */
  sendAt?: string;
  sendPerSecond?: number;
}

/** Sends the delivery job through `db` (a transaction). A null from pg-boss is a failure. */
export async function enqueueDelivery(boss: PgBoss, db: Executor, input: EnqueueInput): Promise<void> {
  const { reserved } = input;
  const data: DeliveryJobData = { messageId: input.messageId, ...(reserved ? { sendAt: reserved.at.toISOString(), sendPerSecond: reserved.perSecond } : {}) };
  const id = await boss.send(queueName(input.routeId), data, {
    id: input.jobId,
    db: preparedBossDb(db),
    ...(input.startAfter !== undefined ? { startAfter: input.startAfter } : {}),
  });
  if (id === null) throw new Error(`pg-boss refused the job for message ${input.messageId}`);
}

/**
 * pg-boss's statement for the first delivery jobs of newly accepted messages on one route,
 * without running it: the accepting statement runs it with the messages' rows, one round trip
 * for the whole group commit (messages.repository.ts, insertAcceptedMessages). pg-boss writes the
 * statement and its parameters (through a `db` that keeps them instead of running them), so its
 * columns and defaults stay its own. Each job's id is its message's id.
 *
 * A queue with pg-boss's `notify` gets a statement that cannot run inside another (a SELECT
 * over its own data-modifying WITH): refused here, loudly, rather than half-run. Delivery
 * queues are created without it (DELIVERY_QUEUE_OPTIONS).
 */
export async function deliveryJobsInsert(boss: PgBoss, routeId: string, messageIds: string[]): Promise<CompanionInsert> {
  const jobs = messageIds.map((messageId) => ({ id: messageId, data: { messageId } satisfies DeliveryJobData }));
  let statement: { text: string; values: unknown[] } | undefined;
  const keeping: BossDb = {
    async executeSql(text, values) {
      statement = { text, values: values ?? [] };
      return { rows: messageIds.map((id) => ({ id })) };
    },
  };
  await boss.insert(queueName(routeId), jobs, { db: keeping, returnId: true });
  if (!statement) throw new Error(`pg-boss wrote no statement for the jobs on route ${routeId}`);
  if (!/^\s*INSERT\s/i.test(statement.text) || statement.text.includes(';')) {
    throw new Error(`pg-boss's job insert on route ${routeId} is not a single INSERT; it cannot join the accepting statement`);
  }
  // pg-boss spells the queue's name into its text: as a parameter instead, one text (one
  // prepared statement) serves every route.
  const literal = `'${queueName(routeId)}'`;
  const text = statement.text.split(literal).join(`$${statement.values.length + 1}::text`);
  return { text, values: [...statement.values, queueName(routeId)], expected: messageIds.length };
}
