// The patched DATA stream (src/delivery/transports/data-stream.ts) writes exactly what
// nodemailer's own would, for any bytes in any chunks, and a real upstream gets the message.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';
import { applyDataStreamPatch, ORIGINAL, sendsAsIs } from '../../src/delivery/transports/data-stream.ts';
import { smtpTransportTo, startUpstream, type Upstream } from '../helpers/upstream.ts';
import { seeded } from '../helpers/seeded.ts';

applyDataStreamPatch();

type Stream = InstanceType<typeof DataStream> & { _transform: unknown; _flush: unknown };

/** What the stream writes for `chunks`, its writes one by one, and its byte counts. */
async function run(chunks: (Buffer | string)[], original: boolean): Promise<{ out: Buffer; writes: number; inBytes: number; outBytes: number }> {
  const stream = new DataStream() as Stream;
  if (original) {
    stream._transform = ORIGINAL.transform;
    stream._flush = ORIGINAL.flush;
  }
  const written: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      callback();
    },
  });
  const finished = new Promise((resolve) => sink.on('finish', resolve));
  stream.pipe(sink);
  for (const chunk of chunks) stream.write(chunk);
  stream.end();
  await finished;
  return { out: Buffer.concat(written), writes: written.length, inBytes: stream.inByteCount, outBytes: stream.outByteCount };
}


test('for any bytes in any chunks, the same output and byte counts as nodemailer', async () => {
  // Mostly CRLF text (the fast path), with bare CRs and LFs, leading dots and empty chunks mixed in.
  const pieces = ['abc', ' ', '\r\n', '\r\n', '\r\n', '.', '..', '\r', '\n', '\r\n.', 'x\r\n.\r\n', ''];
  for (let seed = 1; seed <= 2000; seed++) {
    const next = seeded(seed);
    let text = '';
    const length = Math.floor(next() * 40);
    for (let i = 0; i < length; i++) text += pieces[Math.floor(next() * pieces.length)];
    const bytes = Buffer.from(text, 'latin1');
    const chunks: (Buffer | string)[] = [];
    for (let at = 0; at < bytes.length || chunks.length === 0; ) {
      const size = Math.floor(next() * 12);
      const piece = bytes.subarray(at, at + size);
      chunks.push(next() < 0.1 ? piece.toString('latin1') : piece);
      at += size;
    }
    const ours = await run(chunks, false);
    const theirs = await run(chunks, true);
    assert.deepEqual(ours.out, theirs.out, `seed ${seed}: ${JSON.stringify(text)}`);
    assert.equal(ours.inBytes, theirs.inBytes, `seed ${seed}`);
    assert.equal(ours.outBytes, theirs.outBytes, `seed ${seed}`);
  }
});

test('a CRLF message without leading dots goes out with its terminator in one write', async () => {
  const message = Buffer.from('Subject: hi\r\n\r\n<p>one</p>\r\n<p>two</p>\r\n');
  const ours = await run([message], false);
  assert.equal(ours.writes, 1);
  assert.equal(ours.out.toString(), `${message.toString()}.\r\n`);
  assert.equal((await run([message], true)).writes, 2, "nodemailer's own stream writes the terminator apart");
});

test('sendsAsIs: CRLF text only; a bare CR or LF or a leading dot, also across chunks, is not', () => {
  assert.equal(sendsAsIs(Buffer.from('a\r\nb\r\n'), false), true);
  assert.equal(sendsAsIs(Buffer.from('\nb'), 0x0d), true, 'the CR came in the previous chunk');
  assert.equal(sendsAsIs(Buffer.from('a\r'), false), true, 'a CR at the end waits for the next chunk');
  for (const [text, last] of [
    ['a\nb', false],
    ['a\rb', false],
    ['a\r\n.b', false],
    ['.a', false],
    ['.a', 0x0a],
    ['b', 0x0d],
    ['\n', 0x61],
  ] as const) {
    assert.equal(sendsAsIs(Buffer.from(text), last), false, JSON.stringify([text, last]));
  }
});

let upstream: Upstream;
before(async () => {
  upstream = await startUpstream();
});
after(async () => {
  await upstream?.close();
});

test('a message with lines starting with dots reaches a real upstream byte for byte', async () => {
  const transport = smtpTransportTo(upstream.port);
  try {
    const messages = [
      'Subject: dots\r\n\r\n.hidden\r\n..two\r\nplain\r\n.\r\nafter a lone dot\r\n',
      'Subject: plain\r\n\r\n<p>nothing to stuff</p>\r\n',
      `Subject: large\r\n\r\n${'<p>0123456789</p>\r\n'.repeat(20_000)}.last\r\n`,
    ];
    for (const text of messages) {
      const result = await transport.deliver({ messageId: 'm', mime: Buffer.from(text), mailFrom: 'a@acme.example', recipients: ['b@dest.example'], signal: AbortSignal.timeout(10_000) });
      assert.equal(result.recipients[0]?.accepted, true);
      assert.equal(upstream.received.at(-1)?.raw.toString(), text);
    }
  } finally {
    await transport.close();
  }
});
