// Configuration: every environment variable of SPEC §1, validated once at start.
// Nothing else in the code reads process.env for settings; it receives a Config.
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

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
});

export interface Config {
  production: boolean;
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
  return {
    production,
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
  };
}

const SECRET_KEYS = new Set(['adminToken', 'secret', 'databaseUrl']);

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
