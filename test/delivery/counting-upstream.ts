// An upstream for the route-limit tests: a real smtp-server on 127.0.0.1 port 0 that accepts
// everything and writes down when each message was accepted, which client (its EHLO name: each
// worker process has its own TXRELAY_HOSTNAME) sent it, and how many SMTP transactions and
// connections were open at once. A message whose sender hung up before the reply to its final
// dot is not accepted (nobody was told it was), as a real upstream discards it.
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export interface Accepted {
  /** Date.now() when the upstream answered the final dot. */
  at: number;
  /** The client's EHLO name. */
  client: string;
  rcptTo: string[];
  /** The Message-ID header without its angle brackets (undefined: none). */
  messageId: string | undefined;
}

export interface CountingUpstream {
  port: number;
  accepted: Accepted[];
  /** Transactions (MAIL FROM to the reply after the final dot) open at once: now and at most. */
  transactions: { now: number; max: number };
  /** Connections open at once: now and at most. */
  connections: { now: number; max: number };
  /** Transactions this client (EHLO name) has open now. */
  openBy(client: string): number;
  /** Messages read to the final dot whose sender was gone before the reply: not accepted. */
  dropped: number;
  /**
   * When this upstream last saw a connection of this client (EHLO name) close. A client killed
   * mid-delivery may have written a whole message before it died that the upstream reads, and
   * answers, only after: its acceptance is no later than this.
   */
  closedAt(client: string): number | undefined;
  close(): Promise<void>;
}

/** Enough of the message to hold its header. */
const HEAD_BYTES = 16 * 1024;

export async function startCountingUpstream(options: { dataDelayMs?: number } = {}): Promise<CountingUpstream> {
  const accepted: Accepted[] = [];
  const transactions = { now: 0, max: 0 };
  const connections = { now: 0, max: 0 };
  /** Sessions with a transaction open (and their client), so a dropped connection closes its transaction too. */
  const open = new Map<string, string>();
  /** Sessions whose connection closed. */
  const closed = new Set<string>();
  const lastClosedAt = new Map<string, number>();
  let dropped = 0;
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
      closed.add(session.id);
      if (session.hostNameAppearsAs) lastClosedAt.set(session.hostNameAppearsAs, Date.now());
      end(session.id);
    },
    onMailFrom(_address, session, callback) {
      if (!open.has(session.id)) {
        open.set(session.id, session.hostNameAppearsAs);
        transactions.now++;
        transactions.max = Math.max(transactions.max, transactions.now);
      }
      callback();
    },
    onData(stream, session, callback) {
      let head = '';
      stream.on('data', (chunk: Buffer) => {
        if (head.length < HEAD_BYTES) head += chunk.toString('latin1');
      });
      stream.on('end', () => {
        const finish = () => {
          if (closed.has(session.id)) {
            dropped++;
            return callback(null, 'OK counted');
          }
          const messageId = /^Message-ID:\s*<([^>]*)>/im.exec(head.split(/\r?\n\r?\n/, 1)[0])?.[1];
          accepted.push({ at: Date.now(), client: session.hostNameAppearsAs, rcptTo: session.envelope.rcptTo.map((r) => r.address), messageId });
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
    openBy: (client) => [...open.values()].filter((c) => c === client).length,
    get dropped() {
      return dropped;
    },
    closedAt: (client) => lastClosedAt.get(client),
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        server.close(() => resolve());
      }),
  };
}
