// Open and click tracking tokens (SPEC §6): stateless and signed, so a tracked link needs no row
// of its own and a forged or altered token is simply not ours (404, never an open redirect).
//
// Layout, base64url without padding:  kind (1 byte) | message id (16 bytes) | URL (UTF-8, clicks
// only) | MAC (16 bytes). The MAC is HMAC-SHA256 over everything before it, truncated to 128
// bits (RFC 2104 §5 allows truncation to at least half the output; 128 bits leaves forging at
// 2^-128 a try). The kind is under the MAC, so an open token is never accepted as a click.
import crypto from 'node:crypto';

export type TrackingKind = 'open' | 'click';

export type TrackingClaim = { kind: 'open'; messageId: string } | { kind: 'click'; messageId: string; url: string };

const KIND_BYTE: Record<TrackingKind, number> = { open: 0x01, click: 0x02 };
const ID_BYTES = 16;
const MAC_BYTES = 16;
/** A token longer than this is refused unread: a tracked URL is at most MAX_TRACKED_URL_LENGTH. */
const MAX_TOKEN_LENGTH = 8192;
const TOKEN_PATTERN = /^[A-Za-z0-9_-]+$/;

/**
 * Links longer than this are left untracked: the token (4/3 of the URL) plus PUBLIC_URL must stay
 * under the 8 KiB request line many proxies and servers accept.
 */
export const MAX_TRACKED_URL_LENGTH = 4096;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function uuidToBytes(id: string): Buffer {
  const hex = id.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new Error('tracking tokens name a message by its UUID');
  return Buffer.from(hex, 'hex');
}

function bytesToUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function isHttpUrl(url: string): boolean {
  return /^https?:\/\//i.test(url) && URL.canParse(url);
}

export class TrackingTokens {
  readonly #key: Buffer;

  /** The key is derived from TXRELAY_SECRET under its own label: never the at-rest key. */
  constructor(secret: string) {
    this.#key = crypto.createHash('sha256').update(`txrelay-tracking:${secret}`).digest();
  }

  open(messageId: string): string {
    return this.#sign(KIND_BYTE.open, messageId, Buffer.alloc(0));
  }

  click(messageId: string, url: string): string {
    return this.#sign(KIND_BYTE.click, messageId, Buffer.from(url, 'utf8'));
  }

  /** The claim a token of `kind` makes, or undefined when it is not one we signed for that kind. */
  verify(token: string, kind: 'open'): { kind: 'open'; messageId: string } | undefined;
  verify(token: string, kind: 'click'): { kind: 'click'; messageId: string; url: string } | undefined;
  verify(token: string, kind: TrackingKind): TrackingClaim | undefined {
    if (token.length > MAX_TOKEN_LENGTH || !TOKEN_PATTERN.test(token)) return undefined;
    const bytes = Buffer.from(token, 'base64url');
    // Node's decoder ignores stray trailing bits; only the canonical spelling is accepted, so
    // every change to the text is a change to the signed bytes.
    if (bytes.toString('base64url') !== token) return undefined;
    if (bytes.length < 1 + ID_BYTES + MAC_BYTES) return undefined;
    const signed = bytes.subarray(0, bytes.length - MAC_BYTES);
    const mac = bytes.subarray(bytes.length - MAC_BYTES);
    if (!crypto.timingSafeEqual(mac, this.#mac(signed))) return undefined;
    if (signed[0] !== KIND_BYTE[kind]) return undefined;
    const messageId = bytesToUuid(signed.subarray(1, 1 + ID_BYTES));
    const rest = signed.subarray(1 + ID_BYTES);
    if (kind === 'open') return rest.length === 0 ? { kind, messageId } : undefined;
    let url: string;
    try {
      url = utf8.decode(rest);
    } catch {
      return undefined;
    }
    // Signed by us, so it was an http(s) link when signed; checked again all the same, so even a
    // leaked key cannot make the redirector send anyone to javascript: or data:.
    return isHttpUrl(url) ? { kind, messageId, url } : undefined;
  }

  #sign(kind: number, messageId: string, rest: Buffer): string {
    const signed = Buffer.concat([Buffer.from([kind]), uuidToBytes(messageId), rest]);
    return Buffer.concat([signed, this.#mac(signed)]).toString('base64url');
  }

  #mac(signed: Buffer): Buffer {
    return crypto.createHmac('sha256', this.#key).update(signed).digest().subarray(0, MAC_BYTES);
  }
}
