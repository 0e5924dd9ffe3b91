// Transports by route: built from the route's config on first use and cached per route
// version, so a changed route (new updated_at) gets fresh connections while deliveries still
// running on the old ones finish undisturbed.
import type { z } from 'zod';
import type { SecretBox } from '../../crypto.ts';
import type { Route } from '../../db/schema.ts';
import { routeConfig, TRANSPORT_CONFIG } from '../../services/routes.service.ts';
import { CaptureTransport } from './capture.ts';
import { HttpTransport } from './http.ts';
import { PostalTransport } from './postal.ts';
import { SmtpTransport } from './smtp.ts';
import { DeliveryError, type DeliveryTransport } from './transport.ts';

/**
 * Worker slots per route (and SMTP pool size) when the route sets no concurrency. 10 rather than
 * 5: end to end about +30% on the bench (README, Performance); Postfix allows 20 per destination.
 */
export const DEFAULT_ROUTE_CONCURRENCY = 10;

export interface TransportFactoryOptions {
  box: SecretBox;
  /** Our EHLO name. */
  hostname: string;
}

/** Builds the transport a route's config describes. Throws a DeliveryError when it cannot. */
export function createTransport(route: Route, options: TransportFactoryOptions): DeliveryTransport {
  switch (route.transport) {
    case 'capture':
      return new CaptureTransport();
    case 'smtp': {
      let config;
      try {
        config = TRANSPORT_CONFIG.smtp.parse(routeConfig(route, options.box));
      } catch (err) {
        // A config that no longer parses or decrypts (TXRELAY_SECRET changed) is for an operator
        // to fix; the message keeps its retries meanwhile. The error text carries no secret.
        throw new DeliveryError({ response: `route "${route.name}" has an unusable config: ${(err as Error).message}`, errorCode: 'ECONFIG' });
      }
      return new SmtpTransport({
        config,
        hostname: options.hostname,
        defaultConnections: route.concurrency ?? DEFAULT_ROUTE_CONCURRENCY,
      });
    }
    case 'postal':
      return new PostalTransport({ route: route.name, config: parsedConfig(route, 'postal', options.box) });
    case 'http':
      return new HttpTransport({ route: route.name, config: parsedConfig(route, 'http', options.box) });
    default:
      throw new DeliveryError({ response: `no "${route.transport}" transport in this version of txrelay`, errorCode: 'ECONFIG' });
  }
}

/** The route's config with credentials, validated; an unusable one (see the smtp case) is an ECONFIG DeliveryError. */
function parsedConfig<T extends 'postal' | 'http'>(route: Route, transport: T, box: SecretBox): z.output<(typeof TRANSPORT_CONFIG)[T]> {
  try {
    return TRANSPORT_CONFIG[transport].parse(routeConfig(route, box)) as z.output<(typeof TRANSPORT_CONFIG)[T]>;
  } catch (err) {
    throw new DeliveryError({ response: `route "${route.name}" has an unusable config: ${(err as Error).message}`, errorCode: 'ECONFIG' });
  }
}

interface Entry {
  version: string;
  transport: DeliveryTransport;
  leases: number;
  retired: boolean;
}

export interface TransportLease {
  transport: DeliveryTransport;
  release(): void;
}

export class TransportCache {
  readonly #current = new Map<string, Entry>();
  readonly #retiring = new Set<Entry>();
  readonly #closing = new Set<Promise<void>>();
  readonly #create: (route: Route) => DeliveryTransport;

  constructor(create: (route: Route) => DeliveryTransport) {
    this.#create = create;
  }

  /** The transport for this version of the route; release() the lease when the delivery is over. */
  acquire(route: Route): TransportLease {
    const version = route.updated_at.toISOString();
    let entry = this.#current.get(route.id);
    if (entry && entry.version !== version) {
      this.#retire(entry);
      entry = undefined;
    }
    if (!entry) {
      entry = { version, transport: this.#create(route), leases: 0, retired: false };
      this.#current.set(route.id, entry);
    }
    const held = entry;
    held.leases++;
    let released = false;
    return {
      transport: held.transport,
      release: () => {
        if (released) return;
        released = true;
        held.leases--;
        if (held.retired && held.leases === 0) this.#close(held);
      },
    };
  }

  /** Drops a route's transport (route deleted); it closes once its deliveries are over. */
  forget(routeId: string): void {
    const entry = this.#current.get(routeId);
    if (entry) this.#retire(entry);
  }

  /** Closes every transport. Call after the consumers stopped: no lease is expected to be held. */
  async closeAll(): Promise<void> {
    for (const entry of [...this.#current.values(), ...this.#retiring]) {
      entry.retired = true;
      this.#close(entry);
    }
    this.#current.clear();
    await Promise.allSettled([...this.#closing]);
  }

  #retire(entry: Entry): void {
    for (const [id, e] of this.#current) if (e === entry) this.#current.delete(id);
    entry.retired = true;
    if (entry.leases === 0) this.#close(entry);
    else this.#retiring.add(entry);
  }

  #close(entry: Entry): void {
    this.#retiring.delete(entry);
    const p = entry.transport.close().catch(() => {});
    this.#closing.add(p);
    void p.finally(() => this.#closing.delete(p));
  }
}
