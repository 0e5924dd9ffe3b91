// `txrelay template …`: the CLI calls the same service (compile check included) as the API.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTenant } from '../../src/services/tenants.service.ts';
import { runCli, type CliResult } from '../helpers/cli.ts';
import { testDatabase, type TestDatabase } from '../helpers/db.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-tpl-cli-'));

let tdb: TestDatabase;

before(async () => {
  tdb = await testDatabase();
  await createTenant(tdb.db, { name: 'acme' });
});
after(async () => {
  await tdb?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const cli = (...args: string[]): Promise<CliResult> => runCli({ databaseUrl: tdb.url, dataDir: dir }, args);

test('create, render, replace, list, delete; a compile error is refused with its line', async () => {
  const file = path.join(dir, 'welcome.njk');
  fs.writeFileSync(file, '{% extends "layouts/minimal.njk" %}{% block content %}<p>Hi {{ name }}</p>{% endblock %}');
  const created = await cli('template', 'create', 'acme', 'welcome', '--html-file', file, '--subject', 'Welcome {{ name }}', '--json');
  assert.equal(created.code, 0, created.stderr);
  assert.equal(JSON.parse(created.stdout).version, 1);

  const rendered = await cli('template', 'render', 'acme', 'welcome', '--variables', '{"name":"<Ann>"}', '--json');
  assert.equal(rendered.code, 0, rendered.stderr);
  const out = JSON.parse(rendered.stdout);
  assert.equal(out.subject, 'Welcome <Ann>');
  assert.match(out.html, /<p>Hi &lt;Ann&gt;<\/p>/);

  fs.writeFileSync(file, '<p>\n{% if x %}</p>');
  const bad = await cli('template', 'replace', 'acme', 'welcome', '--html-file', file);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /the template does not compile: html line 2: /);

  fs.writeFileSync(file, '<p>v2 {{ name }}</p>');
  const replaced = await cli('template', 'replace', 'acme', 'welcome', '--html-file', file);
  assert.equal(replaced.code, 0, replaced.stderr);
  assert.match(replaced.stdout, /template welcome saved \(version 2/);

  assert.match((await cli('template', 'list', 'acme')).stdout, /^welcome\s+2\s/m);
  assert.equal((await cli('template', 'delete', 'acme', 'welcome')).code, 0);
  assert.equal((await cli('template', 'list', 'acme')).stdout.trim(), 'no templates for acme');
  assert.equal((await cli('template', 'bogus', 'acme')).code, 2);
});
