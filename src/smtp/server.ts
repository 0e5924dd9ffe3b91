// The SMTP listeners: mechanism only. Session hooks authenticate, enforce the envelope
// limits and hand the message to the pipeline; policy lives in src/pipeline.
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';
import type { Context } from '../context.ts';
import { keyPrefix } from '../crypto.ts';
import { churned, compacted, LARGE_MESSAGE_BYTES } from '../gc.ts';
import { replyClass } from '../metrics.ts';
import { assertCanSend, invalidKey, lookupKey } from '../pipeline/authenticate.ts';
import type { AcceptSubmission } from '../pipeline/index.ts';
import { rateLimitedNow } from '../pipeline/rate-limit.ts';
import { newSubmission, type Principal } from '../pipeline/submission.ts';
import { addressKey, SessionLimits } from './limits.ts';
import { applySmtpServerPatches } from './patches.ts';
import { SmtpError, toSmtpError } from './smtp-error.ts';
import type { TlsMaterial } from './tls.ts';

/** SPEC §3: the 3rd failed AUTH on a connection, or more than 20 from one IP in a minute. */
export const AUTH_FAILURES_PER_CONNECTION = 3;
export const AUTH_FAILURES_PER_IP_PER_MINUTE = 20;
/**
 * Beyond SPEC: failures presenting one key prefix (`txr_live_XXXX`), from any address. Only
 * failures count and only failures are refused, so a key's holder is never locked out by
 * someone guessing at it.
 */
export const AUTH_FAILURES_PER_KEY_PER_MINUTE = 20;
/** After a shutdown's grace, how long replies already in the pipeline may still take. */
const REPLY_GRACE_MS = 5_000;

export interface SmtpListeners {
  /** Actual ports, STARTTLS ones first then implicit-TLS ones (useful with port 0). */
  ports: number[];
  smtpsPorts: number[];
  /** Stop accepting; resolves once every open session has ended (or the deadline passed). */
  close(deadlineMs?: number): Promise<void>;
}

/** Failed AUTH attempts per client IP over the last minute (in this process). */
class AuthFailureWindow {
  readonly #byIp = new Map<string, number[]>();

  record(ip: string): number {
    const now = Date.now();
    const list = (this.#byIp.get(ip) ?? []).filter((t) => now - t < 60_000);
    list.push(now);
    this.#byIp.set(ip, list);
    if (this.#byIp.size > 10_000) this.#prune(now);
    return list.length;
  }

  count(ip: string): number {
    const now = Date.now();
    return (this.#byIp.get(ip) ?? []).filter((t) => now - t < 60_000).length;
  }

  #prune(now: number): void {
    for (const [ip, list] of this.#byIp) if (list.every((t) => now - t >= 60_000)) this.#byIp.delete(ip);
  }
}

/** SPEC §3 / issue 9: while the database or queue is unreachable, new connections get this. */
export const unavailable = (): SmtpError => new SmtpError(421, '4.3.0', 'Service temporarily unavailable, try again later', 'unavailable');

const tlsRequired = (): SmtpError => new SmtpError(530, '5.7.0', 'Must issue a STARTTLS command first', 'tls_required');

interface SessionState {
  authFailures: number;
  transactionStarted: number;
}

function principalOf(session: SMTPServerSession): Principal | undefined {
  return (session.user as { principal?: Principal } | undefined)?.principal;
}

export async function startSmtp(ctx: Context, accept: AcceptSubmission, tls: TlsMaterial): Promise<SmtpListeners> {
  applySmtpServerPatches();
  const { config, log, metrics, readiness } = ctx;
  const failures = new AuthFailureWindow();
  const keyFailures = new AuthFailureWindow();
  const servers: SMTPServer[] = [];
  // Session hooks get the session only; the limits need its connection to answer and close it.
  const connectionOf = (session: SMTPServerSession) => {
    for (const server of servers) for (const c of server.connections) if (c.session === session) return c;
    return undefined;
  };
  const limits = new SessionLimits(
    { maxPerIp: config.smtpMaxPerIp, sessionTimeoutMs: config.smtpSessionTimeoutMs, dataTimeoutMs: config.smtpDataTimeoutMs },
    log,
    connectionOf,
  );
  const states = new WeakMap<SMTPServerSession, SessionState>();
  const stateOf = (s: SMTPServerSession): SessionState => {
    let st = states.get(s);
    if (!st) states.set(s, (st = { authFailures: 0, transactionStarted: Date.now() }));
    return st;
  };

  const options = (secure: boolean) => ({
    secure,
    key: tls.key,
    cert: tls.cert,
    name: config.hostname,
    banner: 'txrelay ESMTP',
    size: config.maxMessageBytes,
    rejectOversized: true,
    authMethods: ['PLAIN', 'LOGIN'],
    // Header authentication (X-Auth-APIKey) lets unauthenticated sessions reach DATA.
    authOptional: true,
    // With TLS required AUTH is neither offered nor accepted before STARTTLS.
    allowInsecureAuth: !config.requireTls,
    hideAuthBeforeTls: config.requireTls,
    // We do not implement REQUIRETLS (RFC 8689); do not advertise it.
    hideREQUIRETLS: true,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: true,
    disableReverseLookup: true,
    // Behind a TCP load balancer: the client's address from the PROXY v1 header (TXRELAY_SMTP_PROXY_PROTOCOL).
    useProxy: config.smtpProxyProtocol,
    maxClients: config.smtpMaxClients,
    // close() below decides when sessions are cut at shutdown, not smtp-server's 30 s default.
    closeTimeout: 24 * 3600_000,
    logger: false,

    onConnect(session: SMTPServerSession, callback: (err?: Error | null) => void) {
      // The monitor's last answer, no query: a client is told at once, not after its DATA.
      if (readiness && !readiness.ready) {
        metrics?.smtpConnections.inc({ outcome: 'unready' });
        log.debug({ smtp: 'connect', session: session.id, ip: session.remoteAddress, outcome: 'unready', reply: 421 }, 'SMTP connection refused: not ready');
        return callback(unavailable());
      }
      if (failures.count(addressKey(session.remoteAddress)) > AUTH_FAILURES_PER_IP_PER_MINUTE) {
        metrics?.smtpConnections.inc({ outcome: 'auth_lockout' });
        return callback(new SmtpError(421, '4.7.0', 'Too many failed authentications from your address, try again later'));
      }
      const refusal = limits.admit(session);
      if (refusal) {
        metrics?.smtpConnections.inc({ outcome: refusal.code });
        log.info({ smtp: 'connect', session: session.id, ip: session.remoteAddress, outcome: refusal.code, reply: 421 }, 'SMTP connection refused');
        return callback(refusal);
      }
      metrics?.smtpConnections.inc({ outcome: 'accepted' });
      callback();
    },

    onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, callback: (err: Error | null | undefined, response?: { user: unknown }) => void) {
      const st = stateOf(session);
      const fail = (err: SmtpError) => {
        metrics?.smtpAuth.inc({ outcome: 'invalid' });
        st.authFailures++;
        const perIp = failures.record(addressKey(session.remoteAddress));
        const perKey = keyFailures.record(keyPrefix(candidate));
        log.info({ smtp: 'auth', session: session.id, ip: session.remoteAddress, outcome: 'failed', failures: st.authFailures }, 'SMTP AUTH failed');
        if (st.authFailures >= AUTH_FAILURES_PER_CONNECTION || perIp > AUTH_FAILURES_PER_IP_PER_MINUTE || perKey > AUTH_FAILURES_PER_KEY_PER_MINUTE) {
          return callback(new SmtpError(421, '4.7.0', 'Too many failed authentications, closing connection'));
        }
        callback(err);
      };
      if (config.requireTls && !session.secure) {
        return callback(tlsRequired());
      }
      // The password is the key; a client that only fills the username with it works too.
      const password = auth.password ?? '';
      const username = auth.username ?? '';
      const candidate = password.startsWith('txr_') ? password : username.startsWith('txr_') ? username : password;
      lookupKey(ctx.db, candidate).then(
        (principal) => {
          if (!principal) return fail(invalidKey());
          metrics?.smtpAuth.inc({ outcome: 'ok' });
          callback(null, { user: { principal } });
        },
        (err) => {
          metrics?.smtpAuth.inc({ outcome: 'error' });
          readiness?.suspect();
          log.error({ smtp: 'auth', session: session.id, err: (err as Error).message }, 'key lookup failed');
          callback(toSmtpError(err));
        },
      );
    },

    onMailFrom(_address: unknown, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      stateOf(session).transactionStarted = Date.now();
      const principal = principalOf(session);
      // A transaction refused at MAIL FROM is logged and counted like one refused after DATA.
      const refuse = (err: SmtpError) => {
        metrics?.smtpTransactions.inc({ outcome: 'rejected', reply_class: replyClass(err.responseCode) });
        metrics?.rejected('smtp', err);
        log.info(
          { smtp: 'transaction', session: session.id, ip: session.remoteAddress, tenant: principal?.tenant.id, stage: 'mail', outcome: 'rejected', reply: err.responseCode, reason: err.code, duration_ms: 0 },
          'message refused',
        );
        callback(err);
      };
      if (config.requireTls && !session.secure) return refuse(tlsRequired());
      if (principal) {
        try {
          assertCanSend(principal);
        } catch (err) {
          return refuse(toSmtpError(err));
        }
      }
      if (!principal) return callback();
      // A full rate-limit window refuses here, before the client uploads DATA. The count at the
      // end of DATA stays the authoritative check, so a database fault here lets MAIL through.
      rateLimitedNow(ctx.db, principal.tenant).then(
        (refusal) => (refusal ? refuse(refusal) : callback()),
        (err: unknown) => {
          log.warn({ smtp: 'mail', session: session.id, tenant: principal.tenant.id, err: (err as Error).message }, 'rate limit check failed; DATA will decide');
          callback();
        },
      );
    },

    onRcptTo(_address: unknown, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      if (session.envelope.rcptTo.length >= config.maxRecipients) {
        return callback(new SmtpError(452, '4.5.3', `Too many recipients: at most ${config.maxRecipients} per message`));
      }
      callback();
    },

    onClose(session: SMTPServerSession) {
      limits.release(session);
    },

    onData(stream: NodeJS.ReadableStream & { sizeExceeded?: boolean }, session: SMTPServerSession, reply: (err?: Error | null, message?: string) => void) {
      limits.dataStarted(session);
      // The reply is written before reply() returns (the stream has ended): a deadline or a
      // shutdown that came while the pipeline ran closes the session after it, never before.
      const callback = (err?: Error | null, message?: string) => {
        reply(err, message);
        limits.replied(session);
      };
      const chunks: Buffer[] = [];
      let bytes = 0;
      stream.on('data', (chunk: Buffer) => {
        // A large message is coming: the young generation at its least before it flows through.
        if (bytes <= LARGE_MESSAGE_BYTES && bytes + chunk.length > LARGE_MESSAGE_BYTES) compacted();
        bytes += chunk.length;
        churned(chunk.length);
        // Past the limit smtp-server answers 552 itself (rejectOversized); keep nothing.
        if (!stream.sizeExceeded) chunks.push(chunk);
      });
      stream.on('error', (err: Error) => callback(toSmtpError(err)));
      stream.on('end', () => {
        limits.dataReceived(session);
        const started = stateOf(session).transactionStarted;
        const transaction = { smtp: 'transaction', session: session.id, ip: session.remoteAddress, stage: 'data' };
        // One log line and one count per transaction; never the body or the key.
        const refused = (err: unknown, size: number) => {
          const reply = toSmtpError(err);
          const own = !(err instanceof SmtpError);
          metrics?.smtpTransactions.inc({ outcome: 'rejected', reply_class: replyClass(reply.responseCode) });
          // Our own fault may be the database's: the readiness monitor checks at once.
          if (own) readiness?.suspect();
          (own ? log.error.bind(log) : log.info.bind(log))(
            { ...transaction, tenant: principalOf(session)?.tenant.id, size, outcome: 'rejected', reply: reply.responseCode, reason: reply.code, duration_ms: Date.now() - started, ...(own ? { err: err instanceof Error ? err.message : String(err) } : {}) },
            own ? 'internal error while accepting a message' : 'message refused',
          );
          callback(reply);
        };
        if (stream.sizeExceeded) {
          // Refused before the pipeline, which counts the other refusals.
          const tooLarge = new SmtpError(552, '5.3.4', `Message exceeds the maximum size of ${config.maxMessageBytes} bytes`, 'message_too_large');
          metrics?.rejected('smtp', tooLarge);
          return refused(tooLarge, bytes);
        }
        // The chunks as they came: a large message is never joined into one buffer (parse.ts).
        const raw = chunks.splice(0);
        const envelope = {
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
        };
        accept(newSubmission({ source: 'smtp', envelope, raw, sessionPrincipal: principalOf(session), remoteAddress: session.remoteAddress }))
          .then((accepted) => {
            const outcome = accepted.duplicate ? 'duplicate' : 'accepted';
            metrics?.smtpTransactions.inc({ outcome, reply_class: '2xx' });
            log.info(
              { ...transaction, tenant: accepted.tenantId, message: accepted.id, tag: accepted.tag, route: accepted.route, size: bytes, recipients: envelope.rcptTo.length, outcome, reply: 250, duration_ms: Date.now() - started },
              'message accepted',
            );
            callback(null, `2.0.0 Ok: queued as ${accepted.id}`);
          })
          // `bytes`, not the buffer: nothing here keeps the raw message alive once it is parsed.
          .catch((err: unknown) => refused(err, bytes));
      });
    },
  });

  const listen = async (port: number, secure: boolean): Promise<number> => {
    const server = new SMTPServer(options(secure) as never);
    server.on('error', (err: Error) => log.error({ smtp: 'server', err: err.message }, 'SMTP server error'));
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.listen({ port, host: config.bind, reusePort: config.smtpReusePort }, () => {
        server.server.off('error', reject);
        resolve();
      });
    });
    servers.push(server);
    return (server.server.address() as AddressInfo).port;
  };
  const ports: number[] = [];
  for (const p of config.smtpPorts) ports.push(await listen(p, false));
  const smtpsPorts: number[] = [];
  for (const p of config.smtpsPorts) smtpsPorts.push(await listen(p, true));
  log.info({ smtp: 'listening', ports, smtpsPorts, bind: config.bind }, 'SMTP listening');

  return {
    ports,
    smtpsPorts,
    async close(deadlineMs = 30_000) {
      // No new connections; sessions between transactions are told now, the others after the
      // reply that ends their transaction (limits.ts). What is left at the deadline is cut, but
      // a message already in the pipeline still gets its reply (REPLY_GRACE_MS at most).
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      limits.drain();
      if (await settlesWithin(closed, deadlineMs)) return;
      log.warn({ smtp: 'shutdown', sessions: limits.open, replying: limits.replying }, 'SMTP sessions still open at the shutdown deadline: closing them');
      limits.closeAll();
      await settlesWithin(closed, REPLY_GRACE_MS);
    },
  };
}

/** Whether `p` settled within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
