// smtp-server's DATA parser with a native search (applied by patches.ts, item 5).
//
// SMTPStream._feedDataStream looks for a line that starts with a dot (a dot-stuffed line, or the
// terminator) with a loop over every byte of DATA in JavaScript: 9% of the accepting event
// loop's time with 100 KB messages (npm run bench, --cpu-prof, 2026-11-22). Below is the same
// method, copied from smtp-server 3.21.6 (MIT-0), with that loop replaced by Buffer#indexOf of
// "\n." (memchr underneath), which stops at the same positions in the same order: i, the dot,
// from 2 to len - 3, wherever the byte before it is an LF. Everything else, the terminator and
// dot-unstuffing rules that guard against SMTP smuggling included, is unchanged, and
// test/smtp/data-stream.test.ts compares the two methods' output over random messages cut
// into random chunks. SMTP_STREAM_VERSION pins the version it was copied from: another one
// keeps smtp-server's own.
import fs from 'node:fs';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

/** The smtp-server version whose _feedDataStream this copies. */
export const SMTP_STREAM_VERSION = '3.21.6';

const END_SEQUENCE = Buffer.from('\r\n.\r\n');
const DOT_AFTER_LF = Buffer.from('\n.');

type Done = (err?: Error | null) => void;

/** The SMTPStream fields the method uses (smtp-stream.d.ts declares them). */
type Stream = SMTPStream & {
  _countDataBytes(len: number): void;
  _endDataMode(chunk: Buffer | false, remainder: Buffer, done: Done): void;
  _feedDataStream(chunk: Buffer, done: Done): void;
};

/** smtp-server's _feedDataStream, its byte loop replaced by a native search (see above). */
function feedDataStream(this: Stream, chunk: Buffer, done: Done): void {
  // only called in data mode, which always has a stream
  const dataStream = this._dataStream!;
  let i: number;
  let buf: Buffer;
  if (this._lastBytes && this._lastBytes.length) {
    chunk = Buffer.concat([this._lastBytes, chunk], this._lastBytes.length + chunk.length);
    this._lastBytes = false;
  }
  let len = chunk.length;
  // Check if the data does not start with the end terminator (smtp-server: this must test
  // _atDataStart, not dataBytes, or a client could end DATA early by its TCP segmentation).
  if (this._atDataStart && len >= 3 && Buffer.compare(chunk.subarray(0, 3), Buffer.from('.\r\n')) === 0) {
    this._endDataMode(false, chunk.subarray(3), done);
    return;
  }
  // check if the first symbol is a escape dot
  if (this._atDataStart && len >= 2 && chunk[0] === 0x2e && chunk[1] === 0x2e) {
    chunk = chunk.subarray(1);
    len--;
    // the escape dot is consumed payload: the leading dot from now on is content
    this._atDataStart = false;
  }
  // seek for the stream ending: each dot that starts a line, i from 2 to len - 3, in order
  for (let lf = chunk.indexOf(DOT_AFTER_LF, 1); lf !== -1 && lf + 1 < len - 2; lf = chunk.indexOf(DOT_AFTER_LF, lf + 1)) {
    i = lf + 1;
    // if the dot matches end terminator
    if (Buffer.compare(chunk.subarray(i - 2, i + 3), END_SEQUENCE) === 0) {
      // everything before the terminator is content, the CRLF that ends the last line included
      buf = chunk.subarray(0, i);
      this._countDataBytes(buf.length);
      this._endDataMode(buf, chunk.subarray(i + 3), done);
      return;
    }
    // check if the dot is an escape char and remove it
    if (chunk[i + 1] === 0x2e) {
      buf = chunk.subarray(0, i);
      this._lastBytes = false; // clear remainder bytes
      this._countDataBytes(buf.length); // increment byte counter
      // emit what we already have and continue without the dot
      if (dataStream.writable) {
        dataStream.write(buf);
      }
      const rest = chunk.subarray(i + 1);
      setImmediate(() => this._feedDataStream(rest, done));
      return;
    }
  }
  // keep the last bytes
  this._lastBytes = chunk.length < 4 ? chunk : chunk.subarray(chunk.length - 4);
  // if current chunk is longer than the remainder bytes we keep for later emit the available bytes
  if (this._lastBytes.length < chunk.length) {
    buf = chunk.subarray(0, chunk.length - this._lastBytes.length);
    this._countDataBytes(buf.length);
    // write to stream but stop if need to wait for drain
    if (dataStream.writable) {
      const handled = dataStream.write(buf);
      if (!handled && !dataStream.destroyed) {
        // a stream that the application destroys never drains, it only closes
        const onDrain = () => {
          dataStream.removeListener('drain', onDrain);
          dataStream.removeListener('close', onDrain);
          done();
        };
        dataStream.once('drain', onDrain);
        dataStream.once('close', onDrain);
      } else {
        done();
      }
    } else {
      done();
    }
  } else {
    // nothing to emit, continue with the input stream
    done();
  }
}

/** smtp-server's own method, kept for the test that compares the two. */
export const originalFeedDataStream = (SMTPStream.prototype as Stream)._feedDataStream;
export { feedDataStream };

/** Installs feedDataStream when smtp-server is the version it was copied from. True when it did. */
export function patchDataStream(): boolean {
  // Its package.json, beside dist/esm/smtp-server.js (the package does not export it).
  const manifest = new URL('../../package.json', import.meta.resolve('smtp-server'));
  const { version } = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { version: string };
  if (version !== SMTP_STREAM_VERSION) return false;
  (SMTPStream.prototype as Stream)._feedDataStream = feedDataStream;
  return true;
}
