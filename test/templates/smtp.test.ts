// SPEC §4 template rules end to end: nodemailer → SMTP (port 0) → the pipeline with the template
// engine as its renderer → PostgreSQL. Test keys capture, so the stored MIME is what would be
// delivered.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { simpleParser, type ParsedMail } from 'mailparser';
import nodemailer from 'nodemailer';
import { findMessage } from '../../src/db/messages.repository.ts';
import { createPipeline } from '../../src/pipeline/index.ts';
import { createTemplate } from '../../src/services/templates.service.ts';
import { startSmtp, type SmtpListeners } from '../../src/smtp/server.ts';
import { loadTls } from '../../src/smtp/tls.ts';
import { createTemplateEngine, type TemplateEngine } from '../../src/templates/renderer.ts';
import { testContext, type TestContext } from '../helpers/context.ts';
import { sendForReply, setupTenant, type TenantSetup } from '../helpers/relay.ts';

const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/;
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'txrelay-tpl-smtp-'));

let ctx: TestContext;
let engine: TemplateEngine;
let smtp: SmtpListeners;
let acme: TenantSetup;

before(async () => {
  ctx = await testContext({ TXRELAY_DATA_DIR: dataDir });
  engine = createTemplateEngine(ctx.db);
  smtp = await startSmtp(ctx, createPipeline(ctx, engine.render), await loadTls(ctx.config));
  acme = await setupTenant(ctx, 'acme', 'acme.example');
  const save = (name: string, subject: string, html: string) => createTemplate(ctx.db, engine, acme.tenantId, { name, subject, html });
  await save('welcome', 'Welcome, {{ name }}!', '{% extends "layouts/transactional.njk" %}{% block content %}<p>Hello {{ name }} from {{ city }}</p><p>{{ note }}</p>{% endblock %}');
  await save('no-subject', '', '<p>Hi {{ name }}</p>');
  await save('broken', 'x', '<p>\n{{ missing_fn() }}</p>');
  await save('spins', 'x', '{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}{% endfor %}{% endfor %}{% endfor %}');
});

after(async () => {
  await smtp?.close(2000);
  await engine?.close();
  await ctx?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

/** Sends with nodemailer; the server's reply text, or the error's response. */
async function send(mail: Record<string, unknown>): Promise<string> {
  return await sendForReply(smtp.ports[0], acme.testKey, { from: 'App <app@acme.example>', to: 'user@dest.example', subject: 'Original subject', html: '<p>Original body</p>', ...mail });
}

async function delivered(response: string): Promise<ParsedMail> {
  const m = QUEUED.exec(response.trim());
  assert.ok(m, `expected 250 queued, got ${JSON.stringify(response)}`);
  const msg = await findMessage(ctx.db, m[1]);
  assert.ok(msg, 'message stored');
  return await simpleParser(msg.mime);
}

describe('SPEC §4 templates over SMTP', () => {
  test('X-Transactional-Template renders subject and HTML; the message body is ignored', async () => {
    const mail = await delivered(
      await send({
        text: 'text part that must vanish',
        headers: { 'X-Transactional-Template': 'welcome', 'X-Transactional-Variables': JSON.stringify({ name: 'Ann <admin>', city: 'Oslo', note: '' }) },
      }),
    );
    assert.equal(mail.subject, 'Welcome, Ann <admin>!');
    const html = String(mail.html);
    assert.match(html, /<p>Hello Ann &lt;admin&gt; from Oslo<\/p>/, 'autoescaped');
    assert.match(html, /You receive this message/, 'layout footer');
    assert.ok(!html.includes('Original body'));
    assert.ok(!mail.headers.has('x-transactional-template') && !mail.headers.has('x-transactional-variables'));
  });

  test('folded, RFC 2047-encoded non-ASCII variables from nodemailer are decoded first', async () => {
    const vars = {
      name: 'Zoë Łukasiewicz-Ångström',
      city: 'Škofja Loka — Ljubljana, 日本',
      note: 'Straße '.repeat(40) + '✓ émoji 🎉',
    };
    const value = JSON.stringify(vars);
    // What nodemailer puts on the wire: encoded-words, folded over several lines.
    const raw = await nodemailer
      .createTransport({ streamTransport: true, buffer: true })
      .sendMail({ from: 'a@acme.example', to: 'b@dest.example', html: 'x', headers: { 'X-Transactional-Variables': value } });
    const header = /^X-Transactional-Variables:.*(?:\r\n[ \t].*)*/m.exec(raw.message.toString())![0];
    assert.match(header, /=\?UTF-8\?[BQ]\?/i, 'RFC 2047 encoded');
    assert.ok(header.split('\r\n').length > 3, 'folded');
    const mail = await delivered(await send({ headers: { 'X-Transactional-Template': 'welcome', 'X-Transactional-Variables': value } }));
    assert.equal(mail.subject, `Welcome, ${vars.name}!`);
    const html = String(mail.html);
    assert.ok(html.includes(`<p>Hello ${vars.name} from ${vars.city}</p>`), html);
    assert.ok(html.includes(`<p>${vars.note}</p>`));
  });

  test('a template without a subject keeps the message Subject, unrendered', async () => {
    const mail = await delivered(
      await send({ subject: 'Literal {{ name }} stays', headers: { 'X-Transactional-Template': 'no-subject', 'X-Transactional-Variables': '{"name":"Bo"}' } }),
    );
    assert.equal(mail.subject, 'Literal {{ name }} stays');
    assert.equal(String(mail.html).trim(), '<p>Hi Bo</p>');
  });

  test("variables without a template render the message's own HTML and Subject", async () => {
    const mail = await delivered(
      await send({
        subject: 'Order {{ order.id }} for {{ name }}',
        html: '<p>{{ name }}: {{ order.total | currency("EUR", "de-DE") }}</p>',
        headers: { 'X-Transactional-Variables': JSON.stringify({ name: 'Cé & Co', order: { id: 7, total: 12.5 } }) },
      }),
    );
    assert.equal(mail.subject, 'Order 7 for Cé & Co');
    assert.match(String(mail.html), /<p>Cé &amp; Co: 12,50\u00a0€<\/p>/);
  });

  test('neither header: a literal {{ is left alone', async () => {
    const mail = await delivered(await send({ subject: 'Use {{ x }}', html: '<p>{{ not a template }}</p>' }));
    assert.equal(mail.subject, 'Use {{ x }}');
    assert.match(String(mail.html), /\{\{ not a template \}\}/);
  });

  test('render errors are 554 5.6.0 naming the template, line and problem', async () => {
    assert.match(
      await send({ headers: { 'X-Transactional-Template': 'broken' } }),
      /^554 5\.6\.0 broken line 2: Unable to call `missing_fn`, which is undefined or falsey/,
    );
    assert.match(
      await send({ html: '<p>{{ range.constructor("return process")() }}</p>', headers: { 'X-Transactional-Variables': '{}' } }),
      /^554 5\.6\.0 message body line 1: access to "constructor" is not allowed in templates/,
    );
    assert.match(await send({ html: '{% include "/etc/passwd" %}', headers: { 'X-Transactional-Variables': '{}' } }), /^554 5\.6\.0 message body line 1: template "\/etc\/passwd" not found/);
    assert.match(await send({ headers: { 'X-Transactional-Template': 'nope' } }), /^554 5\.6\.0 Template "nope" does not exist/);
  });

  test('an endless loop gets 554 at the time limit; another message is accepted meanwhile', async () => {
    const started = Date.now();
    let loopAnswered = 0;
    const loop = send({ headers: { 'X-Transactional-Template': 'spins' } }).then((r) => {
      loopAnswered = Date.now();
      return r;
    });
    await new Promise((r) => setTimeout(r, 150));
    const other = await send({ headers: { 'X-Transactional-Template': 'welcome', 'X-Transactional-Variables': '{"name":"Di"}' } });
    const otherAnswered = Date.now();
    assert.equal((await delivered(other)).subject, 'Welcome, Di!');
    const r = await loop;
    assert.match(r, /^554 5\.6\.0 spins: rendering took longer than the limit of 1000 ms/);
    assert.ok(otherAnswered < loopAnswered, 'the other message was accepted before the loop was stopped');
    assert.ok(loopAnswered - started < 5000);
  });
});
