// `node bench/templates.ts`: how fast the template sandbox renders a realistic receipt — the
// built-in transactional layout, a loop over 20 line items (each with a currency filter),
// 10 variables (some nested), a date in a time zone — through the same engine the pipeline uses
// (V8 isolates via isolated-vm; renders waiting for an isolate go to it as one call). Prints
// figures, asserts nothing.
//
//   warm         the same stored template again and again (compiled code cached, loaded in the
//                isolate): the steady state of a relay sending one template
//   cold         a different source every time (compile in the sandbox + load + render): the worst
//                case, e.g. message bodies rendered with X-Transactional-Variables
//   without Intl the same receipt with the currency and date filters taken out
//
// "1 isolate" runs on one isolate thread (plus the event loop's share: handing renders over);
// "N isolates" runs N renders at once. CPU is the process's (all threads) per render, so
// "per CPU-s" is renders per second of one core's time, whatever the machine's other load.
// The issue's target: 10,000 warm renders/s on one core. Figures are medians of BENCH_RUNS
// runs, taken round-robin over the cells so that drift of the machine spreads over all.
// Env: BENCH_RUNS (3), BENCH_SECONDS (2, per run), BENCH_ISOLATES (2: this machine's cores),
// BENCH_CONCURRENCY (8).
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Executor } from '../src/db/database.ts';
import type { Template } from '../src/db/schema.ts';
import { createTemplateEngine, type TemplateEngine } from '../src/templates/renderer.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ISOLATES = Number(process.env.BENCH_ISOLATES ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const TARGET = 10_000;

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

// The same receipt without Intl formatting (21 currency amounts and a date: about a quarter of
// the time in the isolate), for comparison with a bare layout + loop.
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

interface Figure {
  rate: number;
  cpuMicros: number;
}

async function measure(engine: TemplateEngine, concurrency: number, next: (n: number) => Template): Promise<Figure> {
  let n = 0;
  const started = performance.now();
  const deadline = started + SECONDS * 1000;
  const cpu = process.cpuUsage();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t = next(n++);
        await engine.render('t', { subject: t.subject, html: t.html, template: t }, variables(n));
      }
    }),
  );
  const used = process.cpuUsage(cpu);
  return { rate: n / ((performance.now() - started) / 1000), cpuMicros: (used.user + used.system) / n };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const num = (x: number): string => Math.round(x).toLocaleString('en-US');

// The receipt uses only a built-in layout, so the engine never looks a template up by name.
const noDatabase = null as unknown as Executor;

async function main(): Promise<void> {
  process.stdout.write(
    `template sandbox bench: ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, node ${process.version}, median of ${RUNS} runs of ${SECONDS}s per figure\n`,
  );
  // One tenant, so no per-tenant limit (by default a tenant renders on one isolate less than
  // there are): the figures are the engine's capacity.
  const one = createTemplateEngine(noDatabase, { isolates: 1 });
  const many = createTemplateEngine(noDatabase, { isolates: ISOLATES, perTenant: Infinity });
  // Cold figures on engines of their own: thousands of versions would fill the warm engines'
  // caches (and their heaps, which then take longer to collect).
  const coldOne = createTemplateEngine(noDatabase, { isolates: 1 });
  const coldMany = createTemplateEngine(noDatabase, { isolates: ISOLATES, perTenant: Infinity });
  try {
    const sample = await one.render('t', { subject: SUBJECT, html: HTML, template: template(1) }, variables(0));
    process.stdout.write(`one render: ${Buffer.byteLength(sample.html)} bytes of HTML, subject "${sample.subject}"\n`);
    await many.render('t', { subject: SUBJECT, html: HTML, template: template(1) }, variables(0));
    // Cold: a new version of the template each time (so: compile, load, render).
    let version = 1_000;
    const cold = () => template(++version, `${HTML}{# ${version} #}`);
    const cells: [string, () => Promise<Figure>][] = [
      ['warm, 1 isolate, 1 at a time', () => measure(one, 1, () => template(1))],
      [`warm, 1 isolate, ${CONCURRENCY} in flight`, () => measure(one, CONCURRENCY, () => template(1))],
      [`warm, ${ISOLATES} isolates, ${CONCURRENCY} in flight`, () => measure(many, CONCURRENCY, () => template(1))],
      ['warm without Intl filters, 1 isolate, 1 at a time', () => measure(one, 1, () => template(2, PLAIN_HTML))],
      [`warm without Intl filters, 1 isolate, ${CONCURRENCY} in flight`, () => measure(one, CONCURRENCY, () => template(2, PLAIN_HTML))],
      ['cold, 1 isolate, 1 at a time', () => measure(coldOne, 1, cold)],
      [`cold, ${ISOLATES} isolates, ${CONCURRENCY} in flight`, () => measure(coldMany, CONCURRENCY, cold)],
    ];
    const runs = new Map<string, Figure[]>(cells.map(([label]) => [label, []]));
    for (let run = 0; run < RUNS; run++) {
      for (const [label, fn] of cells) runs.get(label)!.push(await fn());
    }
    process.stdout.write(`${''.padEnd(54)} ${'renders/s'.padStart(9)} ${'vs 10k'.padStart(7)} ${'CPU/render'.padStart(11)} ${'per CPU-s'.padStart(10)}\n`);
    const results = new Map<string, Figure>();
    for (const [label] of cells) {
      const figures = runs.get(label)!;
      const f = { rate: median(figures.map((x) => x.rate)), cpuMicros: median(figures.map((x) => x.cpuMicros)) };
      results.set(label, f);
      process.stdout.write(
        `${label.padEnd(54)} ${num(f.rate).padStart(9)} ${`${(f.rate / TARGET).toFixed(2)}×`.padStart(7)} ${`${f.cpuMicros.toFixed(0)} µs`.padStart(11)} ${num(1e6 / f.cpuMicros).padStart(10)}\n`,
      );
    }
    const warm1 = results.get('warm, 1 isolate, 1 at a time')!;
    const warmN = results.get(`warm, 1 isolate, ${CONCURRENCY} in flight`)!;
    const cold1 = results.get('cold, 1 isolate, 1 at a time')!;
    process.stdout.write(
      `target ${num(TARGET)} warm renders/s on one core: 1 isolate ${num(warm1.rate)}/s one at a time (${(warm1.rate / TARGET).toFixed(2)}×), ` +
        `${num(warmN.rate)}/s ${CONCURRENCY} in flight (${(warmN.rate / TARGET).toFixed(2)}×); cold ${num(cold1.rate)}/s\n`,
    );
  } finally {
    for (const engine of [one, many, coldOne, coldMany]) await engine.close();
  }
}

await main();
