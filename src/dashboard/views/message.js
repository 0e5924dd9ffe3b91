// #/messages/<id>: one message — a summary, its event timeline, its recipients with the upstream
// replies, the delivery attempts, the rule verdicts (what the relay changed or stripped, and
// why), its attachments and a sandboxed preview of its HTML.
import { ApiError } from '../api.js';
import { h, mount } from '../dom.js';
import { bytes, count, dateTime, milliseconds, statusBadge } from '../format.js';
import { mimeButton, previewOrNote } from '../preview.js';

export async function renderMessage(view) {
  const [m, preview] = await Promise.all([
    view.api.message(view.id, view.signal),
    // The preview failing must not hide the rest of the message (unless the key stopped working).
    view.api.html(view.id, view.signal).catch((err) => {
      if (err instanceof ApiError && err.status === 401) throw err;
      if (err.name === 'AbortError') throw err;
      return { error: err.message };
    }),
  ]);
  mount(
    view.main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/messages' }, '← Message log'), ' · ', h('a', { href: `#/messages?tag=${encodeURIComponent(m.tag)}` }, `more tagged ${m.tag}`)),
    h('div', { class: 'page-head' },
      h('div', {},
        h('h1', { class: 'subject-title' }, m.subject || '(no subject)'),
        h('p', { class: 'badges' }, statusBadge(m.status), ' ', h('span', { class: 'tag' }, m.tag), ' ', m.test_mode && h('span', { class: 'pill test' }, 'test key: captured'))),
      h('div', { class: 'actions' }, mimeButton(view.api, m.id))),
    summary(m, view),
    h('div', { class: 'columns' },
      h('section', { class: 'card', 'aria-labelledby': 'timeline-h' }, h('h2', { id: 'timeline-h' }, 'Timeline'), timeline(m.events)),
      h('div', { class: 'stack' },
        h('section', { class: 'card' }, h('h2', {}, 'Recipients'), recipients(m.recipients)),
        h('section', { class: 'card' }, h('h2', {}, 'Rule verdicts'),
          h('p', { class: 'muted small' }, 'What the relay changed in the message on its way in, and why.'), verdicts(m.verdicts)),
        h('section', { class: 'card' }, h('h2', {}, 'Attachments'), attachments(m.attachments)))),
    m.attempt_log.length > 0 && h('section', { class: 'card' }, h('h2', {}, 'Delivery attempts'), attempts(m.attempt_log)),
    h('section', { class: 'card' },
      h('div', { class: 'card-head' }, h('h2', {}, 'Preview'),
        h('span', { class: 'muted small' }, 'Nothing is loaded from the network: remote images and the tracking pixel stay blocked and links do not open, so previewing never counts as an open or a click.')),
      preview.error ? h('p', { class: 'form-error' }, `The preview could not be loaded: ${preview.error}`) : previewOrNote(preview)),
  );
}

function summary(m, view) {
  const row = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? '—')];
  return h('section', { class: 'card' }, h('dl', { class: 'summary' },
    row('From', m.from),
    row('To', m.recipients.map((r) => r.address).join(', ') || '—'),
    row('Accepted', dateTime(m.created_at)),
    row('Sent', m.sent_at ? dateTime(m.sent_at) : '—'),
    m.next_attempt_at && row('Next attempt', dateTime(m.next_attempt_at)),
    row('Route', m.test_mode ? 'none: sent with a test key, captured and never delivered' : m.route),
    row('Template', m.template),
    row('Attempts', count(m.attempts)),
    row('Size', bytes(m.size)),
    view.api.admin && row('Tenant', m.tenant),
    row('Message id', h('code', {}, m.id))));
}

const EVENT_TITLES = {
  accepted: 'Accepted',
  sent: 'Sent',
  deferred: 'Deferred: will be retried',
  failed: 'Failed',
  opened: 'Opened',
  clicked: 'Clicked',
  retried: 'Retried now',
  requeued: 'Requeued',
};

/** Detail keys in a reader's words, in the order worth reading. */
const DETAIL_LABELS = {
  response: 'Upstream reply',
  reason: 'Reason',
  attempt: 'Attempt',
  route: 'Route',
  from_route: 'From route',
  next_attempt_at: 'Next attempt',
  was_due_at: 'Was due',
  url: 'URL',
  user_agent: 'User agent',
  ip: 'IP address',
  recipients: 'Recipients',
  delivered: 'Delivered to',
  previous_attempts: 'Previous attempts',
  by: 'By',
  via: 'Via',
  throttled: 'Throttled',
  first: 'First (unique)',
};
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;

function detailValue(key, value) {
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'number') return count(value);
  if (typeof value === 'string' && ISO_TIME.test(value)) return dateTime(value);
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(', ');
  if (value && typeof value === 'object') return h('code', {}, JSON.stringify(value));
  if (key === 'response' || key === 'url' || key === 'user_agent') return h('code', { class: 'wrap' }, String(value));
  return String(value);
}

/** An event's detail as label/value rows: the known keys first, then whatever else it carries. */
function eventRows(event) {
  const detail = event.detail && typeof event.detail === 'object' ? { ...event.detail } : {};
  const rows = [];
  if (detail.test_key) {
    rows.push(['Captured', 'sent with a test key: stored, never delivered']);
    delete detail.test_key;
    delete detail.captured;
  }
  const keys = [...Object.keys(DETAIL_LABELS).filter((k) => k in detail), ...Object.keys(detail).filter((k) => !(k in DETAIL_LABELS)).sort()];
  for (const k of keys) {
    if (detail[k] === null || detail[k] === undefined || detail[k] === '') continue;
    rows.push([DETAIL_LABELS[k] ?? k.replaceAll('_', ' '), detailValue(k, detail[k])]);
  }
  return rows;
}

function timeline(events) {
  if (events.length === 0) return h('p', { class: 'muted' }, 'No events recorded.');
  return h('ol', { class: 'timeline', 'data-testid': 'timeline' }, events.map((e) => {
    const rows = eventRows(e);
    return h('li', { class: `event type-${e.type}`, 'data-type': e.type },
      h('span', { class: 'dot', 'aria-hidden': 'true' }),
      h('div', { class: 'event-head' }, h('strong', {}, EVENT_TITLES[e.type] ?? e.type), h('time', { datetime: e.at }, dateTime(e.at))),
      rows.length > 0 && h('dl', { class: 'event-detail' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  }));
}

function recipients(list) {
  if (list.length === 0) return h('p', { class: 'muted' }, 'No recipients.');
  return h('table', { class: 'data compact', 'data-testid': 'recipients' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Address'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Upstream reply'))),
    h('tbody', {}, list.map((r) => h('tr', {},
      h('td', {}, r.address), h('td', {}, statusBadge(r.status)),
      h('td', {}, r.response ? h('code', { class: 'wrap' }, r.response) : h('span', { class: 'muted' }, 'none yet'))))));
}

/** Verdicts that took something away are marked, so a reader finds "why is my header gone?" fast. */
const REMOVING = new Set(['dropped', 'removed', 'truncated', 'stripped']);

function verdicts(list) {
  if (list.length === 0) return h('p', { class: 'muted' }, 'No rule changed this message.');
  return h('table', { class: 'data compact', 'data-testid': 'verdicts' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Rule'), h('th', { scope: 'col' }, 'Action'), h('th', { scope: 'col' }, 'Detail'))),
    h('tbody', {}, list.map((v) => h('tr', {},
      h('td', {}, h('code', {}, v.rule)),
      h('td', {}, h('span', { class: `pill ${REMOVING.has(v.action) ? 'warn' : ''}` }, v.action)),
      h('td', {}, v.detail ?? '')))));
}

function attachments(list) {
  if (list.length === 0) return h('p', { class: 'muted' }, 'None.');
  return h('ul', { class: 'plain' }, list.map((a) => h('li', {},
    h('strong', {}, a.filename ?? '(no file name)'), ' ', h('span', { class: 'muted' }, `${a.content_type} · ${bytes(a.size)}`))));
}

function attempts(list) {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data compact' },
    h('thead', {}, h('tr', {}, ['#', 'When', 'Route', 'Outcome', 'Upstream reply', 'Took'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, list.map((a) => h('tr', {},
      h('td', { class: 'num' }, count(a.number)),
      h('td', { class: 'nowrap' }, dateTime(a.at)),
      h('td', {}, a.route),
      h('td', {}, statusBadge(a.outcome)),
      h('td', {}, a.response ? h('code', { class: 'wrap' }, a.response) : '—'),
      h('td', { class: 'num' }, milliseconds(a.duration_ms)))))));
}
