// Connection limits and deadlines of the SMTP listeners (README, Security): sessions per client
// address, an absolute session deadline, an absolute DATA deadline, and the graceful drain at
// shutdown (SPEC §9). Mechanism only: server.ts calls these from its session hooks.
//
// smtp-server's own idle timeout (60 s) is reset by every byte, so a client trickling a byte
// every 50 s would hold a session, and a DATA upload, for ever: both deadlines here are measured
// from their start and nothing extends them. A session is never cut while its message is in the
// pipeline (after the final dot, before the reply): the commit may be landing, and cutting then
// would turn a stored message into one the client believes lost and sends again.
import net from 'node:net';
import type { SMTPServerSession } from 'smtp-server';
import type { Logger } from '../log.ts';
import { SmtpError } from './smtp-error.ts';

/** What a session hook can do to the session's connection (smtp-server's SMTPConnection). */
export interface SessionConnection {
  session: SMTPServerSession;
  send(code: number, data?: string): void;
}

export interface LimitSettings {
  maxPerIp: number;
  sessionTimeoutMs: number;
  dataTimeoutMs: number;
}

/** Where a session is: the reply to the final dot is the only moment it must not be cut. */
type Phase = 'command' | 'data' | 'pipeline';

interface Tracked {
  address: string;
  phase: Phase;
  /** Cut once the pending DATA reply has been sent (deadline passed or shutdown meanwhile). */
  closeAfterReply?: SmtpError;
  sessionTimer: NodeJS.Timeout;
  dataTimer?: NodeJS.Timeout;
}

export const tooManyFromAddress = (): SmtpError =>
  new SmtpError(421, '4.7.0', 'Too many connections from your address, try again later', 'per_ip_limit');
// RFC 3463: X.4.2 "bad connection" is the class for a session ended for time; X.3.2 "system
// not accepting network messages" for a server going down.
export const sessionTimeLimit = (): SmtpError => new SmtpError(421, '4.4.2', 'Session time limit exceeded, closing connection', 'session_timeout');
export const dataTimeLimit = (): SmtpError => new SmtpError(421, '4.4.2', 'DATA time limit exceeded, closing connection', 'data_timeout');
export const shuttingDown = (): SmtpError => new SmtpError(421, '4.3.2', 'Service shutting down, try again later', 'shutting_down');

/**
 * The address limits count by: an IPv4 address (also IPv4-mapped IPv6) as it is, an IPv6
 * address by its /64, the block a single host or customer line is usually given (RFC 6177).
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (net.isIPv6(address)) return `${expandIPv6(address).slice(0, 4).join(':')}::/64`;
  return address;
}

/** The eight 16-bit groups of an IPv6 address, in lower-case hex without leading zeros. */
function expandIPv6(address: string): string[] {
  const [head, tail] = address.toLowerCase().split('%')[0].split('::');
  const part = (s: string | undefined) => (s ? s.split(':') : []);
  const left = part(head);
  const right = part(tail);
  // A trailing embedded IPv4 address (::1.2.3.4) is two groups.
  const last = right.length ? right : left;
  const v4 = last.length && net.isIPv4(last[last.length - 1]) ? last.pop()!.split('.').map(Number) : undefined;
  if (v4) last.push(((v4[0] << 8) | v4[1]).toString(16), ((v4[2] << 8) | v4[3]).toString(16));
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16).toString(16));
}

export class SessionLimits {
  readonly #settings: LimitSettings;
  readonly #log: Logger;
  readonly #connectionOf: (session: SMTPServerSession) => SessionConnection | undefined;
  readonly #perAddress = new Map<string, number>();
  readonly #sessions = new Map<SMTPServerSession, Tracked>();
  #draining = false;

  constructor(settings: LimitSettings, log: Logger, connectionOf: (session: SMTPServerSession) => SessionConnection | undefined) {
    this.#settings = settings;
    this.#log = log;
    this.#connectionOf = connectionOf;
  }

  /** Sessions open now (admitted and not yet closed). */
  get open(): number {
    return this.#sessions.size;
  }

  /** At connect: the refusal for a client over its address's limit, else starts the session's clock. */
  admit(session: SMTPServerSession): SmtpError | undefined {
    if (this.#draining) return shuttingDown();
    const address = addressKey(session.remoteAddress);
    const open = this.#perAddress.get(address) ?? 0;
    if (open >= this.#settings.maxPerIp) return tooManyFromAddress();
    this.#perAddress.set(address, open + 1);
    const sessionTimer = setTimeout(() => this.#expire(session, sessionTimeLimit()), this.#settings.sessionTimeoutMs);
    sessionTimer.unref();
    this.#sessions.set(session, { address, phase: 'command', sessionTimer });
    return undefined;
  }

  /** At close, for every session (admitted or refused). */
  release(session: SMTPServerSession): void {
    const t = this.#sessions.get(session);
    if (!t) return;
    this.#sessions.delete(session);
    clearTimeout(t.sessionTimer);
    clearTimeout(t.dataTimer);
    const left = (this.#perAddress.get(t.address) ?? 1) - 1;
    if (left > 0) this.#perAddress.set(t.address, left);
    else this.#perAddress.delete(t.address);
  }

  /** DATA accepted (354 follows): the upload's own clock starts. */
  dataStarted(session: SMTPServerSession): void {
    const t = this.#sessions.get(session);
    if (!t) return;
    t.phase = 'data';
    t.dataTimer = setTimeout(() => this.#expire(session, dataTimeLimit()), this.#settings.dataTimeoutMs);
    t.dataTimer.unref();
  }

  /** The final dot arrived: the message is ours now, and the session waits for our reply. */
  dataReceived(session: SMTPServerSession): void {
    const t = this.#sessions.get(session);
    if (!t) return;
    clearTimeout(t.dataTimer);
    t.dataTimer = undefined;
    t.phase = 'pipeline';
  }

  /** The reply to the final dot was sent: a deadline or a shutdown that came meanwhile ends the session now. */
  replied(session: SMTPServerSession): void {
    const t = this.#sessions.get(session);
    if (!t) return;
    clearTimeout(t.dataTimer);
    t.dataTimer = undefined;
    t.phase = 'command';
    const pending = t.closeAfterReply ?? (this.#draining ? shuttingDown() : undefined);
    if (pending) this.#cut(session, pending);
  }

  /**
   * Shutdown (SPEC §9): new sessions are refused, sessions between transactions are told at
   * once, and a session with a transaction open may finish it (it is told after its reply).
   */
  drain(): void {
    this.#draining = true;
    for (const [session, t] of this.#sessions) {
      if (t.phase === 'command' && !session.envelope?.mailFrom) this.#cut(session, shuttingDown());
    }
  }

  /** The end of the shutdown grace: every session still open is told and closed, except replies in the pipeline. */
  closeAll(): void {
    this.#draining = true;
    for (const [session, t] of this.#sessions) {
      if (t.phase === 'pipeline') t.closeAfterReply = shuttingDown();
      else this.#cut(session, shuttingDown());
    }
  }

  /** Sessions whose message is in the pipeline now (the shutdown waits for their replies). */
  get replying(): number {
    let n = 0;
    for (const t of this.#sessions.values()) if (t.phase === 'pipeline') n++;
    return n;
  }

  #expire(session: SMTPServerSession, reason: SmtpError): void {
    const t = this.#sessions.get(session);
    if (!t) return;
    this.#log.info({ smtp: 'limit', session: session.id, ip: session.remoteAddress, reason: reason.code, phase: t.phase }, 'SMTP session deadline passed');
    if (t.phase === 'pipeline') t.closeAfterReply = reason;
    else this.#cut(session, reason);
  }

  /**
   * Sends the 421 and closes (smtp-server closes after any 421). An upload cut short is
   * destroyed by smtp-server when the socket closes, so its message never reaches the pipeline.
   */
  #cut(session: SMTPServerSession, reason: SmtpError): void {
    const t = this.#sessions.get(session);
    if (t) {
      clearTimeout(t.sessionTimer);
      clearTimeout(t.dataTimer);
    }
    const conn = this.#connectionOf(session);
    conn?.send(reason.responseCode, reason.message);
  }
}
