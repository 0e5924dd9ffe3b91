// The template engine: compiles tenant templates in the sandbox, caches the compiled code,
// resolves what a template extends/includes/imports (the tenant's own templates by name, and
// the built-in layouts), and renders with the message's variables (SPEC §4).
//
// Cache keys name exactly what was compiled, so a key never goes stale:
//   t:<tenant>:<template id>:<version>:<subject|html>   a stored template (the version goes up on
//                                                        every change; forget() drops the old ones)
//   b:<name>                                            a built-in layout from templates/
//   s:<sha-256 of the source>                           a message's own body or subject
// The render stage reads the template row fresh for every message, and dependencies are looked up
// by name for every render, so a change made through another process is picked up at once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Executor } from '../db/database.ts';
import type { Template } from '../db/schema.ts';
import { findTemplatesByName } from '../db/templates.repository.ts';
import type { Renderer } from '../pipeline/render.ts';
import { SmtpError } from '../smtp/smtp-error.ts';
import { SandboxPool, SandboxStopped, type CompileResult, type SandboxLimits, type TemplateFault } from './sandbox.ts';

/** Names of tenant templates (no slash: a path can never be one). */
export const TEMPLATE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export const TEMPLATE_NAME_MAX = 100;

export const DEFAULT_BUILTINS_DIR = path.resolve(import.meta.dirname, '../../templates');

export interface TemplateEngineOptions {
  /** Per compile or render call (SPEC §4: default 1 s). */
  timeoutMs: number;
  /** Rendered subject + HTML (SPEC §4: default 5 MiB). */
  maxOutputBytes: number;
  /** Per isolate. */
  memoryLimitMb: number;
  /** A template source (or a message body rendered with variables) larger than this is refused. */
  maxSourceBytes: number;
  /** Items one `range()` call may produce. */
  maxRange: number;
  /** Templates one render may pull in through extends/include/import, transitively. */
  maxDependencies: number;
  /**
   * Isolates in the pool (about 4 MB each when idle): renders in parallel, and how many
   * templates spinning at once (each until its time limit) it takes to hold the others up.
   */
  isolates: number;
  /** Renders queued per isolate while one runs; they go to it together, as one call. */
  pipeline: number;
  /**
   * Renders of one tenant at a time; the tenant's others wait their turn. Default: one less than
   * `isolates`, so that one tenant's templates spinning until their time limit leave an isolate
   * to everybody else (no limit with one isolate).
   */
  perTenant?: number;
  /** Compiled code kept in this process, in characters. */
  cacheChars: number;
  /** Compiled code kept loaded per isolate, in characters. */
  isolateCacheChars: number;
  /** The built-in layouts; each file's path below it is its name, e.g. `layouts/minimal.njk`. */
  builtinsDir: string;
  onCatastrophicError?: (message: string) => void;
}

export const DEFAULT_OPTIONS: TemplateEngineOptions = {
  timeoutMs: 1000,
  maxOutputBytes: 5 * 1024 * 1024,
  memoryLimitMb: 64,
  maxSourceBytes: 1024 * 1024,
  maxRange: 10_000,
  maxDependencies: 50,
  isolates: 4,
  pipeline: 4,
  cacheChars: 16 * 1024 * 1024,
  isolateCacheChars: 4 * 1024 * 1024,
  builtinsDir: DEFAULT_BUILTINS_DIR,
};

/** Why a template does not compile, for the 422 at save time. */
export interface TemplateProblem {
  part: 'subject' | 'html';
  line: number | null;
  column: number | null;
  message: string;
}

export interface TemplateEngine {
  /** For the render stage (createPipeline) and previews; throws SmtpError 554 5.6.0 render_error. */
  render: Renderer;
  /** Compile check at save time: null when both parts compile and use only allowed names. */
  check(source: { subject: string; html: string }): Promise<TemplateProblem | null>;
  /** A template changed or was deleted: drop its compiled versions. */
  forget(tenantId: string, templateId: string): void;
  /** Names of the built-in layouts. */
  readonly builtins: string[];
  /** Disposes the isolates; renders still running fail. */
  close(): Promise<void>;
}

const renderError = (label: string, line: number | null, problem: string): SmtpError =>
  new SmtpError(554, '5.6.0', `${label}${line ? ` line ${line}` : ''}: ${problem}`, 'render_error');

const hash = (source: string): string => crypto.createHash('sha256').update(source).digest('base64url');

/** Nunjucks syntax always starts with `{`: without one a source renders to itself. */
const isLiteral = (source: string): boolean => !source.includes('{');

function loadBuiltins(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !/\.(njk|html)$/.test(entry.name)) continue;
    const file = path.join(entry.parentPath, entry.name);
    out.set(path.relative(dir, file).split(path.sep).join('/'), fs.readFileSync(file, 'utf8'));
  }
  return out;
}

/** At most `limit` calls per tenant at a time; the others wait, first come first served. */
class TenantGate {
  readonly #limit: number;
  readonly #running = new Map<string, number>();
  readonly #waiting = new Map<string, (() => void)[]>();

  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  async run<T>(tenantId: string, fn: () => Promise<T>): Promise<T> {
    const n = this.#running.get(tenantId) ?? 0;
    if (n < this.#limit) {
      this.#running.set(tenantId, n + 1);
    } else {
      // Woken with the place of a call that finished (the count stays as it is).
      await new Promise<void>((resolve) => {
        const queue = this.#waiting.get(tenantId);
        if (queue) queue.push(resolve);
        else this.#waiting.set(tenantId, [resolve]);
      });
    }
    try {
      return await fn();
    } finally {
      const queue = this.#waiting.get(tenantId);
      if (queue) {
        const next = queue.shift()!;
        if (queue.length === 0) this.#waiting.delete(tenantId);
        next();
      } else if (this.#running.get(tenantId) === 1) {
        this.#running.delete(tenantId);
      } else {
        this.#running.set(tenantId, this.#running.get(tenantId)! - 1);
      }
    }
  }
}

interface Root {
  key: string;
  source: string;
  label: string;
}

export function createTemplateEngine(db: Executor, options: Partial<TemplateEngineOptions> = {}): TemplateEngine {
  const o: TemplateEngineOptions = { ...DEFAULT_OPTIONS, ...options };
  const limits: SandboxLimits = {
    timeoutMs: o.timeoutMs,
    memoryLimitMb: o.memoryLimitMb,
    maxOutputChars: o.maxOutputBytes,
    maxRange: o.maxRange,
    loadedCodeBudget: o.isolateCacheChars,
  };
  const pool = new SandboxPool(limits, o.isolates, o.pipeline, o.onCatastrophicError);
  const perTenant = o.perTenant ?? (o.isolates > 1 ? o.isolates - 1 : Infinity);
  const gate = Number.isFinite(perTenant) ? new TenantGate(perTenant) : null;
  const builtins = loadBuiltins(o.builtinsDir);

  // Compiled code (or the compile error) by key, least recently used first, bounded in size.
  const compiled = new Map<string, CompileResult>();
  let compiledChars = 0;
  const compiling = new Map<string, Promise<CompileResult>>();
  const sizeOf = (r: CompileResult) => (r.ok ? r.code.length : r.fault.message.length);

  function remember(key: string, result: CompileResult): void {
    const old = compiled.get(key);
    if (old) {
      compiledChars -= sizeOf(old);
      compiled.delete(key);
    }
    compiled.set(key, result);
    compiledChars += sizeOf(result);
    for (const [k, r] of compiled) {
      if (compiledChars <= o.cacheChars) break;
      compiled.delete(k);
      compiledChars -= sizeOf(r);
    }
  }

  async function compile(key: string, source: string): Promise<CompileResult> {
    const hit = compiled.get(key);
    if (hit) {
      remember(key, hit);
      return hit;
    }
    if (Buffer.byteLength(source, 'utf8') > o.maxSourceBytes) {
      return { ok: false, fault: { key, line: null, column: null, message: `the template is larger than the limit of ${o.maxSourceBytes} bytes` } };
    }
    let pending = compiling.get(key);
    if (!pending) {
      pending = pool.use((sandbox) => sandbox.compile(key, source)).then(
        (r) => {
          remember(key, r);
          return r;
        },
        (err: unknown): CompileResult => {
          // Stopped for time or memory: the template's fault, not cached (the limit may be
          // reached only under load).
          if (!(err instanceof SandboxStopped)) throw err;
          const message = err.reason === 'timeout' ? `compiling took longer than the limit of ${o.timeoutMs} ms` : 'compiling exceeded the memory limit of its sandbox';
          return { ok: false, fault: { key, line: null, column: null, message } };
        },
      );
      compiling.set(key, pending);
      pending.finally(() => compiling.delete(key)).catch(() => {});
    }
    return await pending;
  }

  function storedKey(tenantId: string, t: Pick<Template, 'id' | 'version'>, part: 'subject' | 'html'): string {
    return `t:${tenantId}:${t.id}:${t.version}:${part}`;
  }

  function roots(tenantId: string, input: Parameters<Renderer>[1]): { subject: Root | null; html: Root | null } {
    const t = input.template;
    const html: Root | null = isLiteral(input.html)
      ? null
      : t && input.html === t.html
        ? { key: storedKey(tenantId, t, 'html'), source: t.html, label: t.name }
        : { key: `s:${hash(input.html)}`, source: input.html, label: t ? t.name : 'message body' };
    const subject: Root | null = isLiteral(input.subject)
      ? null
      : t && input.subject === t.subject
        ? { key: storedKey(tenantId, t, 'subject'), source: t.subject, label: `${t.name} (subject)` }
        : { key: `s:${hash(input.subject)}`, source: input.subject, label: t ? `${t.name} (subject)` : 'Subject' };
    return { subject, html };
  }

  /**
   * Everything the roots pull in, transitively: the name → key map the isolate resolves names
   * with, the code to load, and a label per key for error messages. Built-ins are found by name;
   * other names are looked up among the tenant's templates — and only there.
   */
  async function resolve(tenantId: string, rootList: Root[], rootResults: CompileResult[]) {
    const names: Record<string, string> = {};
    const code = new Map<string, string>();
    const labels = new Map<string, string>();
    let frontier: string[] = [];
    rootList.forEach((root, i) => {
      const r = rootResults[i];
      if (!r.ok) return;
      code.set(root.key, r.code);
      labels.set(root.key, root.label);
      frontier.push(...r.dependencies.map((d) => d.name));
    });
    const seen = new Set<string>();
    const take = (name: string, key: string, label: string, r: CompileResult, next: string[]) => {
      if (!r.ok) throw renderError(label, r.fault.line, r.fault.message);
      names[name] = key;
      code.set(key, r.code);
      labels.set(key, label);
      next.push(...r.dependencies.map((d) => d.name));
    };
    while (frontier.length) {
      const next: string[] = [];
      const tenantNames: string[] = [];
      for (const name of frontier) {
        if (seen.has(name)) continue;
        seen.add(name);
        if (seen.size > o.maxDependencies) {
          throw renderError(rootList[rootList.length - 1].label, null, `uses more than ${o.maxDependencies} templates through extends, include and import`);
        }
        const builtin = builtins.get(name);
        if (builtin !== undefined) take(name, `b:${name}`, name, await compile(`b:${name}`, builtin), next);
        else if (TEMPLATE_NAME.test(name) && name.length <= TEMPLATE_NAME_MAX) tenantNames.push(name);
        // Anything else (a path, a URL) is looked up nowhere, and tenant names only among this
        // tenant's templates, by name: the isolate reports "not found" with the asking line.
      }
      for (const t of await findTemplatesByName(db, tenantId, tenantNames)) {
        const key = storedKey(tenantId, t, 'html');
        take(t.name, key, t.name, await compile(key, t.html), next);
      }
      frontier = next;
    }
    return { names, code, labels };
  }

  const render: Renderer = async (tenantId, input, variables) => {
    const { subject, html } = roots(tenantId, input);
    const list = [subject, html].filter((r): r is Root => r !== null);
    if (list.length === 0) return { subject: input.subject, html: input.html };
    const run = () => renderRoots(tenantId, input, variables, subject, html, list);
    return gate ? await gate.run(tenantId, run) : await run();
  };

  async function renderRoots(
    tenantId: string,
    input: Parameters<Renderer>[1],
    variables: Parameters<Renderer>[2],
    subject: Root | null,
    html: Root | null,
    list: Root[],
  ): ReturnType<Renderer> {
    const results = await Promise.all(list.map((r) => compile(r.key, r.source)));
    results.forEach((r, i) => {
      if (!r.ok) throw renderError(list[i].label, r.fault.line, r.fault.message);
    });
    const { names, code, labels } = await resolve(tenantId, list, results);
    const mainLabel = (html ?? subject)!.label;
    const variablesJson = JSON.stringify(variables);
    let out;
    try {
      out = await pool.use((sandbox) => sandbox.render(code, subject?.key ?? null, html?.key ?? null, names, variablesJson));
    } catch (err) {
      if (err instanceof SandboxStopped) throw renderError(mainLabel, null, err.message);
      throw err;
    }
    if (!out.ok) throw faultError(out.fault, labels, mainLabel);
    // A UTF-16 code unit is at most 3 bytes of UTF-8: most output is short enough not to count.
    const chars = out.html.length + out.subject.length;
    const bytes = chars * 3 <= o.maxOutputBytes ? chars : Buffer.byteLength(out.html, 'utf8') + Buffer.byteLength(out.subject, 'utf8');
    if (bytes > o.maxOutputBytes) throw renderError(mainLabel, null, `the rendered message is larger than the limit of ${o.maxOutputBytes} bytes`);
    return {
      // A header: rendered line breaks must not start new header lines.
      subject: subject ? out.subject.replace(/[\r\n]+/g, ' ') : input.subject,
      html: html ? out.html : input.html,
    };
  }

  function faultError(fault: TemplateFault, labels: Map<string, string>, fallback: string): SmtpError {
    return renderError(labels.get(fault.key) ?? fallback, fault.line, fault.message);
  }

  async function check(source: { subject: string; html: string }): Promise<TemplateProblem | null> {
    for (const part of ['subject', 'html'] as const) {
      const text = source[part];
      if (isLiteral(text)) continue;
      const r = await compile(`s:${hash(text)}`, text);
      if (!r.ok) return { part, line: r.fault.line, column: r.fault.column, message: r.fault.message };
      for (const dep of r.dependencies) {
        if (builtins.has(dep.name)) continue;
        if (dep.name.startsWith('layouts/')) {
          return { part, line: dep.line, column: null, message: `there is no built-in layout "${dep.name}" (there are: ${[...builtins.keys()].join(', ')})` };
        }
        if (!TEMPLATE_NAME.test(dep.name) || dep.name.length > TEMPLATE_NAME_MAX) {
          return {
            part,
            line: dep.line,
            column: null,
            message: `"${dep.name}" is not a template name: a template may use this tenant's templates, by name, and the built-in layouts (${[...builtins.keys()].join(', ')})`,
          };
        }
      }
    }
    return null;
  }

  function forget(tenantId: string, templateId: string): void {
    const prefix = `t:${tenantId}:${templateId}:`;
    for (const [key, r] of compiled) {
      if (!key.startsWith(prefix)) continue;
      compiled.delete(key);
      compiledChars -= sizeOf(r);
    }
  }

  return {
    render,
    check,
    forget,
    builtins: [...builtins.keys()].sort(),
    close: () => pool.close(),
  };
}
