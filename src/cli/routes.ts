// `txrelay route …`: a tenant's delivery routes (SPEC §5). Credentials in the config are
// encrypted by the service and masked by routeView: nothing here prints them. They can come
// from a file or stdin (--config-file) so that they stay out of shell history and `ps`.
import fs from 'node:fs';
import * as queue from '../services/queue.service.ts';
import * as routes from '../services/routes.service.ts';
import { getTenant } from '../services/tenants.service.ts';
import { command, defined, jsonFlag, numberFlag, queueDeps, UsageError, type Command } from './command.ts';
import { details, table } from './format.ts';

const ROUTE_OPTIONS = {
  transport: { type: 'string' },
  config: { type: 'string' },
  'config-file': { type: 'string' },
  fallback: { type: 'string' },
  'max-per-second': { type: 'string' },
  concurrency: { type: 'string' },
  'max-attempts': { type: 'string' },
  'retry-delay': { type: 'string' },
} as const;
const ROUTE_FLAGS =
  "[--config '<json>' | --config-file <path|->] [--fallback <route>] [--max-per-second N] [--concurrency N] [--max-attempts N] [--retry-delay SECONDS]";

type RouteValues = { [K in keyof typeof ROUTE_OPTIONS]?: string } & { enabled?: boolean; disabled?: boolean };

/** The route fields the flags name, as the API's JSON body would carry them. */
function routeFields(values: RouteValues, c: Command, clearable: boolean): Record<string, unknown> {
  if (values.config !== undefined && values['config-file'] !== undefined) throw new UsageError('give --config or --config-file, not both', c);
  if (values.enabled && values.disabled) throw new UsageError('give --enabled or --disabled, not both', c);
  const file = values['config-file'];
  const config = file === undefined ? jsonFlag(values.config, 'config', c) : jsonFlag(fs.readFileSync(file === '-' ? 0 : file, 'utf8'), 'config-file', c);
  const none = { none: clearable };
  return defined({
    transport: values.transport,
    config,
    fallback: clearable && values.fallback === 'none' ? null : values.fallback,
    max_per_second: numberFlag(values['max-per-second'], 'max-per-second', c, none),
    concurrency: numberFlag(values.concurrency, 'concurrency', c, { ...none, integer: true }),
    max_attempts: numberFlag(values['max-attempts'], 'max-attempts', c, { integer: true }),
    retry_delay_seconds: numberFlag(values['retry-delay'], 'retry-delay', c, { integer: true }),
    enabled: values.enabled ? true : values.disabled ? false : undefined,
  });
}

function showRoute(v: routes.RouteView): string {
  return details([
    ['id', v.id],
    ['name', v.name],
    ['transport', v.transport],
    ['config', v.config],
    ['fallback', v.fallback],
    ['max/second', v.max_per_second],
    ['concurrency', v.concurrency],
    ['max attempts', v.max_attempts],
    ['retry delay', `${v.retry_delay_seconds}s (doubling)`],
    ['enabled', v.enabled],
    ['paused', v.paused],
    ['updated', v.updated_at],
  ]);
}

function showQueue(q: queue.QueueView): string {
  return details([
    ['route', `${q.route} (${q.tenant})${q.paused ? ', paused' : ''}${q.enabled ? '' : ', disabled'}`],
    ['queued', q.queued],
    ['deferred', q.deferred],
    ['oldest', q.oldest_queued_at === null ? null : `${q.oldest_queued_at.toISOString()} (${q.oldest_age_seconds} s ago)`],
    ['next retry', q.next_attempt_at],
  ]);
}

export const routeCommands: Record<string, Command> = {
  create: command({
    usage: `route create <tenant> <name> --transport smtp|postal|http|capture ${ROUTE_FLAGS} [--disabled]`,
    summary: 'create a route',
    options: { ...ROUTE_OPTIONS, disabled: { type: 'boolean' } },
    async run(io, [ref, name], values) {
      if (!values.transport) throw new UsageError('missing --transport', this);
      const fields = routeFields(values, this, false);
      const { db, box } = await io.open();
      const t = await getTenant(db, ref);
      // The delivery queue is created by the first message committed to the route.
      const v = await routes.routeView(db, await routes.createRoute(db, box, t.id, { name, ...fields }));
      io.print(v, () => `route ${v.name} (${v.transport}) created for ${t.name} (${v.id})`);
    },
  }),
  list: command({
    usage: 'route list <tenant>',
    summary: "a tenant's routes",
    async run(io, [ref]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const items = await Promise.all((await routes.listRoutes(db, t.id)).map((r) => routes.routeView(db, r)));
      io.print({ items, next_cursor: null }, () =>
        table(
          ['NAME', 'TRANSPORT', 'ENABLED', 'FALLBACK', 'ATTEMPTS', 'ID'],
          items.map((r) => [r.name, r.transport, r.enabled, r.fallback, r.max_attempts, r.id]),
          `no routes for ${t.name}`,
        ),
      );
    },
  }),
  show: command({
    usage: 'route show <tenant> <route>',
    summary: 'one route (credentials masked)',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const v = await routes.routeView(db, await routes.getRoute(db, t.id, name));
      io.print(v, () => showRoute(v));
    },
  }),
  update: command({
    usage: `route update <tenant> <route> [--name NAME] [--transport T] ${ROUTE_FLAGS} [--enabled|--disabled]`,
    summary: 'change a route; a new config replaces the old one whole, credentials included; "none" clears a limit or the fallback',
    options: { ...ROUTE_OPTIONS, name: { type: 'string' }, enabled: { type: 'boolean' }, disabled: { type: 'boolean' } },
    async run(io, [ref, name], values) {
      const patch = { ...routeFields(values, this, true), ...defined({ name: values.name }) };
      if (Object.keys(patch).length === 0) throw new UsageError('nothing to change', this);
      const { db, box } = await io.open();
      const t = await getTenant(db, ref);
      const v = await routes.routeView(db, await routes.updateRoute(db, box, t.id, name, patch));
      io.print(v, () => `route ${v.name} updated\n${showRoute(v)}`);
    },
  }),
  pause: command({
    usage: 'route pause <tenant> <route>',
    summary: 'pause delivery on a route: messages are still accepted and wait; workers stop within 5 s',
    async run(io, [ref, name]) {
      const deps = await queueDeps(io);
      const t = await getTenant(deps.db, ref);
      const v = await routes.routeView(deps.db, await queue.pauseRoute(deps, t.id, name));
      io.print(v, () => `route ${v.name} paused: messages are accepted and wait until it is resumed`);
    },
  }),
  resume: command({
    usage: 'route resume <tenant> <route>',
    summary: 'resume delivery on a paused route (workers start again within 5 s)',
    async run(io, [ref, name]) {
      const deps = await queueDeps(io);
      const t = await getTenant(deps.db, ref);
      const v = await routes.routeView(deps.db, await queue.resumeRoute(deps, t.id, name));
      io.print(v, () => `route ${v.name} resumed`);
    },
  }),
  queue: command({
    usage: 'route queue <tenant> <route>',
    summary: 'what waits on a route: queued and deferred counts, oldest age, next retry',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const q = await queue.routeQueue(db, t.id, name);
      io.print(q, () => showQueue(q));
    },
  }),
  delete: command({
    usage: 'route delete <tenant> <route>',
    summary: 'delete a route (refused while messages wait on it)',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const r = await routes.getRoute(db, t.id, name);
      await routes.deleteRoute(db, t.id, r.id);
      io.print({ ok: true, id: r.id, name: r.name }, () => `route ${r.name} deleted`);
    },
  }),
};
