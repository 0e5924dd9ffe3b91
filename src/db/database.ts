// The Kysely instance over a pg pool. Repositories are the only users of it.
import { createHash } from 'node:crypto';
import { Kysely, PostgresDialect, type CompiledQuery, type PostgresPool, type PostgresPoolClient, type QueryResult, type Transaction } from 'kysely';
import pg from 'pg';
import { fromKysely, type Db as BossDb } from 'pg-boss';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;
/** Either the pool or an open transaction: repositories accept both. */
export type Executor = Db | Tx;

// bigserial ids and counts come back as strings by default; they stay well inside 2^53 here.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export interface DbHandle {
  db: Db;
  pool: pg.Pool;
  url: string;
  close(): Promise<void>;
}

export function openDatabase(url: string, options: { max?: number; applicationName?: string } = {}): DbHandle {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 20,
    application_name: options.applicationName ?? 'txrelay',
    // Fail fast when the database is unreachable: the caller answers 451 4.3.0.
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // A client losing its connection (database restart, crash) must not crash the process. pg-pool
  // listens for that only while a client is idle: one checked out between two statements of a
  // transaction would emit 'error' to nobody, an uncaught exception. Its next statement fails
  // instead (the caller answers 451), and the pool drops the dead client when it comes back.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: preparingPool(pool) }) });
  return {
    db,
    pool,
    url,
    async close() {
      await db.destroy();
    },
  };
}

/** SQL text → name of the statements run as prepared ones. */
const preparedNames = new Map<string, string>();
/** Name → SQL text: a name stands for one text only. */
const preparedTexts = new Map<string, string>();
/** A bound on the names given by text (executePreparedText): beyond, statements run unnamed. */
const MAX_PREPARED = 200;

/**
 * Runs `query` (compiled: `sql\`...\`.compile(db)` or a builder's `.compile()`) as a named
 * prepared statement: each connection has PostgreSQL parse and plan it once, then only binds and
 * executes it. For the few statements run for every message, whose planning costs as much as
 * their execution (a delivery's load and record, messages.repository.ts). The query's SQL text
 * must never vary (no lists spelled out as `IN (...)`: pass arrays); a name reused for another
 * text is a bug and throws. Each statement names its columns: a prepared `SELECT *` would fail
 * once a migration adds a column.
 */
export async function executePrepared<R>(db: Executor, name: string, query: CompiledQuery<R>): Promise<QueryResult<R>> {
  const text = preparedTexts.get(name);
  if (text === undefined) {
    register(name, query.sql);
  } else if (text !== query.sql) {
    throw new Error(`prepared statement "${name}" was given another SQL text`);
  }
  return await db.executeQuery(query);
}

/**
 * Runs `query` as a prepared statement named by a hash of its text: for texts a library writes,
 * or that are built from one (the accepting statement holds pg-boss's insert), which no fixed
 * name can stand for. Past MAX_PREPARED distinct texts, the rest run unnamed.
 */
export async function executePreparedText<R>(db: Executor, query: CompiledQuery<R>): Promise<QueryResult<R>> {
  nameByText(query.sql);
  return await db.executeQuery(query);
}

function nameByText(text: string): void {
  if (!preparedNames.has(text) && preparedTexts.size < MAX_PREPARED) register(`t_${createHash('sha256').update(text).digest('hex').slice(0, 16)}`, text);
}

/**
 * pg-boss's statements in our transaction (pg-boss's fromKysely adapter), prepared and named by
 * their text (executePreparedText): sending a message's job costs more to plan than to run.
 */
export function preparedBossDb(db: Executor): BossDb {
  const adapter = fromKysely(db);
  return {
    executeSql(text, values) {
      nameByText(text);
      return adapter.executeSql(text, values);
    },
  };
}

function register(name: string, text: string): void {
  preparedTexts.set(name, text);
  preparedNames.set(text, name);
}

/**
 * The pool as Kysely sees it: its clients run the statements registered by executePrepared
 * under their names (pg prepares a name on a connection's first use of it), everything else as
 * before. One wrapper per client, so Kysely keeps one connection object per client.
 */
function preparingPool(pool: pg.Pool): PostgresPool {
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  const wrap = (client: pg.PoolClient): PostgresPoolClient => ({
    // Not in pg's types; Kysely reads it (when there) to cancel a query on a control connection.
    get processID() {
      return (client as { processID?: number }).processID;
    },
    query: ((sqlOrCursor: unknown, parameters?: unknown[]) => {
      const name = typeof sqlOrCursor === 'string' ? preparedNames.get(sqlOrCursor) : undefined;
      if (name) return client.query({ name, text: sqlOrCursor as string, values: parameters });
      return client.query(sqlOrCursor as string, parameters);
    }) as unknown as PostgresPoolClient['query'],
    release: (destroy?: boolean) => client.release(destroy),
  });
  return {
    Client: pg.Client,
    options: pool.options,
    end: () => pool.end(),
    async connect() {
      const client = await pool.connect();
      let wrapper = wrappers.get(client);
      if (!wrapper) wrappers.set(client, (wrapper = wrap(client)));
      return wrapper;
    },
  };
}
