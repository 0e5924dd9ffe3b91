// The HTML part's body, encoded here rather than by nodemailer. Its quoted-printable encoder
// builds a string character by character and wraps it with regular expressions: for a 5 KB HTML
// part it took more CPU than the parse, the DKIM signature and the commit together. This one
// makes one pass over the bytes into a preallocated buffer. The choice of encoding is
// nodemailer's: 7bit for ASCII text with lines of at most 76 characters, quoted-printable for
// the rest (RFC 2045 §6.7).
const MAX_7BIT_LINE = 76;
/** Encoded lines end before this column, leaving room for the soft break's "=" (RFC 2045 §6.7 rule 5). */
const MAX_QP_LINE = 76;
const HEX = '0123456789ABCDEF';

export interface EncodedBody {
  encoding: '7bit' | 'quoted-printable';
  body: Buffer;
  /**
   * True when DKIM's relaxed body canonicalization (RFC 6376 §3.4.4) changes none of the body's
   * lines: no tab, no two spaces together, no space before a line end. Its hash then needs no
   * search for them (dkim.ts), which costs more than the hash itself.
   */
  relaxedAsIs: boolean;
}

const TAB = 0x09;
const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;

/**
 * Whether every byte is printable ASCII, tab, or a CRLF, and no line exceeds `max` (else
 * undefined); if so, whether relaxed canonicalization leaves its lines as they are.
 */
function is7bitText(bytes: Buffer, max: number): { relaxedAsIs: boolean } | undefined {
  let lineLength = 0;
  let relaxedAsIs = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === CR && bytes[i + 1] === LF) {
      lineLength = 0;
      i++;
      continue;
    }
    if (b >= 0x80 || (b < SP && b !== TAB) || b === 0x7f) return undefined;
    if (++lineLength > max) return undefined;
    if (b === TAB || (b === SP && (bytes[i + 1] === SP || bytes[i + 1] === CR || i + 1 === bytes.length))) relaxedAsIs = false;
  }
  return { relaxedAsIs };
}

/** Bytes by what quoted-printable makes of them (RFC 2045 §6.7). */
const PLAIN = 0; // printable ASCII but "=": written as it is (rule 2)
const SPACE = 1; // space and tab: as they are mid-line, encoded before a line break (rule 3)
const ESCAPE = 2; // everything else: "=XX" (rule 1)
const KIND = new Uint8Array(256).fill(ESCAPE);
for (let b = 0x21; b <= 0x7e; b++) if (b !== 0x3d) KIND[b] = PLAIN;
KIND[SP] = SPACE;
KIND[TAB] = SPACE;
const HEX_CODES = Buffer.from(HEX, 'latin1');

/**
 * Quoted-printable of CRLF-separated text: hard breaks stay CRLF, lines are soft-broken at 76.
 * Whitespace before a line break is encoded, so relaxed canonicalization leaves the lines as
 * they are unless a tab or two spaces together are written as they are (`relaxedAsIs`).
 */
export function quotedPrintable(bytes: Buffer): { body: Buffer; relaxedAsIs: boolean } {
  // Worst case: every byte becomes "=XX", plus a soft break every 25 bytes.
  const out = Buffer.allocUnsafe(bytes.length * 3 + Math.ceil(bytes.length / 25) * 3 + 2);
  const n = bytes.length;
  let o = 0;
  let column = 0;
  let relaxedAsIs = true;
  for (let i = 0; i < n; i++) {
    const b = bytes[i];
    const kind = KIND[b];
    // Most bytes: plain, far enough from the line's end that no soft break can be due; and a
    // space with more of its line after it, which is written as it is too (rule 3).
    if (column < MAX_QP_LINE - 1) {
      if (kind === PLAIN) {
        out[o++] = b;
        column++;
        continue;
      }
      if (b === SP && i + 1 < n && bytes[i + 1] !== CR) {
        if (out[o - 1] === SP || out[o - 1] === TAB) relaxedAsIs = false;
        out[o++] = b;
        column++;
        continue;
      }
    }
    if (b === CR && bytes[i + 1] === LF) {
      out[o++] = CR;
      out[o++] = LF;
      column = 0;
      i++;
      continue;
    }
    const atLineEnd = i + 1 === n || (bytes[i + 1] === CR && bytes[i + 2] === LF);
    // Whitespace before a line break would be stripped in transport: encoded there (rule 3).
    const plain = kind === PLAIN || (kind === SPACE && !atLineEnd);
    const width = plain ? 1 : 3;
    // The soft break "=" needs a column of its own, unless this character ends the line.
    if (column + width > (atLineEnd ? MAX_QP_LINE : MAX_QP_LINE - 1)) {
      out[o++] = 0x3d;
      out[o++] = CR;
      out[o++] = LF;
      column = 0;
    }
    if (plain) {
      // Only a space or a tab reaches here plain: each, or a space after one, is what relaxed
      // canonicalization would change.
      if (kind === SPACE && (b === TAB || out[o - 1] === SP || out[o - 1] === TAB)) relaxedAsIs = false;
      out[o++] = b;
    } else {
      out[o++] = 0x3d;
      out[o++] = HEX_CODES[b >> 4];
      out[o++] = HEX_CODES[b & 0x0f];
    }
    column += width;
  }
  return { body: out.subarray(0, o), relaxedAsIs };
}

/** The HTML (CRLF line ends) as the part's body, with the encoding nodemailer would choose. */
export function encodeHtmlBody(html: string): EncodedBody {
  return encodeHtmlBytes(Buffer.from(html, 'utf8'));
}

/**
 * `bytes` when they fill their ArrayBuffer, else a copy that does: what can move to another
 * thread (postMessage's transfer list) without taking a larger buffer, or a shared pool, along.
 */
export function ownedBytes(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes);
}

/** encodeHtmlBody of the HTML's UTF-8 bytes. */
export function encodeHtmlBytes(bytes: Buffer): EncodedBody {
  const ascii = is7bitText(bytes, MAX_7BIT_LINE);
  if (ascii) return { encoding: '7bit', body: bytes, relaxedAsIs: ascii.relaxedAsIs };
  return { encoding: 'quoted-printable', ...quotedPrintable(bytes) };
}
