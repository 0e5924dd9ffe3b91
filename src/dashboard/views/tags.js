// #/tags: per tag, for a chosen period, how many messages were accepted, sent, deferred and
// failed, the delivery rate and the unique open and click rates, with a chart over time. The
// counts come from the stats roll-up (GET …/stats), never from scanning messages.
//
// Rates: delivery = sent ÷ (sent + failed), as the API computes it; unique open (click) rate =
// unique opens (clicks) ÷ sent. Each is "—" while its divisor is 0.
import { drawChart, SERIES, sumSeries } from '../chart.js';
import { emptyState, h, mount } from '../dom.js';
import { count, isoToLocalInput, localInputToIso, percent, periodText, ratio } from '../format.js';
import { sendHelp } from '../help.js';

const HOUR = 3_600_000;
const PERIODS = {
  '24h': { label: 'Last 24 hours', ms: 24 * HOUR, interval: 'hour' },
  '7d': { label: 'Last 7 days', ms: 7 * 24 * HOUR, interval: 'hour' },
  '30d': { label: 'Last 30 days', ms: 30 * 24 * HOUR, interval: 'day' },
  custom: { label: 'Custom' },
};

/** The period, interval and route the hash asks for, with defaults. */
function readFilters(params) {
  const period = Object.hasOwn(PERIODS, params.get('period') ?? '') ? params.get('period') : '7d';
  const now = Date.now();
  let from;
  let to;
  if (period === 'custom') {
    to = params.get('to') || new Date(now).toISOString();
    from = params.get('from') || new Date(Date.parse(to) - PERIODS['7d'].ms).toISOString();
  } else {
    to = new Date(now).toISOString();
    from = new Date(now - PERIODS[period].ms).toISOString();
  }
  const span = Date.parse(to) - Date.parse(from);
  const fallback = period === 'custom' ? (span > 7 * 24 * HOUR ? 'day' : 'hour') : PERIODS[period].interval;
  const interval = ['hour', 'day'].includes(params.get('interval')) ? params.get('interval') : fallback;
  return { period, from, to, interval, route: params.get('route') ?? '', chartTag: params.get('chart') ?? '' };
}

export async function renderTags(view) {
  const f = readFilters(view.params);
  const [report, routes] = await Promise.all([
    view.api.stats({ from: f.from, to: f.to, interval: f.interval, route: f.route }, view.signal),
    view.api.routes(view.signal).catch(() => []),
  ]);
  const tags = [...report.tags].sort((a, b) => b.totals.accepted - a.totals.accepted || a.tag.localeCompare(b.tag));
  const go = (changes) => view.navigate('/tags', { ...toParams(f), ...changes });

  const header = h(
    'div', { class: 'page-head' },
    h('div', {}, h('h1', {}, 'Tags'), h('p', { class: 'muted' }, periodText(report.from, report.to),
      f.route ? ` · route ${f.route}` : '')),
    toolbar(f, routes, go),
  );

  if (tags.length === 0) {
    mount(view.main, header, emptyState(
      f.route ? `Nothing went through route “${f.route}” in this period` : 'No messages in this period',
      ...(f.route ? [h('p', {}, 'Try a longer period, or ', h('a', { href: '#/tags' }, 'clear the route filter'), '.')] : await sendHelp(view)),
    ));
    return;
  }

  const totals = grandTotals(tags);
  const chartTag = tags.some((t) => t.tag === f.chartTag) ? f.chartTag : '';
  const chartBox = h('div', { class: 'chart', 'data-testid': 'chart' });
  mount(
    view.main,
    header,
    tiles(totals),
    h(
      'section', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', {}, 'Over time'),
        h('label', { class: 'inline' }, 'Show ',
          h('select', { 'aria-label': 'Tag shown in the chart', onchange: (e) => go({ chart: e.target.value }) },
            h('option', { value: '' }, 'all tags'),
            tags.map((t) => h('option', { value: t.tag, selected: t.tag === chartTag }, t.tag))))),
      chartBox,
      h('p', { class: 'note' }, f.interval === 'day' ? 'One point per UTC day.' : 'One point per hour, in your time zone.', ' Empty buckets are shown as 0.'),
    ),
    h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Per tag'),
      h('span', { class: 'muted' }, 'Select a tag to see its messages.')), tagTable(tags, totals, report)),
    h('p', { class: 'note' },
      'Delivery rate = sent ÷ (sent + failed). Unique open rate = unique opens ÷ sent; unique click rate = unique clicks ÷ sent. ',
      '“—” means there is nothing to divide by yet; opens and clicks are only counted for messages sent with tracking on. ',
      'Counts are events in the period: a message deferred twice adds 2 to deferred.'),
  );
  const buckets = chartTag ? tags.find((t) => t.tag === chartTag).series : sumSeries(tags);
  drawChart(chartBox, report, buckets, view.signal);
}

function toParams(f) {
  return {
    period: f.period,
    ...(f.period === 'custom' ? { from: f.from, to: f.to } : {}),
    interval: f.interval,
    route: f.route,
    chart: f.chartTag,
  };
}

function toolbar(f, routes, go) {
  const periodButtons = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Period' },
    Object.entries(PERIODS).map(([id, p]) =>
      h('button', {
        type: 'button', 'aria-pressed': String(id === f.period), class: id === f.period ? 'on' : '',
        onclick: () => go(id === 'custom' ? { period: id, from: f.from, to: f.to } : { period: id, from: '', to: '', interval: '' }),
      }, p.label)));
  const from = h('input', { type: 'datetime-local', name: 'from', value: isoToLocalInput(f.from), required: true });
  const to = h('input', { type: 'datetime-local', name: 'to', value: isoToLocalInput(f.to), required: true });
  const interval = h('select', { name: 'interval' },
    h('option', { value: 'hour', selected: f.interval === 'hour' }, 'by hour'),
    h('option', { value: 'day', selected: f.interval === 'day' }, 'by day (UTC)'));
  const route = h('input', { type: 'search', name: 'route', value: f.route, placeholder: 'any route', list: 'route-names', size: 14 });
  const form = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      const custom = f.period === 'custom' ? { from: localInputToIso(from.value), to: localInputToIso(to.value) } : {};
      go({ ...custom, interval: interval.value, route: route.value.trim() });
    },
  },
  f.period === 'custom' && [h('label', {}, 'From', from), h('label', {}, 'To', to)],
  h('label', {}, 'Interval', interval),
  h('label', {}, 'Route', route, h('datalist', { id: 'route-names' }, routes.map((r) => h('option', { value: r })))),
  h('button', { type: 'submit', class: 'primary' }, 'Apply'));
  interval.addEventListener('change', () => form.requestSubmit());
  return h('div', { class: 'toolbar' }, periodButtons, form);
}

function grandTotals(tags) {
  const t = { accepted: 0, sent: 0, deferred: 0, failed: 0, unique_opens: 0, unique_clicks: 0 };
  for (const tag of tags) for (const k of Object.keys(t)) t[k] += tag.totals[k];
  return t;
}

const rates = (t) => ({
  delivery: ratio(t.sent, t.sent + t.failed),
  opens: ratio(t.unique_opens, t.sent),
  clicks: ratio(t.unique_clicks, t.sent),
});

function tiles(t) {
  const r = rates(t);
  const tile = (label, value, cls = '', sub = '') =>
    h('div', { class: `tile ${cls}` }, h('div', { class: 'tile-label' }, label), h('div', { class: 'tile-value' }, value), sub && h('div', { class: 'tile-sub' }, sub));
  return h('section', { class: 'tiles', 'aria-label': 'Totals for the period' },
    tile('Accepted', count(t.accepted), 'accepted'),
    tile('Sent', count(t.sent), 'sent'),
    tile('Deferred', count(t.deferred), 'deferred', 'retries scheduled'),
    tile('Failed', count(t.failed), 'failed'),
    tile('Delivery rate', percent(r.delivery), '', 'sent ÷ (sent + failed)'),
    tile('Unique open rate', percent(r.opens), '', `${count(t.unique_opens)} unique opens`),
    tile('Unique click rate', percent(r.clicks), '', `${count(t.unique_clicks)} unique clicks`));
}

function tagTable(tags, totals, report) {
  const cells = (t) => {
    const r = rates(t);
    return [
      ...SERIES.map((s) => h('td', { class: 'num', 'data-col': s.key }, count(t[s.key]))),
      h('td', { class: 'num', 'data-col': 'delivery_rate' }, percent(r.delivery)),
      h('td', { class: 'num', 'data-col': 'open_rate' }, percent(r.opens)),
      h('td', { class: 'num', 'data-col': 'click_rate' }, percent(r.clicks)),
    ];
  };
  const logLink = (tag) => `#/messages?${new URLSearchParams({ tag, since: report.from, until: report.to })}`;
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': 'tag-table' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Tag'),
      SERIES.map((s) => h('th', { scope: 'col', class: 'num' }, s.label)),
      h('th', { scope: 'col', class: 'num' }, 'Delivery rate'),
      h('th', { scope: 'col', class: 'num' }, 'Unique open rate'),
      h('th', { scope: 'col', class: 'num' }, 'Unique click rate'))),
    h('tbody', {}, tags.map((t) => h('tr', { 'data-tag': t.tag },
      h('th', { scope: 'row' }, h('a', { href: logLink(t.tag), title: `Messages tagged ${t.tag} in this period` }, t.tag)),
      cells(t.totals)))),
    tags.length > 1 && h('tfoot', {}, h('tr', { 'data-tag': '' }, h('th', { scope: 'row' }, 'All tags'), cells(totals)))));
}
