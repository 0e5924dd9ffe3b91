// One template engine (one pool of isolates) per running relay, shared by the SMTP pipeline,
// the HTTP API's previews and compile checks. Created on first use; close it at shutdown.
import type { Context } from '../context.ts';
import { createTemplateEngine, type TemplateEngine, type TemplateEngineOptions } from './renderer.ts';

export { createTemplateEngine, type TemplateEngine, type TemplateEngineOptions, type TemplateProblem } from './renderer.ts';

const engines = new WeakMap<Context, TemplateEngine>();

export function templateEngine(ctx: Context, options: Partial<TemplateEngineOptions> = {}): TemplateEngine {
  let engine = engines.get(ctx);
  if (!engine) {
    const { config } = ctx;
    engine = createTemplateEngine(ctx.db, {
      timeoutMs: config.templateTimeoutMs,
      maxOutputBytes: config.templateMaxOutputBytes,
      memoryLimitMb: config.templateMemoryMb,
      isolates: config.templateIsolates,
      // isolated-vm: V8 lost control of an isolate; its memory cannot be trusted or reclaimed.
      onCatastrophicError: (message) => ctx.log.fatal({ templates: 'sandbox', message }, 'template sandbox failed catastrophically'),
      ...options,
    });
    engines.set(ctx, engine);
  }
  return engine;
}

/** Closes the context's engine, if it has one (shutdown). */
export async function closeTemplateEngine(ctx: Context): Promise<void> {
  const engine = engines.get(ctx);
  engines.delete(ctx);
  await engine?.close();
}
