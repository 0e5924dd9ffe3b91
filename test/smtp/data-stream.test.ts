// smtp-server's DATA parser with a native search (src/smtp/data-stream.ts) against the method it
// copies: the same message bytes, the same byte counts and the same commands after the final dot,
// for random messages (dot-stuffed lines, bare CR and LF, a dot at the start, pipelined commands
// after the terminator) written in random chunks, down to a byte at a time.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { feedDataStream, originalFeedDataStream, patchDataStream, SMTP_STREAM_VERSION } from '../../src/smtp/data-stream.ts';

/** A deterministic generator (mulberry32), so that a failure names a seed that reproduces it. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ['.', '..', '...', '.\r\n', '\r\n', '\n', '\r', '\r\n.', '\r\n..', 'a', 'hello world', '<p>x</p>', '\n.\n', '\r\n.\r', ' .', 'é'];

/** A DATA section: random lines, sometimes a leading dot, the terminator, then maybe pipelined commands. */
function session(rnd: () => number): Buffer {
  let body = '';
  const n = Math.floor(rnd() * 60);
  for (let i = 0; i < n; i++) body += PIECES[Math.floor(rnd() * PIECES.length)];
  if (rnd() < 0.3) body = (rnd() < 0.5 ? '..' : '.') + body;
  // Dot-stuffing as a client does it: a dot that starts a line is doubled. Some of the random
  // pieces still make "\r\n.\r\n" earlier than the end: that is the terminator, as for a server.
  body = body.replace(/(^|\r\n)\./g, '$1..');
  const tail = rnd() < 0.5 ? '' : rnd() < 0.5 ? 'QUIT\r\n' : 'RSET\r\nMAIL FROM:<a@b.c>\r\n';
  return Buffer.from(`${body}\r\n.\r\n${tail}`);
}

/** Cuts `bytes` into random chunks: mostly small ones around the terminator's length, some large. */
function chunks(bytes: Buffer, rnd: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = rnd() < 0.7 ? 1 + Math.floor(rnd() * 6) : 1 + Math.floor(rnd() * 200);
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

interface Seen {
  data: string;
  byteLength: number;
  commands: string[];
}

/** Feeds the chunks to an SMTPStream in data mode whose DATA parser is `feed`; what it emitted. */
async function run(feed: typeof feedDataStream, parts: Buffer[]): Promise<Seen> {
  const stream = new SMTPStream() as SMTPStream & { _feedDataStream: typeof feedDataStream };
  stream._feedDataStream = feed;
  const commands: string[] = [];
  stream.oncommand = (command: Buffer, callback?: () => void) => {
    commands.push(command.toString('latin1'));
    callback?.();
  };
  const data = stream.startDataMode(1e9);
  const received: Buffer[] = [];
  data.on('data', (c: Buffer) => received.push(c));
  const ended = new Promise<void>((resolve) => data.on('end', resolve));
  void ended.then(() => stream.continue());
  for (const part of parts) await new Promise<void>((resolve, reject) => stream.write(part, (err) => (err ? reject(err) : resolve())));
  await ended;
  await new Promise<void>((resolve) => stream.end(resolve));
  return { data: Buffer.concat(received).toString('latin1'), byteLength: data.byteLength, commands };
}

test('the native search emits what smtp-server emits, over 3,000 random sessions in random chunks', async () => {
  for (let seed = 1; seed <= 3_000; seed++) {
    const rnd = random(seed);
    const parts = chunks(session(rnd), rnd);
    const ours = await run(feedDataStream, parts);
    const theirs = await run(originalFeedDataStream, parts);
    assert.deepEqual(ours, theirs, `seed ${seed}`);
  }
});

test('a large message in socket-sized chunks: the same bytes, unstuffed', async () => {
  const line = (n: number) => (n % 7 === 0 ? `.. a dot-stuffed line ${n}\r\n` : `<p>line ${n} of a long message</p>\r\n`);
  const body = Buffer.from(Array.from({ length: 5_000 }, (_, n) => line(n)).join('') + '.\r\nQUIT\r\n');
  const parts = Array.from({ length: Math.ceil(body.length / 65_536) }, (_, i) => body.subarray(i * 65_536, (i + 1) * 65_536));
  const ours = await run(feedDataStream, parts);
  assert.deepEqual(ours, await run(originalFeedDataStream, parts));
  assert.equal(ours.commands.join('|'), 'QUIT');
  assert.ok(ours.data.includes('\r\n. a dot-stuffed line 7\r\n'));
});

test(`installed for smtp-server ${SMTP_STREAM_VERSION}, the version it copies (another would keep its own)`, () => {
  assert.equal(patchDataStream(), true, `smtp-server is not ${SMTP_STREAM_VERSION}: compare its _feedDataStream with data-stream.ts and copy it again`);
  assert.equal((SMTPStream.prototype as unknown as { _feedDataStream: unknown })._feedDataStream, feedDataStream);
});
