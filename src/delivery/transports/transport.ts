// What every transport (smtp, capture, …) offers the worker: hand over the final message bytes
// for some recipients and say, per recipient, what the upstream answered.
import { classify, parseReply, type Verdict } from '../classify.ts';

export interface DeliveryRequest {
  /** txrelay's id of the message, for transports that pass it on (http). */
  messageId?: string;
  /** The final message exactly as stored in messages.mime: sent unchanged. */
  mime: Buffer;
  /** Envelope sender (RFC 5321 MAIL FROM); '' for the null reverse-path. */
  mailFrom: string;
  /** Envelope recipients (RCPT TO): the message's recipients still pending. */
  recipients: string[];
  /** Aborted when the job is lost, the delivery deadline passes, or the worker must give up. */
  signal?: AbortSignal;
}

export interface RecipientResult {
  address: string;
  accepted: boolean;
  /** Basic reply code, when the upstream gave one. */
  code?: number;
  /** Enhanced status code (RFC 3463), when the upstream gave one. */
  enhanced?: string;
  /** The upstream's reply for this recipient, verbatim (or what the transport observed). */
  response: string;
}

export interface DeliveryResult {
  recipients: RecipientResult[];
}

export interface DeliveryTransport {
  /**
   * Delivers one message. Resolves with a result per recipient when the upstream took part in a
   * transaction (some recipients may be refused); throws a DeliveryError when the message as a
   * whole failed (connection, TLS, authentication, MAIL FROM, DATA).
   */
  deliver(request: DeliveryRequest): Promise<DeliveryResult>;
  /** Releases connections. Deliveries in flight are allowed to finish. */
  close(): Promise<void>;
}

export interface DeliveryErrorInit {
  /** The upstream reply, or the error text when the connection broke before a reply. */
  response: string;
  /** The SMTP command the reply answered (MAIL FROM, RCPT TO, DATA, AUTH …, CONN). */
  command?: string;
  /** Node.js or nodemailer error code (ECONNREFUSED, ETIMEDOUT, ETLS, EAUTH, …). */
  errorCode?: string;
  code?: number;
  enhanced?: string;
}

/**
 * A whole-message failure. Keeps the command and the raw upstream reply (STYLE §3), and whether
 * a later attempt may succeed, decided by the classifier's table.
 */
export class DeliveryError extends Error {
  readonly code: number | undefined;
  readonly enhanced: string | undefined;
  readonly response: string;
  readonly command: string | undefined;
  readonly errorCode: string | undefined;
  readonly verdict: Verdict;
  readonly reason: string;

  constructor(init: DeliveryErrorInit) {
    super(init.command ? `${init.command}: ${init.response}` : init.response);
    this.name = 'DeliveryError';
    const parsed = parseReply(init.response);
    this.code = init.code ?? parsed.code;
    this.enhanced = init.enhanced ?? parsed.enhanced;
    this.response = init.response;
    this.command = init.command;
    this.errorCode = init.errorCode;
    const c = classify({ code: this.code, enhanced: this.enhanced, response: this.response, errorCode: this.errorCode });
    this.verdict = c.verdict;
    this.reason = c.reason;
  }

  /** True when a later attempt may succeed (retry or slow_down). */
  get transient(): boolean {
    return this.verdict !== 'fail';
  }
}
