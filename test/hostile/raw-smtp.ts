// Helpers for the hostile-input tests: a raw SMTP session (test/helpers/smtp-client.ts's
// RawSmtp, which reads the greeting and bounds every wait), bytes written in separate TCP
// segments, and the checks every attack shares. Every loop and wait here is bounded.
import assert from 'node:assert/strict';
import { addRoute, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

export interface AcmeRelay {
  relay: TestRelay;
  acme: TenantSetup;
  /** The real upstream the `main` route delivers to; absent with a capture route. */
  upstream?: Upstream;
}

/**
 * The relay most attacks run against: tenant `acme` with the verified domain acme.example and one
 * route. With `upstream`, route `main` delivers to a real SMTP upstream (to see the bytes that
 * leave); without, route `cap` captures and the relay runs the smtp role only.
 */
export async function startAcmeRelay(options: { upstream?: boolean } = {}): Promise<AcmeRelay> {
  const upstream = options.upstream ? await startUpstream() : undefined;
  const relay = await startTestRelay(upstream ? {} : { TXRELAY_ROLES: 'smtp' });
  const acme = await setupTenant(relay.ctx, 'acme', 'acme.example');
  await addRoute(
    relay.ctx,
    acme.tenantId,
    upstream ? { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: false } } : { name: 'cap', transport: 'capture' },
  );
  return { relay, acme, upstream };
}

export async function stopAcmeRelay(f: Partial<AcmeRelay>): Promise<void> {
  await f.relay?.close();
  await f.upstream?.close();
}

/** How many messages are stored (of one tenant, or all). */
export async function storedCount(relay: TestRelay, tenantId?: string): Promise<number> {
  let q = relay.ctx.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n'));
  if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
  return Number((await q.executeTakeFirstOrThrow()).n);
}

/**
 * One message over DATA in its own authenticated session (dot-stuffed, CRLF.CRLF appended); the
 * reply to the final dot. `encoding` turns the text into bytes ('latin1' writes each char as one).
 */
export async function submitData(port: number, key: string, message: string, options: { encoding?: BufferEncoding; timeoutMs?: number } = {}): Promise<string> {
  const c = await session(port, key);
  await openData(c);
  c.write(Buffer.from(message.replace(/(^|\r\n)\./g, '$1..') + '\r\n.\r\n', options.encoding ?? 'utf8'));
  const reply = await c.reply(options.timeoutMs ?? 30_000);
  c.close();
  return reply;
}

/** A bare CR or a bare LF: what RFC 5321 §2.3.8 forbids outside CRLF, and what smuggling needs. */
export const BARE_LINE_END = /\r(?!\n)|(?<!\r)\n/;

/** "250 2.0.0 Ok: queued as <id>" → id; fails the test for any other reply. */
export function queuedId(reply: string): string {
  const m = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/.exec(reply.trim());
  assert.ok(m, `expected "250 2.0.0 Ok: queued as <id>", got ${JSON.stringify(reply)}`);
  return m[1];
}

/** Connected, greeted, EHLO sent and, with a key, authenticated with AUTH PLAIN. */
export async function session(port: number, key?: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  assert.match(await c.cmd('EHLO hostile.test'), /^250/);
  if (key) assert.match(await c.cmd(`AUTH PLAIN ${plain(key)}`), /^235 /);
  return c;
}

/** MAIL, RCPT and DATA, each expected to be accepted. */
export async function openData(c: RawSmtp, from = 'app@acme.example', to = ['user@dest.example']): Promise<void> {
  assert.match(await c.cmd(`MAIL FROM:<${from}>`), /^250 /);
  for (const rcpt of to) assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
}

/**
 * Writes `bytes` in pieces cut at `cuts` (offsets, ascending), waiting for each write to be
 * flushed and a moment more, so that loopback delivers them to the server as separate reads.
 */
export async function writeInPieces(c: RawSmtp, bytes: Buffer, cuts: number[]): Promise<void> {
  c.socket.setNoDelay(true);
  let start = 0;
  for (const end of [...cuts, bytes.length]) {
    if (end <= start) continue;
    await new Promise<void>((resolve) => c.socket.write(bytes.subarray(start, end), () => resolve()));
    await new Promise((r) => setTimeout(r, 5));
    start = end;
  }
}

/**
 * The replies that arrive before `marker`'s reply: sends `marker` (a NOOP by default), then
 * reads until its reply. Proves that nothing else was answered in between, without waiting
 * for a silence of some arbitrary length.
 */
export async function repliesBefore(c: RawSmtp, marker = 'NOOP', max = 20): Promise<string[]> {
  c.write(marker + '\r\n');
  const replies: string[] = [];
  for (let i = 0; i < max; i++) {
    const r = await c.reply(30_000);
    if (r === '') throw new Error(`connection closed; replies so far: ${JSON.stringify(replies)}`);
    if (/^250 2\.0\.0 OK$/i.test(r) && marker === 'NOOP') return replies;
    replies.push(r);
  }
  throw new Error(`no reply to ${marker} after ${max} replies: ${JSON.stringify(replies)}`);
}

/** Every line of a message, without its CRLF: RFC 5322 §2.1.1 allows at most 998 octets. */
export function longestLine(raw: Buffer): number {
  let longest = 0;
  let start = 0;
  for (;;) {
    const end = raw.indexOf('\r\n', start);
    const stop = end < 0 ? raw.length : end;
    longest = Math.max(longest, stop - start);
    if (end < 0) return longest;
    start = end + 2;
  }
}

/** The header block of a message, unfolded, as [name, value] pairs with lower-case names. */
export function headerFields(raw: Buffer): [string, string][] {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  const head = (end < 0 ? text : text.slice(0, end)).replace(/\r\n[ \t]/g, ' ');
  return head.split('\r\n').map((line) => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
  });
}

export const rssMb = (): number => process.memoryUsage().rss / 1024 / 1024;
