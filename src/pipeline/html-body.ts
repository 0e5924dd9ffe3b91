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
}

/** True when every byte is printable ASCII, tab, or a CRLF, and no line exceeds `max`. */
function is7bitText(bytes: Buffer, max: number): boolean {
  let lineLength = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x0d && bytes[i + 1] === 0x0a) {
      lineLength = 0;
      i++;
      continue;
    }
    if (b >= 0x80 || (b < 0x20 && b !== 0x09) || b === 0x7f) return false;
    if (++lineLength > max) return false;
  }
  return true;
}

/** Bytes by what quoted-printable makes of them (RFC 2045 §6.7). */
const PLAIN = 0; // printable ASCII but "=": written as it is (rule 2)
const SPACE = 1; // space and tab: as they are mid-line, encoded before a line break (rule 3)
const ESCAPE = 2; // everything else: "=XX" (rule 1)
const KIND = new Uint8Array(256).fill(ESCAPE);
for (let b = 0x21; b <= 0x7e; b++) if (b !== 0x3d) KIND[b] = PLAIN;
KIND[0x20] = SPACE;
KIND[0x09] = SPACE;
const HEX_CODES = Buffer.from(HEX, 'latin1');

/** Quoted-printable of CRLF-separated text: hard breaks stay CRLF, lines are soft-broken at 76. */
export function quotedPrintable(bytes: Buffer): Buffer {
  // Worst case: every byte becomes "=XX", plus a soft break every 25 bytes.
  const out = Buffer.allocUnsafe(bytes.length * 3 + Math.ceil(bytes.length / 25) * 3 + 2);
  const n = bytes.length;
  let o = 0;
  let column = 0;
  for (let i = 0; i < n; i++) {
    const b = bytes[i];
    const kind = KIND[b];
    // Most bytes: plain, far enough from the line's end that no soft break can be due.
    if (kind === PLAIN && column < MAX_QP_LINE - 1) {
      out[o++] = b;
      column++;
      continue;
    }
    if (b === 0x0d && bytes[i + 1] === 0x0a) {
      out[o++] = 0x0d;
      out[o++] = 0x0a;
      column = 0;
      i++;
      continue;
    }
    const atLineEnd = i + 1 === n || (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a);
    // Whitespace before a line break would be stripped in transport: encoded there (rule 3).
    const plain = kind === PLAIN || (kind === SPACE && !atLineEnd);
    const width = plain ? 1 : 3;
    // The soft break "=" needs a column of its own, unless this character ends the line.
    if (column + width > (atLineEnd ? MAX_QP_LINE : MAX_QP_LINE - 1)) {
      out[o++] = 0x3d;
      out[o++] = 0x0d;
      out[o++] = 0x0a;
      column = 0;
    }
    if (plain) {
      out[o++] = b;
    } else {
      out[o++] = 0x3d;
      out[o++] = HEX_CODES[b >> 4];
      out[o++] = HEX_CODES[b & 0x0f];
    }
    column += width;
  }
  return out.subarray(0, o);
}

/** The HTML (CRLF line ends) as the part's body, with the encoding nodemailer would choose. */
export function encodeHtmlBody(html: string): EncodedBody {
  const bytes = Buffer.from(html, 'utf8');
  if (is7bitText(bytes, MAX_7BIT_LINE)) return { encoding: '7bit', body: bytes };
  return { encoding: 'quoted-printable', body: quotedPrintable(bytes) };
}
