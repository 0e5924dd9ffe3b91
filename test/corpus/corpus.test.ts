// The robustness corpus (../shared/corpus, 399 real-world and hostile .eml files) through the
// relay over real SMTP. The contract (corpus README, SPEC §3): every message gets a reply — 250,
// or a 4xx/5xx with an enhanced status code — within a bounded time; the relay never crashes;
// and a 250 always means a stored message (never "250 and then lost"), while a refusal leaves
// nothing behind.
//
// Three passes run side by side:
// - every file with the tenant's TEST key: test keys skip the From-domain check and capture, so
//   each file's own headers reach the pipeline untouched;
// - every 10th file with a LIVE key through an smtp route to a real upstream, with the From
//   header replaced by one in the tenant's verified domain, so that delivering odd MIME (not
//   only accepting it) is proven;
// - every file holding a bare LF again with the TEST key, its line ends left as they are: what
//   a sloppy client really sends.
//
// How the bytes are sent (the README leaves it to the harness): a leading mbox "From " line is
// dropped, LF and CRLF line ends become CRLF (except in the bare-LF pass), lines starting with
// "." are dot-stuffed (RFC 5321 §4.5.2). Bare CR, NUL bytes, 8-bit bytes and over-long lines are
// sent as they are: they are what the parser must survive.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { countByStatus, findMessage } from '../../src/db/messages.repository.ts';
import { addRoute, eventually, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { plain, RawSmtp } from '../helpers/smtp-client.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const repoRoot = path.resolve(import.meta.dirname, '../..');
// CI clones the repository with shared/ beside it.
const CORPUS_DIR = path.resolve(repoRoot, '../shared/corpus');
const files = fs.existsSync(CORPUS_DIR) ? fs.readdirSync(CORPUS_DIR).filter((f) => f.endsWith('.eml')).sort() : [];
const skip = files.length === 0 ? `corpus not found at ${CORPUS_DIR} (clone shared/ beside the repository to run it)` : false;

/** No message may take longer than this from MAIL FROM to the final reply. */
const PER_MESSAGE_TIMEOUT_MS = 30_000;
/** Parallel SMTP connections per pass: enough to overlap parsing and commits, gentle on 2 cores. */
const TEST_KEY_CONNECTIONS = 4;
const LIVE_KEY_CONNECTIONS = 2;
const BARE_LF_CONNECTIONS = 2;
const LIVE_SAMPLE_EVERY = 10;
const DOMAIN = 'corpus.example';

/** "250", or the basic code plus the enhanced code ("550 5.1.7"): the key the counts use. */
const REPLY = /^(\d{3})(?: ([245]\.\d{1,3}\.\d{1,3}))?/;
// SPEC §3 says 2.0.0; the exact enhanced code is relay.test.ts's concern, not the corpus's.
const QUEUED = /^250 2\.\d{1,3}\.\d{1,3} Ok: queued as ([0-9a-f-]{36})/;
const REFUSAL = /^[45]\d\d [45]\.\d{1,3}\.\d{1,3} \S/;

interface Outcome {
  file: string;
  pass: 'test-key' | 'live-key' | 'bare-lf';
  reply: string;
  /** The message id of a 250. */
  id?: string;
  /** Set when the relay did not answer properly (timeout, dropped connection). */
  failure?: string;
}

let relay: TestRelay;
let upstream: Upstream;
let tenant: TenantSetup;

before(async () => {
  if (skip) return;
  upstream = await startUpstream();
  relay = await startTestRelay();
  tenant = await setupTenant(relay.ctx, 'corpus', DOMAIN);
  // One smtp route (so live messages need no X-Transactional-Route); test-key messages are
  // captured whatever the route.
  await addRoute(relay.ctx, tenant.tenantId, { name: 'upstream', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port, pool: true } });
});

after(async () => {
  await relay?.close();
  await upstream?.close();
});

/**
 * The file's bytes as DATA content, ending with the terminator. By default: mbox line dropped,
 * CRLF line ends, dot-stuffed. With `rawLineEnds` the line ends stay as they are (bare LF
 * included; only the last line gets a CRLF so the terminator is recognised): smtp-server ends
 * DATA only at CRLF.CRLF and unstuffs a dot after any LF, so we stuff after any LF too.
 */
function toDataBytes(raw: Buffer, options: { replaceFrom?: string; rawLineEnds?: boolean } = {}): Buffer {
  // latin1 maps every byte to one code unit and back, so 8-bit and NUL bytes survive unchanged.
  let text = raw.toString('latin1');
  if (text.startsWith('From ')) text = text.slice(text.indexOf('\n') + 1);
  if (options.rawLineEnds) {
    text = text.replace(/(^|\n)\./g, '$1..').replace(/\r?\n$/, '');
  } else {
    text = text.replace(/\r?\n/g, '\r\n');
    if (options.replaceFrom !== undefined) text = replaceFromHeader(text, options.replaceFrom);
    text = text.replace(/(^|\r\n)\./g, '$1..');
    text = text.replace(/\r\n$/, '');
  }
  return Buffer.from(text + '\r\n.\r\n', 'latin1');
}

/** Drops every From header (with its folded lines) from the header block and puts `from` first. */
function replaceFromHeader(text: string, from: string): string {
  const end = text.indexOf('\r\n\r\n');
  const head = end >= 0 ? text.slice(0, end + 2) : text;
  const body = end >= 0 ? text.slice(end + 2) : '';
  const kept = head.replace(/^from[ \t]*:.*\r\n(?:[ \t].*\r\n)*/gim, '');
  return `From: ${from}\r\n${kept}${body}`;
}

/** Sends the files over `connections` authenticated sessions and records each file's reply. */
async function sendAll(jobs: string[], key: string, pass: Outcome['pass'], connections: number): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const open = async (): Promise<RawSmtp> => {
    const c = await RawSmtp.connect(relay.smtpPort);
    const ehlo = await c.cmd('EHLO corpus.test');
    assert.match(ehlo, /^250/, `EHLO refused: ${ehlo}`);
    const auth = await c.cmd(`AUTH PLAIN ${plain(key)}`);
    assert.match(auth, /^235/, `AUTH refused: ${auth}`);
    return c;
  };
  const worker = async () => {
    let conn: RawSmtp | undefined;
    try {
      while (next < jobs.length) {
        const file = jobs[next++];
        conn ??= await open();
        const raw = fs.readFileSync(path.join(CORPUS_DIR, file));
        const bytes =
          pass === 'live-key' ? toDataBytes(raw, { replaceFrom: `Corpus Sample <sample@${DOMAIN}>` })
          : pass === 'bare-lf' ? toDataBytes(raw, { rawLineEnds: true })
          : toDataBytes(raw);
        const outcome = await sendOne(conn, file, pass, bytes);
        outcomes.push(outcome);
        // After a timeout, a dropped connection or a 421 the session is unusable: start afresh.
        if (outcome.failure || outcome.reply.startsWith('421') || conn.closed) {
          conn.close();
          conn = undefined;
        }
      }
    } finally {
      conn?.close();
    }
  };
  await Promise.all(Array.from({ length: Math.min(connections, jobs.length) }, worker));
  return outcomes;
}

async function sendOne(conn: RawSmtp, file: string, pass: Outcome['pass'], bytes: Buffer): Promise<Outcome> {
  const deadline = Date.now() + PER_MESSAGE_TIMEOUT_MS;
  const left = () => Math.max(1, deadline - Date.now());
  const step = async (line: string | null, expect: RegExp): Promise<string | undefined> => {
    if (line !== null) conn.write(line + '\r\n');
    const reply = await conn.reply(left());
    return expect.test(reply) ? undefined : reply;
  };
  try {
    // A refusal at MAIL/RCPT/DATA is this file's reply too (none is expected: nothing is known yet).
    const early =
      (await step('MAIL FROM:<bounce@corpus.example> BODY=8BITMIME', /^250/)) ??
      (await step('RCPT TO:<rcpt@dest.example>', /^250/)) ??
      (await step('DATA', /^354/));
    if (early !== undefined) {
      if (!conn.closed) await step('RSET', /^250/);
      return { file, pass, reply: early };
    }
    conn.write(bytes);
    const reply = await conn.reply(left());
    if (reply === '') return { file, pass, reply, failure: 'connection closed without a reply to the end of DATA' };
    const id = QUEUED.exec(reply)?.[1];
    return { file, pass, reply, id };
  } catch (err) {
    return { file, pass, reply: '', failure: (err as Error).message };
  }
}

/** "250×371, 550 5.1.7×20, …", most frequent first. */
function tally(outcomes: Outcome[]): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    const m = REPLY.exec(o.reply);
    const k = o.failure ? 'no reply' : m ? (m[1] === '250' ? '250' : [m[1], m[2]].filter(Boolean).join(' ')) : `unparsed`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([k, n]) => `${k}×${n}`).join(', ');
}

test('every corpus message gets a clear reply, in time, and every 250 is stored', { skip, timeout: 180_000 }, async (t) => {
  const started = Date.now();
  const sample = files.filter((_, i) => i % LIVE_SAMPLE_EVERY === 0);
  const bareLf = files.filter((f) => /(^|[^\r])\n/.test(fs.readFileSync(path.join(CORPUS_DIR, f), 'latin1')));
  const [viaTestKey, viaLiveKey, viaBareLf] = await Promise.all([
    sendAll(files, tenant.testKey, 'test-key', TEST_KEY_CONNECTIONS),
    sendAll(sample, tenant.key, 'live-key', LIVE_KEY_CONNECTIONS),
    sendAll(bareLf, tenant.testKey, 'bare-lf', BARE_LF_CONNECTIONS),
  ]);
  const all = [...viaTestKey, ...viaLiveKey, ...viaBareLf];

  const summary = [
    `corpus: ${viaTestKey.length} messages (test key): ${tally(viaTestKey)}`,
    `corpus: ${viaLiveKey.length} messages (live key, every ${LIVE_SAMPLE_EVERY}th file, smtp route): ${tally(viaLiveKey)}`,
    `corpus: ${viaBareLf.length} messages (test key, files with bare LF sent with their line ends unchanged): ${tally(viaBareLf)}`,
    `corpus: ${Math.round((Date.now() - started) / 1000)} s`,
  ];
  for (const line of summary) {
    console.log(line);
    t.diagnostic(line);
  }
  for (const o of all.filter((o) => !o.id)) t.diagnostic(`${o.pass} ${o.file}: ${o.failure ?? o.reply}`);

  // Every file answered, and every answer is a 250 with its id or a refusal that names its code.
  const broken = all.filter((o) => o.failure || (!o.id && !REFUSAL.test(o.reply)));
  assert.deepEqual(
    broken.map((o) => `${o.pass} ${o.file}: ${o.failure ?? JSON.stringify(o.reply)}`),
    [],
    'messages without a proper reply',
  );
  assert.equal(viaTestKey.length, files.length);

  // The relay is still alive and answering after the whole corpus.
  const probe = await RawSmtp.connect(relay.smtpPort);
  assert.match(await probe.cmd('EHLO probe.test'), /^250/);
  probe.close();

  // A 250 is never given for something not stored...
  const accepted = all.filter((o) => o.id);
  for (const o of accepted) {
    const row = await findMessage(relay.ctx.db, o.id!, tenant.tenantId);
    assert.ok(row, `${o.pass} ${o.file}: 250 with id ${o.id} but no messages row`);
  }
  // ...and a refusal leaves nothing behind: the tenant's rows are exactly the 250s.
  const stored = Object.values(await countByStatus(relay.ctx.db, tenant.tenantId)).reduce((a, b) => a + b, 0);
  assert.equal(stored, new Set(accepted.map((o) => o.id)).size, 'messages rows for the tenant vs. 250 replies');

  // The live sample is delivered to the upstream, odd MIME and all: each one's Message-ID
  // (<id@relay.test>, written by the relay) arrives there.
  const live = viaLiveKey.filter((o) => o.id);
  const undelivered = () => {
    const seen = upstream.received.map((r) => r.raw.toString('latin1')).join('\n');
    return live.filter((o) => !seen.includes(`<${o.id}@relay.test>`));
  };
  await eventually(async () => undelivered().length === 0, 30_000, 'upstream delivery of the live-key corpus messages').catch(() => {
    assert.fail(`not delivered upstream: ${undelivered().map((o) => o.file).join(', ')}`);
  });
  t.diagnostic(`corpus: ${live.length} live-key messages delivered upstream`);
});
