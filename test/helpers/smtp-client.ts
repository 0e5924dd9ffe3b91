// A bare SMTP client over a socket, for replies nodemailer hides (each command's exact reply,
// pipelining, STARTTLS tricks). Every wait is bounded.
import net from 'node:net';
import tls from 'node:tls';

export class RawSmtp {
  socket: net.Socket;
  #buffer = '';
  #waiters: (() => void)[] = [];
  closed = false;
  /** The server's first reply: `220 …`, or a refusal such as `421 4.3.0 …` (then the connection closes). */
  greeting = '';

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#attach(socket);
  }

  #attach(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.#buffer += d;
      this.#waiters.splice(0).forEach((w) => w());
    });
    socket.on('close', () => {
      this.closed = true;
      this.#waiters.splice(0).forEach((w) => w());
    });
    socket.on('error', () => {});
  }

  /**
   * `proxy`: a PROXY protocol header line (without CRLF) sent before the greeting is awaited.
   * `localAddress`: the client's own address, another loopback one (127.0.0.2, …) to play a
   * second client machine.
   */
  static async connect(port: number, options: { secure?: boolean; proxy?: string; localAddress?: string } = {}): Promise<RawSmtp> {
    const local = options.localAddress ? { localAddress: options.localAddress } : {};
    const socket = options.secure
      ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...local })
      : net.connect({ port, host: '127.0.0.1', ...local });
    await new Promise<void>((resolve, reject) => {
      socket.once(options.secure ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    const c = new RawSmtp(socket);
    if (options.proxy !== undefined) socket.write(`${options.proxy}\r\n`);
    c.greeting = await c.reply();
    return c;
  }

  /** The next complete reply (multi-line joined with \n). */
  async reply(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.#buffer);
      if (m) {
        this.#buffer = this.#buffer.slice(m[0].length);
        return m[0].trimEnd().replace(/\r/g, '');
      }
      if (this.closed) return '';
      if (Date.now() > deadline) throw new Error(`no SMTP reply within ${timeoutMs} ms (buffer: ${JSON.stringify(this.#buffer)})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async cmd(line: string): Promise<string> {
    this.socket.write(line + '\r\n');
    return await this.reply();
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** STARTTLS and the TLS handshake; `pipelined` is written in the same packet (an injection). */
  async starttls(pipelined = ''): Promise<string> {
    this.socket.write('STARTTLS\r\n' + pipelined);
    const r = await this.reply();
    const secure = tls.connect({ socket: this.socket, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.#attach(secure);
    return r;
  }

  /** Sends DATA, the message (dot-stuffed, CRLF) and the final dot; returns the final reply. */
  async data(message: string): Promise<string> {
    const r = await this.cmd('DATA');
    if (!r.startsWith('354')) return r;
    const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
    this.socket.write(body + (body.endsWith('\r\n') ? '' : '\r\n') + '.\r\n');
    return await this.reply(30_000);
  }

  close(): void {
    this.socket.destroy();
  }
}

export const plain = (key: string): string => Buffer.from(`\0user\0${key}`).toString('base64');
