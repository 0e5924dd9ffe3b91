// Stage: which route carries the message (SPEC §4: X-Transactional-Route is required when the
// tenant has more than one route, optional with exactly one). Test keys skip this: every
// message they send goes to the capture store, whatever route it names.
import type { Executor } from '../db/database.ts';
import { findRoute, firstTwoRoutes } from '../db/routes.repository.ts';
import type { Route } from '../db/schema.ts';
import { SendingCache } from '../db/sending-cache.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import type { Submission } from './submission.ts';

export function resolveRoute(db: Executor) {
  const named = new SendingCache<Route | undefined>();
  const firstTwo = new SendingCache<Route[]>();
  return async function resolveRouteStage(sub: Submission): Promise<Submission> {
    if (sub.testMode) {
      sub.verdicts.push({ rule: 'route', action: 'capture', detail: 'test key: captured, never delivered' });
      return sub;
    }
    const tenant = sub.principal!.tenant;
    if (sub.routeRef) {
      const ref = sub.routeRef;
      const route = await named.get(`${tenant.id} ${ref}`, () => findRoute(db, tenant.id, ref));
      if (!route) throw new SmtpError(550, '5.7.1', `Route "${sub.routeRef}" does not exist for this tenant (X-Transactional-Route)`, 'unknown_route');
      if (!route.enabled) throw new SmtpError(550, '5.7.1', `Route "${route.name}" is disabled`, 'route_disabled');
      sub.route = route;
      return sub;
    }
    const routes = await firstTwo.get(tenant.id, () => firstTwoRoutes(db, tenant.id));
    if (routes.length === 0) throw new SmtpError(550, '5.7.1', `Tenant ${tenant.name} has no route to deliver through`, 'no_route');
    if (routes.length > 1) {
      throw new SmtpError(550, '5.7.1', 'X-Transactional-Route header required: this tenant has more than one route', 'route_required');
    }
    if (!routes[0].enabled) throw new SmtpError(550, '5.7.1', `Route "${routes[0].name}" is disabled`, 'route_disabled');
    sub.route = routes[0];
    return sub;
  };
}
