// Templates (SPEC §4, §7): a tenant's named subject + HTML, both Nunjucks. A template that does not
// compile, or that names anything but the tenant's templates and the built-in layouts, is refused
// at save time (422 with the part and line). Every change bumps the version and drops the
// compiled code.
import { z } from 'zod';
import type { Executor } from '../db/database.ts';
import type { Template } from '../db/schema.ts';
import * as templates from '../db/templates.repository.ts';
import { parseVariables } from '../pipeline/variables.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import { TEMPLATE_NAME, TEMPLATE_NAME_MAX, type TemplateEngine } from '../templates/renderer.ts';
import { ApiError, conflict, invalid, isUniqueViolation, notFound } from './errors.ts';

const MAX_SUBJECT = 2000;

const templateName = z
  .string()
  .trim()
  .min(1)
  .max(TEMPLATE_NAME_MAX)
  .regex(TEMPLATE_NAME, 'letters, digits, dot, dash and underscore; starts with a letter or digit');

export const TemplateCreate = z.object({
  name: templateName,
  subject: z.string().max(MAX_SUBJECT).default(''),
  html: z.string().min(1, 'the template needs HTML'),
});
/** PUT replaces the template; the name may be left out to keep it. */
export const TemplateReplace = TemplateCreate.extend({ name: templateName.optional() });
export const TemplateRender = z.object({ variables: z.record(z.string(), z.unknown()).default({}) });

export interface TemplateView {
  id: string;
  name: string;
  subject: string;
  html: string;
  version: number;
  created_at: Date;
  updated_at: Date;
}

export function templateView(t: Template): TemplateView {
  return { id: t.id, name: t.name, subject: t.subject, html: t.html, version: t.version, created_at: t.created_at, updated_at: t.updated_at };
}

function parse<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const r = schema.safeParse(input);
  if (!r.success) throw invalid('invalid template', r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
  return r.data;
}

/** Compiles both parts; a problem is a 422 naming the part and line. */
async function ensureCompiles(engine: TemplateEngine, source: { subject: string; html: string }): Promise<void> {
  const problem = await engine.check(source);
  if (!problem) return;
  const where = `${problem.part}${problem.line ? ` line ${problem.line}` : ''}`;
  throw new ApiError(422, 'template_error', `the template does not compile: ${where}: ${problem.message}`, {
    fields: [{ path: problem.part, message: problem.message, line: problem.line, column: problem.column }],
  });
}

export async function createTemplate(db: Executor, engine: TemplateEngine, tenantId: string, input: unknown): Promise<Template> {
  const t = parse(TemplateCreate, input);
  await ensureCompiles(engine, t);
  try {
    return await templates.insertTemplate(db, tenantId, { name: t.name, subject: t.subject, html: t.html });
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a template named "${t.name}" already exists`);
    throw err;
  }
}

export async function getTemplate(db: Executor, tenantId: string, ref: string): Promise<Template> {
  const t = await templates.findTemplate(db, tenantId, ref);
  if (!t) throw notFound('template', ref);
  return t;
}

export async function listTemplates(db: Executor, tenantId: string): Promise<Template[]> {
  return await templates.listTemplates(db, tenantId);
}

export async function replaceTemplate(db: Executor, engine: TemplateEngine, tenantId: string, ref: string, input: unknown): Promise<Template> {
  const current = await getTemplate(db, tenantId, ref);
  const t = parse(TemplateReplace, input);
  await ensureCompiles(engine, t);
  const name = t.name ?? current.name;
  try {
    const updated = await templates.replaceTemplate(db, tenantId, current.id, { name, subject: t.subject, html: t.html });
    if (!updated) throw notFound('template', ref);
    return updated;
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a template named "${name}" already exists`);
    throw err;
  } finally {
    engine.forget(tenantId, current.id);
  }
}

export async function deleteTemplate(db: Executor, engine: TemplateEngine, tenantId: string, ref: string): Promise<void> {
  const t = await getTemplate(db, tenantId, ref);
  await templates.deleteTemplate(db, tenantId, t.id);
  engine.forget(tenantId, t.id);
}

/**
 * Preview: renders the stored template with `{variables}` exactly as a message would be
 * (same sandbox, same limits; variables under the X-Transactional-Variables limits).
 */
export async function renderTemplate(db: Executor, engine: TemplateEngine, tenantId: string, ref: string, input: unknown): Promise<{ subject: string; html: string }> {
  const t = await getTemplate(db, tenantId, ref);
  const { variables } = parse(TemplateRender, input ?? {});
  let vars: Record<string, unknown>;
  try {
    vars = parseVariables(JSON.stringify(variables));
  } catch (err) {
    if (err instanceof SmtpError) throw invalid(err.text.replace(/^X-Transactional-Variables/, 'variables'), [{ path: 'variables', message: err.text }]);
    throw err;
  }
  try {
    return await engine.render(tenantId, { subject: t.subject, html: t.html, template: t }, vars);
  } catch (err) {
    if (err instanceof SmtpError && err.code === 'render_error') throw new ApiError(422, 'render_error', err.text);
    throw err;
  }
}
