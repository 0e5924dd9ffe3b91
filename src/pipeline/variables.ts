// X-Transactional-Variables: a JSON object, hostile input. Bounded in size, depth and keys;
// parsed into null-prototype objects; prototype-polluting keys refused. Every refusal is
// 554 5.6.0 naming the header.
import { SmtpError } from '../smtp/smtp-error.ts';

export const MAX_VARIABLES_BYTES = 64 * 1024;
export const MAX_VARIABLES_DEPTH = 32;
export const MAX_VARIABLES_KEYS = 10_000;
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

const refuse = (why: string) =>
  new SmtpError(554, '5.6.0', `X-Transactional-Variables ${why}`, 'invalid_variables');

export function parseVariables(value: string): Record<string, unknown> {
  if (Buffer.byteLength(value, 'utf8') > MAX_VARIABLES_BYTES) throw refuse(`is larger than ${MAX_VARIABLES_BYTES / 1024} KiB`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    throw refuse(`is not valid JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw refuse('must be a JSON object');
  let keys = 0;
  const copy = (v: unknown, depth: number): unknown => {
    if (depth > MAX_VARIABLES_DEPTH) throw refuse(`nests deeper than ${MAX_VARIABLES_DEPTH} levels`);
    if (Array.isArray(v)) return v.map((x) => copy(x, depth + 1));
    if (typeof v === 'object' && v !== null) {
      const out = Object.create(null) as Record<string, unknown>;
      for (const [k, x] of Object.entries(v)) {
        if (FORBIDDEN_KEYS.has(k)) throw refuse(`may not use the key "${k}"`);
        if (++keys > MAX_VARIABLES_KEYS) throw refuse(`has more than ${MAX_VARIABLES_KEYS} keys`);
        out[k] = copy(x, depth + 1);
      }
      return out;
    }
    return v;
  };
  return copy(parsed, 1) as Record<string, unknown>;
}
