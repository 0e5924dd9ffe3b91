// An upstream for the fault tests: a real smtp-server on 127.0.0.1 port 0 that decides per
// message what to do with the final dot (accept, refuse, hold without a reply, drop the
// connection) and writes down what the relay's invariants are judged by: each copy it
// accepted, final dots whose sender was gone before the reply (not accepted: nobody was told,
// as a real MTA discards them), and any message carried by two transactions at once (two
// workers delivering it at the same time). Hooks let a test act at the worst moments: when the
// final dot arrives, and right after the 250 was written.
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

export type Verdict =
  | { kind: 'accept' }
  | { kind: 'refuse'; code: number; text: string }
  /** No reply until release(), or until the client goes away. */
  | { kind: 'hold' }
  /** 250 after this long (unless the client went away meanwhile). */
  | { kind: 'delay'; ms: number }
  /** The connection is destroyed without a reply. */
  | { kind: 'drop' };

export interface Arrival {
  /** The relay's message id (the Message-ID header's local part). */
  id: string | undefined;
  subject: string | undefined;
  /** Date.now() when the final dot was read. */
  at: number;
}

export interface FaultUpstream {
  port: number;
  /** What to do with each message; every message is accepted unless this says otherwise. */
  decide: (arrival: Arrival) => Verdict;
  /** Called when a final dot has been read, before the verdict is carried out. */
  onFinalDot?: (arrival: Arrival) => void;
  /** Called right after a 250 was written for the message. */
  onAccepted?: (arrival: Arrival) => void;
  /** Copies accepted (250 written to a client still connected). */
  accepted: Arrival[];
  /** Final dots read (accepted or not). */
  arrivals: Arrival[];
  /** Final dots whose sender hung up before the reply, and drops of ours. */
  notAccepted: Arrival[];
  /** Message ids seen in two open transactions at once. */
  overlaps: string[];
  /** Answers every held message now, with 250. */
  release(): void;
  close(): Promise<void>;
}

const HEAD_BYTES = 16 * 1024;

/** The relay's message id, from `Message-ID: <id@host>`. */
export function relayMessageId(head: string): string | undefined {
  return /^Message-ID:\s*<([^@>]+)@[^>]*>/im.exec(head.split(/\r?\n\r?\n/, 1)[0])?.[1];
}

export async function startFaultUpstream(): Promise<FaultUpstream> {
  const accepted: Arrival[] = [];
  const arrivals: Arrival[] = [];
  const notAccepted: Arrival[] = [];
  const overlaps: string[] = [];
  /** Open transactions per message id, and the message id of each session's transaction. */
  const openById = new Map<string, number>();
  const idOfSession = new Map<string, string>();
  const closed = new Set<string>();
  /** Answers owed to held messages, by session. */
  const held = new Map<string, () => void>();

  const begin = (session: SMTPServerSession, id: string) => {
    const n = (openById.get(id) ?? 0) + 1;
    openById.set(id, n);
    idOfSession.set(session.id, id);
    if (n > 1) overlaps.push(id);
  };
  const end = (session: SMTPServerSession) => {
    const id = idOfSession.get(session.id);
    if (id === undefined) return;
    idOfSession.delete(session.id);
    openById.set(id, (openById.get(id) ?? 1) - 1);
  };

  const upstream: FaultUpstream = {
    port: 0,
    decide: () => ({ kind: 'accept' }),
    accepted,
    arrivals,
    notAccepted,
    overlaps,
    release() {
      for (const answer of [...held.values()]) answer();
    },
    close: () =>
      new Promise<void>((resolve) => {
        upstream.release();
        server.close(() => resolve());
      }),
  };

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    closeTimeout: 100,
    onClose(session) {
      closed.add(session.id);
      // A held message whose sender hung up is settled now: not accepted.
      held.get(session.id)?.();
      end(session);
    },
    onData(stream, session, callback) {
      let head = '';
      let started = false;
      stream.on('data', (chunk: Buffer) => {
        if (head.length < HEAD_BYTES) head += chunk.toString('latin1');
        // The transaction is "open" for this message from the moment its header is read.
        const id = !started && /\r?\n\r?\n/.test(head) ? relayMessageId(head) : undefined;
        if (id) {
          started = true;
          begin(session, id);
        }
      });
      stream.on('end', () => {
        const arrival: Arrival = { id: relayMessageId(head), subject: /^Subject:\s*(.*)$/im.exec(head.split(/\r?\n\r?\n/, 1)[0])?.[1]?.trim(), at: Date.now() };
        arrivals.push(arrival);
        upstream.onFinalDot?.(arrival);
        const verdict = upstream.decide(arrival);
        const answer = () => {
          held.delete(session.id);
          if (closed.has(session.id)) {
            notAccepted.push(arrival);
            end(session);
            return callback(null, 'OK');
          }
          if (verdict.kind === 'refuse') {
            end(session);
            return callback(Object.assign(new Error(verdict.text), { responseCode: verdict.code }));
          }
          accepted.push(arrival);
          callback(null, 'OK: taken');
          end(session);
          upstream.onAccepted?.(arrival);
        };
        if (verdict.kind === 'hold' || verdict.kind === 'delay') {
          held.set(session.id, answer);
          if (verdict.kind === 'delay') setTimeout(() => held.get(session.id)?.(), verdict.ms);
          return;
        }
        if (verdict.kind === 'drop') {
          notAccepted.push(arrival);
          end(session);
          // smtp-server offers no way to hang up without a reply but its socket.
          for (const c of server.connections) if (c.session === session) (c as unknown as { _socket: { destroy(): void } })._socket.destroy();
          return;
        }
        answer();
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstream.port = (server.server.address() as AddressInfo).port;
  return upstream;
}
