// Prometheus metrics (prom-client), served at /metrics: one registry per relay (startApp), every
// series named txrelay_*, plus Node's default process metrics under their usual names. The
// catalogue, with labels, is docs/metrics.md. Labels come from small fixed sets, tenant ids and
// route names only: never a tag, a recipient or free text.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from './db/database.ts';
import { withStatementTimeout } from './db/health.repository.ts';
import { queueDepths, type QueueDepthRow } from './db/messages.repository.ts';
import type { Logger } from './log.ts';
import type { Renderer } from './pipeline/render.ts';
import { SmtpError } from './smtp/smtp-error.ts';

/** Why a message was refused: a fixed set, derived from SmtpError codes, never from reply text. */
export type RejectReason = 'auth' | 'tls' | 'rate_limit' | 'sender' | 'route' | 'template' | 'size' | 'content' | 'internal' | 'other';

const REASON_BY_CODE: Record<string, RejectReason> = {
  invalid_key: 'auth',
  auth_required: 'auth',
  forbidden: 'auth',
  tenant_suspended: 'auth',
  tenant_mismatch: 'auth',
  tls_required: 'tls',
  rate_limited: 'rate_limit',
  invalid_from: 'sender',
  domain_not_verified: 'sender',
  unknown_route: 'route',
  route_disabled: 'route',
  no_route: 'route',
  route_required: 'route',
  unknown_template: 'template',
  render_error: 'template',
  render_unavailable: 'template',
  invalid_variables: 'template',
  message_too_large: 'size',
  too_many_parts: 'content',
  parse_timeout: 'content',
  invalid_header: 'content',
  empty_message: 'content',
  internal_error: 'internal',
};

export function rejectReason(err: unknown): RejectReason {
  // Anything but an SmtpError is our own fault: it was answered 451 4.3.0 (HTTP 503).
  if (!(err instanceof SmtpError)) return 'internal';
  return REASON_BY_CODE[err.code] ?? 'other';
}

/** `2xx`, `4xx` or `5xx`. */
export const replyClass = (code: number): string => `${Math.floor(code / 100)}xx`;

/** Queue gauges are read from the database at most this often, however often Prometheus scrapes. */
const QUEUE_CACHE_MS = 5_000;
/** PostgreSQL cancels the queue query after this long: a scrape never piles onto a slow database. */
const QUEUE_QUERY_TIMEOUT_MS = 2_000;

let processRegistry: Registry | undefined;

/**
 * Node's default metrics (CPU, memory, event loop lag, GC, handles), registered once per process
 * under their usual names (process_*, nodejs_*), which the common Node.js dashboards expect.
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export interface MetricsDeps {
  db: Db;
  log: Logger;
  /** The SMTP readiness gate's state (src/readiness.ts); absent: the gauge is not exported. */
  ready?: () => boolean;
}

export class Metrics {
  readonly registry = new Registry();
  readonly #deps: MetricsDeps;
  readonly #queueCacheMs: number;
  #queue: { at: number; rows: Promise<QueueDepthRow[] | undefined> } | undefined;

  readonly smtpConnections = new Counter({
    name: 'txrelay_smtp_connections_total',
    help: 'SMTP connections, by outcome: accepted, unready (421 4.3.0: database or queue unreachable), auth_lockout (421 4.7.0: too many failed AUTHs from the address), per_ip_limit (421 4.7.0: too many sessions from the address) or shutting_down (421 4.3.2)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly smtpAuth = new Counter({
    name: 'txrelay_smtp_auth_total',
    help: 'SMTP AUTH attempts, by outcome: ok, invalid (535) or error (the key lookup failed: 451 4.3.0)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly smtpTransactions = new Counter({
    name: 'txrelay_smtp_transactions_total',
    help: 'SMTP mail transactions ended at MAIL FROM or at the end of DATA, by outcome (accepted, duplicate, rejected) and reply class (2xx, 4xx, 5xx)',
    labelNames: ['outcome', 'reply_class'] as const,
    registers: [this.registry],
  });

  readonly messagesAccepted = new Counter({
    name: 'txrelay_messages_accepted_total',
    help: 'Messages accepted and committed to the queue, by source (smtp, http); repeats of an idempotency key are not counted',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });

  readonly messagesDuplicate = new Counter({
    name: 'txrelay_messages_duplicate_total',
    help: 'Submissions answered with an earlier message id (repeated idempotency key), by source',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });

  readonly messagesRejected = new Counter({
    name: 'txrelay_messages_rejected_total',
    help: 'Messages refused, by source and reason: auth, tls, rate_limit, sender, route, template, size, content, internal, other',
    labelNames: ['source', 'reason'] as const,
    registers: [this.registry],
  });

  readonly renderDuration = new Histogram({
    name: 'txrelay_render_duration_seconds',
    help: 'Template renders at submission, by outcome (ok, error)',
    labelNames: ['outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly deliveryAttempts = new Counter({
    name: 'txrelay_delivery_attempts_total',
    help: 'Delivery attempts, by tenant id, route name and result: sent, deferred, fallback, failed, abandoned (job lost mid-attempt), superseded (another worker recorded it), interrupted (cut by shutdown, put back without using an attempt)',
    labelNames: ['tenant', 'route', 'result'] as const,
    registers: [this.registry],
  });

  readonly deliveryLatency = new Histogram({
    name: 'txrelay_delivery_latency_seconds',
    help: 'From acceptance (250 / 202) to the attempt that sent the message, retries included',
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600],
    registers: [this.registry],
  });

  readonly queueMessages = new Gauge({
    name: 'txrelay_queue_messages',
    help: 'Messages waiting per route, by tenant id, route name and status (queued, deferred); read from the database, cached 5 s',
    labelNames: ['tenant', 'route', 'status'] as const,
    registers: [this.registry],
    collect: this.#collectQueue((g, r) => {
      g.set({ tenant: r.tenant_id, route: r.route_name, status: 'queued' }, r.queued);
      g.set({ tenant: r.tenant_id, route: r.route_name, status: 'deferred' }, r.deferred);
    }),
  });

  readonly queueOldestAge = new Gauge({
    name: 'txrelay_queue_oldest_age_seconds',
    help: 'Age of the oldest waiting (queued or deferred) message per route; 0 when none waits',
    labelNames: ['tenant', 'route'] as const,
    registers: [this.registry],
    collect: this.#collectQueue((g, r) => g.set({ tenant: r.tenant_id, route: r.route_name }, r.oldest_age_seconds ?? 0)),
  });

  readonly routePaused = new Gauge({
    name: 'txrelay_route_paused',
    help: '1 while a route is paused (its messages wait), else 0',
    labelNames: ['tenant', 'route'] as const,
    registers: [this.registry],
    collect: this.#collectQueue((g, r) => g.set({ tenant: r.tenant_id, route: r.route_name }, r.paused ? 1 : 0)),
  });

  constructor(deps: MetricsDeps, options: { queueCacheMs?: number } = {}) {
    this.#deps = deps;
    this.#queueCacheMs = options.queueCacheMs ?? QUEUE_CACHE_MS;
    const ready = deps.ready;
    if (ready) {
      new Gauge({
        name: 'txrelay_ready',
        help: '1 while the database and queue answer (SMTP accepts connections), 0 while new connections get 421 4.3.0',
        registers: [this.registry],
        collect() {
          this.set(ready() ? 1 : 0);
        },
      });
    }
  }

  /** The exposition text of this relay's metrics and the process's, and its content type. */
  async exposition(): Promise<{ contentType: string; text: string }> {
    const merged = Registry.merge([this.registry, processMetrics()]);
    return { contentType: this.registry.contentType, text: await merged.metrics() };
  }

  /** A message refused, at whatever stage (pipeline, SMTP envelope, HTTP request). */
  rejected(source: 'smtp' | 'http', err: unknown): void {
    this.messagesRejected.inc({ source, reason: rejectReason(err) });
  }

  /** The renderer, timed. */
  timeRender(renderer: Renderer): Renderer {
    return async (...args) => {
      const end = this.renderDuration.startTimer();
      try {
        const out = await renderer(...args);
        end({ outcome: 'ok' });
        return out;
      } catch (err) {
        end({ outcome: 'error' });
        throw err;
      }
    };
  }

  /** A gauge collector that fills from the shared, cached queue snapshot (one query for all three). */
  #collectQueue<T extends string>(fill: (gauge: Gauge<T>, row: QueueDepthRow) => void) {
    const metrics = this;
    return async function collect(this: Gauge<T>): Promise<void> {
      const rows = await metrics.#queueRows();
      // Routes deleted since the last scrape must vanish, not linger with their last value.
      this.reset();
      for (const row of rows ?? []) fill(this, row);
    };
  }

  #queueRows(): Promise<QueueDepthRow[] | undefined> {
    const now = Date.now();
    if (!this.#queue || now - this.#queue.at >= this.#queueCacheMs) this.#queue = { at: now, rows: this.#loadQueue() };
    return this.#queue.rows;
  }

  async #loadQueue(): Promise<QueueDepthRow[] | undefined> {
    try {
      return await withStatementTimeout(this.#deps.db, QUEUE_QUERY_TIMEOUT_MS, (trx) => queueDepths(trx, {}));
    } catch (err) {
      // The queue series are left out of this scrape (txrelay_ready says why); cached like a result.
      this.#deps.log.warn({ metrics: 'queue', err: (err as Error).message }, 'queue gauges not read from the database');
      return undefined;
    }
  }
}
