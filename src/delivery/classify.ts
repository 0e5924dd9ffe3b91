// The delivery failure catalog (STYLE §3): one data table that maps what an upstream said, or
// how the connection to it broke, to what the worker does next. Like ZoneMTA's bounces.txt it is
// read top to bottom and the first matching row wins, so specific rows sit above general ones.
//
//   retry      transient: try again after the route's backoff (RFC 5321 §4.2.1, 4yz replies)
//   slow_down  the upstream is throttling us: a retry with a longer wait; never permanent, so a
//              busy relay can never make us fail (or suppress) a recipient
//   fail       permanent: the same message would be refused again (RFC 5321 §4.2.1, 5yz replies)
//
// Anything the table does not recognise is retried: a message must not be lost to an error we
// have never seen; the route's max_attempts still bounds how long it is kept.

export type Verdict = 'retry' | 'fail' | 'slow_down';

/** What we know about one failure: an SMTP reply, a socket/library error code, or both. */
export interface Reply {
  /** Basic reply code (RFC 5321 §4.2), e.g. 451. Parsed from `response` when absent. */
  code?: number;
  /** Enhanced status code (RFC 3463), e.g. "4.7.1". Parsed from `response` when absent. */
  enhanced?: string;
  /** The upstream's reply line(s), or the error text when there was no reply. */
  response?: string;
  /** Node.js or nodemailer error code, e.g. ECONNREFUSED, ETIMEDOUT, EDNS, EAUTH. */
  errorCode?: string;
}

export interface Rule {
  /** Inclusive range of basic reply codes. A rule with a range never matches a reply-less error. */
  codes?: readonly [number, number];
  /** Matched against the enhanced status code, e.g. /^4\.7\./. */
  enhanced?: RegExp;
  /** Matched against the reply text. */
  text?: RegExp;
  /** Matched against the error code. */
  error?: RegExp;
  /** Only errors that carry no SMTP reply (the connection broke before one arrived). */
  noReply?: boolean;
  verdict: Verdict;
  reason: string;
}

export interface Classification {
  verdict: Verdict;
  reason: string;
  /** Index of the matching row in RULES, for tests and debugging. */
  rule: number;
}

const CONNECTION_ERRORS = /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|EHOSTUNREACH|EHOSTDOWN|ENETUNREACH|ENETDOWN|ECONNECTION|ESOCKET|EPROXY)$/;
const TLS_ERRORS = /^(ETLS|EREQUIRETLS|ERR_SSL_|ERR_TLS_|CERT_|DEPTH_ZERO_|SELF_SIGNED_|UNABLE_TO_)/;

export const RULES: readonly Rule[] = [
  // --- failures without an SMTP reply -------------------------------------------------------
  { error: /^EABORT$/, verdict: 'retry', reason: 'delivery interrupted (worker stopping or delivery deadline reached)' },
  { error: /^(ETIMEDOUT|ESOCKETTIMEDOUT)$/, noReply: true, verdict: 'retry', reason: 'upstream timed out (RFC 5321 §4.5.3.2 timeouts)' },
  { error: CONNECTION_ERRORS, noReply: true, verdict: 'retry', reason: 'connection to the upstream failed' },
  { error: /^(EDNS|ENOTFOUND|EAI_AGAIN|EAI_FAIL|ESERVFAIL|ENODATA|ETIMEOUT)$/, noReply: true, verdict: 'retry', reason: 'DNS lookup of the upstream failed' },
  // require_tls never falls back to clear text; a missing STARTTLS or a bad certificate is a route
  // or upstream problem that an operator can fix, so the message waits for it.
  { error: TLS_ERRORS, verdict: 'retry', reason: 'TLS with the upstream failed (no STARTTLS, or certificate rejected)' },
  // Our credentials were refused (535 5.7.8 and friends): a route configuration problem, not the
  // message's. Retried so that fixing the route delivers what is waiting.
  { error: /^(EAUTH|ENOAUTH|EOAUTH2)$/, verdict: 'retry', reason: 'authentication to the upstream failed: check the route credentials' },
  // HTTP transports (postal, http). Their texts start "HTTP <status>" or "Postal <status>", never
  // with an SMTP code; the Postal rows follow Postal's send/raw error codes (see postal.ts).
  { error: /^(EHTTP|EPOSTAL)$/, text: /^HTTP 429\b/, verdict: 'slow_down', reason: 'the endpoint is rate limiting us (HTTP 429, RFC 6585 §4)' },
  { error: /^(EHTTP|EPOSTAL)$/, text: /^HTTP 413\b/, verdict: 'fail', reason: 'message larger than the endpoint accepts (HTTP 413, RFC 9110 §15.5.14)' },
  // The server key is the route's: retried so that fixing the route delivers what is waiting.
  { error: /^EPOSTAL$/, text: /^Postal error (AccessDenied|InvalidServerAPIKey|ServerSuspended)\b/, verdict: 'retry', reason: 'Postal refused the route server key, or the server is suspended: check the route' },
  { error: /^EPOSTAL$/, text: /^Postal (error UnauthenticatedFromAddress\b|parameter-error)/, verdict: 'fail', reason: 'Postal refused this message (From domain not on the Postal server, or a bad parameter)' },
  { error: /^EHTTP$/, text: /^HTTP (401|407)\b/, verdict: 'retry', reason: 'the endpoint refused our credentials (HTTP 401/407): check the route headers' },
  { error: /^EHTTP$/, text: /^HTTP 408\b/, verdict: 'retry', reason: 'the endpoint timed out reading the request (HTTP 408, RFC 9110 §15.5.9)' },
  { error: /^EHTTP$/, text: /^HTTP 4\d\d\b/, verdict: 'fail', reason: 'the endpoint refused the message (HTTP 4xx, RFC 9110 §15.5)' },
  { error: /^(EHTTP|EPOSTAL)$/, verdict: 'retry', reason: 'the endpoint failed or answered unexpectedly (HTTP 5xx, a redirect, an unknown error)' },
  // The message's route was deleted while it waited: nowhere left to send it.
  { error: /^ENOROUTE$/, verdict: 'fail', reason: 'the route no longer exists' },
  { error: /^EMESSAGE$/, noReply: true, text: /larger than allowed/i, verdict: 'fail', reason: "message exceeds the upstream's SIZE limit (RFC 1870)" },
  { error: /^EENVELOPE$/, noReply: true, text: /^Invalid (sender|recipient)/, verdict: 'fail', reason: 'address is not valid for SMTP (RFC 5321 §4.1.2)' },

  // --- 4yz: transient negative completion (RFC 5321 §4.2.1) --------------------------------
  // 421: the service is closing the channel (RFC 5321 §3.8) — the usual "too busy, come back later".
  { codes: [421, 421], verdict: 'slow_down', reason: 'upstream is shedding load (421, RFC 5321 §3.8)' },
  // X.7.X are policy statuses (RFC 3463 §3.8); on a 4yz reply that is throttling or greylisting.
  { codes: [400, 499], enhanced: /^4\.7\./, verdict: 'slow_down', reason: 'upstream policy deferral, usually throttling (RFC 3463 X.7.X)' },
  { codes: [400, 499], text: /rate.?limit|throttl|too many (connections|messages|mails|emails|requests)|slow down|sending quota/i, verdict: 'slow_down', reason: 'upstream rate limit' },
  { codes: [452, 452], enhanced: /^4\.5\.3$/, verdict: 'retry', reason: 'too many recipients for one transaction (RFC 5321 §4.5.3.1.10)' },
  { codes: [400, 499], verdict: 'retry', reason: 'transient failure (4yz, RFC 5321 §4.2.1)' },

  // --- 5yz that experience says are not final -----------------------------------------------
  // RFC 5321 §4.5.3.1.10: a 552 for "too many recipients" is to be treated as temporary.
  { codes: [552, 552], enhanced: /^5\.5\.3$/, verdict: 'retry', reason: 'too many recipients, treated as temporary (RFC 5321 §4.5.3.1.10)' },
  { codes: [552, 552], text: /too many recipients/i, verdict: 'retry', reason: 'too many recipients, treated as temporary (RFC 5321 §4.5.3.1.10)' },
  // 503 says the session was in the wrong state, not that the message was refused (RFC 5321 §4.2.4).
  { codes: [503, 503], verdict: 'retry', reason: 'bad sequence of commands: a session problem, not a refusal (RFC 5321 §4.3.2)' },
  // Providers answer quota and rate limits with 5yz (e.g. "550 5.4.5 Daily sending quota exceeded").
  { codes: [500, 599], enhanced: /^5\.4\.5$/, verdict: 'slow_down', reason: 'upstream sending quota exceeded' },
  { codes: [500, 599], text: /rate.?limit|throttl|sending quota|too many (connections|messages|mails|emails)/i, verdict: 'slow_down', reason: 'upstream rate limit reported as 5yz' },
  // Our sending IP on a DNS blocklist: delisting takes hours and a fallback route (another IP)
  // can deliver meanwhile, so the message is kept (ZoneMTA defers these for the same reason).
  { codes: [500, 599], text: /blacklist|blocklist|blocked using|\blisted (at|in|by)\b|spamhaus|dnsbl/i, verdict: 'retry', reason: 'sending IP is on a DNS blocklist' },

  // --- 5yz: permanent negative completion (RFC 5321 §4.2.1) ----------------------------------
  { codes: [500, 599], verdict: 'fail', reason: 'permanent failure (5yz, RFC 5321 §4.2.1)' },

  // --- everything else -------------------------------------------------------------------------
  // An unexpected 2yz/3yz where another reply was due (EPROTOCOL), or an error never seen before.
  { verdict: 'retry', reason: 'unrecognised failure: retried rather than risk losing the message' },
];

const REPLY = /^([2-5]\d\d)(?:[ -]+([245]\.\d{1,3}\.\d{1,3})\b)?/;

/** Splits an SMTP reply line into its basic and enhanced codes. */
export function parseReply(response: string | undefined): { code?: number; enhanced?: string } {
  const m = REPLY.exec(response?.trimStart() ?? '');
  if (!m) return {};
  return { code: Number(m[1]), ...(m[2] ? { enhanced: m[2] } : {}) };
}

function matches(rule: Rule, code: number | undefined, enhanced: string | undefined, text: string, errorCode: string | undefined): boolean {
  if (rule.noReply && code !== undefined) return false;
  if (rule.codes && (code === undefined || code < rule.codes[0] || code > rule.codes[1])) return false;
  if (rule.enhanced && (enhanced === undefined || !rule.enhanced.test(enhanced))) return false;
  if (rule.text && !rule.text.test(text)) return false;
  if (rule.error && (errorCode === undefined || !rule.error.test(errorCode))) return false;
  return true;
}

/** The verdict for one failure: the first row of RULES that matches it. */
export function classify(reply: Reply): Classification {
  const parsed = parseReply(reply.response);
  const code = reply.code ?? parsed.code;
  const enhanced = reply.enhanced ?? parsed.enhanced;
  const text = reply.response ?? '';
  const index = RULES.findIndex((rule) => matches(rule, code, enhanced, text, reply.errorCode));
  // The last row matches everything, so index is never -1.
  const rule = RULES[index];
  return { verdict: rule.verdict, reason: rule.reason, rule: index };
}
