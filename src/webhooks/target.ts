// Where a webhook may be sent (README, "Webhooks" › "URL rules"). Checked when an endpoint is
// created or changed, and again before every request, since the configuration may have changed
// and a host name may resolve somewhere else by then.
//
// 1. http: or https: only, and no user name or password in the URL (they would be sent, and
//    shown back in the endpoint's view).
// 2. Never the relay itself: not the origin of TXRELAY_PUBLIC_URL, and not one of the relay's
//    own listening ports (HTTP, SMTP, SMTPS) on a loopback or unspecified address, `localhost`
//    or TXRELAY_HOSTNAME. A webhook could otherwise call the admin API or submit mail from
//    inside. Loopback on other ports stays allowed outside production (tests and development
//    run receivers there).
// 3. In production (NODE_ENV=production), no private, loopback, link-local, unique-local,
//    shared (CGNAT), multicast or reserved address, neither as a literal in the URL nor as what
//    its host name resolves to when the request is made (SSRF: a tenant must not reach the
//    operator's internal network). The resolved address is the one connected to, so a host
//    name cannot answer a public address to the check and a private one to the connection.
import dns from 'node:dns';
import net from 'node:net';
import type { Config } from '../config.ts';
import type { Context } from '../context.ts';

export const URL_MAX_LENGTH = 2048;

/** What the rules need to know about the relay. */
export interface TargetPolicy {
  production: boolean;
  /** The origin of TXRELAY_PUBLIC_URL. */
  publicOrigin: string;
  /** TXRELAY_HOSTNAME, lower case. */
  hostname: string;
  /** Every port the relay listens on (configured, and the ones actually bound when known). */
  ports: ReadonlySet<number>;
}

export function targetPolicy(config: Config, listening?: Context['listening']): TargetPolicy {
  const ports = new Set<number>([config.httpPort, ...config.smtpPorts, ...config.smtpsPorts]);
  // Port 0 asks the OS for a free port: the bound one is what counts.
  ports.delete(0);
  if (listening) for (const p of [...(listening.http === undefined ? [] : [listening.http]), ...listening.smtp, ...listening.smtps]) ports.add(p);
  return { production: config.production, publicOrigin: new URL(config.publicUrl).origin, hostname: config.hostname.toLowerCase(), ports };
}

/** A URL the rules refuse; the message says which rule, never anything secret. */
export class TargetRefused extends Error {
  override name = 'TargetRefused';
}

const LOOPBACK_OR_UNSPECIFIED = new net.BlockList();
LOOPBACK_OR_UNSPECIFIED.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK_OR_UNSPECIFIED.addSubnet('0.0.0.0', 8, 'ipv4');
LOOPBACK_OR_UNSPECIFIED.addAddress('::1', 'ipv6');
LOOPBACK_OR_UNSPECIFIED.addAddress('::', 'ipv6');

/** Addresses a production relay never sends a webhook to (IANA special-purpose registries). */
const NOT_PUBLIC = new net.BlockList();
for (const [prefix, bits] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private (RFC 1918)
  ['100.64.0.0', 10], // shared address space, carrier-grade NAT (RFC 6598)
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, where cloud metadata services answer
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and the broadcast address
] as const) {
  NOT_PUBLIC.addSubnet(prefix, bits, 'ipv4');
}
for (const [prefix, bits] of [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['64:ff9b::', 96], // NAT64: reaches IPv4 addresses, private ones too
  ['64:ff9b:1::', 48], // local-use NAT64
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated, still routed by some)
  ['ff00::', 8], // multicast
] as const) {
  NOT_PUBLIC.addSubnet(prefix, bits, 'ipv6');
}

const familyOf = (address: string): 'ipv4' | 'ipv6' => (net.isIPv6(address) ? 'ipv6' : 'ipv4');

/** Private, loopback, link-local and the other addresses of NOT_PUBLIC (IPv4-mapped IPv6 included). */
export function isNonPublicAddress(address: string): boolean {
  return NOT_PUBLIC.check(address, familyOf(address));
}

function isLoopbackOrUnspecified(address: string): boolean {
  return LOOPBACK_OR_UNSPECIFIED.check(address, familyOf(address));
}

/** The URL's host without IPv6 brackets or a final dot, lower case. */
function bareHost(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
}

function portOf(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
}

const isLocalhostName = (host: string): boolean => host === 'localhost' || host.endsWith('.localhost');

/**
 * Checks a URL against the rules; returns it normalised (WHATWG URL serialisation, which also
 * turns numeric IPv4 forms such as `2130706433` into `127.0.0.1`). Throws TargetRefused.
 */
export function checkWebhookUrl(raw: string, policy: TargetPolicy): string {
  if (raw.length > URL_MAX_LENGTH) throw new TargetRefused(`the URL is longer than ${URL_MAX_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TargetRefused('not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TargetRefused('the URL must be http:// or https://');
  if (url.username || url.password) throw new TargetRefused('the URL must not hold a user name or password');
  if (url.origin === policy.publicOrigin) throw new TargetRefused('the URL must not point at the relay itself (TXRELAY_PUBLIC_URL)');
  const host = bareHost(url);
  const selfHost = isLocalhostName(host) || host === policy.hostname || (net.isIP(host) !== 0 && isLoopbackOrUnspecified(host));
  if (selfHost && policy.ports.has(portOf(url))) throw new TargetRefused(`the URL must not point at the relay itself (port ${portOf(url)})`);
  if (policy.production) {
    if (isLocalhostName(host)) throw new TargetRefused('the URL must not point at localhost');
    if (net.isIP(host) !== 0 && isNonPublicAddress(host)) throw new TargetRefused(`the URL must not point at a private or local address (${host})`);
  }
  return url.href;
}

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to every address; injectable so that tests never ask public DNS. */
export type HostLookup = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemLookup: HostLookup = async (hostname) => await dns.promises.lookup(hostname, { all: true, verbatim: true });

/**
 * The `lookup` for node:http that applies the rules to what a host name resolves to, for the
 * connection itself: in production every address must be public (one private answer refuses
 * the host, so a round-robin cannot slip one in), and a name that resolves to loopback must
 * not reach one of the relay's ports. Host names only: node does not look up IP literals,
 * which checkWebhookUrl already judged.
 */
export function guardedLookup(policy: TargetPolicy, port: number, lookup: HostLookup): net.LookupFunction {
  return (hostname, options, callback) => {
    checkedAddresses(hostname, options.family, policy, port, lookup).then(
      (addresses) => {
        if (options.all) callback(null, addresses);
        else callback(null, addresses[0].address, addresses[0].family);
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
}

async function checkedAddresses(hostname: string, family: unknown, policy: TargetPolicy, port: number, lookup: HostLookup): Promise<ResolvedAddress[]> {
  const addresses = await lookup(hostname);
  for (const a of addresses) {
    if (policy.production && isNonPublicAddress(a.address)) {
      throw Object.assign(new TargetRefused(`${hostname} resolves to a private or local address (${a.address})`), { code: 'EFORBIDDEN' });
    }
    if (isLoopbackOrUnspecified(a.address) && policy.ports.has(port)) {
      throw Object.assign(new TargetRefused(`${hostname} resolves to the relay itself (port ${port})`), { code: 'EFORBIDDEN' });
    }
  }
  const wanted = family === 4 || family === 6 ? addresses.filter((a) => a.family === family) : addresses;
  if (wanted.length === 0) throw Object.assign(new Error(`${hostname} has no usable address`), { code: 'ENOTFOUND' });
  return wanted.map((a) => ({ address: a.address, family: a.family }));
}
