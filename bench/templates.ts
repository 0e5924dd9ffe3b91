// `node bench/templates.ts`: how fast the template sandbox renders a realistic receipt — the
// built-in transactional layout, a loop over 20 line items (each with a currency filter),
// 10 variables, a date in a time zone — through the same engine the pipeline uses (V8 isolates
// via isolated-vm, one call per render). Prints figures, asserts nothing.
//
//   warm         the same stored template again and again (compiled code cached, loaded in the
//                isolate): the steady state of a relay sending one template
//   cold         a different source every time (compile in the sandbox + load + render): the worst
//                case, e.g. message bodies rendered with X-Transactional-Variables
//   without Intl the same receipt with the currency and date filters taken out
//
// "1 isolate" is one core's worth (one render at a time); "N isolates" runs N renders at once.
// Env: BENCH_SECONDS (3 per figure), BENCH_ISOLATES (2: this machine's cores), BENCH_CONCURRENCY (8).
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Executor } from '../src/db/database.ts';
import type { Template } from '../src/db/schema.ts';
import { createTemplateEngine, type TemplateEngine } from '../src/templates/renderer.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ISOLATES = Number(process.env.BENCH_ISOLATES ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);

const HTML = `{% extends "layouts/transactional.njk" %}
{% block preheader %}Receipt {{ order.number }} — {{ order.total | currency(order.currency, locale) }}{% endblock %}
{% block content %}
<h1 style="font-size:22px;margin:0 0 16px;">Thanks for your order, {{ customer.first_name | default("there") }}!</h1>
<p>Order <strong>{{ order.number }}</strong> placed {{ order.placed_at | date("long", timezone, locale) }}.</p>
<table role="presentation" width="100%" cellpadding="6" cellspacing="0" style="border-collapse:collapse;">
{% for item in order.items %}
<tr style="{% if loop.index is odd %}background:#f8f9fb;{% endif %}">
  <td>{{ loop.index }}.</td><td>{{ item.name }}{% if item.sku %} <small>({{ item.sku }})</small>{% endif %}</td>
  <td align="right">{{ item.qty }} × {{ item.price | currency(order.currency, locale) }}</td>
</tr>
{% endfor %}
<tr><td></td><td><strong>Total</strong></td><td align="right"><strong>{{ order.total | currency(order.currency, locale) }}</strong></td></tr>
</table>
<p>Ships to {{ shipping.name }}, {{ shipping.city }}.</p>
<p><a href="{{ links.order }}" style="color:{{ accent_color }};">View your order</a></p>
{% endblock %}`;
const SUBJECT = 'Your receipt {{ order.number }} from {{ brand }}';

function variables(n: number): Record<string, unknown> {
  const items = Array.from({ length: 20 }, (_, i) => ({ name: `Item ${i + 1} <deluxe>`, sku: `SKU-${n}-${i}`, qty: 1 + (i % 3), price: 9.99 + i }));
  return {
    brand: 'Acme & Co',
    brand_url: 'https://acme.example',
    accent_color: '#2f6fed',
    subject: 'Your receipt',
    locale: 'de-DE',
    timezone: 'Europe/Berlin',
    customer: { first_name: 'Zoë' },
    order: { number: `A-${n}`, placed_at: '2026-11-21T09:30:00Z', currency: 'EUR', total: items.reduce((s, i) => s + i.qty * i.price, 0), items },
    shipping: { name: 'Zoë Ångström', city: 'Oslo' },
    links: { order: `https://acme.example/orders/A-${n}?utm=mail&x=1` },
  };
}

// The same receipt without Intl formatting (21 currency amounts and a date cost about a third of
// the render), for comparison with a bare layout + loop.
const PLAIN_HTML = HTML.replace(/ \| (currency|date)\([^)]*\)/g, '');

const template = (version: number, html = HTML): Template => ({
  id: '00000000-0000-4000-8000-000000000001',
  tenant_id: 't',
  name: 'receipt',
  subject: SUBJECT,
  html,
  version,
  created_at: new Date(),
  updated_at: new Date(),
});

async function measure(label: string, engine: TemplateEngine, concurrency: number, next: (n: number) => Template): Promise<number> {
  let n = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t = next(n++);
        await engine.render('t', { subject: t.subject, html: t.html, template: t }, variables(n));
      }
    }),
  );
  const rate = n / ((performance.now() - started) / 1000);
  process.stdout.write(`${label.padEnd(54)} ${Math.round(rate).toLocaleString('en-US').padStart(8)} renders/s\n`);
  return rate;
}

// The receipt uses only a built-in layout, so the engine never looks a template up by name.
const noDatabase = null as unknown as Executor;

async function main(): Promise<void> {
  process.stdout.write(`template sandbox bench: ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, node ${process.version}, ${SECONDS}s per figure\n`);
  const one = createTemplateEngine(noDatabase, { isolates: 1 });
  const many = createTemplateEngine(noDatabase, { isolates: ISOLATES });
  try {
    const sample = await one.render('t', { subject: SUBJECT, html: HTML, template: template(1) }, variables(0));
    process.stdout.write(`one render: ${Buffer.byteLength(sample.html)} bytes of HTML, subject "${sample.subject}"\n`);
    await many.render('t', { subject: SUBJECT, html: HTML, template: template(1) }, variables(0));
    await measure('warm, 1 isolate, 1 at a time', one, 1, () => template(1));
    await measure(`warm, 1 isolate, ${CONCURRENCY} in flight`, one, CONCURRENCY, () => template(1));
    await measure(`warm, ${ISOLATES} isolates, ${CONCURRENCY} in flight`, many, CONCURRENCY, () => template(1));
    await measure('warm without Intl filters, 1 isolate, 1 at a time', one, 1, () => template(2, PLAIN_HTML));
    await measure(`warm without Intl filters, 1 isolate, ${CONCURRENCY} in flight`, one, CONCURRENCY, () => template(2, PLAIN_HTML));
    // Cold: a new version of the template each time (so: compile, load, render).
    let version = 1_000;
    await measure('cold, 1 isolate, 1 at a time', one, 1, () => template(++version, `${HTML}{# ${version} #}`));
    await measure(`cold, ${ISOLATES} isolates, ${CONCURRENCY} in flight`, many, CONCURRENCY, () => template(++version, `${HTML}{# ${version} #}`));
  } finally {
    await one.close();
    await many.close();
  }
}

await main();
