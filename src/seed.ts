// First run in development: an empty database gets a `demo` tenant with one `capture` route
// and a live key, and start-up prints how to send a first message (SPEC §1).
import type { Context } from './context.ts';
import { countTenants, lockSeeding } from './db/tenants.repository.ts';
import { addDomain } from './services/domains.service.ts';
import { ensureQueue } from './queue.ts';
import { createRoute } from './services/routes.service.ts';
import { createKey, createTenant } from './services/tenants.service.ts';

export const DEMO_DOMAIN = 'demo.txrelay.test';

export interface SeedResult {
  key: string;
  tenant: string;
  domain: string;
}

export async function seedDemo(ctx: Context): Promise<SeedResult | undefined> {
  if (!ctx.config.seedDemo) return undefined;
  return await ctx.db.transaction().execute(async (trx) => {
    // Serialise concurrent first starts; the second sees a tenant and seeds nothing.
    await lockSeeding(trx);
    if ((await countTenants(trx)) > 0) return undefined;
    const tenant = await createTenant(trx, { name: 'demo' });
    const route = await createRoute(trx, ctx.box, tenant.id, { name: 'capture', transport: 'capture' });
    await ensureQueue(ctx.boss, route.id);
    // A development-only domain, marked verified so the printed swaks command works at once.
    await addDomain(trx, ctx.box, tenant.id, { name: DEMO_DOMAIN, verified: true });
    const key = await createKey(trx, tenant.id, { scope: 'full', mode: 'live' });
    return { key: key.key, tenant: tenant.name, domain: DEMO_DOMAIN };
  });
}
