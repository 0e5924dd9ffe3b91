// Real HTTP upstreams on 127.0.0.1 port 0 (STYLE §8) for the postal and http transports: a small
// Postal that implements its documented send/raw contract, and a scriptable JSON endpoint.
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface Server {
  port: number;
  url: string;
  requests: Recorded[];
  close(): Promise<void>;
}

/** What a scripted endpoint answers; `hang` never answers at all. */
export type Answer = { status: number; body?: string; headers?: Record<string, string> } | 'hang';

async function listen(handler: (req: Recorded, res: http.ServerResponse) => void): Promise<Server> {
  const requests: Recorded[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const recorded = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      requests.push(recorded);
      handler(recorded, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        // Keep-alive and never-answered connections would hold close() open.
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function send(res: http.ServerResponse, answer: Answer): void {
  if (answer === 'hang') return;
  res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
  res.end(answer.body ?? '');
}

/** A JSON endpoint answering each request as `script` says (default: 200 with a small JSON body). */
export async function startEndpoint(script: (req: Recorded, n: number) => Answer = () => ({ status: 200, body: '{"ok":true}' })): Promise<Server> {
  let n = 0;
  return await listen((req, res) => send(res, script(req, ++n)));
}

export interface PostalMessage {
  id: number;
  token: string;
  mailFrom: string;
  rcptTo: string;
  raw: Buffer;
  messageId: string;
}

export interface FakePostal extends Server {
  /** Messages created, one per recipient as Postal does. */
  messages: PostalMessage[];
  /** Answer a request at the HTTP level instead of as Postal would (a proxy in front, or an outage). */
  override?: (req: Recorded) => Answer | undefined;
  suspended: boolean;
}

export interface FakePostalOptions {
  /** The server's API credential. */
  key: string;
  /** Domains the server may send from (its authenticated domains). */
  domains: string[];
}

function headerBlockField(raw: Buffer, name: string): string | undefined {
  const head = raw.toString('utf8').split('\r\n\r\n', 1)[0];
  const m = new RegExp(`^${name}:[ \\t]*(.*(?:\\r\\n[ \\t].*)*)`, 'im').exec(head);
  return m?.[1].replace(/\r\n[ \t]/g, ' ').trim();
}

/**
 * Postal's legacy send/raw, as in app/controllers/legacy_api/base_controller.rb and
 * send_controller.rb: HTTP 200 always, the outcome in `status`; the key is checked before the
 * parameters; the From domain must be one of the server's; one message per unique recipient.
 */
export async function startFakePostal(options: FakePostalOptions): Promise<FakePostal> {
  const messages: PostalMessage[] = [];
  let nextId = 1000;
  const state: { override?: FakePostal['override']; suspended: boolean } = { suspended: false };
  const started = Date.now();

  const server = await listen((req, res) => {
    const overridden = state.override?.(req);
    if (overridden) return send(res, overridden);
    const reply = (status: string, data: Record<string, unknown>) =>
      send(res, { status: 200, body: JSON.stringify({ status, time: (Date.now() - started) / 1000, flags: {}, data }) });

    if (req.path !== '/api/v1/send/raw') return send(res, { status: 404, body: '<h1>Not Found</h1>', headers: { 'content-type': 'text/html' } });
    const key = req.headers['x-server-api-key'];
    if (!key) return reply('error', { code: 'AccessDenied', message: 'Must be authenticated as a server.' });
    if (key !== options.key) return reply('error', { code: 'InvalidServerAPIKey', message: 'The API token provided in X-Server-API-Key was not valid.', token: key });
    if (state.suspended) return reply('error', { code: 'ServerSuspended' });

    // Parameters are read from the body only with a JSON content type.
    const params = /^application\/json/.test(req.headers['content-type'] ?? '') ? (JSON.parse(req.body.toString('utf8')) as Record<string, unknown>) : {};
    if (!Array.isArray(params.rcpt_to)) return reply('parameter-error', { message: '`rcpt_to` parameter is required but is missing' });
    if (typeof params.mail_from !== 'string' || !params.mail_from.trim()) return reply('parameter-error', { message: '`mail_from` parameter is required but is missing' });
    if (typeof params.data !== 'string' || !params.data) return reply('parameter-error', { message: '`data` parameter is required but is missing' });

    const raw = Buffer.from(params.data, 'base64');
    const from = headerBlockField(raw, 'from') ?? '';
    const domain = /@([^>\s]+)>?\s*$/.exec(from)?.[1]?.toLowerCase();
    if (!domain || !options.domains.includes(domain)) return reply('error', { code: 'UnauthenticatedFromAddress' });

    const messageId = (headerBlockField(raw, 'message-id') ?? `${randomUUID()}@rp.postal.test`).replace(/^<|>$/g, '');
    const result: { message_id: string | null; messages: Record<string, { id: number; token: string }> } = { message_id: null, messages: {} };
    for (const rcptTo of [...new Set(params.rcpt_to as string[])]) {
      const m = { id: nextId++, token: randomBytes(12).toString('base64url').replace(/[-_]/g, 'x').slice(0, 16), mailFrom: params.mail_from, rcptTo, raw, messageId };
      messages.push(m);
      result.message_id ??= messageId;
      result.messages[rcptTo] = { id: m.id, token: m.token };
    }
    reply('success', result);
  });

  return {
    ...server,
    messages,
    get override() {
      return state.override;
    },
    set override(fn: FakePostal['override']) {
      state.override = fn;
    },
    get suspended() {
      return state.suspended;
    },
    set suspended(v: boolean) {
      state.suspended = v;
    },
  };
}

/** A port nothing listens on: a server's, closed again. */
export async function closedPort(): Promise<number> {
  const s = await listen(() => {});
  await s.close();
  return s.port;
}
