// A TCP proxy between a relay process and PostgreSQL that reads the wire protocol (v3) in both
// directions, to catch the one moment a fault test needs and nothing else can reach from
// outside: PostgreSQL has committed a message, and the relay has not yet heard so (so it has not
// answered 250). Armed, the proxy watches for a connection that runs a statement inserting into
// messages: sent whole (Parse or a simple Query), or by the name of a prepared one whose Parse
// the proxy saw on that connection (Bind). The next ReadyForQuery that says the connection is out
// of its transaction, with no error since, follows the commit (an explicit COMMIT, or the implicit
// one of a statement run alone, at its Sync); it is held back, never forwarded, and `onHold` runs
// (the test SIGKILLs the relay there). Everything else passes through unchanged.
//
// Message framing (PostgreSQL docs, "Message Formats"): the client's first message has no type
// byte (Int32 length, then the startup packet); every later message in either direction is a
// type byte and an Int32 length that counts itself. SSL is not spoken here (the URL has none).
import net from 'node:net';

export interface PgProxy {
  port: number;
  /** The database URL with the proxy's port instead of the server's. */
  url: string;
  /** Holds the next commit of a transaction that inserted into messages; `onHold` runs then. */
  arm(onHold: () => void): void;
  /** Whether a commit is being held now. */
  holding: boolean;
  close(): Promise<void>;
}

const INSERT_MESSAGE = /insert into "?messages"?\s/i;

/** The first `count` NUL-terminated strings of a message's body: Parse starts with its name and text, Bind with its portal and statement. */
function cStrings(bytes: Buffer, count: number): string[] {
  const out: string[] = [];
  let at = 5;
  for (let i = 0; i < count; i++) {
    const end = bytes.indexOf(0, at);
    out.push(bytes.toString('utf8', at, end));
    at = end + 1;
  }
  return out;
}

/** Splits a byte stream into protocol messages; `untyped` for the startup packet. */
class Framer {
  #buffer: Buffer = Buffer.alloc(0);
  #untyped: boolean;

  constructor(untypedFirst: boolean) {
    this.#untyped = untypedFirst;
  }

  /** Complete messages in `chunk` (with what was left over before), as [type, whole bytes]. */
  push(chunk: Buffer): [string, Buffer][] {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk;
    const out: [string, Buffer][] = [];
    for (;;) {
      const head = this.#untyped ? 0 : 1;
      if (this.#buffer.length < head + 4) break;
      const length = this.#buffer.readInt32BE(head);
      const total = head + length;
      if (this.#buffer.length < total) break;
      out.push([this.#untyped ? '' : String.fromCharCode(this.#buffer[0]), this.#buffer.subarray(0, total)]);
      this.#buffer = this.#buffer.subarray(total);
      this.#untyped = false;
    }
    return out;
  }
}

export async function startPgProxy(targetUrl: string): Promise<PgProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let onHold: (() => void) | undefined;

  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', closeBoth);
    upstream.on('error', closeBoth);
    client.on('close', closeBoth);
    upstream.on('close', closeBoth);

    const fromClient = new Framer(true);
    const fromServer = new Framer(false);
    /** Prepared statements of this connection that insert into messages, by name. */
    const inserting = new Set<string>();
    /** This connection's transaction inserted a message (while armed). */
    let watching = false;
    let held = false;

    client.on('data', (chunk: Buffer) => {
      for (const [type, bytes] of fromClient.push(chunk)) {
        if (type === 'P') {
          const [name, text] = cStrings(bytes, 2);
          if (INSERT_MESSAGE.test(text)) {
            if (name) inserting.add(name);
            if (onHold) watching = true;
          }
        }
        if (onHold && type === 'Q' && INSERT_MESSAGE.test(bytes.toString('utf8'))) watching = true;
        if (onHold && type === 'B' && inserting.has(cStrings(bytes, 2)[1])) watching = true;
        upstream.write(bytes);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      for (const [type, bytes] of fromServer.push(chunk)) {
        if (held) continue;
        // ErrorResponse: the statement failed, nothing of it commits.
        if (type === 'E') watching = false;
        // ReadyForQuery, its status byte 'I': out of any transaction.
        if (watching && type === 'Z' && bytes[5] === 0x49 && onHold) {
          held = true;
          proxy.holding = true;
          const hook = onHold;
          onHold = undefined;
          hook();
          continue;
        }
        client.write(bytes);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const url = new URL(targetUrl);
  url.hostname = '127.0.0.1';
  url.port = String(port);

  const proxy: PgProxy = {
    port,
    url: url.toString(),
    holding: false,
    arm(hook) {
      onHold = hook;
      proxy.holding = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return proxy;
}
