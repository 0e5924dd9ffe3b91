#!/usr/bin/env node
// txrelay's command line: `start`, `migrate`, `config`, and admin helpers that call the same
// services as the admin API. Usage: txrelay help
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { startApp, openConfiguredDatabase } from './app.ts';
import { ConfigError, describeConfig, loadConfig, type Config } from './config.ts';
import { SecretBox } from './crypto.ts';
import { migrateToLatest } from './db/migrate.ts';
import { createLogger } from './log.ts';
import { resolveSecrets } from './secrets.ts';
import { createTemplateEngine } from './templates/renderer.ts';
import { ApiError } from './services/errors.ts';
import * as domainsService from './services/domains.service.ts';
import * as routesService from './services/routes.service.ts';
import * as templatesService from './services/templates.service.ts';
import * as tenantsService from './services/tenants.service.ts';

const USAGE = `txrelay <command>

  start                                   run the relay (roles from TXRELAY_ROLES)
  migrate                                 apply database migrations and exit
  config                                  print the effective configuration (secrets masked)
  tenant create <name>                    create a tenant
  tenant list                             list tenants
  key create <tenant> [--scope send|read|full] [--mode live|test]
  domain add <tenant> <domain> [--verified]
  route create <tenant> <name> --transport smtp|postal|http|capture [--config '<json>'] [--fallback <route>]
  template create|replace <tenant> <name> --html-file <path> [--subject '<nunjucks>']
  template list <tenant> | show|delete <tenant> <template>
  template render <tenant> <template> [--variables '<json>']

Options: --json prints machine-readable output.`;

function loadEnvFile(): void {
  if (fs.existsSync('.env')) process.loadEnvFile('.env');
}

async function withDatabase<T>(config: Config, fn: (db: Awaited<ReturnType<typeof openConfiguredDatabase>>['handle']['db'], box: SecretBox) => Promise<T>): Promise<T> {
  const log = createLogger(process.env.LOG_LEVEL ?? 'warn');
  const secrets = resolveSecrets(config);
  const { handle, embedded } = await openConfiguredDatabase(config, secrets.pgPassword, log);
  try {
    await migrateToLatest(handle.db);
    return await fn(handle.db, new SecretBox(secrets.secret));
  } finally {
    await handle.close();
    if (embedded) await embedded.stop();
  }
}

function print(json: boolean, value: unknown, human: string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : human + '\n');
}

async function start(config: Config): Promise<void> {
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
  }
  if (lines.length) process.stdout.write(lines.join('\n') + '\n');
  app.ctx.log.info({ host, smtp: app.smtpPorts, smtps: app.smtpsPorts, http: app.httpPort, roles: config.roles }, 'txrelay started');
  let signalled = false;
  const shutdown = (signal: string) => {
    if (signalled) return;
    signalled = true;
    app.ctx.log.info({ signal }, 'shutting down');
    app.stop(30_000).then(
      () => process.exit(0),
      (err) => {
        app.ctx.log.error({ err: (err as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

export async function main(argv: string[]): Promise<void> {
  loadEnvFile();
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      scope: { type: 'string' },
      mode: { type: 'string' },
      verified: { type: 'boolean', default: false },
      transport: { type: 'string' },
      config: { type: 'string' },
      fallback: { type: 'string' },
      subject: { type: 'string' },
      'html-file': { type: 'string' },
      variables: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [command, sub, ...rest] = positionals;
  if (!command || values.help || command === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const config = loadConfig();
  const json = values.json ?? false;
  switch (command) {
    case 'start':
      return await start(config);
    case 'config':
      return print(true, describeConfig(config), '');
    case 'migrate':
      return await withDatabase(config, async () => print(json, { ok: true }, 'migrations applied'));
    case 'tenant':
      return await withDatabase(config, async (db) => {
        if (sub === 'create' && rest[0]) {
          const t = await tenantsService.createTenant(db, { name: rest[0] });
          return print(json, tenantsService.tenantView(t), `tenant ${t.name} created (${t.id})`);
        }
        if (sub === 'list') {
          const { listTenants } = await import('./db/tenants.repository.ts');
          const list = (await listTenants(db, { limit: 1000 })).map(tenantsService.tenantView);
          return print(json, list, list.map((t) => `${t.name}\t${t.status}\t${t.id}`).join('\n'));
        }
        throw new UsageError();
      });
    case 'key':
      return await withDatabase(config, async (db) => {
        if (sub !== 'create' || !rest[0]) throw new UsageError();
        const t = await tenantsService.getTenant(db, rest[0]);
        const k = await tenantsService.createKey(db, t.id, { scope: values.scope as never, mode: values.mode as never });
        return print(json, k, `${k.key}\n(scope ${k.scope}, mode ${k.mode}; shown once, store it now)`);
      });
    case 'domain':
      return await withDatabase(config, async (db, box) => {
        if (sub !== 'add' || !rest[0] || !rest[1]) throw new UsageError();
        const t = await tenantsService.getTenant(db, rest[0]);
        const d = await domainsService.addDomain(db, box, t.id, { name: rest[1], verified: values.verified });
        const view = domainsService.domainView(d);
        return print(json, view, [`domain ${d.name} added${d.verified ? ' (verified)' : ''}; publish:`, ...view.dns_records.map((r) => `  ${r.type} ${r.name} "${r.value}"`)].join('\n'));
      });
    case 'route':
      return await withDatabase(config, async (db, box) => {
        if (sub !== 'create' || !rest[0] || !rest[1] || !values.transport) throw new UsageError();
        const t = await tenantsService.getTenant(db, rest[0]);
        const r = await routesService.createRoute(db, box, t.id, {
          name: rest[1],
          transport: values.transport,
          config: values.config ? JSON.parse(values.config) : {},
          fallback: values.fallback,
        });
        return print(json, await routesService.routeView(db, r), `route ${r.name} (${r.transport}) created (${r.id})`);
      });
    case 'template':
      return await withDatabase(config, async (db) => {
        if (!sub || !rest[0]) throw new UsageError();
        const t = await tenantsService.getTenant(db, rest[0]);
        // Compile checks and previews run in the same sandbox as the relay's renders.
        const engine = createTemplateEngine(db);
        try {
          if ((sub === 'create' || sub === 'replace') && rest[1] && values['html-file']) {
            const input = { name: rest[1], subject: values.subject ?? '', html: fs.readFileSync(values['html-file'], 'utf8') };
            const saved = sub === 'create'
              ? await templatesService.createTemplate(db, engine, t.id, input)
              : await templatesService.replaceTemplate(db, engine, t.id, rest[1], input);
            return print(json, templatesService.templateView(saved), `template ${saved.name} saved (version ${saved.version}, ${saved.id})`);
          }
          if (sub === 'list') {
            const list = (await templatesService.listTemplates(db, t.id)).map(templatesService.templateView);
            return print(json, list, list.map((v) => `${v.name}\tv${v.version}\t${v.id}`).join('\n'));
          }
          if (sub === 'show' && rest[1]) {
            const v = templatesService.templateView(await templatesService.getTemplate(db, t.id, rest[1]));
            return print(json, v, `Subject: ${v.subject}\n\n${v.html}`);
          }
          if (sub === 'delete' && rest[1]) {
            await templatesService.deleteTemplate(db, engine, t.id, rest[1]);
            return print(json, { ok: true }, `template ${rest[1]} deleted`);
          }
          if (sub === 'render' && rest[1]) {
            const out = await templatesService.renderTemplate(db, engine, t.id, rest[1], { variables: values.variables ? JSON.parse(values.variables) : {} });
            return print(json, out, `Subject: ${out.subject}\n\n${out.html}`);
          }
          throw new UsageError();
        } finally {
          await engine.close();
        }
      });
    default:
      throw new UsageError();
  }
}

class UsageError extends Error {
  constructor() {
    super(USAGE);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(err.message + '\n');
  } else if (err instanceof UsageError) {
    process.stderr.write(err.message + '\n');
  } else if (err instanceof ApiError) {
    process.stderr.write(`error: ${err.message}${err.details ? ' ' + JSON.stringify(err.details) : ''}\n`);
  } else {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  }
  process.exit(err instanceof UsageError ? 64 : 1);
});
