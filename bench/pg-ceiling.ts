// PostgreSQL's durable-commit ceiling for `npm run bench`, on the bench's own embedded server
// (fsync and synchronous_commit on, as the relay runs): how many single-row INSERTs of a random
// payload per second `conc` clients get in autocommit, one INSERT = one transaction = one WAL
// flush (group commit shares flushes between clients). A relay that commits each message before
// its 250 cannot go faster, so this is the distance to the limit. As in
// /work/shared/bench-anchors/bench-pg.mjs: the table is truncated and a CHECKPOINT taken before
// each measurement, so one cell's dirty pages are not flushed during the next.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pg from 'pg';

/** Untimed inserts before the measurement: connections and the table's first pages. */
const WARMUP_MS = 500;
/** No statement may hang the bench. */
const QUERY_TIMEOUT_MS = 30_000;

export interface CommitResult {
  commits: number;
  elapsedMs: number;
  latenciesMs: number[];
  errors: number;
  firstError?: string;
}

/** Creates the ceiling's table in `url`'s database (fresh: the bench creates that database). */
export async function createCommitTable(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, query_timeout: QUERY_TIMEOUT_MS });
  await client.connect();
  try {
    await client.query('CREATE TABLE msgs (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), payload bytea NOT NULL)');
  } finally {
    await client.end();
  }
}

/** Commits per second of `conc` clients inserting `bytes`-byte rows for `seconds`. */
export async function measureCommits(url: string, o: { bytes: number; conc: number; seconds: number }): Promise<CommitResult> {
  const connect = async () => {
    const c = new pg.Client({ connectionString: url, query_timeout: QUERY_TIMEOUT_MS });
    c.on('error', () => {});
    await c.connect();
    return c;
  };
  const admin = await connect();
  const clients: pg.Client[] = [];
  try {
    await admin.query('TRUNCATE msgs');
    await admin.query('CHECKPOINT');
    for (let i = 0; i < o.conc; i++) clients.push(await connect());
    return await insertLoop(clients, randomBytes(o.bytes), o.seconds);
  } finally {
    await Promise.all([admin, ...clients].map((c) => c.end().catch(() => {})));
  }
}

async function insertLoop(clients: pg.Client[], payload: Buffer, seconds: number): Promise<CommitResult> {
  const result: CommitResult = { commits: 0, elapsedMs: 0, latenciesMs: [], errors: 0 };
  const started = performance.now() + WARMUP_MS;
  const end = started + seconds * 1000;
  const worker = async (c: pg.Client) => {
    while (performance.now() < end && result.errors < 50) {
      const t0 = performance.now();
      try {
        await c.query('INSERT INTO msgs (payload) VALUES ($1)', [payload]);
        const t1 = performance.now();
        // Completions inside the window: the rate of the steady state, warm-up excluded.
        if (t1 >= started && t1 <= end) {
          result.commits++;
          result.latenciesMs.push(t1 - t0);
        }
      } catch (err) {
        result.errors++;
        result.firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(clients.map(worker));
  result.elapsedMs = end - started;
  return result;
}
