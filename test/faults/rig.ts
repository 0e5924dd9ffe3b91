// What the process-level fault tests share: a test database, a fault upstream, tenant `acme`
// (verified acme.example, a live send key, route `main` to the upstream, pooled), fixed SMTP and
// HTTP ports and a data dir, so relay processes (`node src/cli.ts start`) can be killed and
// restarted in the same place; and the clean-up of all of it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SecretBox } from '../../src/crypto.ts';
import { freePort } from '../../src/db/embedded.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { createRoute } from '../../src/services/routes.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { TEST_SECRET } from '../helpers/context.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';
import { killHard, startRelay, type RelayProcess } from '../helpers/process.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import { startFaultUpstream, type FaultUpstream } from './fault-upstream.ts';

/** The reply to a committed message; group 1 is its id. */
export const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/;

export interface Rig {
  tdb: TestDatabase;
  upstream: FaultUpstream;
  key: string;
  smtpPort: number;
  httpPort: number;
  /** Every relay process started, in order (the last is the live one). */
  relays: RelayProcess[];
  /** Starts the next relay process on the rig's ports and data dir; `vars` add or override. */
  start(vars?: NodeJS.ProcessEnv): Promise<RelayProcess>;
  /** An authenticated session (EHLO, AUTH PLAIN with the key), ready for MAIL FROM. */
  session(): Promise<RawSmtp>;
  /** Kills every relay process, closes the upstream and database, removes the data dir. */
  close(): Promise<void>;
}

export async function createRig(name: string, route: { concurrency?: number } = {}): Promise<Rig> {
  const tdb = await testDatabase();
  const upstream = await startFaultUpstream();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `txrelay-${name}-`));
  const smtpPort = await freePort();
  const httpPort = await freePort();
  const box = new SecretBox(TEST_SECRET);
  const tenant = await createTenant(tdb.db, { name: 'acme' });
  await addDomain(tdb.db, box, tenant.id, { name: 'acme.example', verified: true });
  const key = (await createKey(tdb.db, tenant.id, { scope: 'send', mode: 'live' })).key;
  await createRoute(tdb.db, box, tenant.id, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: true }, ...route });
  const relays: RelayProcess[] = [];
  return {
    tdb,
    upstream,
    key,
    smtpPort,
    httpPort,
    relays,
    async start(vars = {}) {
      const relay = await startRelay(`relay-${relays.length + 1}`, dataDir, {
        DATABASE_URL: tdb.url,
        TXRELAY_SMTP_PORTS: String(smtpPort),
        TXRELAY_SMTPS_PORTS: '',
        TXRELAY_HTTP_PORT: String(httpPort),
        TXRELAY_DATA_DIR: dataDir,
        TXRELAY_HOSTNAME: 'relay.test',
        ...vars,
      });
      relays.push(relay);
      return relay;
    },
    async session() {
      const c = await RawSmtp.connect(smtpPort);
      assert.match(c.greeting, /^220 /);
      assert.match(await c.cmd('EHLO client.test'), /^250/);
      assert.match(await c.cmd(`AUTH PLAIN ${plain(key)}`), /^235 /);
      return c;
    },
    async close() {
      for (const r of relays) await killHard(r);
      await upstream.close();
      await tdb.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
