// One webhook request: the signed JSON POST and what came of it. Never throws: every outcome,
// a refused URL included, is an AttemptResult for the delivery log.
//
// node:http rather than fetch: its `lookup` option lets the URL rules judge the very address the
// socket connects to (target.ts), which fetch cannot do without an extra dependency. Redirects
// are never followed (node:http does not), so a 3xx is simply not a 2xx: a failure.
import { createRequire } from 'node:module';
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { checkWebhookUrl, guardedLookup, systemLookup, TargetRefused, type HostLookup, type TargetPolicy } from './target.ts';
import { DELIVERY_HEADER, signature, SIGNATURE_HEADER } from './signature.ts';

const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
export const USER_AGENT = `txrelay-webhooks/${VERSION}`;

/** The most one request may take, connection to the end of the part of the answer we read. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** What the delivery log keeps of an answer. */
export const RESPONSE_SNIPPET_BYTES = 1024;
const ERROR_TEXT_LIMIT = 500;

export interface WebhookRequest {
  url: string;
  /** The exact JSON body. */
  body: string;
  secret: string;
  deliveryId: string;
  target: TargetPolicy;
  lookup?: HostLookup;
  timeoutMs?: number;
}

export interface AttemptResult {
  ok: boolean;
  at: Date;
  /** The answer's HTTP status; null when there was none. */
  statusCode: number | null;
  /** Why there was no 2xx answer, without anything secret; null on success. */
  error: string | null;
  /** The first RESPONSE_SNIPPET_BYTES of the answer. */
  response: string | null;
  durationMs: number;
}

export async function sendWebhook(req: WebhookRequest): Promise<AttemptResult> {
  const at = new Date();
  const started = performance.now();
  const done = (r: Omit<AttemptResult, 'at' | 'durationMs'>): AttemptResult => ({ ...r, at, durationMs: Math.round(performance.now() - started) });
  let url: URL;
  try {
    url = new URL(checkWebhookUrl(req.url, req.target));
  } catch (err) {
    return done({ ok: false, statusCode: null, error: `refused: ${(err as Error).message}`, response: null });
  }
  const timeoutMs = req.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  try {
    const { statusCode, response } = await post(url, req, timeoutMs);
    const ok = statusCode >= 200 && statusCode < 300;
    return done({ ok, statusCode, error: ok ? null : statusText(statusCode), response });
  } catch (err) {
    return done({ ok: false, statusCode: null, error: errorText(err, timeoutMs), response: null });
  }
}

function statusText(status: number): string {
  if (status >= 300 && status < 400) return `HTTP ${status}: redirects are not followed`;
  return `HTTP ${status}`;
}

function errorText(err: unknown, timeoutMs: number): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `no answer within ${timeoutMs / 1000} s`;
  if (err instanceof TargetRefused) return `refused: ${err.message}`;
  const text = e?.code && !String(e.message).includes(e.code) ? `${e.code}: ${e.message}` : String(e?.message ?? err);
  return text.slice(0, ERROR_TEXT_LIMIT);
}

function post(url: URL, req: WebhookRequest, timeoutMs: number): Promise<{ statusCode: number; response: string }> {
  const timestamp = Math.floor(Date.now() / 1000);
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  const options: http.RequestOptions = {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(req.body),
      'User-Agent': USER_AGENT,
      [SIGNATURE_HEADER]: signature(req.secret, timestamp, req.body),
      [DELIVERY_HEADER]: req.deliveryId,
    },
    lookup: guardedLookup(req.target, port, req.lookup ?? systemLookup),
    // A connection of its own: a kept-alive socket would outlive the checks made for it.
    agent: false,
    signal: AbortSignal.timeout(timeoutMs),
  };
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? https : http).request(url, options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = () => {
        res.destroy();
        resolve({ statusCode: res.statusCode ?? 0, response: snippet(Buffer.concat(chunks)) });
      };
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
        // The status is what counts; the rest of a long answer is not worth waiting for.
        if (size >= RESPONSE_SNIPPET_BYTES) finish();
      });
      res.on('end', finish);
      res.on('error', reject);
    });
    request.on('error', reject);
    request.end(req.body);
  });
}

/** At most RESPONSE_SNIPPET_BYTES, as text PostgreSQL can store (no NUL). */
function snippet(bytes: Buffer): string {
  return new TextDecoder('utf-8', { fatal: false })
    .decode(bytes.subarray(0, RESPONSE_SNIPPET_BYTES))
    .replace(/\u0000/g, '');
}
