// Hostile templates (SPEC §4 "Rendering is sandboxed"). Every escape attempt must end as a render
// error or harmless text — never run code in Node, read the environment or a file, or crash the
// process — and every resource attack must end as a render error within its limit while other
// renders go on.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTemplate } from '../../src/services/templates.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { SmtpError } from '../../src/smtp/smtp-error.ts';
import { createTemplateEngine, type TemplateEngine } from '../../src/templates/renderer.ts';
import { Sandbox, SandboxStopped, type RenderResult } from '../../src/templates/sandbox.ts';
import { closeTemplateEngine, templateEngine } from '../../src/templates/index.ts';
import { testConfig, testContext, type TestContext } from '../helpers/context.ts';

const CANARY = `canary-${process.pid}-${Date.now()}`;
const secretDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-canary-'));
const SECRET_FILE = path.join(secretDir, 'secret.txt');

let ctx: TestContext;
let engine: TemplateEngine;
let acme: string;
let globex: string;
let globexSecretId: string;

before(async () => {
  process.env.TXRELAY_TEMPLATE_CANARY = CANARY;
  fs.writeFileSync(SECRET_FILE, CANARY);
  ctx = await testContext();
  engine = createTemplateEngine(ctx.db, { timeoutMs: 1000, isolates: 2 });
  acme = (await createTenant(ctx.db, { name: 'acme' })).id;
  globex = (await createTenant(ctx.db, { name: 'globex' })).id;
  globexSecretId = (await createTemplate(ctx.db, engine, globex, { name: 'secret', html: `GLOBEX ${CANARY}` })).id;
});
after(async () => {
  await engine?.close();
  await ctx?.close();
  delete process.env.TXRELAY_TEMPLATE_CANARY;
  fs.rmSync(secretDir, { recursive: true, force: true });
});

/** Renders a hostile message body; returns the output or the render error's text. */
async function attempt(html: string, variables: Record<string, unknown> = {}): Promise<{ ok: boolean; text: string }> {
  try {
    const out = await engine.render(acme, { subject: '', html }, variables);
    return { ok: true, text: out.html };
  } catch (err) {
    assert.ok(err instanceof SmtpError, `a render error, not ${String(err)}`);
    assert.equal(err.responseCode, 554);
    assert.equal(err.enhanced, '5.6.0');
    assert.equal(err.code, 'render_error');
    return { ok: false, text: err.text };
  }
}

const readEnv = 'return process.env.TXRELAY_TEMPLATE_CANARY';
const readFile = `return process.getBuiltinModule('fs').readFileSync(${JSON.stringify(SECRET_FILE)}, 'utf8')`;
const mark = 'globalThis.__txrelayPwned = 1; return 1';

describe('escape battery', () => {
  const payloads: [string, string][] = [
    ['range.constructor', `{{ range.constructor("${readEnv}")() }}`],
    ['cycler.constructor', `{{ cycler.constructor("${mark}")() }}`],
    ['joiner constructor chain', `{{ joiner().constructor.constructor("${readEnv}")() }}`],
    ['cycler instance constructor', `{{ cycler(1,2).next.constructor("${readEnv}")() }}`],
    ['string literal', `{{ "".constructor.constructor("${readEnv}")() }}`],
    ['string method', `{{ "abc".toString.constructor("${readEnv}")() }}`],
    ['array literal', `{{ [].constructor.constructor("${readEnv}")() }}`],
    ['array method', `{{ [1].map.constructor("${readEnv}")() }}`],
    ['dict literal', `{{ {}.constructor.constructor("${readEnv}")() }}`],
    ['bracket string concat', `{{ range["constr" + "uctor"]("${readEnv}")() }}`],
    ['bracket via ~ concat', `{{ range["constr" ~ "uctor"]("${readEnv}")() }}`],
    ['bracket via variable', `{{ range[k]("${readEnv}")() }}`],
    ['bracket via set', `{% set k2 = "const" + "ructor" %}{{ cycler[k2]("${readEnv}")() }}`],
    ['__proto__ path', `{{ range.__proto__.constructor("${readEnv}")() }}`],
    ['__proto__ on a string', `{{ "x".__proto__.constructor.constructor("${readEnv}")() }}`],
    ['prototype path', `{{ range.prototype.constructor.constructor("${readEnv}")() }}`],
    ['top-level constructor name', `{{ constructor.constructor("${readEnv}")() }}`],
    ['top-level __proto__ name', `{{ __proto__.constructor.constructor("${readEnv}")() }}`],
    ['__lookupGetter__', `{{ range.__lookupGetter__("__proto__") }}`],
    ['key with a changing toString', `{% set c = cycler("x", "constructor") %}{% macro k() %}{{ c.next() }}{% endmacro %}{{ range[{ "toString": k }]("${readEnv}")() }}`],
    ['process.getBuiltinModule', `{{ process.getBuiltinModule("fs").readFileSync("${SECRET_FILE}", "utf8") }}`],
    ['constructor chain to getBuiltinModule', `{{ range.constructor("${readFile.replace(/"/g, '\\"')}")() }}`],
    ['require', `{{ require("fs").readFileSync("${SECRET_FILE}", "utf8") }}`],
    ['globalThis', `{{ globalThis.process.env.TXRELAY_TEMPLATE_CANARY }}`],
    ['global functions are not in scope', `{{ eval("1") }}{{ Function("return 1")() }}`],
    ['sort attribute walk', `{{ [range] | sort(false, false, "constructor") | first }}`],
    ['sum attribute', `{{ [range] | sum("constructor") }}`],
    ['selectattr', `{{ [range] | selectattr("constructor") | length }}`],
    ['include absolute path', `{% include "${SECRET_FILE}" %}`],
    ['include /etc/passwd', '{% include "/etc/passwd" %}'],
    ['include ../ path', '{% include "../../../../../../etc/passwd" %}'],
    ['include ./ path', '{% include "./package.json" %}'],
    ['extends ../ path', '{% extends "../package.json" %}'],
    ['import through a layout prefix', '{% import "layouts/../../package.json" as p %}{{ p }}'],
    ['include of a file URL', `{% include "file://${SECRET_FILE}" %}`],
    ["another tenant's template by name", '{% include "secret" %}'],
    ["another tenant's template by id", '{% include "GLOBEX_ID" %}'],
    ['dynamic include name', '{% include name %}'],
  ];

  for (const [label, payload] of payloads) {
    test(label, async () => {
      const r = await attempt(payload.replace('GLOBEX_ID', globexSecretId), { k: 'constructor', name: 'secret' });
      assert.ok(!r.text.includes(CANARY), `no canary in ${JSON.stringify(r.text)}`);
      assert.ok(!/root:x:0:0/.test(r.text), 'no /etc/passwd');
      assert.ok(!r.text.includes('"name": "txrelay"'), 'no package.json');
      assert.equal((globalThis as { __txrelayPwned?: number }).__txrelayPwned, undefined);
      // Printing a function shows its source (as Nunjucks does); what matters is that none ran.
      if (r.ok) assert.doesNotMatch(r.text, /\[native code\]|\[object Object\]/, `harmless output: ${r.text}`);
    });
  }

  test('denied names are reported with the line', async () => {
    const r = await attempt('<p>\n{{ range.constructor }}</p>');
    assert.equal(r.text, 'message body line 2: access to "constructor" is not allowed in templates');
  });

  test('inside the isolate, even arbitrary JavaScript finds no Node: no process, require, Function or eval', async () => {
    // Stands in for a template that got past every Nunjucks-level check and runs its own code.
    const sandbox = await Sandbox.create({ timeoutMs: 1000, memoryLimitMb: 32, maxOutputChars: 1e6, maxRange: 100, loadedCodeBudget: 1e6 });
    try {
      const code = `return { root: function (env, context, frame, runtime, cb) {
        var g = (0, function () { return this; })() || {};
        var seen = [typeof process, typeof require, typeof module, typeof Function, typeof eval, typeof console,
          typeof (function () {}).constructor, typeof g.process, typeof fetch, typeof setTimeout, typeof WebAssembly];
        cb(null, seen.join(','));
      } };`;
      const r = await sandbox.render(new Map([['k', code]]), null, 'k', {}, '{}');
      assert.ok(r.ok);
      assert.equal(r.html, 'undefined,undefined,undefined,undefined,undefined,undefined,undefined,undefined,undefined,undefined,undefined');
    } finally {
      sandbox.dispose();
    }
  });
});

describe('resource attacks', () => {
  const NESTED_LOOP = '{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}{% endfor %}{% endfor %}{% endfor %}';

  test('an endless loop is stopped at the time limit while other renders go on', async () => {
    const t0 = Date.now();
    let loopDone = 0;
    const loop = attempt(NESTED_LOOP).then((r) => {
      loopDone = Date.now();
      return r;
    });
    await new Promise((r) => setTimeout(r, 50));
    // Meanwhile: other renders of another tenant, and the event loop itself, carry on.
    const others: number[] = [];
    for (let i = 0; i < 5; i++) {
      const out = await engine.render(globex, { subject: '', html: '<p>{{ n }}</p>' }, { n: i });
      assert.equal(out.html, `<p>${i}</p>`);
      others.push(Date.now());
    }
    const r = await loop;
    assert.equal(r.ok, false);
    assert.equal(r.text, 'message body: rendering took longer than the limit of 1000 ms');
    assert.ok(others.every((at) => at < loopDone), 'the other renders finished while the loop was still running');
    const elapsed = loopDone - t0;
    assert.ok(elapsed >= 900 && elapsed < 3000, `stopped near the limit (${elapsed} ms)`);
    // The isolate that was stopped renders again.
    const again = await Promise.all([1, 2, 3].map((n) => engine.render(acme, { subject: '', html: '{{ n }}' }, { n })));
    assert.deepEqual(again.map((o) => o.html), ['1', '2', '3']);
  });

  test("TXRELAY_TEMPLATE_TIMEOUT_MS is the relay engine's time limit", async () => {
    const short = { ...ctx, config: testConfig({ TXRELAY_TEMPLATE_TIMEOUT_MS: '150' }) };
    try {
      const t0 = Date.now();
      await assert.rejects(templateEngine(short).render(acme, { subject: '', html: NESTED_LOOP }, {}), (err: unknown) => {
        assert.ok(err instanceof SmtpError);
        assert.equal(err.text, 'message body: rendering took longer than the limit of 150 ms');
        return true;
      });
      assert.ok(Date.now() - t0 < 900, 'stopped well before the default 1000 ms');
    } finally {
      await closeTemplateEngine(short);
    }
  });

  test('as many endless loops as isolates only delay others, up to the time limit', async () => {
    const loops = [attempt(NESTED_LOOP), attempt(NESTED_LOOP)];
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    const out = await engine.render(globex, { subject: '', html: '{{ 1 + 1 }}' }, {});
    assert.equal(out.html, '2');
    assert.ok(Date.now() - t0 < 2500, 'served once an isolate was free');
    for (const r of await Promise.all(loops)) assert.match(r.text, /took longer than the limit/);
  });

  test("one tenant's endless loops leave an isolate to the other tenants", async () => {
    // Two isolates: a tenant renders on one at a time, its second loop waits for the first.
    const t0 = Date.now();
    const loops = [attempt(NESTED_LOOP), attempt(NESTED_LOOP)];
    await new Promise((r) => setTimeout(r, 50));
    const t1 = Date.now();
    const out = await engine.render(globex, { subject: '', html: '{{ 2 + 2 }}' }, {});
    assert.equal(out.html, '4');
    assert.ok(Date.now() - t1 < 500, `served at once (${Date.now() - t1} ms)`);
    for (const r of await Promise.all(loops)) assert.match(r.text, /took longer than the limit/);
    assert.ok(Date.now() - t0 >= 1900, 'the loops ran one after the other');
  });

  test('a huge output is refused', async () => {
    const doubling = '{% set s = "xxxxxxxxxx" %}{% for i in range(20) %}{% set s = s + s %}{% endfor %}{{ s }}';
    const r = await attempt(doubling);
    assert.equal(r.ok, false);
    assert.match(r.text, /^message body: the rendered message is larger than the limit of 5242880/);
  });

  test('output beyond what a string can hold is an error, not a crash', async () => {
    const r = await attempt('{% set s = "xxxxxxxxxx" %}{% for i in range(40) %}{% set s = s + s %}{% endfor %}{{ s }}');
    assert.equal(r.ok, false);
    assert.match(r.text, /^message body line \d+: .*(Invalid string length|larger than the limit|memory)/);
  });

  test('a huge range() is refused and the process lives', async () => {
    const r = await attempt('{% for i in range(1000000000) %}x{% endfor %}');
    assert.equal(r.text, 'message body line 1: range() is limited to 10000 items (asked for 1000000000)');
    const neg = await attempt('{{ range(0, -1000000000, -1) | length }}');
    assert.match(neg.text, /range\(\) is limited/);
    assert.equal((await attempt('{{ range(3) | join(",") }}')).text, '0,1,2');
  });

  test('deep macro recursion is an error', async () => {
    const r = await attempt('{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}\n{{ down(0) }}');
    assert.equal(r.ok, false);
    assert.match(r.text, /^message body line \d+: too much recursion/);
  });

  describe('renders sent to an isolate together', () => {
    /** Compiled-template code whose root runs `body` (JavaScript standing in for a template). */
    const code = (body: string) => `return { root: function (env, context, frame, runtime, cb) { ${body} } };`;
    const busy = (ms: number, out: string) => `var end = Date.now() + ${ms}; while (Date.now() < end) {} cb(null, '${out}');`;
    const withSandbox = async (timeoutMs: number, fn: (render: (key: string, body: string) => Promise<RenderResult>) => Promise<void>) => {
      const sandbox = await Sandbox.create({ timeoutMs, memoryLimitMb: 32, maxOutputChars: 1e6, maxRange: 100, loadedCodeBudget: 1e6 });
      try {
        await fn((key, body) => sandbox.render(new Map([[key, code(body)]]), null, key, {}, '{}'));
      } finally {
        sandbox.dispose();
      }
    };

    test('an endless loop among them is stopped after its whole limit; those before keep their results, those after are run again', async () => {
      await withSandbox(200, async (render) => {
        const t0 = Date.now();
        // Asked for in the same turn: one call.
        const [a, loop, b] = await Promise.allSettled([render('a', "cb(null, 'a');"), render('loop', 'for (;;) {}'), render('b', "cb(null, 'b');")]);
        assert.deepEqual(a, { status: 'fulfilled', value: { ok: true, subject: '', html: 'a' } });
        assert.equal(loop.status, 'rejected');
        assert.ok(loop.reason instanceof SandboxStopped && loop.reason.reason === 'timeout', String(loop.reason));
        assert.ok(Date.now() - t0 >= 200, 'the loop had its whole limit');
        assert.deepEqual(b, { status: 'fulfilled', value: { ok: true, subject: '', html: 'b' } });
        assert.deepEqual(await render('c', "cb(null, 'c');"), { ok: true, subject: '', html: 'c' });
      });
    });

    test('each gets its whole time limit, however long those before it took', async () => {
      await withSandbox(300, async (render) => {
        // In one call, the second would have only 200 of its 300 ms: it is started in the next.
        const outs = await Promise.all([render('slow', busy(100, 'slow')), render('slower', busy(200, 'slower'))]);
        assert.deepEqual(outs.map((o) => o.ok && o.html), ['slow', 'slower']);
      });
    });
  });

  test('a template that exhausts its memory limit loses its isolate; the next render gets a fresh one', async () => {
    const bomb = '{% set a = [] %}{% for i in range(10000) %}{% set _ = a.push(range(10000)) %}{% endfor %}{{ a | length }}';
    const r = await attempt(bomb);
    assert.equal(r.ok, false);
    assert.match(r.text, /^message body: (the template exceeded the memory limit|rendering took longer)/);
    const outs = await Promise.all([1, 2, 3, 4].map((n) => engine.render(acme, { subject: 'S{{ n }}', html: '<i>{{ n }}</i>' }, { n })));
    assert.deepEqual(outs.map((o) => [o.subject, o.html]), [1, 2, 3, 4].map((n) => [`S${n}`, `<i>${n}</i>`]));
  });

  test('renders queued behind a memory bomb on the same isolate are run again, not failed', async () => {
    const single = createTemplateEngine(ctx.db, { isolates: 1, pipeline: 4 });
    try {
      await single.render(acme, { subject: '', html: '{{ 0 }}' }, {});
      const bomb = single.render(acme, { subject: '', html: '{% set a = [] %}{% for i in range(10000) %}{% set _ = a.push(range(10000)) %}{% endfor %}' }, {});
      const innocents = [1, 2, 3].map((n) => single.render(globex, { subject: '', html: '<b>{{ n }}</b>' }, { n }));
      await assert.rejects(bomb, /exceeded the memory limit/);
      assert.deepEqual((await Promise.all(innocents)).map((o) => o.html), ['<b>1</b>', '<b>2</b>', '<b>3</b>']);
    } finally {
      await single.close();
    }
  });

  test('filters that build long strings are stopped too', async () => {
    const r = await attempt('{{ "x" | center(100000000) | length }}');
    assert.equal(r.ok, false);
  });

  test('compiling is time-limited too: a huge template is an error, not a stall', async () => {
    const strict = createTemplateEngine(ctx.db, { timeoutMs: 20, isolates: 1 });
    try {
      const source = '<p>{{ a.b | upper }}{% if c %}x{% endif %}</p>\n'.repeat(15000);
      await assert.rejects(strict.render(acme, { subject: '', html: source }, {}), (err: unknown) => {
        assert.ok(err instanceof SmtpError);
        assert.equal(err.text, 'message body: compiling took longer than the limit of 20 ms');
        return true;
      });
      assert.match((await strict.check({ subject: '', html: source }))?.message ?? '', /compiling took longer/);
      assert.equal((await strict.render(acme, { subject: '', html: '{{ 6 * 7 }}' }, {})).html, '42');
    } finally {
      await strict.close();
    }
  });

  test('a source larger than the limit is refused before it is parsed', async () => {
    const r = await attempt('{{ x }}' + 'y'.repeat(1024 * 1024));
    assert.match(r.text, /^message body: the template is larger than the limit of 1048576 bytes/);
  });
});
