// The database a process is configured for: DATABASE_URL, or the embedded server under the
// data dir (shared with a relay already running on it). Used by the relay and the CLI.
import path from 'node:path';
import type { Config } from '../config.ts';
import { openDatabase, type DbHandle } from './database.ts';
import { startEmbedded, type EmbeddedServer } from './embedded.ts';

export interface ConfiguredDatabase {
  handle: DbHandle;
  embedded?: EmbeddedServer;
  /** Closes the pool, then stops the embedded server if this process started it. */
  close(): Promise<void>;
}

export async function openConfiguredDatabase(
  config: Config,
  pgPassword: string,
  options: { max: number; applicationName?: string; onLog?: (line: string) => void; onEmbeddedStarted?: () => void },
): Promise<ConfiguredDatabase> {
  let url = config.databaseUrl;
  let embedded: EmbeddedServer | undefined;
  if (!url) {
    embedded = await startEmbedded({ dir: path.join(config.dataDir, 'pg'), password: pgPassword, onLog: options.onLog });
    url = embedded.url;
    options.onEmbeddedStarted?.();
  }
  const handle = openDatabase(url, { max: options.max, applicationName: options.applicationName });
  return {
    handle,
    embedded,
    async close() {
      await handle.close();
      if (embedded) await embedded.stop();
    },
  };
}
