// The SMTP listeners: mechanism only. Session hooks authenticate, enforce the envelope
// limits and hand the message to the pipeline; policy lives in src/pipeline.
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';
import type { Context } from '../context.ts';
import { assertCanSend, invalidKey, lookupKey } from '../pipeline/authenticate.ts';
import type { AcceptSubmission } from '../pipeline/index.ts';
import { rateLimitedNow } from '../pipeline/rate-limit.ts';
import { newSubmission, type Principal } from '../pipeline/submission.ts';
import { applySmtpServerPatches } from './patches.ts';
import { SmtpError, toSmtpError } from './smtp-error.ts';
import type { TlsMaterial } from './tls.ts';

/** SPEC §3: the 3rd failed AUTH on a connection, or more than 20 from one IP in a minute. */
export const AUTH_FAILURES_PER_CONNECTION = 3;
export const AUTH_FAILURES_PER_IP_PER_MINUTE = 20;

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

interface SessionState {
  authFailures: number;
  transactionStarted: number;
}

function principalOf(session: SMTPServerSession): Principal | undefined {
  return (session.user as { principal?: Principal } | undefined)?.principal;
}

export async function startSmtp(ctx: Context, accept: AcceptSubmission, tls: TlsMaterial): Promise<SmtpListeners> {
  applySmtpServerPatches();
  const { config, log } = ctx;
  const failures = new AuthFailureWindow();
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
    maxClients: 1000,
    logger: false,

    onConnect(session: SMTPServerSession, callback: (err?: Error | null) => void) {
      if (failures.count(session.remoteAddress) > AUTH_FAILURES_PER_IP_PER_MINUTE) {
        return callback(new SmtpError(421, '4.7.0', 'Too many failed authentications from your address, try again later'));
      }
      callback();
    },

    onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, callback: (err: Error | null | undefined, response?: { user: unknown }) => void) {
      const st = stateOf(session);
      const fail = (err: SmtpError) => {
        st.authFailures++;
        const perIp = failures.record(session.remoteAddress);
        log.info({ smtp: 'auth', session: session.id, ip: session.remoteAddress, outcome: 'failed', failures: st.authFailures }, 'SMTP AUTH failed');
        if (st.authFailures >= AUTH_FAILURES_PER_CONNECTION || perIp > AUTH_FAILURES_PER_IP_PER_MINUTE) {
          return callback(new SmtpError(421, '4.7.0', 'Too many failed authentications, closing connection'));
        }
        callback(err);
      };
      if (config.requireTls && !session.secure) {
        return callback(new SmtpError(530, '5.7.0', 'Must issue a STARTTLS command first'));
      }
      // The password is the key; a client that only fills the username with it works too.
      const password = auth.password ?? '';
      const username = auth.username ?? '';
      const candidate = password.startsWith('txr_') ? password : username.startsWith('txr_') ? username : password;
      lookupKey(ctx.db, candidate).then(
        (principal) => {
          if (!principal) return fail(invalidKey());
          callback(null, { user: { principal } });
        },
        (err) => {
          log.error({ smtp: 'auth', session: session.id, err: (err as Error).message }, 'key lookup failed');
          callback(toSmtpError(err));
        },
      );
    },

    onMailFrom(_address: unknown, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      if (config.requireTls && !session.secure) {
        return callback(new SmtpError(530, '5.7.0', 'Must issue a STARTTLS command first'));
      }
      const principal = principalOf(session);
      if (principal) {
        try {
          assertCanSend(principal);
        } catch (err) {
          return callback(err as SmtpError);
        }
      }
      stateOf(session).transactionStarted = Date.now();
      if (!principal) return callback();
      // A full rate-limit window refuses here, before the client uploads DATA. The count at the
      // end of DATA stays the authoritative check, so a database fault here lets MAIL through.
      rateLimitedNow(ctx.db, principal.tenant).then(
        (refusal) => callback(refusal),
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

    onData(stream: NodeJS.ReadableStream & { sizeExceeded?: boolean }, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => {
        // Past the limit smtp-server answers 552 itself (rejectOversized); keep nothing.
        if (!stream.sizeExceeded) chunks.push(chunk);
      });
      stream.on('error', (err: Error) => callback(toSmtpError(err)));
      stream.on('end', () => {
        if (stream.sizeExceeded) {
          return callback(new SmtpError(552, '5.3.4', `Message exceeds the maximum size of ${config.maxMessageBytes} bytes`));
        }
        const raw = Buffer.concat(chunks);
        chunks.length = 0;
        const started = stateOf(session).transactionStarted;
        const envelope = {
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
        };
        accept(newSubmission({ source: 'smtp', envelope, raw, sessionPrincipal: principalOf(session), remoteAddress: session.remoteAddress }))
          .then((accepted) => {
            log.info(
              { smtp: 'transaction', session: session.id, ip: session.remoteAddress, tenant: accepted.tenantId, message: accepted.id, tag: accepted.tag, route: accepted.route, size: raw.length, recipients: envelope.rcptTo.length, outcome: accepted.duplicate ? 'duplicate' : 'accepted', reply: 250, ms: Date.now() - started },
              'message accepted',
            );
            callback(null, `2.0.0 Ok: queued as ${accepted.id}`);
          })
          .catch((err: unknown) => {
            const reply = toSmtpError(err);
            const own = !(err instanceof SmtpError);
            (own ? log.error.bind(log) : log.info.bind(log))(
              { smtp: 'transaction', session: session.id, ip: session.remoteAddress, tenant: principalOf(session)?.tenant.id, size: raw.length, outcome: 'rejected', reply: reply.responseCode, reason: reply.code, ms: Date.now() - started, ...(own ? { err: err instanceof Error ? err.message : String(err) } : {}) },
              own ? 'internal error while accepting a message' : 'message refused',
            );
            callback(reply);
          });
      });
    },
  });

  const servers: SMTPServer[] = [];
  const listen = async (port: number, secure: boolean): Promise<number> => {
    const server = new SMTPServer(options(secure) as never);
    server.on('error', (err: Error) => log.error({ smtp: 'server', err: err.message }, 'SMTP server error'));
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.listen(port, config.bind, () => {
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
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, deadlineMs);
              s.close(() => {
                clearTimeout(timer);
                resolve();
              });
            }),
        ),
      );
    },
  };
}
