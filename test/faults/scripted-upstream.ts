// A hand-written SMTP server for upstream faults smtp-server cannot play: it never greets
// (blackhole), greets one byte a second (tarpit), answers the final dot one byte a second,
// hangs up right after the final dot, refuses the message, or accepts it. The mode can change
// between connections, so a test can let the fault end and watch the message go out. It
// writes down what the invariants need: final dots read, copies accepted, and messages carried
// by two connections at once.
import net from 'node:net';
import { serveSmtpSession } from '../helpers/raw-smtp-server.ts';
import { relayMessageId } from './fault-upstream.ts';

export type Mode = 'blackhole' | 'tarpit-greeting' | 'tarpit-reply' | 'drop-after-dot' | 'refuse' | 'accept';

export interface ScriptedUpstream {
  port: number;
  /** Applies to connections opened from now on. */
  mode: Mode;
  /** Message ids whose final dot was read (any mode). */
  arrivals: string[];
  /** Message ids answered 250 in full. */
  accepted: string[];
  /** Message ids seen in two open transactions at once. */
  overlaps: string[];
  /** Connections opened. */
  connections: number;
  close(): Promise<void>;
}

const TRICKLE_MS = 1_000;

export async function startScriptedUpstream(mode: Mode): Promise<ScriptedUpstream> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const openById = new Map<string, number>();
  const up: ScriptedUpstream = { port: 0, mode, arrivals: [], accepted: [], overlaps: [], connections: 0, close: async () => {} };

  /** Writes `text` one byte every TRICKLE_MS: each byte resets the client's idle timeout. */
  const trickle = (socket: net.Socket, text: string, done?: () => void) => {
    let i = 0;
    const tick = () => {
      if (socket.destroyed) return;
      if (i >= text.length) return done?.();
      socket.write(text[i++]);
      const t = setTimeout(() => {
        timers.delete(t);
        tick();
      }, TRICKLE_MS);
      timers.add(t);
    };
    tick();
  };

  const server = net.createServer((socket) => {
    const mode = up.mode;
    up.connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    /** The message id of the transaction open on this connection. */
    let current: string | undefined;
    const endTransaction = () => {
      if (current === undefined) return;
      openById.set(current, (openById.get(current) ?? 1) - 1);
      current = undefined;
    };
    socket.on('close', () => {
      sockets.delete(socket);
      endTransaction();
    });
    if (mode === 'blackhole') return;
    if (mode === 'tarpit-greeting') return trickle(socket, '220 tarpit ESMTP\r\n');
    socket.write('220 scripted ESMTP\r\n');

    serveSmtpSession(socket, 'scripted', {
      onPartialMessage(soFar) {
        if (current !== undefined || !/\r\n\r\n/.test(soFar)) return;
        current = relayMessageId(soFar);
        if (current === undefined) return;
        const n = (openById.get(current) ?? 0) + 1;
        openById.set(current, n);
        if (n > 1) up.overlaps.push(current);
      },
      onMessage(body) {
        const id = relayMessageId(body);
        if (id) up.arrivals.push(id);
        if (mode === 'drop-after-dot') {
          socket.destroy();
          return false;
        }
        if (mode === 'refuse') {
          endTransaction();
          socket.write('554 5.7.1 Refused by policy\r\n');
          return;
        }
        if (mode === 'tarpit-reply') {
          trickle(socket, '250 2.0.0 Ok: taken\r\n', () => id && up.accepted.push(id));
          return false;
        }
        endTransaction();
        if (id) up.accepted.push(id);
        socket.write('250 2.0.0 Ok: taken\r\n');
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as net.AddressInfo).port;
  up.close = () =>
    new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return up;
}
