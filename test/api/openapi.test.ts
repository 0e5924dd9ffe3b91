// The OpenAPI document: valid OpenAPI 3.1, and listing exactly the routes the app serves (read
// from Express's own router, so a new endpoint without documentation fails here).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import type express from 'express';
import { createApiApp } from '../../src/api/app.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { callJson } from '../helpers/http.ts';

interface Layer {
  rawPath?: string;
  route?: { path: string; methods: Record<string, boolean> };
  handle: { stack?: Layer[] };
}

/** Every "METHOD /path" the app routes, with Express's `:param` written as OpenAPI's `{param}`. */
function servedRoutes(app: express.Express): string[] {
  const out: string[] = [];
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        for (const method of Object.keys(layer.route.methods)) out.push(`${method.toUpperCase()} ${join(prefix, layer.route.path)}`);
      } else if (layer.handle.stack) {
        walk(layer.handle.stack, join(prefix, layer.rawPath ?? ''));
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack, '');
  return [...new Set(out)].sort();
}

function join(prefix: string, path: string): string {
  const full = `${prefix}${path === '/' ? '' : path}`.replace(/:(\w+)/g, '{$1}');
  return full === '' ? '/' : full;
}

describe('OpenAPI document', () => {
  let ctx: TestContext;
  let app: express.Express;
  let server: http.Server;
  let base: string;
  let doc: any;

  before(async () => {
    ctx = await testContext();
    app = createApiApp(ctx);
    server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const r = await callJson(base, 'GET', '/openapi.json', { token: null });
    assert.equal(r.status, 200, r.text);
    doc = r.body;
  });

  after(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await ctx?.close();
  });

  test('is valid OpenAPI 3.1', async () => {
    assert.equal(doc.openapi, '3.1.0');
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.ok(result.valid, JSON.stringify(result.errors, null, 2)?.slice(0, 3000));
  });

  test('lists every route the app serves, and nothing else', () => {
    const served = servedRoutes(app);
    const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    assert.ok(served.length > 40, `the router walk found only ${served.length} routes`);
    assert.deepEqual(documented, served);
  });

  test('request schemas are the validating zod schemas: a documented constraint is enforced', async () => {
    const body = doc.paths['/admin/tenants'].post.requestBody.content['application/json'].schema;
    assert.deepEqual(body.required, ['name']);
    assert.equal(body.properties.name.maxLength, 100);
    const tooLong = await callJson(base, 'POST', '/admin/tenants', { body: { name: 'x'.repeat(101) } });
    assert.equal(tooLong.status, 422);

    const send = doc.paths['/v1/messages'].post;
    assert.deepEqual(send.security, [{ apiKey: [] }]);
    assert.ok(send.requestBody.content['application/json'].schema.required.includes('to'));
    assert.equal(send.responses['202'].content['application/json'].schema.required[0], 'id');

    // Route creation documents each transport's own config schema.
    const route = doc.paths['/admin/tenants/{tenant}/routes'].post.requestBody.content['application/json'].schema;
    const smtp = route.anyOf.find((v: any) => v.properties.transport.const === 'smtp');
    assert.ok(smtp.properties.config.properties.host, JSON.stringify(smtp.properties.config));
  });

  test('/docs renders every operation as a readable page', async () => {
    const res = await fetch(`${base}/docs`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const html = await res.text();
    for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(methods)) {
        assert.ok(html.includes(`${method.toUpperCase()}</span> <code>${path}</code>`), `${method} ${path} missing from /docs`);
      }
    }
    assert.doesNotMatch(html, /<script/i);
  });
});
