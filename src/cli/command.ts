// The CLI's mechanism: how a command is declared, how its arguments are parsed (node:util
// parseArgs, strict), how it reaches the database, prints, and fails. The commands themselves
// live next to this file, one module per resource, and call the same services as the admin API.
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { z } from 'zod';
import { ConfigError, type Config } from '../config.ts';
import { SecretBox } from '../crypto.ts';
import { openConfiguredDatabase } from '../db/configured.ts';
import type { Db } from '../db/database.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { createLogger } from '../log.ts';
import { offlineBoss } from '../queue.ts';
import { resolveSecrets } from '../secrets.ts';
import { ApiError } from '../services/errors.ts';
import type { QueueDeps } from '../services/queue.service.ts';

/** Wrong words or flags on the command line: exit 2, with the usage of the commands meant. */
export class UsageError extends Error {
  readonly commands: Command[];

  constructor(message: string, commands: Command | Command[] = []) {
    super(message);
    this.name = 'UsageError';
    this.commands = Array.isArray(commands) ? commands : [commands];
  }
}

type Values<O extends ParseArgsOptionsConfig> = {
  [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : O[K]['type'] extends 'string' ? string : string | boolean;
};

export interface Command<O extends ParseArgsOptionsConfig = ParseArgsOptionsConfig> {
  /** What follows `txrelay`, e.g. `tenant show <tenant>`; the `<…>` words are the positionals. */
  usage: string;
  /** One line for the command list. */
  summary: string;
  options?: O;
  run(io: Io, args: string[], values: Values<O>): Promise<void>;
}

/** Declares a command; the generic only serves to type `values` from `options`. */
export function command<const O extends ParseArgsOptionsConfig = {}>(c: Command<O>): Command {
  return c as unknown as Command;
}

export interface Database {
  db: Db;
  box: SecretBox;
}

/** What a command sees: the output mode, the configuration, and the database on demand. */
export interface Io {
  json: boolean;
  config: Config;
  /** Opens (and migrates) the database the first time; closed when the command ends. */
  open(): Promise<Database>;
  /** Prints `value` as JSON with --json, else `human()` (built only when needed). */
  print(value: unknown, human: () => string): void;
}

const COMMON = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsOptionsConfig;

/** The command list: each usage line with its summary. */
export function formatUsage(commands: Command[]): string {
  return commands.map((c) => `  txrelay ${c.usage}\n      ${c.summary}`).join('\n');
}

/** The `<name>` words of the usage line before its first option: the positionals, all required. */
function positionalNames(c: Command): string[] {
  const words = c.usage.split(' ');
  const end = words.findIndex((w) => w.startsWith('-') || w.startsWith('['));
  return words.slice(0, end === -1 ? undefined : end).filter((w) => /^<.+>$/.test(w));
}

export interface Parsed {
  args: string[];
  values: Record<string, string | boolean | undefined>;
}

export function parseCommand(c: Command, argv: string[]): Parsed {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...c.options, ...COMMON }, allowPositionals: true, allowNegative: true, strict: true });
  } catch (err) {
    if (String((err as { code?: string }).code).startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message, c);
    throw err;
  }
  const { positionals, values } = parsed;
  if (values.help) return { args: positionals, values };
  const names = positionalNames(c);
  if (positionals.length < names.length) throw new UsageError(`missing ${names.slice(positionals.length).join(' ')}`, c);
  if (positionals.length > names.length) throw new UsageError(`unexpected argument "${positionals[names.length]}"`, c);
  return { args: positionals, values };
}

/** Runs a parsed command; the database, when opened, is closed whatever happens. */
export async function runCommand(c: Command, parsed: Parsed, config: Config): Promise<void> {
  let opened: { database: Database; close(): Promise<void> } | undefined;
  const json = parsed.values.json === true;
  const io: Io = {
    json,
    config,
    async open() {
      opened ??= await connect(config);
      return opened.database;
    },
    print(value, human) {
      const text = json ? JSON.stringify(value, null, 2) : human();
      if (text !== '') process.stdout.write(text.endsWith('\n') ? text : text + '\n');
    },
  };
  try {
    await c.run(io, parsed.args, parsed.values);
  } finally {
    await opened?.close();
  }
}

/** The configured database with a couple of connections (one command, not the relay's 20). */
async function connect(config: Config): Promise<{ database: Database; close(): Promise<void> }> {
  const secrets = resolveSecrets(config);
  const { handle, close } = await openConfiguredDatabase(config, secrets.pgPassword, { max: 4, applicationName: 'txrelay-cli' });
  try {
    await migrateToLatest(handle.db);
  } catch (err) {
    await close();
    throw err;
  }
  return { database: { db: handle.db, box: new SecretBox(secrets.secret) }, close };
}

/**
 * What the queue operations need: the database, a PgBoss that is never started (it only inserts
 * jobs through the operation's transaction, so the CLI runs no queue maintenance and holds no
 * second pool), and a logger on stderr for the audit line each change writes.
 */
export async function queueDeps(io: Io): Promise<QueueDeps> {
  const { db } = await io.open();
  return { db, boss: offlineBoss(db), log: createLogger(io.config.logLevel, process.stderr), via: 'cli' };
}

// ---- flag values ------------------------------------------------------------------------

/** A number flag; `none` (when allowed) clears the setting. Malformed → usage error. */
export function numberFlag(raw: string | undefined, flag: string, c: Command, opts: { none?: boolean; integer?: boolean } = {}): number | null | undefined {
  if (raw === undefined) return undefined;
  if (opts.none && raw === 'none') return null;
  const pattern = opts.integer ? /^-?\d+$/ : /^-?\d+(\.\d+)?$/;
  if (!pattern.test(raw)) {
    throw new UsageError(`--${flag} takes ${opts.integer ? 'a whole number' : 'a number'}${opts.none ? ' or "none"' : ''}, not "${raw}"`, c);
  }
  return Number(raw);
}

export function jsonFlag(raw: string | undefined, flag: string, c: Command): unknown {
  if (raw === undefined) return undefined;
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new UsageError(`--${flag} is not valid JSON (${(err as Error).message})`, c);
  }
}

export function choiceFlag<T extends string>(raw: string | undefined, flag: string, choices: readonly T[], c: Command): T | undefined {
  if (raw === undefined) return undefined;
  if (!choices.includes(raw as T)) throw new UsageError(`--${flag} takes ${choices.join('|')}, not "${raw}"`, c);
  return raw as T;
}

/** Drops undefined entries so a PATCH names only the fields given. */
export function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// ---- failures ---------------------------------------------------------------------------

/**
 * Writes what went wrong on stderr and returns the exit code: 2 for usage errors, 1 for the
 * rest. User errors (ApiError, validation, configuration) are one line plus the invalid
 * fields; only unexpected errors carry a stack, and only with LOG_LEVEL=debug or trace.
 */
export function reportError(err: unknown, debug: boolean): number {
  const write = (line: string) => process.stderr.write(line + '\n');
  if (err instanceof UsageError) {
    write(`error: ${err.message}`);
    if (err.commands.length) write(`usage:\n${formatUsage(err.commands)}`);
    return 2;
  }
  if (err instanceof ApiError) {
    write(`error: ${err.message}`);
    const fields = (err.details as { fields?: { path: string; message: string }[] } | undefined)?.fields;
    for (const f of fields ?? []) write(`  ${f.path || '(input)'}: ${f.message}`);
    return 1;
  }
  if (err instanceof z.core.$ZodError) {
    write('error: the input is invalid');
    for (const i of err.issues) write(`  ${i.path.map(String).join('.') || '(input)'}: ${i.message}`);
    return 1;
  }
  if (err instanceof ConfigError) {
    write(err.message);
    return 1;
  }
  write(`error: ${err instanceof Error ? err.message : String(err)}`);
  if (debug && err instanceof Error && err.stack) write(err.stack);
  return 1;
}
