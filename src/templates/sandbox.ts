// The sandbox: V8 isolates (isolated-vm), each with Nunjucks' browser build and our runtime
// (isolate/runtime.js) loaded once. Template text is compiled and rendered only in here, under a
// time limit per call and a memory limit per isolate; strings go in and come out, and no
// reference to anything of Node's is ever handed to an isolate.
//
// Why an isolate and not a worker_thread or node:vm: Nunjucks 3.2.4 lets a template reach the
// Function constructor (`{{ range.constructor("return process")() }}`); in node:vm or a worker
// that is Node itself. In an isolate it is a bare V8 with no process, require or I/O, an endless
// loop is stopped by the call's timeout, and an isolate that exhausts its memory limit is
// disposed (and replaced here) while the process lives.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import ivm from 'isolated-vm';

const require = createRequire(import.meta.url);
// The unminified build: the runtime hooks compiler methods the minified one renames.
const NUNJUCKS = fs.readFileSync(require.resolve('nunjucks/browser/nunjucks.js'), 'utf8');
const RUNTIME = fs.readFileSync(new URL('./isolate/runtime.js', import.meta.url), 'utf8').trim().replace(/;$/, '');
const FILTERS = fs.readFileSync(new URL('./isolate/filters.js', import.meta.url), 'utf8').trim().replace(/;$/, '');

export interface SandboxLimits {
  /** Per compile or render call; the clock starts when the call starts running. */
  timeoutMs: number;
  /** Per isolate; an isolate that exceeds it is disposed and replaced. */
  memoryLimitMb: number;
  /** Rendered subject + HTML, in UTF-16 code units inside the isolate (bytes are checked outside). */
  maxOutputChars: number;
  /** Items one `range()` call may produce. */
  maxRange: number;
  /** Compiled code kept loaded per isolate, in characters; least recently used goes first. */
  loadedCodeBudget: number;
}

/** Where it was and what went wrong, as the isolate reports it. */
export interface TemplateFault {
  key: string;
  line: number | null;
  column: number | null;
  message: string;
}

export interface Dependency {
  name: string;
  line: number;
}

export type CompileResult = { ok: true; code: string; dependencies: Dependency[] } | { ok: false; fault: TemplateFault };
export type RenderResult = { ok: true; subject: string; html: string } | { ok: false; fault: TemplateFault };

/** The call was stopped: it ran out of time, or the isolate ran out of memory and is gone. */
export class SandboxStopped extends Error {
  readonly reason: 'timeout' | 'memory';

  constructor(reason: 'timeout' | 'memory', message: string) {
    super(message);
    this.name = 'SandboxStopped';
    this.reason = reason;
  }
}

type Fn = ivm.Reference<(...args: (string | number | null)[]) => unknown>;
interface SandboxFns {
  compile: Fn;
  run: Fn;
  salvage: Fn;
}

/** Splits the isolate's "1<length>:<first><second>" | "0<fault JSON>" answers. */
function answer(s: string): { ok: true; first: string; second: string } | { ok: false; fault: TemplateFault } {
  if (s[0] !== '1') return { ok: false, fault: JSON.parse(s.slice(1)) as TemplateFault };
  const colon = s.indexOf(':');
  const end = colon + 1 + Number(s.slice(1, colon));
  return { ok: true, first: s.slice(colon + 1, end), second: s.slice(end) };
}

/**
 * A render in a batch call; renders start only this long after the call did (see runtime.js
 * run()), and the call's time limit is extended by as much, so that each gets its full limit.
 */
const START_WITHIN_MS = 25;

/** A render waiting for its batch: its part of the batch JSON and what to do with its answer. */
interface Job {
  item: string;
  resolve: (answer: string) => void;
  reject: (err: unknown) => void;
}

/** What the isolate's salvage() returns after a call was stopped. */
interface Salvage {
  results: string[];
  /** The batch's code was loaded: it stopped in a render, not before. */
  ready: boolean;
}

/**
 * One isolate. Renders are sent to it in batches, one call at a time: those that arrive while a
 * call runs go together in the next one, so concurrent renders share the cost of handing a call
 * to the isolate's thread and back (about as much as a render). Compiles are calls of their
 * own. Keys a waiting render needs are pinned so no other caller's eviction drops them first.
 */
export class Sandbox {
  readonly #isolate: ivm.Isolate;
  readonly #limits: SandboxLimits;
  readonly #fns: SandboxFns;
  /** Keys loaded in this isolate (or to be loaded by the next batch) → code length, least recently used first. */
  readonly #loaded = new Map<string, number>();
  readonly #pins = new Map<string, number>();
  #loadedChars = 0;
  /** Code the next batch loads before it renders. */
  #define: [string, string][] = [];
  /** Keys the running batch loads: not loaded for sure until it did. */
  #defining = new Set<string>();
  #queue: Job[] = [];
  #running = false;

  private constructor(isolate: ivm.Isolate, limits: SandboxLimits, fns: SandboxFns) {
    this.#isolate = isolate;
    this.#limits = limits;
    this.#fns = fns;
  }

  static async create(limits: SandboxLimits, onCatastrophicError?: (message: string) => void): Promise<Sandbox> {
    const isolate = new ivm.Isolate({ memoryLimit: limits.memoryLimitMb, onCatastrophicError });
    try {
      const context = await isolate.createContext();
      await context.eval(NUNJUCKS, { timeout: 10_000 });
      const inner = { maxOutputChars: limits.maxOutputChars, maxRange: limits.maxRange };
      const api: ivm.Reference = await context.eval(`(${RUNTIME})(nunjucks, ${JSON.stringify(inner)}, ${FILTERS})`, { timeout: 10_000, reference: true });
      const fn = async (name: string): Promise<Fn> => (await api.get(name, { reference: true })) as Fn;
      const fns = { compile: await fn('compile'), run: await fn('run'), salvage: await fn('salvage') };
      api.release();
      return new Sandbox(isolate, limits, fns);
    } catch (err) {
      if (!isolate.isDisposed) isolate.dispose();
      throw err;
    }
  }

  get alive(): boolean {
    return !this.#isolate.isDisposed;
  }

  dispose(): void {
    if (!this.#isolate.isDisposed) this.#isolate.dispose();
  }

  /** Why a call failed: stopped for time or memory (SandboxStopped), or the error itself. */
  #failure(err: unknown): unknown {
    if (this.#isolate.isDisposed) return new SandboxStopped('memory', 'the template exceeded the memory limit of its sandbox');
    if (err instanceof Error && /timed out/i.test(err.message)) return this.#timeout();
    return err;
  }

  #timeout(): SandboxStopped {
    return new SandboxStopped('timeout', `rendering took longer than the limit of ${this.#limits.timeoutMs} ms`);
  }

  /** Compiles (and keeps loaded) one template source under its cache key. */
  async compile(key: string, source: string): Promise<CompileResult> {
    let s: string;
    try {
      s = (await this.#fns.compile.apply(undefined, [key, source], { timeout: this.#limits.timeoutMs })) as string;
    } catch (err) {
      throw this.#failure(err);
    }
    const r = answer(s);
    if (!r.ok) return r;
    this.#remember(key, r.first.length);
    return { ok: true, code: r.first, dependencies: JSON.parse(r.second) as Dependency[] };
  }

  /**
   * Loads what is missing of `code` (with the batch), renders, and lets the keys go. `names`
   * maps every name a template may use (extends/include/import) to its key.
   */
  async render(
    code: Map<string, string>,
    subjectKey: string | null,
    htmlKey: string | null,
    names: Record<string, string>,
    variablesJson: string,
  ): Promise<RenderResult> {
    for (const key of code.keys()) this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
    try {
      for (const [key, c] of code) {
        const size = this.#loaded.get(key);
        if (size === undefined || (this.#defining.has(key) && !this.#define.some(([k]) => k === key))) this.#define.push([key, c]);
        this.#remember(key, size ?? c.length);
      }
      const item = `[${JSON.stringify(subjectKey)},${JSON.stringify(htmlKey)},${JSON.stringify(names)},${variablesJson}]`;
      const s = await new Promise<string>((resolve, reject) => {
        this.#queue.push({ item, resolve, reject });
        // From a microtask: renders asked for in the same turn go together, and isolated-vm
        // captures the calling stack of every call, which costs less the shallower it is.
        if (this.#queue.length === 1) queueMicrotask(() => this.#pump());
      });
      const r = answer(s);
      return r.ok ? { ok: true, subject: r.first, html: r.second } : r;
    } finally {
      for (const key of code.keys()) {
        const n = this.#pins.get(key)! - 1;
        if (n === 0) this.#pins.delete(key);
        else this.#pins.set(key, n);
      }
    }
  }

  /** Sends what waits as one call, unless a call is running (then when it is done). */
  #pump(): void {
    if (this.#running || this.#queue.length === 0) return;
    const jobs = this.#queue;
    const define = this.#define;
    this.#queue = [];
    this.#define = [];
    this.#defining = new Set(define.map(([key]) => key));
    this.#running = true;
    this.#run(jobs, define, this.#evict())
      .catch((err: unknown) => {
        for (const job of jobs) job.reject(err);
      })
      .finally(() => {
        this.#running = false;
        this.#defining.clear();
        this.#pump();
      });
  }

  async #run(jobs: Job[], define: [string, string][], drop: string[]): Promise<void> {
    const { timeoutMs } = this.#limits;
    const startWithin = Math.min(START_WITHIN_MS, timeoutMs);
    const batch = `{"drop":${JSON.stringify(drop)},"define":${JSON.stringify(define)},"items":[${jobs.map((j) => j.item).join(',')}]}`;
    let results: string[];
    try {
      const timeout = jobs.length > 1 ? timeoutMs + startWithin : timeoutMs;
      results = (await this.#fns.run.apply(undefined, [batch, startWithin], { timeout, result: { copy: true } })) as string[];
    } catch (err) {
      const failure = this.#failure(err);
      const state = failure instanceof SandboxStopped && failure.reason === 'timeout' ? await this.#salvage() : null;
      if (!state?.ready) {
        // Nothing rendered, and the code may not be loaded (renders waiting meanwhile that need
        // it load it again).
        for (const [key] of define) if (!this.#define.some(([k]) => k === key)) this.#forget(key);
        for (const job of jobs) job.reject(failure);
        return;
      }
      // The render after the last one done was running when time ran out.
      results = state.results;
      jobs[results.length]?.reject(failure);
      jobs.splice(results.length, 1);
    }
    results.forEach((r, i) => jobs[i].resolve(r));
    // Not started (time to start them, or the output budget, ran out): first in the next call.
    if (results.length < jobs.length) this.#queue.unshift(...jobs.slice(results.length));
  }

  async #salvage(): Promise<Salvage | null> {
    try {
      return (await this.#fns.salvage.apply(undefined, [], { timeout: this.#limits.timeoutMs, result: { copy: true } })) as Salvage | null;
    } catch {
      return null;
    }
  }

  /** Forgets the least recently used unpinned keys while over the budget; returns them. */
  #evict(): string[] {
    const evict: string[] = [];
    if (this.#loadedChars <= this.#limits.loadedCodeBudget) return evict;
    for (const key of this.#loaded.keys()) {
      if (this.#loadedChars <= this.#limits.loadedCodeBudget) break;
      if (this.#pins.has(key)) continue;
      evict.push(key);
      this.#forget(key);
    }
    return evict;
  }

  #remember(key: string, size: number): void {
    this.#forget(key);
    this.#loaded.set(key, size);
    this.#loadedChars += size;
  }

  #forget(key: string): void {
    const size = this.#loaded.get(key);
    if (size === undefined) return;
    this.#loaded.delete(key);
    this.#loadedChars -= size;
  }
}

/** A call counts as stuck (a runaway template, a huge compile) after this long. */
const STALL_MS = 25;
/** See SandboxPool.close. */
const LOSS_SETTLE_MS = 250;

interface Slot {
  sandbox: Sandbox;
  /** Start times of the calls on it. */
  inflight: Set<{ since: number }>;
  /** A call that must run alone is on it: nothing is queued behind. */
  alone: boolean;
}

interface Claim {
  slot: Slot;
  token: { since: number };
}

/**
 * A few isolates. Calls run on isolated-vm's threads, so the event loop keeps serving while a
 * template runs. A call goes to an idle isolate, else a new one (up to `size`), else is queued
 * on the least busy isolate that is not stuck (up to `pipeline` calls each; renders queued on an
 * isolate go to it as one batch, sharing the cost of handing a call to another thread). A
 * template spinning until its time limit therefore holds up only the calls queued behind it in
 * its first few milliseconds; one that blows the memory limit fails those too, and they are run
 * again, each alone on an isolate.
 */
export class SandboxPool {
  readonly #limits: SandboxLimits;
  readonly #size: number;
  readonly #pipeline: number;
  readonly #onCatastrophicError?: (message: string) => void;
  readonly #slots = new Set<Slot>();
  readonly #waiters: { alone: boolean; resolve: (claim: Claim) => void; reject: (e: unknown) => void }[] = [];
  #starting = 0;
  #closed = false;
  #lastLoss = -Infinity;

  constructor(limits: SandboxLimits, size: number, pipeline = 4, onCatastrophicError?: (message: string) => void) {
    this.#limits = limits;
    this.#size = Math.max(1, size);
    this.#pipeline = Math.max(1, pipeline);
    this.#onCatastrophicError = onCatastrophicError;
  }

  /**
   * Runs fn with a sandbox. When the isolate is lost to the memory limit, every call queued on it
   * fails too; those are run once more on a fresh isolate, so only the template that blew the
   * limit gets the error.
   */
  async use<T>(fn: (sandbox: Sandbox) => Promise<T>): Promise<T> {
    try {
      return await this.#useOnce(fn, false);
    } catch (err) {
      // Alone on its isolate this time: if it was the culprit, it takes nobody else with it.
      if (err instanceof SandboxStopped && err.reason === 'memory') return await this.#useOnce(fn, true);
      throw err;
    }
  }

  /**
   * Disposes every isolate. isolated-vm tears an isolate lost to its memory limit down on another
   * thread; a process that exits in the next few milliseconds can crash (SIGSEGV) on it, so
   * closing waits that long after the last such loss.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const slot of this.#slots) slot.sandbox.dispose();
    this.#slots.clear();
    for (const w of this.#waiters.splice(0)) w.reject(new Error('the template sandbox is closed'));
    const wait = this.#lastLoss + LOSS_SETTLE_MS - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }

  async #useOnce<T>(fn: (sandbox: Sandbox) => Promise<T>, alone: boolean): Promise<T> {
    const { slot, token } = await this.#acquire(alone);
    try {
      return await fn(slot.sandbox);
    } finally {
      slot.inflight.delete(token);
      slot.alone = false;
      if (this.#closed) slot.sandbox.dispose();
      else if (!slot.sandbox.alive) this.#lastLoss = performance.now();
      if (!slot.sandbox.alive) this.#slots.delete(slot);
      this.#drain();
    }
  }

  /** Claims a place on the slot at once, so the next pick sees it busier. */
  #take(slot: Slot, alone: boolean): Claim {
    const token = { since: performance.now() };
    slot.inflight.add(token);
    slot.alone = alone;
    return { slot, token };
  }

  /** The least busy usable slot, preferring an idle one; only an idle one for a call alone. */
  #pick(alone: boolean): Slot | undefined {
    const now = performance.now();
    let best: Slot | undefined;
    for (const slot of this.#slots) {
      if (!slot.sandbox.alive || slot.alone) continue;
      const n = slot.inflight.size;
      if (n === 0) return slot;
      if (alone || n >= this.#pipeline) continue;
      let oldest = now;
      for (const t of slot.inflight) oldest = Math.min(oldest, t.since);
      if (now - oldest > STALL_MS) continue;
      if (!best || n < best.inflight.size) best = slot;
    }
    return best;
  }

  #canGrow(): boolean {
    return this.#slots.size + this.#starting < this.#size;
  }

  async #acquire(alone: boolean): Promise<Claim> {
    if (this.#closed) throw new Error('the template sandbox is closed');
    const slot = this.#pick(alone);
    if (slot && slot.inflight.size === 0) return this.#take(slot, alone);
    if (this.#canGrow()) return await this.#start(alone);
    if (slot) return this.#take(slot, alone);
    return await new Promise<Claim>((resolve, reject) => this.#waiters.push({ alone, resolve, reject }));
  }

  /** A new isolate, claimed for the caller in the same step it joins the pool. */
  async #start(alone: boolean): Promise<Claim> {
    this.#starting++;
    let sandbox: Sandbox;
    try {
      sandbox = await Sandbox.create(this.#limits, this.#onCatastrophicError);
    } finally {
      this.#starting--;
    }
    if (this.#closed) {
      sandbox.dispose();
      throw new Error('the template sandbox is closed');
    }
    const slot: Slot = { sandbox, inflight: new Set(), alone: false };
    this.#slots.add(slot);
    return this.#take(slot, alone);
  }

  /** Hands freed capacity to waiting calls, first come first served. */
  #drain(): void {
    while (this.#waiters.length) {
      const waiter = this.#waiters[0];
      const slot = this.#pick(waiter.alone);
      if (slot) {
        this.#waiters.shift();
        waiter.resolve(this.#take(slot, waiter.alone));
      } else if (this.#canGrow()) {
        this.#waiters.shift();
        this.#start(waiter.alone).then(waiter.resolve, waiter.reject);
      } else {
        return;
      }
    }
  }
}
