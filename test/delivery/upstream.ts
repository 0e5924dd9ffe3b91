// Test upstreams for delivery: a real smtp-server on 127.0.0.1 port 0 that records what it
// received and answers as each test scripts it, plus helpers to queue messages and wait.
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import type { Context } from '../../src/context.ts';
import type { Route } from '../../src/db/schema.ts';
import { commitMessage } from '../../src/pipeline/commit.ts';

export interface Received {
  mailFrom: string;
  rcptTo: string[];
  data: Buffer;
  user?: string;
}

/** A refusal the upstream answers with, e.g. reply(451, '4.3.0 try later'). */
export function reply(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

export interface UpstreamScript {
  /** Called for MAIL FROM; return an error to refuse the sender. */
  mailFrom?(address: string): Error | undefined;
  /** Called for each RCPT TO; return an error to refuse that recipient. */
  rcptTo?(address: string): Error | undefined;
  /** Called after the message was read; `n` counts DATA commands from 1. Return an error to refuse it. */
  data?(n: number): Error | undefined;
  /** Milliseconds to wait before answering the final dot. */
  dataDelayMs?: number;
  /** Require AUTH with these credentials. */
  auth?: { user: string; pass: string };
  options?: Partial<SMTPServerOptions>;
}

export interface Upstream {
  port: number;
  /** Messages accepted (250 after DATA). */
  received: Received[];
  /** Counters of commands seen, accepted or not. */
  seen: { mailFrom: number; data: number; auth: number };
  close(): Promise<void>;
}

export async function startUpstream(script: UpstreamScript = {}): Promise<Upstream> {
  const received: Received[] = [];
  const seen = { mailFrom: 0, data: 0, auth: 0 };
  const timers = new Set<NodeJS.Timeout>();
  const server = new SMTPServer({
    disableReverseLookup: true,
    authOptional: !script.auth,
    allowInsecureAuth: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    // Tests end with connections a client gave up on: do not wait long for them at close.
    closeTimeout: 100,
    onAuth(auth, _session, callback) {
      seen.auth++;
      if (script.auth && auth.username === script.auth.user && auth.password === script.auth.pass) return callback(null, { user: auth.username });
      callback(reply(535, '5.7.8 Authentication credentials invalid'));
    },
    onMailFrom(address, _session, callback) {
      seen.mailFrom++;
      callback(script.mailFrom?.(address.address) ?? null);
    },
    onRcptTo(address, _session, callback) {
      callback(script.rcptTo?.(address.address) ?? null);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const n = ++seen.data;
        const finish = () => {
          const err = script.data?.(n);
          if (err) return callback(err);
          received.push({
            mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            rcptTo: session.envelope.rcptTo.map((r) => r.address),
            data: Buffer.concat(chunks),
            ...(session.user ? { user: String(session.user) } : {}),
          });
          callback(null, 'OK queued as test');
        };
        if (script.dataDelayMs) {
          const timer = setTimeout(() => {
            timers.delete(timer);
            finish();
          }, script.dataDelayMs);
          timers.add(timer);
        }
        else finish();
      });
    },
    ...script.options,
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as net.AddressInfo).port;
  return {
    port,
    received,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        server.close(() => resolve());
      }),
  };
}

/** A TCP server that accepts connections and never says a word (no SMTP greeting). */
export async function startSilentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A small final message, CRLF line ends as nodemailer builds them; one line starts with a dot. */
export function buildMime(id: string, to: string[]): Buffer {
  return Buffer.from(
    [
      'From: Sender <sender@example.com>',
      `To: ${to.join(', ')}`,
      'Subject: Delivery test',
      `Message-ID: <${id}@relay.test>`,
      'Date: Sat, 21 Nov 2026 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: text/html; charset=utf-8',
      'Content-Transfer-Encoding: 7bit',
      '',
      '<p>Hello from the delivery tests.</p>',
      '.a line that starts with a dot (RFC 5321 4.5.2 transparency)',
      '',
    ].join('\r\n'),
  );
}

export async function queueMessage(ctx: Context, route: Route, to: string[], extra: { testMode?: boolean } = {}): Promise<{ id: string; mime: Buffer }> {
  const id = randomUUID();
  const mime = buildMime(id, to);
  await commitMessage(ctx, {
    id,
    tenantId: route.tenant_id,
    apiKeyId: null,
    tag: 'delivery-test',
    routeId: route.id,
    routeName: route.name,
    templateId: null,
    templateName: null,
    testMode: extra.testMode ?? false,
    mailFrom: 'bounces@example.com',
    fromAddress: 'sender@example.com',
    subject: 'Delivery test',
    messageIdHeader: `<${id}@relay.test>`,
    mime: [mime],
    size: mime.length,
    verdicts: [],
    recipients: to,
    attachments: [],
  });
  return { id, mime };
}

/** Polls until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
