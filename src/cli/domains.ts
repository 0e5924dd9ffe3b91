// `txrelay domain …`: a tenant's sending domains, the DNS records to publish, verification.
import { systemTxtResolver, verifyByDns } from '../services/domain-verification.service.ts';
import * as domains from '../services/domains.service.ts';
import { getTenant } from '../services/tenants.service.ts';
import { choiceFlag, command, type Command } from './command.ts';
import { details, section, table } from './format.ts';

type DomainView = ReturnType<typeof domains.domainView>;

function records(v: DomainView): string {
  return section(
    'DNS records to publish:',
    v.dns_records.map((r) => `${r.type} ${r.name} "${r.value}"  (${r.purpose}, ${r.status})`),
  );
}

function showDomain(v: DomainView): string {
  return details([
    ['id', v.id],
    ['name', v.name],
    ['verified', v.verified],
    ['verified at', v.verified_at],
    ['created', v.created_at],
  ]) + records(v);
}

export const domainCommands: Record<string, Command> = {
  add: command({
    usage: 'domain add <tenant> <domain> [--verified]',
    summary: 'add a sending domain and print the DNS records to publish (--verified marks it verified by hand)',
    options: { verified: { type: 'boolean' } },
    async run(io, [ref, name], values) {
      const { db, box } = await io.open();
      const t = await getTenant(db, ref);
      const v = domains.domainView(await domains.addDomain(db, box, t.id, { name, verified: values.verified ?? false }), io.config.spfInclude);
      io.print(v, () => `domain ${v.name} added for ${t.name}${v.verified ? ' (verified)' : ''}${records(v)}`);
    },
  }),
  list: command({
    usage: 'domain list <tenant>',
    summary: "a tenant's domains",
    async run(io, [ref]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const items = (await domains.listDomains(db, t.id)).map((d) => domains.domainView(d, io.config.spfInclude));
      io.print({ items, next_cursor: null }, () =>
        table(['NAME', 'VERIFIED', 'VERIFIED AT', 'ID'], items.map((d) => [d.name, d.verified, d.verified_at, d.id]), `no domains for ${t.name}`),
      );
    },
  }),
  show: command({
    usage: 'domain show <tenant> <domain>',
    summary: 'one domain with its DNS records',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const v = domains.domainView(await domains.getDomain(db, t.id, name), io.config.spfInclude);
      io.print(v, () => showDomain(v));
    },
  }),
  verify: command({
    usage: 'domain verify <tenant> <domain> [--verified true|false]',
    summary: 'look the verification TXT and DKIM records up in DNS, or set the state by hand',
    options: { verified: { type: 'string' } },
    async run(io, [ref, name], values) {
      const manual = choiceFlag(values.verified, 'verified', ['true', 'false'] as const, this);
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const d =
        manual === undefined
          ? await verifyByDns(db, t.id, name, systemTxtResolver, { spfInclude: io.config.spfInclude })
          : await domains.markVerified(db, t.id, name, manual === 'true');
      const v = domains.domainView(d, io.config.spfInclude);
      io.print(v, () => `domain ${v.name} is ${v.verified ? 'verified' : 'not verified'}`);
    },
  }),
  delete: command({
    usage: 'domain delete <tenant> <domain>',
    summary: 'delete a domain (its DKIM key goes with it)',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const d = await domains.getDomain(db, t.id, name);
      await domains.deleteDomain(db, t.id, d.id);
      io.print({ ok: true, id: d.id, name: d.name }, () => `domain ${d.name} deleted`);
    },
  }),
};
