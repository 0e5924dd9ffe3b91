// Admin: a tenant's sending domains and their verification.
import { Router } from 'express';
import { z } from 'zod';
import type { Context } from '../../context.ts';
import * as domainsRepo from '../../db/domains.repository.ts';
import { verifyByDns, type TxtResolver } from '../../services/domain-verification.service.ts';
import { addDomain, deleteDomain, domainView, getDomain, markVerified } from '../../services/domains.service.ts';
import { tenantOf } from './tenants.ts';

/** `{"verified": true|false}` sets the state by hand; an empty body asks DNS. */
const VerifyBody = z.strictObject({ verified: z.boolean().optional() });

export function domainsRouter(ctx: Context, resolveTxt: TxtResolver): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    res.status(201).json(domainView(await addDomain(ctx.db, ctx.box, tenantOf(res).id, req.body ?? {})));
  });

  router.get('/', async (_req, res) => {
    const rows = await domainsRepo.listDomains(ctx.db, tenantOf(res).id);
    res.json({ items: rows.map(domainView), next_cursor: null });
  });

  router.get('/:domain', async (req, res) => {
    res.json(domainView(await getDomain(ctx.db, tenantOf(res).id, req.params.domain)));
  });

  router.delete('/:domain', async (req, res) => {
    await deleteDomain(ctx.db, tenantOf(res).id, req.params.domain);
    res.status(204).end();
  });

  router.post('/:domain/verify', async (req, res) => {
    const { verified } = VerifyBody.parse(req.body ?? {});
    const tenantId = tenantOf(res).id;
    const domain =
      verified === undefined
        ? await verifyByDns(ctx.db, tenantId, req.params.domain, resolveTxt)
        : await markVerified(ctx.db, tenantId, req.params.domain, verified);
    res.json(domainView(domain));
  });

  return router;
}
