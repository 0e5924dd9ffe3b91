// A webhook receiver for tests: a real HTTP server on 127.0.0.1 (port chosen by the OS) that
// records every request with its raw body, answering as the test tells it to.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** The body exactly as received. */
  body: string;
}

/** What to answer: a status (and body), or 'hang' to never answer. */
export type Answer = { status: number; body?: string; headers?: Record<string, string> } | 'hang';

export interface Receiver {
  port: number;
  url(path?: string): string;
  requests: Received[];
  /** Decides the answer to the n-th request (0-based). Default: 200 "ok". */
  answer: (req: Received, n: number) => Answer;
  /** The requests whose parsed body has this `type`. */
  ofType(type: string): Received[];
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const receiver: Receiver = {
    port: 0,
    url: (path = '/hook') => `http://127.0.0.1:${receiver.port}${path}`,
    requests: [],
    answer: () => ({ status: 200, body: 'ok' }),
    ofType: (type) => receiver.requests.filter((r) => (JSON.parse(r.body) as { type: string }).type === type),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      const n = receiver.requests.push(r) - 1;
      const a = receiver.answer(r, n);
      if (a === 'hang') return;
      res.writeHead(a.status, { 'content-type': 'text/plain', ...a.headers });
      res.end(a.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  receiver.port = (server.address() as AddressInfo).port;
  return receiver;
}

/**
 * Checks X-Txrelay-Signature as a receiver would (README, "Webhooks"): recompute the HMAC of
 * "<t>.<raw body>" with the secret and compare in constant time.
 */
export function signatureValid(secret: string, header: string | string[] | undefined, body: string): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(header ?? ''));
  if (!m) return false;
  const expected = crypto.createHmac('sha256', secret).update(`${m[1]}.${body}`).digest();
  return crypto.timingSafeEqual(expected, Buffer.from(m[2], 'hex'));
}

/** The signature's timestamp, which must be close to now. */
export function signatureTime(header: string | string[] | undefined): number {
  const m = /^t=(\d+),/.exec(String(header ?? ''));
  assert.ok(m, `a t= in ${String(header)}`);
  return Number(m[1]);
}
