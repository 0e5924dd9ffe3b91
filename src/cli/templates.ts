// `txrelay template …`: a tenant's templates. Compile checks and previews run in the same
// sandbox as the relay's renders.
import fs from 'node:fs';
import type { Executor } from '../db/database.ts';
import * as templates from '../services/templates.service.ts';
import { getTenant } from '../services/tenants.service.ts';
import { createTemplateEngine, type TemplateEngine } from '../templates/renderer.ts';
import { command, jsonFlag, UsageError, type Command } from './command.ts';
import { table } from './format.ts';

async function withEngine<T>(db: Executor, fn: (engine: TemplateEngine) => Promise<T>): Promise<T> {
  const engine = createTemplateEngine(db);
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}

const SAVE_OPTIONS = { 'html-file': { type: 'string' }, subject: { type: 'string' } } as const;

function save(mode: 'create' | 'replace'): Command {
  return command({
    usage: `template ${mode} <tenant> <name> --html-file <path> [--subject '<nunjucks>']`,
    summary: mode === 'create' ? 'create a template from an HTML file' : 'replace a template (the version goes up)',
    options: SAVE_OPTIONS,
    async run(io, [ref, name], values) {
      if (!values['html-file']) throw new UsageError('missing --html-file', this);
      const input = { name, subject: values.subject ?? '', html: fs.readFileSync(values['html-file'], 'utf8') };
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const saved = await withEngine(db, (engine) =>
        mode === 'create' ? templates.createTemplate(db, engine, t.id, input) : templates.replaceTemplate(db, engine, t.id, name, input),
      );
      io.print(templates.templateView(saved), () => `template ${saved.name} saved (version ${saved.version}, ${saved.id})`);
    },
  });
}

export const templateCommands: Record<string, Command> = {
  create: save('create'),
  replace: save('replace'),
  list: command({
    usage: 'template list <tenant>',
    summary: "a tenant's templates",
    async run(io, [ref]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const items = (await templates.listTemplates(db, t.id)).map(templates.templateView);
      io.print({ items, next_cursor: null }, () =>
        table(['NAME', 'VERSION', 'UPDATED', 'ID'], items.map((v) => [v.name, v.version, v.updated_at, v.id]), `no templates for ${t.name}`),
      );
    },
  }),
  show: command({
    usage: 'template show <tenant> <template>',
    summary: 'subject and HTML source',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const v = templates.templateView(await templates.getTemplate(db, t.id, name));
      io.print(v, () => `Subject: ${v.subject}\n\n${v.html}`);
    },
  }),
  delete: command({
    usage: 'template delete <tenant> <template>',
    summary: 'delete a template',
    async run(io, [ref, name]) {
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const v = await templates.getTemplate(db, t.id, name);
      await withEngine(db, (engine) => templates.deleteTemplate(db, engine, t.id, v.id));
      io.print({ ok: true, id: v.id, name: v.name }, () => `template ${v.name} deleted`);
    },
  }),
  render: command({
    usage: "template render <tenant> <template> [--variables '<json>']",
    summary: 'preview: render with variables, in the relay sandbox',
    options: { variables: { type: 'string' } },
    async run(io, [ref, name], values) {
      const variables = jsonFlag(values.variables, 'variables', this) ?? {};
      const { db } = await io.open();
      const t = await getTenant(db, ref);
      const out = await withEngine(db, (engine) => templates.renderTemplate(db, engine, t.id, name, { variables }));
      io.print(out, () => `Subject: ${out.subject}\n\n${out.html}`);
    },
  }),
};
