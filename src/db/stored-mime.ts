// How a message's bytes are kept in messages.mime (mime_compression says which way).
//
// PostgreSQL compresses a stored value over about 2 KB itself, with pglz, in the backend that
// writes it, and decompresses it in the one that reads it. Measured on a 100 KB message: its
// insert cost the backend 0.62-0.74 ms of CPU, commit included, against 0.125 ms for the same
// message compressed here with zstd at level 1, which took 0.03-0.04 ms (to 234 bytes, where pglz
// made 1,512; the corpus's messages of over 2 KB shrink 2.4 times, at about 550 MB/s). So a
// message from COMPRESS_FROM_BYTES up is stored as one zstd frame (its bytes, then, are too small
// or too random for pglz to try), and decompressed here when it is read: for delivery, for the
// API's /mime, for the CLI. Smaller messages stay as they are: each zstd call costs about 20 µs
// of setting up, and pglz on a few kilobytes costs less than that.
//
// A message in pieces (over 1 MiB, written a piece per statement: commit.ts) is stored as it is:
// compressing it would hold it whole once more. So is every message when the runtime has no zstd
// (Node before 22.15) or the operator turned it off (TXRELAY_STORE_COMPRESSION=none, e.g. while
// processes of an older version, which cannot read it, still deliver from the same database).
import zlib from 'node:zlib';
import type { MimeCompression } from './schema.ts';

/** Messages of at least this many bytes are compressed (when compression is on). */
export const COMPRESS_FROM_BYTES = 16 * 1024;

/** True when this runtime has zstd (Node 22.15 and later). */
const zstdAvailable = typeof zlib.zstdCompressSync === 'function';

/** zstd's fastest level: most of pglz's ratio on mail (HTML and base64), at several times its speed. */
const COMPRESS_OPTIONS: zlib.ZstdOptions = { params: { [zlib.constants.ZSTD_c_compressionLevel]: 1 } };

export interface StoredMime {
  mime: Buffer | readonly Buffer[];
  mime_compression: MimeCompression;
}

/**
 * What to store for a message of `size` bytes in `pieces`: a zstd frame of it when `compression`
 * is 'zstd', the runtime has it and the message is at least COMPRESS_FROM_BYTES, else the
 * pieces as they are (the statement sends them without joining them).
 */
export function storedMime(pieces: readonly Buffer[], size: number, compression: MimeCompression): StoredMime {
  if (compression !== 'zstd' || !zstdAvailable || size < COMPRESS_FROM_BYTES) return { mime: pieces, mime_compression: 'none' };
  const whole = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces, size);
  return { mime: zlib.zstdCompressSync(whole, COMPRESS_OPTIONS), mime_compression: 'zstd' };
}

/** A stored message that cannot be read back as the `size` bytes it was stored as. */
export class StoredMimeError extends Error {}

/**
 * The message's bytes from its row. Throws StoredMimeError when they cannot be read: a frame that
 * does not decompress to `size` bytes, or zstd missing from this runtime (a process of an older
 * Node against a database a newer one wrote).
 */
export function messageBytes(row: { mime: Buffer; mime_compression: MimeCompression; size: number }): Buffer {
  if (row.mime_compression === 'none') return row.mime;
  if (!zstdAvailable) throw new StoredMimeError('the message is stored zstd-compressed and this runtime has no zstd (Node 22.15 or later reads it)');
  let bytes: Buffer;
  try {
    // One output chunk of the right size: a second costs as much again as the first.
    bytes = zlib.zstdDecompressSync(row.mime, { chunkSize: Math.max(row.size, 64), maxOutputLength: Math.max(row.size, 1) });
  } catch (err) {
    throw new StoredMimeError(`the stored message does not decompress: ${(err as Error).message}`);
  }
  if (bytes.length !== row.size) throw new StoredMimeError(`the stored message decompresses to ${bytes.length} bytes, not ${row.size}`);
  return bytes;
}
