// An upstream for the route-limit tests: a real smtp-server on 127.0.0.1 port 0 that accepts
// everything and writes down when each message was accepted, which client (its EHLO name: each
// worker process has its own TXRELAY_HOSTNAME) sent it, and how many SMTP transactions and
// connections were open at once.
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export interface Accepted {
  /** Date.now() when the upstream answered the final dot. */
  at: number;
  /** The client's EHLO name. */
  client: string;
  rcptTo: string[];
}

export interface CountingUpstream {
  port: number;
  accepted: Accepted[];
  /** Transactions (MAIL FROM to the reply after the final dot) open at once: now and at most. */
  transactions: { now: number; max: number };
  /** Connections open at once: now and at most. */
  connections: { now: number; max: number };
  close(): Promise<void>;
}

export async function startCountingUpstream(options: { dataDelayMs?: number } = {}): Promise<CountingUpstream> {
  const accepted: Accepted[] = [];
  const transactions = { now: 0, max: 0 };
  const connections = { now: 0, max: 0 };
  /** Sessions with a transaction open, so a dropped connection closes its transaction too. */
  const open = new Set<string>();
  const timers = new Set<NodeJS.Timeout>();
  const end = (id: string) => {
    if (open.delete(id)) transactions.now--;
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    closeTimeout: 100,
    onConnect(_session, callback) {
      connections.now++;
      connections.max = Math.max(connections.max, connections.now);
      callback();
    },
    onClose(session) {
      connections.now--;
      end(session.id);
    },
    onMailFrom(_address, session, callback) {
      if (!open.has(session.id)) {
        open.add(session.id);
        transactions.now++;
        transactions.max = Math.max(transactions.max, transactions.now);
      }
      callback();
    },
    onData(stream, session, callback) {
      stream.on('data', () => {});
      stream.on('end', () => {
        const finish = () => {
          accepted.push({ at: Date.now(), client: session.hostNameAppearsAs, rcptTo: session.envelope.rcptTo.map((r) => r.address) });
          end(session.id);
          callback(null, 'OK counted');
        };
        if (!options.dataDelayMs) return finish();
        const timer = setTimeout(() => {
          timers.delete(timer);
          finish();
        }, options.dataDelayMs);
        timers.add(timer);
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.server.address() as AddressInfo).port,
    accepted,
    transactions,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        server.close(() => resolve());
      }),
  };
}
