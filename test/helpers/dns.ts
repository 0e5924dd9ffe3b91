// A fake DNS for TXT lookups: what a test publishes, answered the way node:dns answers
// (values split into strings of at most 255 bytes, ENOTFOUND for unknown names, or an error
// code the test chose, e.g. ESERVFAIL or ETIMEOUT).
import type { TxtResolver } from '../../src/services/domain-verification.service.ts';

export interface FakeDns {
  resolveTxt: TxtResolver;
  /** Adds a TXT record at name (several calls: several records). */
  publish(name: string, value: string): void;
  /** Publishes every record of a domain view's dns_records. */
  publishAll(records: { name: string; value: string }[]): void;
  remove(name: string): void;
  /** Lookups of name fail with this code until remove() or publish(). */
  fail(name: string, code: string): void;
  lookups: string[];
}

/** RFC 1035 character-strings are at most 255 bytes: long TXT values arrive in pieces. */
export const chunk = (value: string, size = 255): string[] => value.match(new RegExp(`[^]{1,${size}}`, 'g')) ?? [''];

export function fakeDns(): FakeDns {
  const zone = new Map<string, string[][] | string>();
  const lookups: string[] = [];
  return {
    lookups,
    async resolveTxt(hostname) {
      lookups.push(hostname);
      const v = zone.get(hostname.toLowerCase());
      if (typeof v === 'string') throw Object.assign(new Error(`queryTxt ${v} ${hostname}`), { code: v });
      if (!v || v.length === 0) throw Object.assign(new Error(`queryTxt ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
      return v.map((r) => [...r]);
    },
    publish(name, value) {
      const existing = zone.get(name.toLowerCase());
      zone.set(name.toLowerCase(), [...(Array.isArray(existing) ? existing : []), chunk(value)]);
    },
    publishAll(records) {
      for (const r of records) this.publish(r.name, r.value);
    },
    remove(name) {
      zone.delete(name.toLowerCase());
    },
    fail(name, code) {
      zone.set(name.toLowerCase(), code);
    },
  };
}
