// A Context (config, db, queue, secrets, logger) on a test database, for tests that drive
// one part of the relay without starting the whole process.
import { loadConfig, type Config } from '../../src/config.ts';
import { SecretBox } from '../../src/crypto.ts';
import type { Context } from '../../src/context.ts';
import { TrackingTokens } from '../../src/events/tracking-tokens.ts';
import { createLogger } from '../../src/log.ts';
import { createBoss } from '../../src/queue.ts';
import { testDatabase, type TestDatabase } from './db.ts';

export interface TestContext extends Context {
  tdb: TestDatabase;
  close(): Promise<void>;
}

export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789';
export const TEST_SECRET = 'test-secret-0123456789-0123456789-0123456789';

export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    TXRELAY_SMTP_PORTS: '0',
    TXRELAY_HTTP_PORT: '0',
    TXRELAY_BIND: '127.0.0.1',
    TXRELAY_HOSTNAME: 'relay.test',
    TXRELAY_ADMIN_TOKEN: TEST_ADMIN_TOKEN,
    TXRELAY_SECRET: TEST_SECRET,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    ...overrides,
  });
}

export async function testContext(overrides: Record<string, string> = {}): Promise<TestContext> {
  const tdb = await testDatabase();
  const config = testConfig(overrides);
  const boss = await createBoss(tdb.url);
  boss.on('error', () => {});
  await boss.start();
  return {
    tdb,
    config,
    db: tdb.db,
    boss,
    box: new SecretBox(TEST_SECRET),
    tracking: new TrackingTokens(TEST_SECRET),
    log: createLogger(config.logLevel),
    adminToken: TEST_ADMIN_TOKEN,
    async close() {
      await boss.stop({ graceful: false, timeout: 1000 }).catch(() => {});
      await tdb.close();
    },
  };
}
