// Admin: a tenant's templates (`:template` is an id or a name) and their preview.
import { Router } from 'express';
import type { Context } from '../../context.ts';
import {
  createTemplate,
  deleteTemplate,
  getTemplate,
  listTemplates,
  renderTemplate,
  replaceTemplate,
  templateView,
} from '../../services/templates.service.ts';
import { templateEngine } from '../../templates/index.ts';
import { tenantOf } from './tenants.ts';

export function templatesRouter(ctx: Context): Router {
  const router = Router();
  const engine = () => templateEngine(ctx);

  router.post('/', async (req, res) => {
    res.status(201).json(templateView(await createTemplate(ctx.db, engine(), tenantOf(res).id, req.body ?? {})));
  });

  router.get('/', async (_req, res) => {
    res.json({ items: (await listTemplates(ctx.db, tenantOf(res).id)).map(templateView), next_cursor: null });
  });

  router.get('/:template', async (req, res) => {
    res.json(templateView(await getTemplate(ctx.db, tenantOf(res).id, req.params.template)));
  });

  router.put('/:template', async (req, res) => {
    res.json(templateView(await replaceTemplate(ctx.db, engine(), tenantOf(res).id, req.params.template, req.body ?? {})));
  });

  router.delete('/:template', async (req, res) => {
    await deleteTemplate(ctx.db, engine(), tenantOf(res).id, req.params.template);
    res.status(204).end();
  });

  router.post('/:template/render', async (req, res) => {
    res.json(await renderTemplate(ctx.db, engine(), tenantOf(res).id, req.params.template, req.body ?? {}));
  });

  return router;
}
