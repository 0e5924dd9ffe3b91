// Admin: a tenant's sending domains and their verification.
import { Router } from 'express';
import { z } from 'zod';
import type { Context } from '../../context.ts';
import { verifyByDns, type TxtResolver } from '../../services/domain-verification.service.ts';
import { addDomain, deleteDomain, domainView, getDomain, listDomains, markVerified } from '../../services/domains.service.ts';
import { ApiError } from '../../services/errors.ts';
import { tenantOf } from './tenants.ts';

/** `{"verified": true|false}` sets the state by hand; an empty body asks DNS. */
export const VerifyBody = z.strictObject({ verified: z.boolean().optional() });

export interface DomainsRouterOptions {
  /** Admins may mark a domain verified by hand; tenants must prove it in DNS. */
  manualVerify: boolean;
}

const verifiedByHand = (): ApiError =>
  new ApiError(403, 'forbidden', 'only an admin can mark a domain verified by hand; publish the DNS records and verify');

export function domainsRouter(ctx: Context, resolveTxt: TxtResolver, options: DomainsRouterOptions = { manualVerify: true }): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    if (!options.manualVerify && req.body?.verified === true) throw verifiedByHand();
    res.status(201).json(domainView(await addDomain(ctx.db, ctx.box, tenantOf(res).id, req.body ?? {}), ctx.config.spfInclude));
  });

  router.get('/', async (_req, res) => {
    const rows = await listDomains(ctx.db, tenantOf(res).id);
    res.json({ items: rows.map((d) => domainView(d, ctx.config.spfInclude)), next_cursor: null });
  });

  router.get('/:domain', async (req, res) => {
    res.json(domainView(await getDomain(ctx.db, tenantOf(res).id, req.params.domain), ctx.config.spfInclude));
  });

  router.delete('/:domain', async (req, res) => {
    await deleteDomain(ctx.db, tenantOf(res).id, req.params.domain);
    res.status(204).end();
  });

  router.post('/:domain/verify', async (req, res) => {
    const { verified } = VerifyBody.parse(req.body ?? {});
    if (!options.manualVerify && verified !== undefined) throw verifiedByHand();
    const tenantId = tenantOf(res).id;
    const domain =
      verified === undefined
        ? await verifyByDns(ctx.db, tenantId, req.params.domain, resolveTxt, { spfInclude: ctx.config.spfInclude })
        : await markVerified(ctx.db, tenantId, req.params.domain, verified);
    res.json(domainView(domain, ctx.config.spfInclude));
  });

  return router;
}
