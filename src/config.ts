// Configuration: every environment variable of SPEC §1, validated once at start.
// Nothing else in the code reads process.env for settings; it receives a Config.
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { MimeCompression } from './db/schema.ts';

const portList = z
  .string()
  .trim()
  .transform((value, ctx) => {
    if (value === '') return [];
    const ports = value.split(',').map((p) => p.trim());
    for (const p of ports) {
      const n = Number(p);
      if (!/^\d+$/.test(p) || n < 0 || n > 65535) {
        ctx.addIssue({ code: 'custom', message: `"${p}" is not a port number (0-65535)` });
        return z.NEVER;
      }
    }
    return ports.map(Number);
  });

const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const positiveInt = z
  .string()
  .trim()
  .regex(/^\d+$/, 'must be a whole number')
  .transform(Number)
  .refine((n) => n > 0, 'must be greater than 0');

/** A whole number from min to max. */
const intBetween = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be from ${min} to ${max}`);

const ROLES = ['smtp', 'api', 'worker'] as const;
export type Role = (typeof ROLES)[number];

const schema = z.object({
  NODE_ENV: z.string().default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DATABASE_URL: z
    .string()
    .trim()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  TXRELAY_DATA_DIR: z.string().trim().min(1).default('./.txrelay'),
  TXRELAY_SMTP_PORTS: portList.default([2525]),
  TXRELAY_SMTPS_PORTS: portList.default([]),
  TXRELAY_HTTP_PORT: z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a port number')
    .transform(Number)
    .refine((n) => n <= 65535, 'must be a port number (0-65535)')
    .default(8080),
  TXRELAY_BIND: z.string().trim().min(1).default('0.0.0.0'),
  TXRELAY_HOSTNAME: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9.-]+$/, 'must be a host name')
    .optional(),
  TXRELAY_PUBLIC_URL: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  TXRELAY_TLS_CERT: z.string().trim().min(1).optional(),
  TXRELAY_TLS_KEY: z.string().trim().min(1).optional(),
  TXRELAY_REQUIRE_TLS: bool.optional(),
  TXRELAY_ADMIN_TOKEN: z.string().trim().min(16, 'must be at least 16 characters').optional(),
  TXRELAY_SECRET: z.string().trim().min(32, 'must be at least 32 characters').optional(),
  TXRELAY_MAX_MESSAGE_BYTES: positiveInt.default(26214400),
  TXRELAY_MAX_RECIPIENTS: positiveInt.default(50),
  // The operator's SPF include (e.g. spf.example-esp.net) that customers add to their domain's
  // SPF record. Underscores are allowed: SPF includes are often `_spf.` names.
  TXRELAY_SPF_INCLUDE: z
    .string()
    .trim()
    .toLowerCase()
    .regex(/^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$/, 'must be a host name (e.g. spf.example-esp.net)')
    .optional(),
  TXRELAY_ROLES: z
    .string()
    .trim()
    .transform((value, ctx) => {
      const roles = value.split(',').map((r) => r.trim()).filter(Boolean);
      const bad = roles.filter((r) => !(ROLES as readonly string[]).includes(r));
      if (bad.length || roles.length === 0) {
        ctx.addIssue({ code: 'custom', message: `unknown role "${bad.join(',')}" (use smtp, api, worker)` });
        return z.NEVER;
      }
      return [...new Set(roles)] as Role[];
    })
    .default(['smtp', 'api', 'worker']),
  // Beyond SPEC: the template sandbox's limits (src/templates). A render (or compile) is stopped
  // after the timeout; an isolate that outgrows its memory is replaced (8 MB is isolated-vm's
  // least); the pool renders on this many isolates at once.
  TXRELAY_TEMPLATE_TIMEOUT_MS: intBetween(1, 60_000).default(1000),
  TXRELAY_TEMPLATE_MAX_OUTPUT_BYTES: intBetween(1, 256 * 1024 * 1024).default(5 * 1024 * 1024),
  TXRELAY_TEMPLATE_MEMORY_MB: intBetween(8, 4096).default(64),
  TXRELAY_TEMPLATE_ISOLATES: intBetween(1, 64).default(4),
  // Beyond SPEC: operations (docs/deploy.md). With a metrics token set, /metrics asks for it as a
  // bearer token; unset, /metrics is open (scrape it on an internal network only).
  TXRELAY_METRICS_TOKEN: z.string().trim().min(16, 'must be at least 16 characters').optional(),
  // A second listener with only /metrics, /healthz and /readyz, for processes without the api
  // role (workers) and for scraping on an internal port.
  TXRELAY_METRICS_PORT: z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a port number')
    .transform(Number)
    .refine((n) => n <= 65535, 'must be a port number (0-65535)')
    .optional(),
  // Beyond SPEC: several relay processes on one machine share the SMTP ports (Linux
  // SO_REUSEPORT; the kernel spreads new connections over them), so accepting uses every core.
  // Every process that shares a port must set it. See README "Performance".
  TXRELAY_SMTP_REUSE_PORT: bool.default(false),
  // The HAProxy PROXY protocol (v1) header before SMTP, from a TCP load balancer: `true` (every
  // peer must send it) or a comma list of the balancers' IP addresses (only they may).
  TXRELAY_SMTP_PROXY_PROTOCOL: z
    .string()
    .trim()
    .transform((value, ctx) => {
      const v = value.toLowerCase();
      if (['true', '1', 'yes'].includes(v)) return true;
      if (['false', '0', 'no'].includes(v)) return false;
      const ips = value.split(',').map((a) => a.trim()).filter(Boolean);
      const bad = ips.find((a) => net.isIP(a) === 0);
      if (bad !== undefined || ips.length === 0) {
        ctx.addIssue({ code: 'custom', message: `"${bad ?? value}" is neither true, false nor an IP address` });
        return z.NEVER;
      }
      return ips;
    })
    .default(false),
  // Beyond SPEC: connection limits (README, Security). Sessions at once per listener process,
  // and per client address (an IPv6 client counts per /64, the block one host usually holds).
  TXRELAY_SMTP_MAX_CLIENTS: intBetween(1, 100_000).default(1000),
  TXRELAY_SMTP_MAX_PER_IP: intBetween(1, 100_000).default(50),
  // Absolute deadlines, which no trickle of bytes extends (smtp-server's 60 s idle timeout is
  // reset by every byte): a whole session, and the upload from DATA to the final dot.
  TXRELAY_SMTP_SESSION_TIMEOUT_SECONDS: intBetween(1, 86_400).default(600),
  TXRELAY_SMTP_DATA_TIMEOUT_SECONDS: intBetween(1, 3_600).default(300),
  // SPEC §9's 30 s: how long SIGTERM waits for transactions and deliveries in flight.
  TXRELAY_SHUTDOWN_TIMEOUT_SECONDS: intBetween(1, 3_600).default(30),
  // Beyond SPEC: how `start` tunes V8's collector (src/gc.ts): the nice value of its helper
  // threads, and how far the old generation may grow past its live size before the next full
  // collection; 0 leaves either as V8 has it.
  TXRELAY_GC_THREAD_NICE: intBetween(0, 19).default(19),
  TXRELAY_GC_HEAP_GROWTH_PERCENT: intBetween(0, 1000).default(200),
  // Beyond SPEC: how accepted messages of 16 KiB and more are stored (src/db/stored-mime.ts):
  // `zstd`, compressed by the relay, or `none`, as they are (PostgreSQL then compresses them with
  // pglz, at several times the CPU). Every process reads both; `none` is for a rolling upgrade
  // while processes of a version before zstd still deliver from the same database.
  TXRELAY_STORE_COMPRESSION: z.enum(['zstd', 'none']).default('zstd'),
});

export interface Config {
  production: boolean;
  /** Seed the demo tenant on an empty database: only under NODE_ENV=development (the default). */
  seedDemo: boolean;
  logLevel: string;
  databaseUrl: string | undefined;
  dataDir: string;
  smtpPorts: number[];
  smtpsPorts: number[];
  httpPort: number;
  bind: string;
  hostname: string;
  publicUrl: string;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  requireTls: boolean;
  adminToken: string | undefined;
  secret: string | undefined;
  maxMessageBytes: number;
  maxRecipients: number;
  roles: Role[];
  /** Host name for `include:` in the SPF record that adding a domain asks for; unset: none. */
  spfInclude: string | undefined;
  /** Beyond SPEC: a template render's (or compile's) time limit. */
  templateTimeoutMs: number;
  /** Beyond SPEC: rendered subject + HTML, in bytes. */
  templateMaxOutputBytes: number;
  /** Beyond SPEC: memory of each template isolate. */
  templateMemoryMb: number;
  /** Beyond SPEC: template isolates in the pool. */
  templateIsolates: number;
  /** Beyond SPEC: the bearer token /metrics asks for; unset: /metrics is open. */
  metricsToken: string | undefined;
  /** Beyond SPEC: a listener for /metrics, /healthz and /readyz only; unset: none. */
  metricsPort: number | undefined;
  /** Beyond SPEC: smtp-server's useProxy: off, every peer, or these peers' addresses. */
  smtpProxyProtocol: boolean | string[];
  smtpReusePort: boolean;
  /** Beyond SPEC: SMTP sessions at once, per listener process. */
  smtpMaxClients: number;
  /** Beyond SPEC: SMTP sessions at once from one client address (IPv6: one /64). */
  smtpMaxPerIp: number;
  /** Beyond SPEC: the longest an SMTP session may last, whatever it does. */
  smtpSessionTimeoutMs: number;
  /** Beyond SPEC: the longest the upload from DATA to the final dot may take. */
  smtpDataTimeoutMs: number;
  /** SPEC §9: what SIGTERM waits for transactions and deliveries in flight. */
  shutdownTimeoutMs: number;
  /** Beyond SPEC: the nice value of V8's collector threads (0: left as they are); see src/gc.ts. */
  gcThreadNice: number;
  /** Beyond SPEC: V8's --heap-growing-percent (0: V8's own growing factor); see src/gc.ts. */
  gcHeapGrowthPercent: number;
  storeCompression: MimeCompression;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the environment. Throws a ConfigError whose message is one line naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings mean "unset" for optional variables, as in most twelve-factor apps.
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    // An empty port list is meaningful (no listener of that kind); elsewhere '' means unset.
    if (v !== undefined && (v !== '' || k.endsWith('_PORTS'))) cleaned[k] = v;
  }
  const parsed = schema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = String(issue.path[0] ?? 'configuration');
    throw new ConfigError(`configuration error: ${variable} ${issue.message}`);
  }
  const e = parsed.data;
  const production = e.NODE_ENV === 'production';
  const httpPort = e.TXRELAY_HTTP_PORT;
  if (production && !e.TXRELAY_ADMIN_TOKEN) {
    throw new ConfigError('configuration error: TXRELAY_ADMIN_TOKEN is required when NODE_ENV=production');
  }
  if (production && !e.TXRELAY_SECRET) {
    throw new ConfigError('configuration error: TXRELAY_SECRET is required when NODE_ENV=production');
  }
  if (Boolean(e.TXRELAY_TLS_CERT) !== Boolean(e.TXRELAY_TLS_KEY)) {
    const missing = e.TXRELAY_TLS_CERT ? 'TXRELAY_TLS_KEY' : 'TXRELAY_TLS_CERT';
    throw new ConfigError(`configuration error: ${missing} must be set together with ${missing === 'TXRELAY_TLS_KEY' ? 'TXRELAY_TLS_CERT' : 'TXRELAY_TLS_KEY'}`);
  }
  const smtpPorts = e.TXRELAY_SMTP_PORTS;
  const smtpsPorts = e.TXRELAY_SMTPS_PORTS;
  const roles = e.TXRELAY_ROLES;
  if (roles.includes('smtp') && smtpPorts.length + smtpsPorts.length === 0) {
    throw new ConfigError('configuration error: TXRELAY_SMTP_PORTS and TXRELAY_SMTPS_PORTS are both empty but the smtp role is on');
  }
  const metricsPort = e.TXRELAY_METRICS_PORT;
  if (metricsPort !== undefined && metricsPort !== 0 && metricsPort === httpPort && roles.includes('api')) {
    throw new ConfigError('configuration error: TXRELAY_METRICS_PORT must differ from TXRELAY_HTTP_PORT (the API port serves /metrics already)');
  }
  return {
    production,
    // The demo tenant is for a developer's first `npm start` (SPEC §1), not for tests or staging.
    seedDemo: e.NODE_ENV === 'development',
    logLevel: e.LOG_LEVEL,
    databaseUrl: e.DATABASE_URL,
    dataDir: path.resolve(e.TXRELAY_DATA_DIR),
    smtpPorts,
    smtpsPorts,
    httpPort,
    bind: e.TXRELAY_BIND,
    hostname: e.TXRELAY_HOSTNAME ?? os.hostname(),
    publicUrl: (e.TXRELAY_PUBLIC_URL ?? `http://localhost:${httpPort}`).replace(/\/+$/, ''),
    tlsCert: e.TXRELAY_TLS_CERT,
    tlsKey: e.TXRELAY_TLS_KEY,
    requireTls: e.TXRELAY_REQUIRE_TLS ?? production,
    adminToken: e.TXRELAY_ADMIN_TOKEN,
    secret: e.TXRELAY_SECRET,
    maxMessageBytes: e.TXRELAY_MAX_MESSAGE_BYTES,
    maxRecipients: e.TXRELAY_MAX_RECIPIENTS,
    roles,
    spfInclude: e.TXRELAY_SPF_INCLUDE,
    templateTimeoutMs: e.TXRELAY_TEMPLATE_TIMEOUT_MS,
    templateMaxOutputBytes: e.TXRELAY_TEMPLATE_MAX_OUTPUT_BYTES,
    templateMemoryMb: e.TXRELAY_TEMPLATE_MEMORY_MB,
    templateIsolates: e.TXRELAY_TEMPLATE_ISOLATES,
    metricsToken: e.TXRELAY_METRICS_TOKEN,
    metricsPort,
    smtpProxyProtocol: e.TXRELAY_SMTP_PROXY_PROTOCOL,
    smtpReusePort: e.TXRELAY_SMTP_REUSE_PORT,
    smtpMaxClients: e.TXRELAY_SMTP_MAX_CLIENTS,
    smtpMaxPerIp: e.TXRELAY_SMTP_MAX_PER_IP,
    smtpSessionTimeoutMs: e.TXRELAY_SMTP_SESSION_TIMEOUT_SECONDS * 1000,
    smtpDataTimeoutMs: e.TXRELAY_SMTP_DATA_TIMEOUT_SECONDS * 1000,
    shutdownTimeoutMs: e.TXRELAY_SHUTDOWN_TIMEOUT_SECONDS * 1000,
    gcThreadNice: e.TXRELAY_GC_THREAD_NICE,
    gcHeapGrowthPercent: e.TXRELAY_GC_HEAP_GROWTH_PERCENT,
    storeCompression: e.TXRELAY_STORE_COMPRESSION,
  };
}

const SECRET_KEYS = new Set(['adminToken', 'secret', 'databaseUrl', 'metricsToken']);

/** The effective configuration with secrets masked, for `txrelay config`. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (SECRET_KEYS.has(k) && typeof v === 'string') {
      out[k] = k === 'databaseUrl' ? v.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:****@') : '****';
    } else {
      out[k] = v;
    }
  }
  return out;
}
