// The webhook dispatcher, run by the worker role: about every second it claims the events
// recorded since, creates a delivery for each endpoint that wants one and a pg-boss job for each
// delivery, and marks the events dispatched, all in one transaction.
//
// Why not in the transactions that record events: those are on every message's hot path (the
// SMTP 250 waits for the commit), and the fan-out would add a read of the tenant's endpoints,
// inserts and job sends to each. Like the stats roll-up, this runs beside them instead; an event
// reaches its webhooks within about a second. Safe in every worker process at once: each event
// is claimed by one of them (webhooks.repository.ts claimEvents).
import { fromKysely, type PgBoss } from 'pg-boss';
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/database.ts';
import { claimEvents, insertDeliveries, type EventMatch } from '../db/webhooks.repository.ts';
import { every, type Periodic } from '../every.ts';
import type { Logger } from '../log.ts';
import { WEBHOOK_JOB_OPTIONS, WEBHOOK_QUEUE, type RetryPolicy } from './policy.ts';
import { WEBHOOK_EVENT_TYPES, type WebhookPayload } from './signature.ts';

export interface DispatchDeps {
  db: Db;
  boss: PgBoss;
  log: Logger;
  retry: RetryPolicy;
}

/** What a webhook job carries. */
export interface WebhookJobData {
  deliveryId: string;
}

/** The body an endpoint receives for an event (SPEC §6). */
export function eventPayload(m: EventMatch): WebhookPayload {
  return { id: String(m.event_id), type: m.type, at: m.at, message_id: m.message_id, tenant: m.tenant_name, tag: m.tag, detail: m.detail };
}

/**
 * One batch: returns how many events it claimed. A failure anywhere (a delivery, a job) rolls
 * the whole batch back, events included, so the next pass dispatches them again.
 */
export async function dispatchBatch(deps: DispatchDeps, batchSize: number): Promise<number> {
  return await deps.db.transaction().execute(async (trx) => {
    const { claimed, matches } = await claimEvents(trx, batchSize, WEBHOOK_EVENT_TYPES);
    if (matches.length === 0) return claimed;
    const inserted = await insertDeliveries(
      trx,
      matches.map((m) => ({
        id: randomUUID(),
        endpoint_id: m.endpoint_id,
        tenant_id: m.tenant_id,
        event_id: m.event_id,
        event_type: m.type,
        message_id: m.message_id,
        payload: JSON.stringify(eventPayload(m)),
      })),
    );
    if (inserted.length === 0) return claimed;
    const jobs = inserted.map((d) => ({
      id: d.id,
      data: { deliveryId: d.id } satisfies WebhookJobData,
      // Jobs of one endpoint form a group: a slow endpoint holds a few worker slots, not all.
      group: { id: d.endpoint_id },
      ...deps.retry,
      ...WEBHOOK_JOB_OPTIONS,
    }));
    const ids = await deps.boss.insert(WEBHOOK_QUEUE, jobs, { db: fromKysely(trx), returnId: true });
    if ((ids?.length ?? 0) !== jobs.length) throw new Error(`pg-boss took ${ids?.length ?? 0} of ${jobs.length} webhook jobs`);
    return claimed;
  });
}

export interface DispatcherOptions {
  /** Pause between passes. Default 1 s. */
  intervalMs?: number;
  /** Events per transaction. Default 500. */
  batchSize?: number;
}

export function startDispatcher(deps: DispatchDeps, options: DispatcherOptions = {}): Periodic {
  const batchSize = options.batchSize ?? 500;

  async function pass(stopping: AbortSignal): Promise<void> {
    // A short batch means the backlog is done (or another worker holds the rest).
    for (;;) {
      const n = await dispatchBatch(deps, batchSize);
      if (n < batchSize || stopping.aborted) break;
    }
  }

  // Nothing is lost on failure: the events stay un-dispatched and the next pass takes them.
  return every(options.intervalMs ?? 1_000, pass, (err) => deps.log.warn({ err: (err as Error).message }, 'webhook dispatch failed; retrying next pass'));
}
