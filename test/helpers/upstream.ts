// A real upstream SMTP server (smtp-server on 127.0.0.1, port 0) that records what it receives.
// `behaviour` decides each reply, to play a relay that temp-fails, perm-fails or accepts.
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { SmtpTransport } from '../../src/delivery/transports/smtp.ts';

export interface Received {
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
}

export interface Upstream {
  port: number;
  received: Received[];
  /** Called per message; return an Error with responseCode to refuse it. */
  behaviour: { onData?: (msg: Received, n: number) => Error | undefined; onRcpt?: (address: string) => Error | undefined };
  waitFor(count: number, timeoutMs?: number): Promise<Received[]>;
  close(): Promise<void>;
}

export function smtpError(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

export async function startUpstream(): Promise<Upstream> {
  const received: Received[] = [];
  let attempts = 0;
  const behaviour: Upstream['behaviour'] = {};
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    onRcptTo(address, _session, callback) {
      callback(behaviour.onRcpt?.(address.address) ?? null);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const msg: Received = {
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks),
        };
        const err = behaviour.onData?.(msg, ++attempts);
        if (err) return callback(err);
        received.push(msg);
        callback(null, 'queued upstream');
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    received,
    behaviour,
    async waitFor(count, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (received.length < count) {
        if (Date.now() > deadline) throw new Error(`upstream got ${received.length} of ${count} messages in ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 25));
      }
      return received;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** An SMTP route's transport to a loopback upstream (no TLS, 5 s timeouts); `pool` as the route's config. */
export function smtpTransportTo(port: number, pool: boolean | number = 2): SmtpTransport {
  return new SmtpTransport({
    config: { host: '127.0.0.1', port, secure: false, require_tls: false, tls_reject_unauthorized: true, pool, connection_timeout_seconds: 5, socket_timeout_seconds: 5 } as never,
    hostname: 'relay.test',
    defaultConnections: 2,
  });
}
