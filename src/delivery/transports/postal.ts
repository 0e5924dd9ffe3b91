// The postal transport: Postal's HTTP send API (its "legacy" v1 API, the one Postal documents for
// sending), with the final bytes unchanged. The contract, from Postal's source
// (app/controllers/legacy_api/base_controller.rb and send_controller.rb, spec/apis/legacy_api/
// send/raw_spec.rb) and docs.postalserver.io/developer/api:
//
//   POST {url}/api/v1/send/raw
//   X-Server-API-Key: <server_key>          Content-Type: application/json (else params are ignored)
//   {"mail_from": "…", "rcpt_to": ["…"], "data": "<base64 of the RFC 5322 message>"}
//
// Postal answers HTTP 200 whatever happened; `status` in the JSON says what:
//
//   {"status": "success", "time": 0.02, "flags": {},
//    "data": {"message_id": "…", "messages": {"a@example.net": {"id": 37171, "token": "a4udnay1"}}}}
//       one Postal message per recipient (newer Postal adds "existing": true when it already
//       had that Message-ID for the recipient, and sends nothing again)
//   {"status": "error", "data": {"code": "InvalidServerAPIKey", "message": "…", "token": "<the key>"}}
//       AccessDenied (no key), InvalidServerAPIKey, ServerSuspended: before the message is read;
//       UnauthenticatedFromAddress: the From/Sender domain is not one of the server's domains
//   {"status": "parameter-error", "data": {"message": "`rcpt_to` parameter is required but is missing"}}
//
// What we do with each (the verdicts are classify.ts's rows for EPOSTAL):
//   success             recipients in data.messages are accepted, with Postal's message id and
//                       token as their reply; one missing from it is retried
//   key refused, server suspended
//                       retried: the key is the route's, not the message's. A bad key is an
//                       operator's mistake; failing at once would discard (or hand to the
//                       fallback) every message until someone notices, while retrying lets the
//                       fixed key deliver what waited. max_attempts still bounds it.
//   UnauthenticatedFromAddress, parameter-error
//                       permanent for this message (Postal's SMTP server refuses the same with a
//                       5yz): the fallback route takes it, or it fails
//   other error codes   retried (unknown: never lose mail to an error we have not seen)
//   not HTTP 2xx        Postal itself never answers so; it is a proxy or the wrong URL: retried,
//                       429 with a longer wait, 413 (message too large for the proxy) permanent
//   no answer, connection or TLS failure: retried
//
// Postal echoes the key it refused (data.token): nothing but data.code and data.message is
// kept, and the key is blanked out of those too.
import type { z } from 'zod';
import type { TRANSPORT_CONFIG } from '../../services/routes.service.ts';
import { DEFAULT_HTTP_TIMEOUT_MS, postJson, replySnippet, replyText, requestHeaders, secretsOf } from './http.ts';
import { DeliveryError, type DeliveryRequest, type DeliveryResult, type DeliveryTransport, type RecipientResult } from './transport.ts';

export type PostalRouteConfig = z.output<(typeof TRANSPORT_CONFIG)['postal']>;

export interface PostalTransportOptions {
  /** The route's name, for error texts. */
  route: string;
  /** The route's config with the server key, as validated by the routes service. */
  config: PostalRouteConfig;
  timeoutMs?: number;
}

export const SEND_RAW_PATH = '/api/v1/send/raw';

interface PostalMessage {
  id?: unknown;
  token?: unknown;
  message_id?: unknown;
  existing?: unknown;
}

interface PostalAnswer {
  status?: unknown;
  data?: { code?: unknown; message?: unknown; message_id?: unknown; messages?: unknown } | null;
}

const str = (v: unknown, max = 200): string | undefined => (typeof v === 'string' || typeof v === 'number' ? String(v).slice(0, max) : undefined);

function acceptedText(m: PostalMessage, messageId: string | undefined): string {
  const id = str(m.id) ?? '?';
  const details = [str(m.token) && `token ${str(m.token)}`, (str(m.message_id) ?? messageId) && `message_id ${str(m.message_id) ?? messageId}`].filter(Boolean);
  return `Postal accepted as message ${id}${details.length ? ` (${details.join(', ')})` : ''}${m.existing === true ? '; already known to Postal, not sent again' : ''}`;
}

export class PostalTransport implements DeliveryTransport {
  readonly #url: string;
  readonly #headers: Headers;
  readonly #secrets: string[];
  readonly #timeoutMs: number;

  constructor(options: PostalTransportOptions) {
    // {url} may carry a path prefix (Postal behind a reverse proxy); a trailing slash is not doubled.
    this.#url = options.config.url.replace(/\/+$/, '') + SEND_RAW_PATH;
    this.#headers = requestHeaders(options.route, { 'x-server-api-key': options.config.server_key, accept: 'application/json' });
    this.#secrets = secretsOf([options.config.server_key]);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS;
  }

  async deliver(request: DeliveryRequest): Promise<DeliveryResult> {
    if (!request.mailFrom) {
      // Postal refuses a blank mail_from (parameter-error) whatever we send: say so ourselves.
      throw new DeliveryError({ response: "Invalid sender: Postal's send/raw needs a mail_from, the null reverse-path cannot be sent through it", errorCode: 'EENVELOPE' });
    }
    const answer = await postJson({
      url: this.#url,
      headers: new Headers(this.#headers),
      body: JSON.stringify({ mail_from: request.mailFrom, rcpt_to: request.recipients, data: request.mime.toString('base64') }),
      signal: request.signal,
      timeoutMs: this.#timeoutMs,
      secrets: this.#secrets,
    });
    if (answer.status < 200 || answer.status >= 300) {
      throw new DeliveryError({ response: replyText(answer, this.#secrets), errorCode: 'EPOSTAL' });
    }

    let parsed: PostalAnswer;
    try {
      parsed = JSON.parse(answer.body) as PostalAnswer;
    } catch {
      parsed = {};
    }
    const data = parsed && typeof parsed.data === 'object' ? parsed.data : null;
    switch (parsed?.status) {
      case 'success':
        return { recipients: this.#results(request.recipients, data) };
      case 'error': {
        const code = str(data?.code, 100) ?? '(no code)';
        const message = str(data?.message, 300);
        throw new DeliveryError({ response: replySnippet(`Postal error ${code}${message ? `: ${message}` : ''}`, this.#secrets), errorCode: 'EPOSTAL' });
      }
      case 'parameter-error': {
        const message = str(data?.message, 300) ?? '(no message)';
        throw new DeliveryError({ response: replySnippet(`Postal parameter-error: ${message}`, this.#secrets), errorCode: 'EPOSTAL' });
      }
      default:
        // A proxy's page, or not Postal at all: retried. A short extract helps the operator see which.
        throw new DeliveryError({ response: `unexpected answer from Postal, ${replyText(answer, this.#secrets)}`, errorCode: 'EPOSTAL' });
    }
  }

  #results(recipients: string[], data: PostalAnswer['data']): RecipientResult[] {
    const messages = data?.messages && typeof data.messages === 'object' ? (data.messages as Record<string, PostalMessage>) : {};
    // Postal keys the hash by rcpt_to as we sent it; a case-insensitive match covers a proxy that normalises.
    const byLower = new Map(Object.entries(messages).map(([k, v]) => [k.toLowerCase(), v]));
    const messageId = str(data?.message_id);
    return recipients.map((address): RecipientResult => {
      const m = Object.hasOwn(messages, address) ? messages[address] : byLower.get(address.toLowerCase());
      if (m && typeof m === 'object') return { address, accepted: true, response: replySnippet(acceptedText(m, messageId), this.#secrets) };
      return { address, accepted: false, response: 'Postal answered success but created no message for this recipient' };
    });
  }

  async close(): Promise<void> {
    // Connections belong to Node's global fetch pool, which closes idle ones itself.
  }
}
