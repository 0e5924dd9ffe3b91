// What the pipeline reads on every message and an admin changes rarely: a tenant's verified
// domains and routes, and API keys with their tenants (read on every SMTP AUTH and API request).
// Each message used to read them afresh, queries that cost as much
// (relay and database CPU together) as the whole group-committed write. They are kept here for
// SENDING_CACHE_TTL_MS. A change made in this process (the API, the CLI's own process) empties
// the cache at once (the repositories call sendingConfigChanged); one made by
// another relay process is seen within the TTL, as a route or domain change takes effect in a
// Postfix whose maps are cached. Absent rows are cached too: a domain added elsewhere verifies
// within the TTL.
export const SENDING_CACHE_TTL_MS = 2_000;
const MAX_ENTRIES = 10_000;

let generation = 0;

/** Called by every write to routes, domains, keys or tenants: this process's cached reads are dropped. */
export function sendingConfigChanged(): void {
  generation++;
}

export class SendingCache<V> {
  readonly #entries = new Map<string, { value: Promise<V>; until: number; generation: number }>();

  /**
   * The cached value of `key`, or what `load` gives (concurrent misses share one load). A load
   * that fails is not kept: the next message asks the database again.
   */
  get(key: string, load: () => Promise<V>): Promise<V> {
    const now = Date.now();
    const hit = this.#entries.get(key);
    if (hit && hit.until > now && hit.generation === generation) return hit.value;
    if (this.#entries.size >= MAX_ENTRIES) this.#entries.clear();
    const value = load();
    const entry = { value, until: now + SENDING_CACHE_TTL_MS, generation };
    this.#entries.set(key, entry);
    value.catch(() => {
      if (this.#entries.get(key) === entry) this.#entries.delete(key);
    });
    return value;
  }
}
