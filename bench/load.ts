// A lean SMTP load generator over raw sockets, for `npm run bench`. nodemailer would measure
// itself as much as the relay (MIME building, its state machine, per-message promises), so
// this client sends a prebuilt message and pipelines MAIL/RCPT/DATA in one write (RFC 2920;
// the relay advertises PIPELINING). TCP_NODELAY is on so small pipelined writes are not held
// back by Nagle waiting for a delayed ACK (a 40 ms stall per message otherwise).
//
// Every wait is bounded (REPLY_TIMEOUT_MS) and every run is bounded in time and count.
import net from 'node:net';
import { performance } from 'node:perf_hooks';

const REPLY_TIMEOUT_MS = 30_000;
/** A run gives up after this many failed transactions: the figure would be meaningless. */
const MAX_ERRORS = 50;

/** One SMTP connection: writes commands, hands out complete replies in order. */
export class SmtpConn {
  readonly socket: net.Socket;
  #partial = '';
  #lines: string[] = [];
  #replies: string[] = [];
  #waiter: ((reply: string | Error) => void) | undefined;
  #closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => this.#onData(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#closed = true;
      this.#deliver(new Error('connection closed'));
    });
  }

  /** Connects and reads the greeting; returns the connection and the greeting's latency. */
  static async open(port: number): Promise<{ conn: SmtpConn; greetingMs: number }> {
    const started = performance.now();
    const socket = net.connect(port, '127.0.0.1');
    const conn = new SmtpConn(socket);
    const greeting = await conn.reply();
    if (!greeting.startsWith('220')) {
      conn.close();
      throw new Error(`greeting: ${greeting}`);
    }
    return { conn, greetingMs: performance.now() - started };
  }

  #onData(data: string): void {
    this.#partial += data;
    let nl: number;
    while ((nl = this.#partial.indexOf('\n')) >= 0) {
      const line = this.#partial.slice(0, nl).replace(/\r$/, '');
      this.#partial = this.#partial.slice(nl + 1);
      this.#lines.push(line);
      // "250-..." continues a multi-line reply; "250 ..." (or a bare code) ends it.
      if (line.length < 4 || line[3] !== '-') {
        const reply = this.#lines.join('\n');
        this.#lines = [];
        this.#deliver(reply);
      }
    }
  }

  #deliver(reply: string | Error): void {
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = undefined;
      waiter(reply);
    } else if (typeof reply === 'string') {
      this.#replies.push(reply);
    }
  }

  /** The next complete reply, in order; rejects on timeout or when the connection closes. */
  reply(timeoutMs = REPLY_TIMEOUT_MS): Promise<string> {
    const queued = this.#replies.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = (r) => {
        clearTimeout(timer);
        if (typeof r === 'string') resolve(r);
        else reject(r);
      };
    });
  }

  /** Reads one reply and checks its code. */
  async expect(code: string, what: string): Promise<string> {
    const r = await this.reply();
    if (!r.startsWith(code)) throw new Error(`${what}: expected ${code}, got ${JSON.stringify(r.slice(0, 200))}`);
    return r;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Polite end: QUIT and its 221 (bounded), then close. */
  async quit(): Promise<void> {
    try {
      if (!this.#closed) {
        this.write('QUIT\r\n');
        await this.reply(2_000);
      }
    } catch {
      // The connection is being dropped anyway.
    } finally {
      this.close();
    }
  }
}

export interface LoadOptions {
  port: number;
  /** API key sent as the AUTH PLAIN password; without one no AUTH is sent (Postfix, the ceiling). */
  key?: string;
  concurrency: number;
  /** true: each client keeps one connection (RSET between messages); false: one per message. */
  reuse: boolean;
  seconds: number;
  /** DATA content, dot-stuffed, ending with CRLF.CRLF. */
  data: Buffer;
  mailFrom: string;
  rcptTo: string;
  /** Hard cap on messages in one run, whatever the duration. */
  maxMessages?: number;
}

export interface LoadResult {
  /** Messages that got their 250 after DATA. */
  accepted: number;
  errors: number;
  firstError?: string;
  elapsedMs: number;
  /**
   * Per accepted message. With reuse: from writing (RSET+)MAIL FROM to the 250 after DATA.
   * Without: from connect() to that 250 (greeting, EHLO and any AUTH included: what a client that
   * opens a connection per message waits for).
   */
  latenciesMs: number[];
  /** connect() to the 220 greeting, per connection opened. */
  greetingMs: number[];
}

/** Builds the DATA content of a message of about `bytes` bytes (headers + HTML body). */
export function buildMessage(bytes: number, from: string, to: string): Buffer {
  const head =
    `From: Bench <${from}>\r\nTo: <${to}>\r\nSubject: txrelay bench message\r\n` +
    `X-Transactional-Tag: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n`;
  const line = '<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.</p>\r\n';
  let body = '<html><body>\r\n';
  while (head.length + body.length + line.length + 16 < bytes) body += line;
  body += '</body></html>\r\n';
  // No line starts with ".", so no dot-stuffing is needed; the terminator follows.
  return Buffer.from(head + body + '.\r\n', 'utf8');
}

/** Runs `concurrency` clients for `seconds` and collects what they saw. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const auth = o.key === undefined ? undefined : `AUTH PLAIN ${Buffer.from(`\0bench\0${o.key}`).toString('base64')}\r\n`;
  const envelope = `MAIL FROM:<${o.mailFrom}>\r\nRCPT TO:<${o.rcptTo}>\r\nDATA\r\n`;
  const maxMessages = o.maxMessages ?? 1_000_000;
  const result: LoadResult = { accepted: 0, errors: 0, elapsedMs: 0, latenciesMs: [], greetingMs: [] };
  const started = performance.now();
  const deadline = started + o.seconds * 1000;
  let begun = 0;
  const more = () => performance.now() < deadline && begun < maxMessages && result.errors < MAX_ERRORS;
  const fail = (err: unknown) => {
    result.errors++;
    result.firstError ??= err instanceof Error ? err.message : String(err);
  };

  const session = async (): Promise<SmtpConn> => {
    const { conn, greetingMs } = await SmtpConn.open(o.port);
    result.greetingMs.push(greetingMs);
    conn.write('EHLO bench.client\r\n');
    await conn.expect('250', 'EHLO');
    if (auth) {
      conn.write(auth);
      await conn.expect('235', 'AUTH');
    }
    return conn;
  };

  /** One transaction on an open session; `rset` pipelines a RSET in front of MAIL FROM. */
  const transaction = async (conn: SmtpConn, rset: boolean): Promise<void> => {
    conn.write(rset ? 'RSET\r\n' + envelope : envelope);
    if (rset) await conn.expect('250', 'RSET');
    await conn.expect('250', 'MAIL FROM');
    await conn.expect('250', 'RCPT TO');
    await conn.expect('354', 'DATA');
    conn.write(o.data);
    await conn.expect('250', 'end of DATA');
  };

  const reusingClient = async () => {
    let conn: SmtpConn | undefined;
    let rset = false;
    while (more()) {
      begun++;
      try {
        if (!conn) {
          conn = await session();
          rset = false;
        }
        const t0 = performance.now();
        await transaction(conn, rset);
        result.latenciesMs.push(performance.now() - t0);
        result.accepted++;
        rset = true;
      } catch (err) {
        fail(err);
        conn?.close();
        conn = undefined;
      }
    }
    await conn?.quit();
  };

  const connectingClient = async () => {
    while (more()) {
      begun++;
      const t0 = performance.now();
      let conn: SmtpConn | undefined;
      try {
        conn = await session();
        await transaction(conn, false);
        result.latenciesMs.push(performance.now() - t0);
        result.accepted++;
      } catch (err) {
        fail(err);
      } finally {
        await conn?.quit();
      }
    }
  };

  await Promise.all(Array.from({ length: o.concurrency }, o.reuse ? reusingClient : connectingClient));
  result.elapsedMs = performance.now() - started;
  return result;
}

/** Nearest-rank percentile of an unsorted list (0 for an empty one). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function median(values: number[]): number {
  return percentile(values, 50);
}
