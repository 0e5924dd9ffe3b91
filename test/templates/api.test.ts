// The admin API for templates (SPEC §7) over real HTTP on port 0: create, read, replace, delete,
// preview; compile errors refused at save with the part and line; tenants kept apart.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createApiApp } from '../../src/api/app.ts';
import { closeTemplateEngine } from '../../src/templates/index.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { callJson, type Reply } from '../helpers/http.ts';


let ctx: TestContext;
let server: http.Server;
let base: string;

const call = (method: string, path: string, body?: unknown): Promise<Reply> => callJson(base, method, path, { body });

function assertError(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body?.error?.code, code, r.text);
}

before(async () => {
  ctx = await testContext();
  server = createApiApp(ctx).listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const name of ['acme', 'globex']) assert.equal((await call('POST', '/admin/tenants', { name })).status, 201);
});

after(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  if (ctx) await closeTemplateEngine(ctx);
  await ctx?.close();
});

const T = '/admin/tenants/acme/templates';

describe('templates API', () => {
  test('create, list, read by name and id, replace (version goes up), delete', async () => {
    const created = await call('POST', T, {
      name: 'welcome',
      subject: 'Welcome, {{ name }}',
      html: '{% extends "layouts/transactional.njk" %}{% block content %}<p>Hi {{ name }}</p>{% endblock %}',
    });
    assert.equal(created.status, 201, created.text);
    const t = created.body;
    assert.deepEqual(Object.keys(t).sort(), ['created_at', 'html', 'id', 'name', 'subject', 'updated_at', 'version']);
    assert.equal(t.name, 'welcome');
    assert.equal(t.version, 1);

    const list = await call('GET', T);
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.items.map((i: { name: string }) => i.name), ['welcome']);
    assert.equal(list.body.next_cursor, null);

    assert.equal((await call('GET', `${T}/welcome`)).body.id, t.id);
    assert.equal((await call('GET', `${T}/${t.id}`)).body.name, 'welcome');

    const replaced = await call('PUT', `${T}/welcome`, { subject: 'Hello {{ name }}', html: '<p>v2 {{ name }}</p>' });
    assert.equal(replaced.status, 200, replaced.text);
    assert.equal(replaced.body.version, 2);
    assert.equal(replaced.body.name, 'welcome', 'the name is kept when left out');
    assert.equal(replaced.body.subject, 'Hello {{ name }}');
    assert.ok(new Date(replaced.body.updated_at) >= new Date(t.updated_at));

    const renamed = await call('PUT', `${T}/${t.id}`, { name: 'welcome-v2', html: '<p>v3</p>' });
    assert.equal(renamed.body.name, 'welcome-v2');
    assert.equal(renamed.body.subject, '', 'PUT replaces: a subject left out is empty');
    assert.equal(renamed.body.version, 3);

    assert.equal((await call('DELETE', `${T}/welcome-v2`)).status, 204);
    assertError(await call('GET', `${T}/welcome-v2`), 404, 'not_found');
    assertError(await call('DELETE', `${T}/welcome-v2`), 404, 'not_found');
  });

  test('a template that does not compile is refused with the part, line and error', async () => {
    const r = await call('POST', T, { name: 'broken', html: '<p>\n{{ name }}\n{% if x %}\n<b>{{ a b }}</b>\n{% endif %}' });
    assertError(r, 422, 'template_error');
    assert.match(r.body.error.message, /^the template does not compile: html line 4: /);
    const [field] = r.body.error.details.fields;
    assert.equal(field.path, 'html');
    assert.equal(field.line, 4);
    assert.equal(typeof field.column, 'number');

    const s = await call('POST', T, { name: 'broken', subject: 'Hi {{ name', html: '<p>ok</p>' });
    assertError(s, 422, 'template_error');
    assert.equal(s.body.error.details.fields[0].path, 'subject');
    assert.equal(s.body.error.details.fields[0].line, 1);

    const path = await call('POST', T, { name: 'broken', html: '{% include "/etc/passwd" %}' });
    assertError(path, 422, 'template_error');
    assert.match(path.body.error.message, /"\/etc\/passwd" is not a template name/);

    await call('POST', T, { name: 'fine', html: '<p>ok</p>' });
    const put = await call('PUT', `${T}/fine`, { html: '{% for %}' });
    assertError(put, 422, 'template_error');
    assert.equal((await call('GET', `${T}/fine`)).body.version, 1, 'a refused replacement changes nothing');
    assertError(await call('GET', `${T}/broken`), 404, 'not_found');
  });

  test('names: validated, unique per tenant, free across tenants', async () => {
    assertError(await call('POST', T, { name: '../x', html: 'x' }), 422, 'validation_error');
    assertError(await call('POST', T, { name: 'layouts/mine.njk', html: 'x' }), 422, 'validation_error');
    assertError(await call('POST', T, { name: 'x', html: '' }), 422, 'validation_error');
    assertError(await call('POST', T, { name: 'x' }), 422, 'validation_error');
    assert.equal((await call('POST', T, { name: 'dup', html: 'a' })).status, 201);
    assertError(await call('POST', T, { name: 'dup', html: 'b' }), 409, 'conflict');
    assert.equal((await call('POST', '/admin/tenants/globex/templates', { name: 'dup', html: 'globex' })).status, 201);
  });

  test("one tenant cannot read, change or render another's template, even by id", async () => {
    const g = await call('POST', '/admin/tenants/globex/templates', { name: 'private', html: 'GLOBEX ONLY' });
    assertError(await call('GET', `${T}/${g.body.id}`), 404, 'not_found');
    assertError(await call('PUT', `${T}/${g.body.id}`, { html: 'mine now' }), 404, 'not_found');
    assertError(await call('DELETE', `${T}/${g.body.id}`), 404, 'not_found');
    assertError(await call('POST', `${T}/${g.body.id}/render`, {}), 404, 'not_found');
    assert.equal((await call('GET', `/admin/tenants/globex/templates/${g.body.id}`)).body.html, 'GLOBEX ONLY');
  });

  test('preview renders with variables, exactly as a message would be', async () => {
    await call('POST', T, { name: 'order', subject: 'Order #{{ order.id }}', html: '{% extends "layouts/minimal.njk" %}{% block content %}<p>{{ order.total | currency("EUR", "de-DE") }} for {{ name }}</p>{% endblock %}' });
    const r = await call('POST', `${T}/order/render`, { variables: { order: { id: 42, total: 19.9 }, name: '<Ann>' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.subject, 'Order #42');
    assert.match(r.body.html, /<p>19,90\u00a0€ for &lt;Ann&gt;<\/p>/);
    const empty = await call('POST', `${T}/order/render`);
    assert.equal(empty.status, 200, empty.text);
    assert.equal(empty.body.subject, 'Order #');
  });

  test('a render error is a 422 with the same text as the SMTP reply', async () => {
    await call('POST', T, { name: 'fails', html: '<p>\n{{ total(1) }}</p>' });
    const r = await call('POST', `${T}/fails/render`, { variables: {} });
    assertError(r, 422, 'render_error');
    assert.equal(r.body.error.message, 'fails line 2: Unable to call `total`, which is undefined or falsey');
    await call('POST', T, { name: 'spins', html: '{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}{% endfor %}{% endfor %}{% endfor %}' });
    const spin = await call('POST', `${T}/spins/render`, { variables: {} });
    assertError(spin, 422, 'render_error');
    assert.match(spin.body.error.message, /^spins: rendering took longer than the limit of 1000 ms$/);
  });

  test('preview variables: an object, within the X-Transactional-Variables limits', async () => {
    assertError(await call('POST', `${T}/order/render`, { variables: [1] }), 422, 'validation_error');
    const big = await call('POST', `${T}/order/render`, { variables: { x: 'y'.repeat(70 * 1024) } });
    assertError(big, 422, 'validation_error');
    assert.match(big.body.error.message, /^variables is larger than 64 KiB/);
  });
});
