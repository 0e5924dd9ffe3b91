// Real relay processes for fault and scale-out tests: `node src/cli.ts start` as a child, its
// log in a file of its own (read to tell when it started and shown when it did not), stopped
// or SIGKILLed by its own pid. Every wait is bounded.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_ADMIN_TOKEN, TEST_SECRET } from './context.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface RelayProcess {
  /** Names the log file (`<dir>/<name>.log`) and the process in failure messages. */
  name: string;
  child: ChildProcess;
  logFile: string;
  /** Everything the process has logged so far. */
  log(): string;
}

/**
 * The environment of a relay child: this process's, without node --test's plumbing (the relay
 * is not a test process), the test secrets, loopback, no TLS requirement, info logs; `vars`
 * (DATABASE_URL, ports, roles, …) on top.
 */
export function relayEnv(vars: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  delete env.NODE_OPTIONS;
  return {
    ...env,
    TXRELAY_BIND: '127.0.0.1',
    TXRELAY_ADMIN_TOKEN: TEST_ADMIN_TOKEN,
    TXRELAY_SECRET: TEST_SECRET,
    TXRELAY_REQUIRE_TLS: 'false',
    LOG_LEVEL: 'info',
    NODE_ENV: 'test',
    ...vars,
  };
}

/** Spawns `node src/cli.ts start` with relayEnv(vars), logging to `<dir>/<name>.log`; does not wait. */
export function spawnRelay(name: string, dir: string, vars: NodeJS.ProcessEnv): RelayProcess {
  const logFile = path.join(dir, `${name}.log`);
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, ['src/cli.ts', 'start'], { cwd: ROOT, env: relayEnv(vars), stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  return { name, child, logFile, log: () => fs.readFileSync(logFile, 'utf8') };
}

/** Resolves once the process logged "txrelay started"; throws (with its log) if it exits or times out. */
export async function waitStarted(relay: RelayProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = relay.log();
    if (log.includes('"txrelay started"')) return;
    const { exitCode, signalCode } = relay.child;
    if (exitCode !== null || signalCode !== null || Date.now() > deadline) {
      const why = exitCode !== null || signalCode !== null ? `exited with ${exitCode ?? signalCode}` : 'timeout';
      throw new Error(`${relay.name} did not start (${why}); log:\n${log.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** spawnRelay, then waitStarted. */
export async function startRelay(name: string, dir: string, vars: NodeJS.ProcessEnv, timeoutMs?: number): Promise<RelayProcess> {
  const relay = spawnRelay(name, dir, vars);
  try {
    await waitStarted(relay, timeoutMs);
  } catch (err) {
    await killHard(relay);
    throw err;
  }
  return relay;
}

const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/** Resolves when the child exits, or after `ms`. */
function exited(child: ChildProcess, ms: number): Promise<void> {
  if (!running(child)) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Fails when a relay the test did not stop has exited (something else signalled it, or it crashed). */
export function assertAlive(relay: RelayProcess): void {
  if (running(relay.child)) return;
  assert.fail(`${relay.name} exited unexpectedly (${relay.child.exitCode ?? relay.child.signalCode}), not stopped by this test; log tail:\n${relay.log().slice(-3000)}`);
}

/** SIGKILL, and wait (up to 5 s) for the exit. */
export async function killHard(relay: RelayProcess): Promise<void> {
  if (!running(relay.child)) return;
  relay.child.kill('SIGKILL');
  await exited(relay.child, 5_000);
}

/** SIGTERM (a graceful stop), SIGKILL if still running after `graceMs`. */
export async function stopRelay(relay: RelayProcess, graceMs = 10_000): Promise<void> {
  if (!running(relay.child)) return;
  relay.child.kill('SIGTERM');
  await exited(relay.child, graceMs);
  await killHard(relay);
}

/** A process's threads (Linux: /proc/<pid>/task) with the names they run under, e.g. V8Worker. */
export function threadsOf(pid: number | 'self'): { id: number; name: string }[] {
  const tasks = `/proc/${pid}/task`;
  return fs.readdirSync(tasks).map((id) => ({ id: Number(id), name: fs.readFileSync(`${tasks}/${id}/comm`, 'utf8').trim() }));
}
