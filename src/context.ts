// What every role receives: configuration, the database, the queue, secrets and the logger.
import type { PgBoss } from 'pg-boss';
import type { Config } from './config.ts';
import type { SecretBox } from './crypto.ts';
import type { Db } from './db/database.ts';
import type { TrackingTokens } from './events/tracking-tokens.ts';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import type { ReadinessMonitor } from './readiness.ts';

export interface Context {
  config: Config;
  db: Db;
  boss: PgBoss;
  box: SecretBox;
  /** Signs and verifies open and click tracking tokens (its own key, derived from TXRELAY_SECRET). */
  tracking: TrackingTokens;
  log: Logger;
  adminToken: string;
  /** The relay's Prometheus metrics (src/metrics.ts). Absent in the CLI and bare test contexts: nothing is counted. */
  metrics?: Metrics;
  /** Whether the database and queue answer, checked in the background (src/readiness.ts); set by startApp. */
  readiness?: ReadinessMonitor;
  /**
   * The ports this process actually listens on, set by startApp once they are bound (a
   * configured port 0 is chosen by the OS). Webhook URLs must not point at them
   * (src/webhooks/target.ts). Absent where nothing listens (the CLI, a bare test context).
   */
  listening?: { http?: number; smtp: number[]; smtps: number[] };
}
