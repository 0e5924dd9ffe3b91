// #/messages: the message log, newest first, filtered by tag, status, recipient and time, a page
// at a time. The API pages forward only (next_cursor); "Newer" goes back through the cursors
// this tab has followed, kept per filter in memory.
import { emptyState, h, mount } from '../dom.js';
import { isoToLocalInput, localInputToIso, statusBadge, timeCell } from '../format.js';
import { sendHelp } from '../help.js';

const PAGE_SIZE = 50;
/** `limit` is kept with the filters so a link can ask for a shorter page. */
const FILTERS = ['tag', 'status', 'recipient', 'since', 'until', 'limit'];
const STATUSES = ['queued', 'deferred', 'sent', 'failed'];

/** Cursors of the pages before the current one, for "Newer"; reset when the filters change. */
const trail = { filters: '', cursors: [] };

export async function renderLog(view) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, view.params.get(k) ?? '']));
  const cursor = view.params.get('cursor') ?? '';
  const key = JSON.stringify([view.session.tenant ?? '', filters]);
  if (trail.filters !== key) Object.assign(trail, { filters: key, cursors: [] });
  if (!cursor) trail.cursors = [];

  const page = await view.api.messages({ ...filters, limit: filters.limit || PAGE_SIZE, cursor }, view.signal);
  const filtered = FILTERS.some((k) => k !== 'limit' && filters[k]);
  const go = (changes) => view.navigate('/messages', { ...filters, ...changes });

  const head = h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Message log'),
    h('p', { class: 'muted' }, 'Newest first. Select a message to see its timeline and preview.')));
  const form = filterForm(filters, (next) => view.navigate('/messages', { ...next, limit: filters.limit }));

  if (page.items.length === 0) {
    mount(view.main, head, form, cursor
      ? emptyState('No older messages', h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: () => go({ cursor: '' }) }, 'Back to the newest')))
      : filtered
        ? emptyState('No messages match these filters', h('p', {}, 'Widen the time range or ', h('a', { href: '#/messages' }, 'clear the filters'), '.'))
        : emptyState('No messages yet', ...(await sendHelp(view))));
    return;
  }

  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' },
    cursor && h('button', {
      type: 'button', class: 'secondary',
      onclick: () => go({ cursor: trail.cursors.pop() ?? '' }),
    }, trail.cursors.length ? '← Newer' : '← Newest'),
    h('span', { class: 'muted' }, `${page.items.length} message${page.items.length === 1 ? '' : 's'} on this page`),
    page.next_cursor && h('button', {
      type: 'button', class: 'secondary', 'data-action': 'older',
      onclick: () => {
        if (cursor) trail.cursors.push(cursor);
        go({ cursor: page.next_cursor });
      },
    }, 'Older →'));

  mount(view.main, head, form, h('section', { class: 'card flush' }, messageTable(page.items, view)), pager);
}

function filterForm(filters, apply) {
  const tag = h('input', { type: 'search', name: 'tag', value: filters.tag, placeholder: 'any tag', size: 14 });
  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s, selected: filters.status === s }, s)));
  const recipient = h('input', { type: 'search', name: 'recipient', value: filters.recipient, placeholder: 'name@example.org', size: 20 });
  const since = h('input', { type: 'datetime-local', name: 'since', value: isoToLocalInput(filters.since) });
  const until = h('input', { type: 'datetime-local', name: 'until', value: isoToLocalInput(filters.until) });
  return h('form', {
    class: 'filters card',
    onsubmit: (e) => {
      e.preventDefault();
      apply({ tag: tag.value.trim(), status: status.value, recipient: recipient.value.trim(), since: localInputToIso(since.value), until: localInputToIso(until.value) });
    },
  },
  h('label', {}, 'Tag', tag),
  h('label', {}, 'Status', status),
  h('label', {}, 'Recipient', recipient),
  h('label', {}, 'Since', since),
  h('label', {}, 'Until', until),
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'), h('a', { href: '#/messages', class: 'button-link' }, 'Clear')));
}

function recipientsText(recipients) {
  if (recipients.length === 0) return '—';
  const first = recipients[0].address;
  return recipients.length === 1 ? first : `${first} +${recipients.length - 1}`;
}

function messageTable(items, view) {
  const open = (id) => view.navigate(`/messages/${id}`);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data log', 'data-testid': 'message-log' },
    h('thead', {}, h('tr', {}, ['Time', 'Status', 'Tag', 'From', 'Subject', 'Recipients', 'Route'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, items.map((m) => h('tr', {
      class: 'clickable', 'data-id': m.id,
      onclick: (e) => {
        // Let real links (and selecting text) work as usual.
        if (e.target.closest('a') || getSelection()?.toString()) return;
        open(m.id);
      },
    },
    h('td', { class: 'nowrap' }, timeCell(m.created_at)),
    h('td', {}, statusBadge(m.status)),
    h('td', {}, h('span', { class: 'tag' }, m.tag)),
    h('td', { class: 'ellipsis', title: m.from }, m.from),
    h('td', { class: 'subject' }, h('a', { href: `#/messages/${m.id}` }, m.subject || '(no subject)')),
    h('td', { class: 'ellipsis', title: m.recipients.map((r) => r.address).join(', ') }, recipientsText(m.recipients)),
    h('td', { class: 'nowrap' }, m.test_mode ? h('span', { class: 'pill test' }, 'test key') : (m.route ?? '—'),
      view.api.admin && !view.session.tenant ? h('div', { class: 'muted small' }, m.tenant) : null))))));
}
