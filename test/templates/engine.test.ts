// The template engine against a real PostgreSQL: SPEC §4 rendering (autoescape, layouts,
// includes, imports, the tenant's own templates only), filters, error messages with template
// name and line, save-time compile checks, and cache invalidation when a template changes.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Template } from '../../src/db/schema.ts';
import { createTemplate, deleteTemplate, replaceTemplate } from '../../src/services/templates.service.ts';
import { createTenant } from '../../src/services/tenants.service.ts';
import { SmtpError } from '../../src/smtp/smtp-error.ts';
import { createTemplateEngine, type TemplateEngine } from '../../src/templates/renderer.ts';
import { testContext, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
let engine: TemplateEngine;
let acme: string;
let globex: string;

before(async () => {
  ctx = await testContext();
  engine = createTemplateEngine(ctx.db);
  acme = (await createTenant(ctx.db, { name: 'acme' })).id;
  globex = (await createTenant(ctx.db, { name: 'globex' })).id;
});
after(async () => {
  await engine?.close();
  await ctx?.close();
});

const save = (tenantId: string, name: string, html: string, subject = ''): Promise<Template> =>
  createTemplate(ctx.db, engine, tenantId, { name, html, subject });

/** Renders a stored template the way the render stage does. */
const renderStored = (tenantId: string, t: Template, variables: Record<string, unknown> = {}) =>
  engine.render(tenantId, { subject: t.subject, html: t.html, template: t }, variables);

/** Renders a message's own subject and body (X-Transactional-Variables without a template). */
const renderBody = (tenantId: string, html: string, variables: Record<string, unknown> = {}, subject = '') =>
  engine.render(tenantId, { subject, html }, variables);

async function renderFails(p: Promise<unknown>, pattern: RegExp): Promise<SmtpError> {
  const err = await p.then(
    (v) => assert.fail(`expected a render error, got ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof SmtpError, `an SmtpError, got ${String(err)}`);
  assert.equal(err.responseCode, 554);
  assert.equal(err.enhanced, '5.6.0');
  assert.equal(err.code, 'render_error');
  assert.match(err.text, pattern);
  return err;
}

describe('rendering', () => {
  test('variables in HTML are escaped; the subject is text, not HTML', async () => {
    const t = await save(acme, 'escape', '<p>Hi {{ name }}</p><p>{{ html | safe }}</p>', 'Hi {{ name }}');
    const out = await renderStored(acme, t, { name: 'Tom & <Jerry>', html: '<b>ok</b>' });
    assert.equal(out.html, '<p>Hi Tom &amp; &lt;Jerry&gt;</p><p><b>ok</b></p>');
    assert.equal(out.subject, 'Hi Tom & <Jerry>');
  });

  test('missing variables render empty, `default` and `d` fill them, nested misses are safe', async () => {
    const out = await renderBody(acme, '[{{ missing }}][{{ missing | default("friend") }}][{{ a.b.c }}][{{ gone | d("x") }}][{{ empty | default("y", true) }}]', { empty: '' });
    assert.equal(out.html, '[][friend][][x][y]');
  });

  test('loops, conditionals, macros and set work as in Nunjucks', async () => {
    const html = '{% macro money(v) %}${{ v | number(2) }}{% endmacro %}{% set total = 0 %}<ul>{% for i in items %}<li>{{ loop.index }}. {{ i.name }} {{ money(i.price) }}</li>{% endfor %}</ul>{% if vip %}VIP{% else %}regular{% endif %}';
    const out = await renderBody(acme, html, { items: [{ name: 'a', price: 1 }, { name: 'b', price: 2.5 }], vip: false });
    assert.equal(out.html, '<ul><li>1. a $1.00</li><li>2. b $2.50</li></ul>regular');
  });

  test('loop variables, nested and over objects, as in Nunjucks', async () => {
    const html =
      '{% for r in rows %}{% for c in r %}[{{ c }} {{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}]{% endfor %}{{ loop.index }};{% endfor %}' +
      '{% for k, v in obj %}{{ loop.index }}{{ k }}={{ v }}{% if not loop.last %},{% endif %}{% endfor %}';
    const out = await renderBody(acme, html, { rows: [['a', 'b'], ['c']], obj: { x: 1, y: 2 } });
    assert.equal(out.html, '[a 1/0/2/1/true/false/2][b 2/1/1/0/false/true/2]1;[c 1/0/1/0/true/true/1]2;1x=1,2y=2');
  });

  test('every character Nunjucks escapes is escaped, in variables and by the escape filter', async () => {
    const s = `&"'<>\\ plain é`;
    const out = await renderBody(acme, '{{ s }}|{{ s | escape }}|{{ "a<b" }}|{{ plain }}', { s, plain: 'nothing to escape' });
    assert.equal(out.html, '&amp;&quot;&#39;&lt;&gt;&#92; plain é|&amp;&quot;&#39;&lt;&gt;&#92; plain é|a&lt;b|nothing to escape');
  });

  test('members: by name, by index, by a computed key; methods keep their object', async () => {
    const out = await renderBody(acme, '{{ user.name }}|{{ items[1] }}|{{ user[field] }}|{{ "abc".toUpperCase() }}|{{ user.missing.deeper }}', { user: { name: 'Ann', age: 3 }, items: ['x', 'y'], field: 'age' });
    assert.equal(out.html, 'Ann|y|3|ABC|');
  });

  test('a template extends the built-in transactional layout and fills its blocks', async () => {
    const t = await save(
      acme,
      'receipt',
      '{% extends "layouts/transactional.njk" %}{% block preheader %}Your receipt{% endblock %}{% block content %}<p>Thanks, {{ name }}!</p>{% endblock %}',
      'Receipt for {{ name }}',
    );
    const out = await renderStored(acme, t, { name: 'Ann', brand: 'Acme & Co', subject: 'Receipt' });
    assert.match(out.html, /^<!DOCTYPE html>/);
    assert.match(out.html, /<title>Receipt<\/title>/);
    assert.match(out.html, />Your receipt<\/div>/);
    assert.match(out.html, /<p>Thanks, Ann!<\/p>/);
    assert.match(out.html, /Acme &amp; Co · You receive this message/, 'default footer block, brand escaped');
    assert.equal(out.subject, 'Receipt for Ann');
  });

  test('header and footer blocks can be replaced, super() keeps the parent text; minimal layout too', async () => {
    const t = await save(
      acme,
      'notice',
      '{% extends "layouts/transactional.njk" %}{% block header %}ACME{% endblock %}{% block content %}Body{% endblock %}{% block footer %}Legal. {{ super() }}{% endblock %}',
    );
    const out = await renderStored(acme, t, {});
    assert.match(out.html, /ACME\s*<\/td>/);
    assert.match(out.html, /Legal\. You receive this message/);
    const minimal = await renderBody(acme, '{% extends "layouts/minimal.njk" %}{% block content %}<p>{{ x }}</p>{% endblock %}', { x: 1 });
    assert.match(minimal.html, /<body[^>]*>\n<p>1<\/p>\n<\/body>/);
  });

  test("a tenant's own layout, partial and macro library, several levels deep", async () => {
    await save(acme, 'base', '{% extends "layouts/minimal.njk" %}{% block content %}<main>{% block main %}{% endblock %}</main>{% include "signature" %}{% endblock %}');
    await save(acme, 'signature', '<footer>— {{ sender | default("The team") }}</footer>');
    await save(acme, 'macros', '{% macro button(url, label) %}<a href="{{ url }}">{{ label }}</a>{% endmacro %}');
    const t = await save(acme, 'reset', '{% extends "base" %}{% from "macros" import button %}{% block main %}{{ button(link, "Reset") }}{% endblock %}');
    const out = await renderStored(acme, t, { link: 'https://x.example/r?a=1&b=2' });
    assert.match(out.html, /<main><a href="https:\/\/x\.example\/r\?a=1&amp;b=2">Reset<\/a><\/main><footer>— The team<\/footer>/);
  });

  test('a change to an included template or to the template itself shows at once (cache per version)', async () => {
    await save(acme, 'part', 'v1');
    const t = await save(acme, 'uses-part', '[{% include "part" %}]');
    assert.equal((await renderStored(acme, t)).html, '[v1]');
    await replaceTemplate(ctx.db, engine, acme, 'part', { html: 'v2' });
    assert.equal((await renderStored(acme, t)).html, '[v2]');
    const t2 = await replaceTemplate(ctx.db, engine, acme, 'uses-part', { html: '({% include "part" %})' });
    assert.equal(t2.version, t.version + 1);
    assert.equal((await renderStored(acme, t2)).html, '(v2)');
    await deleteTemplate(ctx.db, engine, acme, 'part');
    await renderFails(renderStored(acme, t2), /^uses-part line 1: template "part" not found/);
  });

  test("names resolve only among the tenant's own templates", async () => {
    const secret = await save(globex, 'secret', 'GLOBEX-SECRET');
    await renderFails(renderBody(acme, '{% include "secret" %}'), /^message body line 1: template "secret" not found/);
    await renderFails(renderBody(acme, `{% include "${secret.id}" %}`), /template ".*" not found/);
    assert.equal((await renderBody(globex, '{% include "secret" %}')).html, 'GLOBEX-SECRET');
  });

  test('a partial included in a loop, many times, is fine', async () => {
    await save(acme, 'row', '<tr><td>{{ item }}</td></tr>');
    const out = await renderBody(acme, '<table>{% for item in items %}{% include "row" %}{% endfor %}</table>', { items: Array.from({ length: 500 }, (_, i) => i) });
    assert.equal(out.html.match(/<tr>/g)?.length, 500);
  });

  test('templates that include or extend each other in a circle fail, they do not hang', async () => {
    await save(acme, 'loop-a', '{% include "loop-b" %}');
    const b = await save(acme, 'loop-b', 'b{% include "loop-a" %}');
    await renderFails(renderStored(acme, b), /^loop-[ab] line 1: templates nest deeper than 50 levels/);
    await save(acme, 'ext-a', '{% extends "ext-b" %}');
    const eb = await save(acme, 'ext-b', '{% extends "ext-a" %}');
    await renderFails(renderStored(acme, eb), /^ext-[ab] line 1: a render may use templates at most 10000 times/);
    await save(acme, 'imp-a', '{% import "imp-b" as b %}a');
    const ib = await save(acme, 'imp-b', '{% import "imp-a" as a %}b');
    await renderFails(renderStored(acme, ib), /templates nest deeper than 50 levels/);
    const self = await save(acme, 'self-loop', '{% for i in range(3) %}{% include "self-loop" %}{% endfor %}');
    await renderFails(renderStored(acme, self), /^self-loop line 1: templates nest deeper/);
  });

  test('a message body without any `{` is returned as it is, without a round trip', async () => {
    const html = '<p>Plain & simple</p>';
    assert.deepEqual(await renderBody(acme, html, { a: 1 }, 'Hello'), { subject: 'Hello', html });
  });

  test('line breaks rendered into a subject become spaces (it is a header)', async () => {
    const out = await renderBody(acme, '<p>x</p>', { s: 'a\r\nBcc: evil@example.com' }, 'Re: {{ s }}');
    assert.equal(out.subject, 'Re: a Bcc: evil@example.com');
  });
});

describe('filters', () => {
  const at = '2026-03-29T00:30:00Z'; // Europe/Berlin switches to summer time at 01:00 UTC that day

  test('date: styles, patterns and time zones', async () => {
    const out = await renderBody(
      acme,
      [
        '{{ at | date }}',
        '{{ at | date("YYYY-MM-DD HH:mm", "Europe/Berlin") }}',
        '{{ later | date("YYYY-MM-DD HH:mm ddd", "Europe/Berlin") }}',
        '{{ at | date("long", "America/New_York") }}',
        '{{ at | date("date-full", "Asia/Tokyo", "de-DE") }}',
        '{{ at | date("D MMMM YYYY [at] h:mm A", "UTC") }}',
        '{{ at | date("iso") }}',
        '{{ 1774744200 | date("YYYY-MM-DD", "UTC") }}',
      ].join('|'),
      { at, later: '2026-03-29T01:30:00Z' },
    );
    assert.equal(
      out.html,
      [
        'Mar 29, 2026, 12:30 AM',
        '2026-03-29 01:30',
        '2026-03-29 03:30 Sun',
        'March 28, 2026 at 8:30 PM',
        'Sonntag, 29. März 2026',
        '29 March 2026 at 12:30 AM',
        '2026-03-29T00:30:00.000Z',
        '2026-03-29',
      ].join('|'),
    );
  });

  test('number and currency follow the locale', async () => {
    const out = await renderBody(acme, '{{ 1234.5 | number }}|{{ 1234.5 | number(2) }}|{{ 1234.5 | number(1, "de-DE") }}|{{ 1234.5 | currency("EUR", "de-DE") }}|{{ "19.9" | currency }}|{{ 5 | currency("JPY", "ja-JP") }}', {});
    assert.equal(out.html, '1,234.5|1,234.50|1.234,5|1.234,50\u00a0€|$19.90|￥5');
  });

  test('a filter called with different arguments in turn formats each call with its own', async () => {
    const out = await renderBody(
      acme,
      '{% for c in ["EUR", "USD", "EUR"] %}{{ 1 | currency(c, loc) }}|{% endfor %}{{ 2 | currency("EUR", "de-DE", 0) }}|{{ 3 | number(1) }}|{{ 3 | number(1, "de-DE") }}|{{ 3 | number }}',
      { loc: 'de-DE' },
    );
    assert.equal(out.html, '1,00\u00a0€|1,00\u00a0$|1,00\u00a0€|2\u00a0€|3.0|3,0|3');
  });

  test('a missing value renders empty through every filter', async () => {
    const out = await renderBody(acme, '[{{ none | date }}][{{ none | number(2) }}][{{ none.x | currency("EUR") }}][{{ none | currency | default("n/a") }}]', {});
    assert.equal(out.html, '[][][][]');
  });

  test('bad input to a filter is a render error naming the line', async () => {
    await renderFails(renderBody(acme, 'a\n{{ "soon" | date }}'), /^message body line 2: date: "soon" is not a date$/);
    await renderFails(renderBody(acme, '{{ at | date("short", "Mars/Base") }}', { at }), /^message body line 1: date: .*time ?zone/i);
    await renderFails(renderBody(acme, '{{ "x" | currency }}'), /currency: "x" is not a number/);
    await renderFails(renderBody(acme, '{{ 1 | currency("euro") }}'), /^message body line 1: currency: "euro" is not a currency code/);
    await renderFails(renderBody(acme, '{{ 1 | number(99) }}'), /^message body line 1: number: decimals must be a whole number from 0 to 20$/);
  });
});

describe('errors name the template, the line and the problem', () => {
  test('a runtime error in the template itself', async () => {
    const t = await save(acme, 'broken-call', '<p>\n{{ name }}\n{{ total() }}</p>');
    const err = await renderFails(renderStored(acme, t, { name: 'x' }), /^broken-call line 3: Unable to call `total`, which is undefined or falsey$/);
    assert.equal(err.message, '5.6.0 broken-call line 3: Unable to call `total`, which is undefined or falsey');
  });

  test('an error inside an included template names that template and its line', async () => {
    await save(acme, 'bad-partial', 'ok\nok\n{{ nope.call() }}');
    const t = await save(acme, 'includes-bad', '{% include "bad-partial" %}');
    await renderFails(renderStored(acme, t), /^bad-partial line 3: Unable to call `nope\["call"\]`/);
  });

  test('an error in the subject says so', async () => {
    const t = await save(acme, 'bad-subject', '<p>ok</p>', 'Hi {{ f() }}');
    await renderFails(renderStored(acme, t), /^bad-subject \(subject\) line 1: Unable to call `f`/);
  });

  test('a message body that does not compile', async () => {
    await renderFails(renderBody(acme, '<p>\n{% if x %}\n</p>'), /^message body line \d+: .*(endif|end of file)/i);
  });
});

describe('save-time compile check', () => {
  const check = (html: string, subject = '') => engine.check({ subject, html });

  test('syntax errors come back with the part and line', async () => {
    assert.equal(await check('<p>{{ ok }}</p>'), null);
    const p = await check('<p>\n\n{% for x in y %}\n', '');
    assert.equal(p?.part, 'html');
    assert.ok(p?.line, 'a line number');
    assert.match(p!.message, /endfor|end of file/i);
    const s = await check('<p>ok</p>', 'Hi {{ name ');
    assert.equal(s?.part, 'subject');
    assert.equal(s?.line, 1);
  });

  test('only literal names of this tenant or the built-in layouts may be extended or included', async () => {
    assert.equal(await check('{% extends "layouts/transactional.njk" %}{% include "partial-1.v2" %}'), null);
    for (const [html, pattern] of [
      ['{% include name %}', /quoted strings/],
      ['{% extends "lay" + "out" %}', /quoted strings/],
      ['\n{% include "/etc/passwd" %}', /"\/etc\/passwd" is not a template name/],
      ['{% include "../secrets" %}', /not a template name/],
      ['{% import "layouts/../../package.json" as p %}', /no built-in layout/],
      ['{% from "layouts/nope.njk" import x %}', /no built-in layout "layouts\/nope\.njk"/],
    ] as const) {
      const p = await check(html);
      assert.ok(p, `refused: ${html}`);
      assert.match(p.message, pattern, html);
    }
    assert.equal((await check('\n{% include "/etc/passwd" %}'))?.line, 2);
  });
});
