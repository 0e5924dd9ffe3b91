// Stage: templates (SPEC §4). With X-Transactional-Template the tenant's template must exist;
// with neither template nor variables nothing is rendered, so a literal `{{` survives.
import type { Executor } from '../db/database.ts';
import { findTemplate } from '../db/templates.repository.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import { withoutNul, type Submission } from './submission.ts';
import type { Template } from '../db/schema.ts';

/**
 * Renders a subject and HTML source with variables; supplied by the templates module
 * (src/templates). `template` is set when the sources are that stored template's. Failures are
 * SmtpError 554 5.6.0 naming the template, line and problem.
 */
export type Renderer = (tenantId: string, input: { subject: string; html: string; template?: Template }, variables: Record<string, unknown>) => Promise<{ subject: string; html: string }>;

export function render(db: Executor, renderer: Renderer | undefined) {
  return async function renderStage(sub: Submission): Promise<Submission> {
    const tenantId = sub.principal!.tenant.id;
    if (sub.templateRef) {
      const ref = sub.templateRef;
      const template = await findTemplate(db, tenantId, ref);
      if (!template) throw new SmtpError(554, '5.6.0', `Template "${ref}" does not exist (X-Transactional-Template)`, 'unknown_template');
      sub.template = template;
    }
    if (sub.template || sub.variables) {
      if (!renderer) throw new SmtpError(554, '5.6.0', 'Template rendering is not enabled on this relay', 'render_unavailable');
      // A template without a subject keeps the message's Subject as it was sent, unrendered.
      const source = sub.template
        ? { subject: sub.template.subject, html: sub.template.html, template: sub.template }
        : { subject: sub.subject, html: sub.html ?? '' };
      const out = await renderer(tenantId, source, sub.variables ?? {});
      // Variables may carry NUL, which no header or database text can hold (withoutNul).
      if (!sub.template || sub.template.subject) sub.subject = withoutNul(out.subject);
      sub.html = out.html;
      sub.verdicts.push({ rule: 'template', action: 'rendered', detail: sub.template ? `template ${sub.template.name}` : 'message body with variables' });
    }
    if (sub.html === null || sub.html.trim() === '') {
      throw new SmtpError(554, '5.6.0', 'Message has no HTML, no text and no template', 'empty_message');
    }
    return sub;
  };
}
