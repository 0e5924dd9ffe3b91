// The http transport: the message as one JSON POST to any endpoint, with the route's headers
// (its credentials, e.g. Authorization). Also the HTTP plumbing the postal transport shares:
// the attempt's timeout joined with the worker's abort signal, a bounded read of the answer,
// secrets kept out of reply texts, and socket errors turned into codes the classifier knows.
//
// The contract an endpoint implements (README, "Delivery" › "HTTP transports"):
//
//   POST <url>          the route's headers, User-Agent: txrelay unless they set one,
//                       Content-Type: application/json always
//   {
//     "id": "<txrelay message id>" | null,   the same on every attempt: an endpoint deduplicates on it
//     "mail_from": "bounces@example.com",    envelope sender ("" for the null reverse-path)
//     "rcpt_to": ["a@example.net"],          the recipients still pending (fewer on a retry)
//     "message_id_header": "<…>" | null,     the Message-ID header
//     "subject": "…" | null,                 the Subject header, unfolded, RFC 2047 words left encoded
//     "mime_base64": "…"                     the final message (DKIM-signed), byte for byte
//   }
//
//   2xx                 every recipient accepted; the answer's first 500 characters are the reply
//   408, 5xx            transient: retried after the route's backoff
//   429                 transient, slow down: one backoff step longer (Retry-After is recorded)
//   401, 407            transient: our credentials were refused, an operator fixes the route
//   other 4xx           permanent for the message: its fallback route, or failed
//   3xx                 not followed (the route's headers must not travel elsewhere): retried
//   no answer in time, connection refused or reset, DNS, TLS: transient
//
// The verdicts come from classify.ts's rows for EHTTP, not from here.
import type { z } from 'zod';
import type { TRANSPORT_CONFIG } from '../../services/routes.service.ts';
import { DeliveryError, type DeliveryRequest, type DeliveryResult, type DeliveryTransport } from './transport.ts';

export type HttpRouteConfig = z.output<(typeof TRANSPORT_CONFIG)['http']>;

/** How long one request may take, connection to last byte of the answer, unless the transport is told otherwise. */
export const DEFAULT_HTTP_TIMEOUT_MS = 60_000;
/** What is kept of an answer as the reply text. */
export const REPLY_TEXT_LIMIT = 500;
/** The most of an answer we read; an endpoint cannot make us buffer more than this. */
const ANSWER_READ_LIMIT = 1024 * 1024;
const USER_AGENT = 'txrelay';

// --- shared with postal.ts ---------------------------------------------------------------------

/** Builds request headers, refusing invalid ones by name only: fetch's own error would quote the (secret) value. */
export function requestHeaders(route: string, fields: Record<string, string>): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(fields)) {
    try {
      headers.set(name, value);
    } catch {
      throw new DeliveryError({ response: `route "${route}" has an unusable config: header ${JSON.stringify(name)} is not a valid HTTP header`, errorCode: 'ECONFIG' });
    }
  }
  if (!headers.has('user-agent')) headers.set('user-agent', USER_AGENT);
  return headers;
}

/**
 * Strings that must never appear in a reply text: each credential and, for a value like
 * "Bearer <token>", its long parts (an endpoint may echo the token alone).
 */
export function secretsOf(values: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const v of values) {
    if (v.length >= 4) out.add(v);
    for (const part of v.split(/\s+/)) if (part.length >= 8) out.add(part);
  }
  // Longest first, so a value is replaced whole before any of its parts.
  return [...out].sort((a, b) => b.length - a.length);
}

export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}

/** One line, at most REPLY_TEXT_LIMIT characters, no credential. */
export function replySnippet(text: string, secrets: readonly string[]): string {
  const line = redact(text, secrets).replace(/[\s\u0000-\u001f\u007f]+/g, ' ').trim();
  return line.length > REPLY_TEXT_LIMIT ? `${line.slice(0, REPLY_TEXT_LIMIT - 1)}…` : line;
}

export interface HttpAnswer {
  status: number;
  /** "HTTP 503 Service Unavailable", with the Retry-After header when there is one. */
  statusLine: string;
  body: string;
}

export interface PostOptions {
  url: string;
  headers: Headers;
  body: string;
  /** The worker's signal: aborted when it gives up on the attempt. */
  signal?: AbortSignal;
  timeoutMs: number;
  secrets: readonly string[];
}

async function readBounded(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= ANSWER_READ_LIMIT) {
      await reader.cancel();
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, ANSWER_READ_LIMIT).toString('utf8');
}

/** undici's own codes, as the classifier knows them. */
const UNDICI_CODES: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: 'ETIMEDOUT',
  UND_ERR_HEADERS_TIMEOUT: 'ETIMEDOUT',
  UND_ERR_BODY_TIMEOUT: 'ETIMEDOUT',
  UND_ERR_SOCKET: 'ECONNRESET',
  UND_ERR_CLOSED: 'ECONNRESET',
};

type CodedError = Error & { code?: unknown; cause?: unknown; errors?: unknown[] };

/** The innermost error that says what happened: fetch wraps the socket's in `cause`, happy eyeballs in an AggregateError. */
function rootCause(err: unknown): CodedError | undefined {
  let e = err as CodedError | undefined;
  for (let depth = 0; depth < 5 && e; depth++) {
    if (typeof e.code === 'string' && e.message) return e;
    const next = (e.cause ?? e.errors?.[0]) as CodedError | undefined;
    if (!next) return e;
    e = next;
  }
  return e;
}

function requestError(err: unknown, o: PostOptions, timeout: AbortSignal): DeliveryError {
  if (o.signal?.aborted) return new DeliveryError({ response: 'delivery interrupted: the worker gave up on this attempt', errorCode: 'EABORT' });
  if (timeout.aborted) return new DeliveryError({ response: `no complete answer from the endpoint within ${o.timeoutMs >= 1000 ? `${Math.round(o.timeoutMs / 1000)} s` : `${o.timeoutMs} ms`}`, errorCode: 'ETIMEDOUT' });
  const cause = rootCause(err);
  const code = typeof cause?.code === 'string' ? cause.code : undefined;
  const text = cause?.message || (err as Error)?.message || 'request failed';
  return new DeliveryError({
    response: `request to ${new URL(o.url).host} failed: ${redact(text, o.secrets)}`,
    errorCode: (code && (UNDICI_CODES[code] ?? code)) || 'EHTTP',
  });
}

/**
 * POSTs and reads the answer, whatever its status. Throws a DeliveryError when there was no
 * complete answer: timeout, abort, connection or TLS failure.
 */
export async function postJson(o: PostOptions): Promise<HttpAnswer> {
  const timeout = AbortSignal.timeout(o.timeoutMs);
  const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
  o.headers.set('content-type', 'application/json');
  try {
    // Redirects are not followed: a POST would turn into a GET, and our credentials would go
    // wherever the Location points.
    const res = await fetch(o.url, { method: 'POST', headers: o.headers, body: o.body, signal, redirect: 'manual' });
    const body = await readBounded(res);
    const retryAfter = res.headers.get('retry-after');
    const statusLine = `HTTP ${res.status}${res.statusText ? ` ${replySnippet(res.statusText, o.secrets).slice(0, 80)}` : ''}${retryAfter ? ` (Retry-After: ${replySnippet(retryAfter, o.secrets).slice(0, 40)})` : ''}`;
    return { status: res.status, statusLine, body };
  } catch (err) {
    throw requestError(err, o, timeout);
  }
}

/** What the answer said, as a reply text: status line and the start of the body. Never starts with digits (parseReply would read an SMTP code). */
export function replyText(answer: HttpAnswer, secrets: readonly string[]): string {
  const snippet = replySnippet(answer.body, secrets);
  return snippet ? `${answer.statusLine}: ${snippet}` : answer.statusLine;
}

// --- the http transport ------------------------------------------------------------------------

/** Where the header block is looked for: a message's headers end well before this. */
const HEADER_SCAN_LIMIT = 64 * 1024;

/** A header field's value from the message's header block (RFC 5322 §2.2.3 unfolding). */
export function headerField(mime: Buffer, name: string): string | null {
  const text = mime.subarray(0, HEADER_SCAN_LIMIT).toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const block = end === -1 ? text : text.slice(0, end);
  const wanted = name.toLowerCase();
  for (const field of block.split(/\r?\n(?![ \t])/)) {
    const colon = field.indexOf(':');
    if (colon > 0 && field.slice(0, colon).trim().toLowerCase() === wanted) {
      return Buffer.from(field.slice(colon + 1).replace(/\r?\n[ \t]/g, ' ').trim(), 'latin1').toString('utf8');
    }
  }
  return null;
}

export interface HttpTransportOptions {
  /** The route's name, for error texts. */
  route: string;
  /** The route's config with credentials, as validated by the routes service. */
  config: HttpRouteConfig;
  timeoutMs?: number;
}

export class HttpTransport implements DeliveryTransport {
  readonly #url: string;
  readonly #headers: Headers;
  readonly #secrets: string[];
  readonly #timeoutMs: number;

  constructor(options: HttpTransportOptions) {
    this.#url = options.config.url;
    this.#headers = requestHeaders(options.route, options.config.headers);
    // Every header of an http route is stored as a credential (routes.service SECRET_FIELDS).
    this.#secrets = secretsOf(Object.values(options.config.headers));
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS;
  }

  async deliver(request: DeliveryRequest): Promise<DeliveryResult> {
    const body = JSON.stringify({
      id: request.messageId ?? null,
      mail_from: request.mailFrom,
      rcpt_to: request.recipients,
      message_id_header: headerField(request.mime, 'message-id'),
      subject: headerField(request.mime, 'subject'),
      mime_base64: request.mime.toString('base64'),
    });
    const answer = await postJson({
      url: this.#url,
      headers: new Headers(this.#headers),
      body,
      signal: request.signal,
      timeoutMs: this.#timeoutMs,
      secrets: this.#secrets,
    });
    const response = replyText(answer, this.#secrets);
    if (answer.status >= 200 && answer.status < 300) {
      return { recipients: request.recipients.map((address) => ({ address, accepted: true, response })) };
    }
    throw new DeliveryError({ response, errorCode: 'EHTTP' });
  }

  async close(): Promise<void> {
    // Connections belong to Node's global fetch pool, which closes idle ones itself.
  }
}
