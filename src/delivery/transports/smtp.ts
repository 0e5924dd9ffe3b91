// SMTP to an upstream relay (Postal, Postfix, a provider's submission port) through nodemailer.
// One instance per route version: its pool never carries another route's authenticated session.
import { Readable } from 'node:stream';
import nodemailer, { type NodemailerError, type SMTPSentMessageInfo, type SMTPTransportOptions, type Transporter } from 'nodemailer';
import MimeNode from 'nodemailer/lib/mime-node';
import type { z } from 'zod';
import { parseReply } from '../classify.ts';
import { applyDataStreamPatch } from './data-stream.ts';
import type { TRANSPORT_CONFIG } from '../../services/routes.service.ts';
import { DeliveryError, type DeliveryRequest, type DeliveryResult, type DeliveryTransport, type RecipientResult } from './transport.ts';

export type SmtpRouteConfig = z.output<(typeof TRANSPORT_CONFIG)['smtp']>;

export interface SmtpTransportOptions {
  /** The route's config with credentials, as validated by the routes service. */
  config: SmtpRouteConfig;
  /** Our name in EHLO (RFC 5321 §4.1.1.1): TXRELAY_HOSTNAME. */
  hostname: string;
  /**
   * Pool size when `config.pool` is `true`: the route's worker concurrency, so jobs never queue
   * inside the pool. No rate limit here: max_per_second is held across every worker process by
   * delivery/limits.ts before a message reaches the transport, and nodemailer's per-process
   * window would only add pauses of its own on top.
   */
  defaultConnections: number;
}

/** A pooled connection is replaced after this many messages, bounding the effect of a bad session. */
const MAX_MESSAGES_PER_CONNECTION = 100;
/**
 * Idle pooled connections are closed after a minute: servers drop idle clients after their own
 * timeout (RFC 5321 §4.5.3.2.7 suggests 5 minutes), and a pool reconnects when busy again.
 */
const POOL_IDLE_MS = 60_000;

function nodemailerOptions(o: SmtpTransportOptions): SMTPTransportOptions {
  const c = o.config;
  return {
    host: c.host,
    port: c.port,
    // Implicit TLS from the first byte (port 465, RFC 8314 §3.3).
    secure: c.secure,
    // STARTTLS is mandatory when set: without it, or when the upgrade fails, nodemailer errors
    // out instead of sending in clear text (RFC 3207 §4.1 leaves that choice to the client).
    requireTLS: c.require_tls,
    opportunisticTLS: false,
    tls: { rejectUnauthorized: c.tls_reject_unauthorized },
    ...(c.auth ? { auth: { user: c.auth.user, pass: c.auth.pass } } : {}),
    name: o.hostname,
    // The greeting wait counts against the connection timeout; DNS has its own (same) bound.
    connectionTimeout: c.connection_timeout_seconds * 1000,
    greetingTimeout: c.connection_timeout_seconds * 1000,
    dnsTimeout: c.connection_timeout_seconds * 1000,
    // Inactivity between replies. RFC 5321 §4.5.3.2 asks clients to wait up to 5 min for most
    // replies and 10 min after the final dot; the route's setting (max 600 s) stays below
    // pg-boss's 15-min job expiry, and the worker adds an overall deadline on top.
    socketTimeout: c.socket_timeout_seconds * 1000,
    // Never log: the session would include bodies and AUTH exchanges.
    logger: false,
    // The raw message is all we send; nothing may make nodemailer read files or URLs.
    disableFileAccess: true,
    disableUrlAccess: true,
  };
}

/**
 * nodemailer's envelope normalization (an IDN domain to punycode, repeated recipients once), as
 * its sendMail applies it. Only setEnvelope and getEnvelope are used, synchronously, so one node
 * serves every message.
 */
const envelopes = new MimeNode();

function envelopeOf(request: DeliveryRequest): object {
  return { ...envelopes.setEnvelope({ from: request.mailFrom, to: request.recipients }).getEnvelope() };
}

/** A recipient as nodemailer puts it in RCPT TO. */
function onTheWire(address: string): string {
  return (envelopes.setEnvelope({ to: [address] }).getEnvelope() as { to: string[] }).to[0] ?? address;
}

const sameAddress = (a: string | undefined, b: string): boolean => a !== undefined && a.toLowerCase() === b.toLowerCase();

function rejectedResult(address: string, err: NodemailerError | undefined): RecipientResult {
  const response = err?.response ?? err?.message ?? 'recipient refused without a reply';
  return { address, accepted: false, ...parseReply(err?.response), ...(err?.responseCode ? { code: err.responseCode } : {}), response };
}

/**
 * Per-recipient results from nodemailer's accepted / rejected / rejectedErrors, which name each
 * recipient as it went on the wire: an IDN domain punycoded (kasutaja@xn--jgeva-dua.ee for
 * kasutaja@jõgeva.ee). Matched on the stored address alone, such a recipient looked unanswered,
 * so not delivered, and was sent again at every retry.
 */
function recipientResults(
  requested: string[],
  accepted: string[],
  rejected: string[],
  rejectedErrors: NodemailerError[],
  acceptedResponse: string,
): RecipientResult[] {
  return requested.map((address): RecipientResult => {
    const wire = onTheWire(address);
    const named = (a: string | undefined) => sameAddress(a, address) || sameAddress(a, wire);
    if (accepted.some(named)) {
      return { address, accepted: true, ...parseReply(acceptedResponse), response: acceptedResponse };
    }
    const err = rejectedErrors.find((e) => named(e.recipient));
    if (err || rejected.some(named)) return rejectedResult(address, err);
    // nodemailer reports every envelope recipient; an address missing from both lists means we
    // cannot know what happened to it, so it is treated as not delivered (and retried).
    return { address, accepted: false, response: 'no reply for this recipient from the upstream' };
  });
}

/** The code the classifier should see: the socket's own (ECONNREFUSED) rather than nodemailer's wrapper. */
function errorCodeOf(err: NodemailerError): string | undefined {
  if ((err.code === 'ESOCKET' || err.code === 'ECONNECTION') && err.originalCode) return err.originalCode;
  return err.code;
}

/**
 * What nodemailer's SMTP transports (SMTPTransport, SMTPPool) read of a message they send: its
 * envelope, an id for their logs (off here), and its bytes as a stream (a stream, not a Buffer:
 * the pool sends a message again over a fresh connection when a reused one was dropped before
 * the stream was read).
 */
interface RawMail {
  data: { signal?: AbortSignal };
  message: {
    getEnvelope(): object;
    messageId(): string;
    getHeader(name: string): string;
    createReadStream(): Readable;
  };
}

interface RawSender {
  send(mail: RawMail, callback: (err: Error | null, info: SMTPSentMessageInfo) => void): void;
}

/** The stored bytes in one chunk, read once. */
function bytesStream(mime: Buffer): Readable {
  return new Readable({
    read() {
      this.push(mime);
      this.push(null);
    },
  });
}

export class SmtpTransport implements DeliveryTransport {
  readonly #mailer: Transporter<SMTPSentMessageInfo>;
  /**
   * The mailer's transport, given the stored bytes directly. sendMail would compose a MimeNode
   * around them first (two calls to the system's random source for a boundary and a Message-ID
   * it does not use, a stream pipeline with its AbortController, whose abort builds an
   * exception). npm run bench, alternately: backlog drain 1,605-1,644 -> 2,073-2,146/s, end
   * to end at 50 clients 774-855 -> 953-999/s.
   */
  readonly #sender: RawSender;

  constructor(options: SmtpTransportOptions) {
    applyDataStreamPatch();
    const base = nodemailerOptions(options);
    const pool = options.config.pool;
    this.#mailer =
      pool === false
        ? nodemailer.createTransport(base)
        : nodemailer.createTransport({
            ...base,
            pool: true,
            maxConnections: typeof pool === 'number' ? pool : options.defaultConnections,
            maxMessages: MAX_MESSAGES_PER_CONNECTION,
            idleTimeout: POOL_IDLE_MS,
          });
    this.#sender = this.#mailer.transporter as unknown as RawSender;
  }

  async deliver(request: DeliveryRequest): Promise<DeliveryResult> {
    let info: SMTPSentMessageInfo;
    // The stored final bytes (already DKIM-signed), sent unchanged.
    const envelope = envelopeOf(request);
    const id = request.messageId ?? '';
    const mail: RawMail = {
      data: request.signal ? { signal: request.signal } : {},
      message: { getEnvelope: () => envelope, messageId: () => id, getHeader: () => id, createReadStream: () => bytesStream(request.mime) },
    };
    try {
      info = await new Promise<SMTPSentMessageInfo>((resolve, reject) => this.#sender.send(mail, (err, sent) => (err ? reject(err) : resolve(sent))));
    } catch (e) {
      const err = e as NodemailerError;
      // Every RCPT TO was refused: that is a per-recipient outcome (each has its own reply,
      // some may be 4yz and others 5yz), not a failure of the message as a whole.
      if (err.code === 'EENVELOPE' && err.command === 'RCPT TO' && err.rejectedErrors?.length) {
        return { recipients: recipientResults(request.recipients, [], err.rejected ?? [], err.rejectedErrors, '') };
      }
      throw new DeliveryError({
        response: err.response ?? err.message,
        command: err.command,
        errorCode: errorCodeOf(err),
        ...(err.responseCode ? { code: err.responseCode } : {}),
      });
    }
    return {
      recipients: recipientResults(request.recipients, info.accepted, info.rejected, info.rejectedErrors ?? [], info.response),
    };
  }

  async close(): Promise<void> {
    // Without `force`, a connection in the middle of a delivery finishes it before closing.
    this.#mailer.close();
  }
}
