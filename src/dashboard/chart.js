// The time-series chart of the tags view: accepted, sent, deferred and failed per bucket, drawn
// by uPlot (vendored from its npm package, served by src/api/dashboard.ts).
import uPlot from './vendor/uPlot.esm.js';
import { count } from './format.js';

const STEP_SECONDS = { hour: 3600, day: 86400 };
export const SERIES = [
  { key: 'accepted', label: 'Accepted', color: '#4f46e5' },
  { key: 'sent', label: 'Sent', color: '#15803d' },
  { key: 'deferred', label: 'Deferred', color: '#c2410c' },
  { key: 'failed', label: 'Failed', color: '#b91c1c' },
];

/**
 * uPlot's columns: bucket starts (seconds) and one column per series. The API leaves out buckets
 * without events; a chart must show them as 0, not draw a line across the gap.
 */
function columns(report, buckets) {
  const step = STEP_SECONDS[report.interval];
  const from = Date.parse(report.from) / 1000;
  const to = Date.parse(report.to) / 1000;
  const byTime = new Map(buckets.map((b) => [Date.parse(b.at) / 1000, b]));
  const xs = [];
  for (let t = from; t < to && xs.length < 5000; t += step) xs.push(t);
  return [xs, ...SERIES.map((s) => xs.map((t) => byTime.get(t)?.[s.key] ?? 0))];
}

/** Sums several tags' series bucket by bucket. */
export function sumSeries(tags) {
  const byAt = new Map();
  for (const tag of tags) {
    for (const b of tag.series) {
      const sum = byAt.get(b.at) ?? { at: b.at, accepted: 0, sent: 0, deferred: 0, failed: 0 };
      for (const s of SERIES) sum[s.key] += b[s.key];
      byAt.set(b.at, sum);
    }
  }
  return [...byAt.values()];
}

/**
 * Draws into `container`, sized to its width and following it; stops following when `signal`
 * aborts (the view was left). Day buckets are UTC days, so their axis is in UTC; hours are
 * shown in the browser's zone like every other time on the page.
 */
export function drawChart(container, report, buckets, signal) {
  const data = columns(report, buckets);
  const few = data[0].length <= 60;
  const opts = {
    width: Math.max(300, container.clientWidth),
    height: 280,
    ...(report.interval === 'day' ? { tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC') } : {}),
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? uPlot.rangeNum(0, max, 0.1, true)[1] : 4] } },
    axes: [
      { stroke: '#4b5563', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' } },
      {
        stroke: '#4b5563', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' }, size: 56,
        // Counts are whole: no "0.5 messages" ticks.
        values: (_u, ticks) => ticks.map((v) => (Number.isInteger(v) ? count(v) : '')),
      },
    ],
    series: [
      { label: report.interval === 'day' ? 'Day (UTC)' : 'Hour', value: (_u, ts) => (ts == null ? '—' : bucketLabel(ts, report.interval)) },
      ...SERIES.map((s) => ({
        label: s.label,
        stroke: s.color,
        width: 2,
        points: { show: few, size: 5 },
        value: (_u, v) => (v == null ? '—' : count(v)),
      })),
    ],
  };
  const plot = new uPlot(opts, data, container);
  const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(300, container.clientWidth), height: 280 }));
  resize.observe(container);
  signal.addEventListener('abort', () => {
    resize.disconnect();
    plot.destroy();
  });
  return plot;
}

const hourLabel = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', timeZoneName: 'shortOffset' });
const dayLabel = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' });

function bucketLabel(ts, interval) {
  return (interval === 'day' ? dayLabel : hourLabel).format(new Date(ts * 1000));
}
