// `txrelay tenant …` and `txrelay key …`: tenants and their API keys (SPEC §2).
import type { Tenant } from '../db/schema.ts';
import * as tenants from '../services/tenants.service.ts';
import { choiceFlag, command, defined, numberFlag, UsageError, type Command } from './command.ts';
import { cell, details, nextPage, table } from './format.ts';

const TENANT_OPTIONS = {
  status: { type: 'string' },
  'rate-limit': { type: 'string' },
  'track-opens': { type: 'boolean' },
  'track-clicks': { type: 'boolean' },
} as const;
const TENANT_FLAGS = '[--status active|suspended] [--rate-limit N|none] [--[no-]track-opens] [--[no-]track-clicks]';

function tenantFields(values: { status?: string; 'rate-limit'?: string; 'track-opens'?: boolean; 'track-clicks'?: boolean }, c: Command) {
  return defined({
    status: choiceFlag(values.status, 'status', ['active', 'suspended'] as const, c),
    rate_limit_per_minute: numberFlag(values['rate-limit'], 'rate-limit', c, { none: true, integer: true }),
    track_opens: values['track-opens'],
    track_clicks: values['track-clicks'],
  });
}

function showTenant(t: Tenant): string {
  return details([
    ['id', t.id],
    ['name', t.name],
    ['status', t.status],
    ['rate limit', t.rate_limit_per_minute === null ? 'none' : `${t.rate_limit_per_minute}/min`],
    ['track opens', t.track_opens],
    ['track clicks', t.track_clicks],
    ['created', t.created_at],
  ]);
}

export const tenantCommands: Record<string, Command> = {
  create: command({
    usage: `tenant create <name> ${TENANT_FLAGS}`,
    summary: 'create a tenant',
    options: TENANT_OPTIONS,
    async run(io, [name], values) {
      const fields = tenantFields(values, this);
      const { db } = await io.open();
      const t = await tenants.createTenant(db, { name, ...fields });
      io.print(tenants.tenantView(t), () => `tenant ${t.name} created (${t.id})`);
    },
  }),
  list: command({
    usage: 'tenant list [--limit N] [--cursor C]',
    summary: 'list tenants by name',
    options: { limit: { type: 'string' }, cursor: { type: 'string' } },
    async run(io, _args, values) {
      const limit = numberFlag(values.limit, 'limit', this, { integer: true }) ?? undefined;
      const { db } = await io.open();
      const page = await tenants.listTenants(db, { limit, cursor: values.cursor });
      const items = page.items.map(tenants.tenantView);
      io.print({ items, next_cursor: page.next_cursor }, () =>
        table(
          ['NAME', 'STATUS', 'RATE/MIN', 'OPENS', 'CLICKS', 'ID'],
          items.map((t) => [t.name, t.status, t.rate_limit_per_minute, t.track_opens, t.track_clicks, t.id]),
          'no tenants',
        ) + nextPage(page.next_cursor),
      );
    },
  }),
  show: command({
    usage: 'tenant show <tenant>',
    summary: 'one tenant (by name or id)',
    async run(io, [ref]) {
      const { db } = await io.open();
      const t = await tenants.getTenant(db, ref);
      io.print(tenants.tenantView(t), () => showTenant(t));
    },
  }),
  update: command({
    usage: `tenant update <tenant> [--name NAME] ${TENANT_FLAGS}`,
    summary: 'change a tenant',
    options: { ...TENANT_OPTIONS, name: { type: 'string' } },
    async run(io, [ref], values) {
      const patch = { ...tenantFields(values, this), ...defined({ name: values.name }) };
      if (Object.keys(patch).length === 0) throw new UsageError('nothing to change', this);
      const { db } = await io.open();
      const t = await tenants.updateTenant(db, ref, patch);
      io.print(tenants.tenantView(t), () => `tenant ${t.name} updated\n${showTenant(t)}`);
    },
  }),
  delete: command({
    usage: 'tenant delete <tenant> --yes',
    summary: 'delete a tenant with its keys, domains, routes, templates and message log',
    options: { yes: { type: 'boolean' } },
    async run(io, [ref], values) {
      if (!values.yes) {
        throw new UsageError(`deleting tenant "${ref}" also deletes its keys, domains, routes, templates and message log; add --yes to confirm`, this);
      }
      const { db } = await io.open();
      const t = await tenants.getTenant(db, ref);
      await tenants.deleteTenant(db, t.id);
      io.print({ ok: true, id: t.id, name: t.name }, () => `tenant ${t.name} deleted`);
    },
  }),
};

export const keyCommands: Record<string, Command> = {
  create: command({
    usage: 'key create <tenant> [--scope send|read|full] [--mode live|test]',
    summary: 'create an API key; the key is printed this once',
    options: { scope: { type: 'string' }, mode: { type: 'string' } },
    async run(io, [ref], values) {
      const input = defined({
        scope: choiceFlag(values.scope, 'scope', ['send', 'read', 'full'] as const, this),
        mode: choiceFlag(values.mode, 'mode', ['live', 'test'] as const, this),
      });
      const { db } = await io.open();
      const t = await tenants.getTenant(db, ref);
      const k = await tenants.createKey(db, t.id, input);
      io.print(k, () => `${k.key}\n(key ${k.id} for ${t.name}: scope ${k.scope}, mode ${k.mode}; shown once, store it now)`);
    },
  }),
  list: command({
    usage: 'key list <tenant>',
    summary: "a tenant's keys (prefix only: keys are never shown again)",
    async run(io, [ref]) {
      const { db } = await io.open();
      const t = await tenants.getTenant(db, ref);
      const items = (await tenants.listKeys(db, t.id)).map(tenants.keyView);
      io.print({ items, next_cursor: null }, () =>
        table(
          ['ID', 'PREFIX', 'SCOPE', 'MODE', 'CREATED', 'LAST USED', 'REVOKED'],
          items.map((k) => [k.id, `${k.prefix}…`, k.scope, k.mode, k.created_at, k.last_used_at, k.revoked_at]),
          `no keys for ${t.name}`,
        ),
      );
    },
  }),
  revoke: command({
    usage: 'key revoke <tenant> <id>',
    summary: 'revoke a key: it then fails like an unknown key',
    async run(io, [ref, id]) {
      const { db } = await io.open();
      const t = await tenants.getTenant(db, ref);
      const k = tenants.keyView(await tenants.revokeKey(db, t.id, id));
      io.print(k, () => `key ${k.id} (${k.prefix}…) revoked at ${cell(k.revoked_at)}`);
    },
  }),
};
