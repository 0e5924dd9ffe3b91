// The reference relay for `npm run bench`: a private Postfix instance, configured as the anchors
// in /work/shared/bench-anchors/bench-postfix.sh were (Postfix 3.7, queue files fsynced before
// 250, default in_flow_delay and process limits), relaying everything from loopback to the
// bench's sink. It never touches the system's instance: its own config, queue, data directory
// and log file live under the bench's temp dir (`postfix -c <dir>/etc`), and it is stopped by
// its master's pid.
//
// Needs Debian's `postfix` package and root (the queue directory's subdirectories belong to the
// postfix user). The bench installs nothing: `postfixUnavailable` says what is missing.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { isAlive } from '../src/db/embedded.ts';
import { SmtpConn } from './load.ts';

/** postfix, postconf and postqueue live in /usr/sbin, which a non-login PATH may lack. */
const PATH = `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin:/sbin`;
const START_TIMEOUT_MS = 30_000;

function run(command: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { env: { ...process.env, PATH }, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${command} ${args.join(' ')}: ${stderr.trim() || err.message}`), { code: (err as NodeJS.ErrnoException).code }));
      else resolve(stdout + stderr);
    });
  });
}

/** Postfix's version, or why the bench cannot run a private instance here. */
export async function postfixUnavailable(): Promise<{ version: string } | { missing: string }> {
  let version: string;
  try {
    version = (await run('postconf', ['-d', '-h', 'mail_version'])).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { missing: 'postfix not installed: apt-get install postfix' };
    return { missing: `postconf failed: ${(err as Error).message}` };
  }
  if (process.getuid?.() !== 0) return { missing: 'postfix needs root here: its private queue directory must be chowned to the postfix user' };
  return { version };
}

/** main.cf: an open relay for 127.0.0.0/8 to `[127.0.0.1]:sinkPort`, nothing delivered locally. */
function mainCf(dir: string, sinkPort: number): string {
  return `compatibility_level = 3.6
queue_directory = ${dir}/spool
data_directory = ${dir}/data
myhostname = relay-bench.localdomain
mydomain = localdomain
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:${sinkPort}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
biff = no
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
`;
}

/** Debian's master.cf with chroot off (no jail to populate) and smtpd on 127.0.0.1:`port`. */
function masterCf(port: number): string {
  return `127.0.0.1:${port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;
}

export class PostfixRelay {
  readonly dir: string;
  readonly port: number;
  readonly version: string;
  #masterPid: number | undefined;

  private constructor(dir: string, port: number, version: string) {
    this.dir = dir;
    this.port = port;
    this.version = version;
  }

  get etc(): string {
    return path.join(this.dir, 'etc');
  }

  /**
   * Writes the configuration under `dir`, starts the instance and waits (bounded) until smtpd
   * greets on `port`. `onStarted` gets the instance as soon as a master may exist, so that an
   * interrupted start is still stopped.
   */
  static async start(o: { dir: string; port: number; sinkPort: number; version: string; onStarted: (pf: PostfixRelay) => void }): Promise<PostfixRelay> {
    const { dir } = o;
    for (const sub of ['etc', 'spool', 'data']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    for (const d of [dir, path.join(dir, 'etc'), path.join(dir, 'spool')]) fs.chmodSync(d, 0o755);
    await run('chown', ['postfix:postfix', path.join(dir, 'data')]);
    fs.chmodSync(path.join(dir, 'data'), 0o700);
    fs.writeFileSync(path.join(dir, 'etc/main.cf'), mainCf(dir, o.sinkPort));
    fs.writeFileSync(path.join(dir, 'etc/master.cf'), masterCf(o.port));
    const pf = new PostfixRelay(dir, o.port, o.version);
    // `check` creates the queue's subdirectories with their owners (post-install create-missing).
    await run('postfix', ['-c', pf.etc, 'check']);
    o.onStarted(pf);
    await run('postfix', ['-c', pf.etc, 'start'], START_TIMEOUT_MS);
    pf.#masterPid = pf.#readMasterPid();
    await pf.#waitForGreeting();
    return pf;
  }

  #readMasterPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.dir, 'spool/pid/master.pid'), 'utf8').trim());
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  async #waitForGreeting(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        const { conn } = await SmtpConn.open(this.port);
        await conn.quit();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`postfix did not greet on port ${this.port} within ${START_TIMEOUT_MS / 1000} s (${(err as Error).message}): ${this.logTail()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** Messages still in the queue (incoming, active, deferred, hold, maildrop). */
  queueLength(): number {
    let n = 0;
    for (const q of ['incoming', 'active', 'deferred', 'hold', 'maildrop']) {
      try {
        n += fs.readdirSync(path.join(this.dir, 'spool', q), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length;
      } catch {
        // Not created yet: empty.
      }
    }
    return n;
  }

  /**
   * Waits (bounded) for the queue to empty once the sink has every message: qmgr removes a queue
   * file only after the delivery agent reports. Flushes the deferred queue if it does not, so a
   * stuck message does not slow down the next run. Returns what is left.
   */
  async settle(timeoutMs = 5_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let left = this.queueLength();
    while (left > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      left = this.queueLength();
    }
    if (left > 0) await run('postqueue', ['-c', this.etc, '-f']).catch(() => {});
    return left;
  }

  /** The last lines of its maillog, for error reports. */
  logTail(lines = 10): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'maillog'), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no maillog)';
    }
  }

  /** `postfix stop`, then the master's pid: SIGTERM after 5 s, SIGKILL after 5 more. */
  async stop(): Promise<void> {
    const pid = this.#masterPid ?? this.#readMasterPid();
    await run('postfix', ['-c', this.etc, 'stop']).catch(() => {});
    if (pid === undefined) return;
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      for (let i = 0; i < 50 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
      if (!isAlive(pid)) return;
      process.kill(pid, signal);
    }
  }
}
