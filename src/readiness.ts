// Readiness: can this process do its work? The database must answer and the queue's schema must
// be there. `GET /readyz` checks on every request; the SMTP listener asks a ReadinessMonitor
// instead, which checks every few seconds and as soon as something failed, so accepting a
// connection costs no query and a database outage turns new connections away with 421 4.3.0.
import type { PgBoss } from 'pg-boss';
import type { Db } from './db/database.ts';
import { ping } from './db/health.repository.ts';
import type { Logger } from './log.ts';

export type Check = () => Promise<void>;

export interface CheckReport {
  ok: boolean;
  /** Per check: `ok`, or `unavailable (<error code>)`. */
  checks: Record<string, string>;
  failures: { check: string; err: unknown }[];
}

/** Below the 5 s pool connection timeout: a probe answers before its caller gives up. */
export const CHECK_TIMEOUT_MS = 3_000;

/** The dependencies every role needs: PostgreSQL, and pg-boss's schema in it. */
export function dependencyChecks(deps: { db: Db; boss: PgBoss }): Record<string, Check> {
  return {
    database: () => ping(deps.db),
    queue: async () => {
      if ((await deps.boss.schemaVersion()) === null) throw Object.assign(new Error('pg-boss schema missing'), { code: 'ENOSCHEMA' });
    },
  };
}

async function runCheck(name: string, check: Check, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error(`${name} check timed out`), { code: 'ETIMEDOUT' })), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs every check at once, each bounded in time. Never throws. */
export async function runChecks(checks: Record<string, Check>, timeoutMs = CHECK_TIMEOUT_MS): Promise<CheckReport> {
  const names = Object.keys(checks);
  const results = await Promise.allSettled(names.map((name) => runCheck(name, checks[name], timeoutMs)));
  const report: CheckReport = { ok: true, checks: {}, failures: [] };
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') {
      report.checks[names[i]] = 'ok';
      return;
    }
    report.ok = false;
    // The code only: probes answer strangers, and messages may name internal hosts.
    report.checks[names[i]] = `unavailable (${(r.reason as { code?: string }).code ?? 'error'})`;
    report.failures.push({ check: names[i], err: r.reason });
  });
  return report;
}

/** A failure reported within this long of the last check does not start another one. */
const SUSPECT_COOLDOWN_MS = 500;

/**
 * Holds this process's readiness, re-checked every `intervalMs` and whenever a caller reports a
 * failure that may be the database's (`suspect()`). Starts ready: startApp has just migrated.
 * Logs each change of state once.
 */
export class ReadinessMonitor {
  readonly #checks: Record<string, Check>;
  readonly #log: Logger;
  readonly #intervalMs: number;
  #ready = true;
  #running: Promise<boolean> | undefined;
  #lastCheckedAt = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(checks: Record<string, Check>, log: Logger, options: { intervalMs?: number } = {}) {
    this.#checks = checks;
    this.#log = log;
    this.#intervalMs = options.intervalMs ?? 2_000;
  }

  get ready(): boolean {
    return this.#ready;
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.check(), this.#intervalMs);
    // The monitor must not keep a stopping process alive.
    this.#timer.unref();
  }

  /** Checks now (joining a check already running); resolves to the new state. */
  check(): Promise<boolean> {
    this.#running ??= this.#run().finally(() => {
      this.#running = undefined;
      this.#lastCheckedAt = Date.now();
    });
    return this.#running;
  }

  /** Something failed in a way that may be the database: check soon rather than at the next tick. */
  suspect(): void {
    if (Date.now() - this.#lastCheckedAt >= SUSPECT_COOLDOWN_MS) void this.check();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  async #run(): Promise<boolean> {
    const report = await runChecks(this.#checks);
    if (report.ok !== this.#ready) {
      this.#ready = report.ok;
      if (report.ok) this.#log.info({ readiness: 'ready', checks: report.checks }, 'ready again: accepting SMTP connections');
      else this.#log.warn({ readiness: 'unready', checks: report.checks }, 'not ready: new SMTP connections get 421 4.3.0 until the checks pass');
    }
    return report.ok;
  }
}
