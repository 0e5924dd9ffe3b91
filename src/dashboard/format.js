// Numbers, rates, dates and sizes formatted for people, in the browser's own locale. Dates are
// shown in the browser's time zone with its UTC offset spelled out, because the API and the
// stats buckets are in UTC and a reader must be able to tell which is which.
import { h } from './dom.js';

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const percentage = new Intl.NumberFormat(undefined, { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
// dateStyle/timeStyle cannot be combined with timeZoneName, hence the fields one by one.
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'shortOffset',
});
const shortDateTime = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const minuteFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', timeZoneName: 'shortOffset',
});
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

export const count = (n) => integer.format(n ?? 0);

/** A ratio as a percentage with one decimal; "—" when there is nothing to divide by. */
export const percent = (ratio) => (ratio === null || ratio === undefined || !Number.isFinite(ratio) ? '—' : percentage.format(ratio));

export const ratio = (part, whole) => (whole > 0 ? part / whole : null);

/** "21 Nov 2026, 14:03:07 GMT+1". */
export const dateTime = (iso) => (iso ? dateTimeFormat.format(new Date(iso)) : '—');

/** A period's bounds, to the minute: "Nov 14, 2026, 01:00 PM GMT+1 — Nov 21, 2026, 02:00 PM GMT+1". */
export const periodText = (from, to) => `${minuteFormat.format(new Date(from))} — ${minuteFormat.format(new Date(to))}`;

/** The browser's offset from UTC now, e.g. "UTC+01:00". */
export function zoneLabel(at = new Date()) {
  const minutes = -at.getTimezoneOffset();
  const sign = minutes < 0 ? '−' : '+';
  const abs = Math.abs(minutes);
  return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

const UNITS = [
  ['year', 365 * 86400],
  ['month', 30 * 86400],
  ['week', 7 * 86400],
  ['day', 86400],
  ['hour', 3600],
  ['minute', 60],
];

/** "3 minutes ago", "yesterday": for the inbox, with the full date in a title. */
export function ago(iso, now = Date.now()) {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return 'just now';
}

/** A time cell: short local time, the full date and offset on hover. */
export function timeCell(iso) {
  return h('time', { datetime: iso, title: dateTime(iso) }, shortDateTime.format(new Date(iso)));
}

export function bytes(n) {
  if (n < 1024) return `${count(n)} B`;
  if (n < 1024 * 1024) return `${oneDecimal.format(n / 1024)} KiB`;
  return `${oneDecimal.format(n / 1024 / 1024)} MiB`;
}

export function milliseconds(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${count(ms)} ms` : `${oneDecimal.format(ms / 1000)} s`;
}

const STATUS_ICONS = { sent: '✓', failed: '✕', deferred: '↻', queued: '…' };

/** A status as a coloured badge that also says it in words (colour is never the only signal). */
export function statusBadge(status) {
  return h('span', { class: `badge status-${status}` }, h('span', { 'aria-hidden': 'true' }, STATUS_ICONS[status] ?? '•'), ' ', status);
}

/** `datetime-local` input value (local wall time) ↔ ISO 8601 in UTC for the API. */
export function localInputToIso(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export function isoToLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
