// What every role receives: configuration, the database, the queue, secrets and the logger.
import type { PgBoss } from 'pg-boss';
import type { Config } from './config.ts';
import type { SecretBox } from './crypto.ts';
import type { Db } from './db/database.ts';
import type { Logger } from './log.ts';

export interface Context {
  config: Config;
  db: Db;
  boss: PgBoss;
  box: SecretBox;
  log: Logger;
  adminToken: string;
}
