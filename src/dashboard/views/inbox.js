// #/inbox[/<id>]: the capture inbox. Messages sent with a test key or through a `capture` route
// are kept and never delivered; this shows them like a development mailbox: the list on the
// left (GET …/messages?captured=true), the selected message on the right, with its raw MIME.
import { ApiError } from '../api.js';
import { emptyState, h, loading, mount } from '../dom.js';
import { ago, dateTime } from '../format.js';
import { sendHelp } from '../help.js';
import { mimeButton, previewOrNote } from '../preview.js';

const PAGE_SIZE = 30;

export async function renderInbox(view) {
  const first = await view.api.messages({ captured: 'true', limit: PAGE_SIZE }, view.signal);
  const head = h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Capture inbox'),
    h('p', { class: 'muted' }, 'Messages sent with a test key or through a capture route: kept here, never delivered.')));
  if (first.items.length === 0) {
    mount(view.main, head, emptyState('Nothing captured yet',
      h('p', {}, 'Send with a test key (', h('code', {}, 'txr_test_…'), '), or through a route whose transport is ', h('code', {}, 'capture'),
        ', and the message shows up here instead of going out. Handy for development and staging.'),
      ...(await sendHelp(view, { test: true }))));
    return;
  }

  const list = h('ul', { class: 'inbox-list', 'data-testid': 'inbox-list', role: 'listbox', 'aria-label': 'Captured messages' });
  const reader = h('div', { class: 'reader', 'aria-live': 'polite' });
  const items = new Map();
  let selection = new AbortController();

  const select = async (m, updateHash = true) => {
    selection.abort();
    selection = new AbortController();
    const signal = AbortSignal.any([view.signal, selection.signal]);
    for (const [id, li] of items) li.setAttribute('aria-selected', String(id === m.id));
    if (updateHash) history.replaceState(null, '', `#/inbox/${m.id}`);
    mount(reader, loading('Opening'));
    try {
      const preview = await view.api.html(m.id, signal);
      if (!signal.aborted) mount(reader, mail(m, preview, view));
    } catch (err) {
      if (signal.aborted || err.name === 'AbortError') return;
      if (err instanceof ApiError && err.status === 401) throw err;
      mount(reader, h('p', { class: 'form-error', role: 'alert' }, `Could not open this message: ${err.message}`));
    }
  };

  const addItems = (page) => {
    for (const m of page.items) {
      const li = h('li', { role: 'option', tabindex: '0', 'data-id': m.id, 'aria-selected': 'false' },
        h('div', { class: 'inbox-line' }, h('strong', { class: 'ellipsis' }, m.from), h('time', { datetime: m.created_at, title: dateTime(m.created_at) }, ago(m.created_at))),
        h('div', { class: 'inbox-subject ellipsis' }, m.subject || '(no subject)'),
        h('div', { class: 'inbox-meta ellipsis' }, `to ${m.recipients.map((r) => r.address).join(', ')}`, ' · ', h('span', { class: 'tag' }, m.tag)));
      const open = () => select(m).catch(view.fail);
      li.addEventListener('click', open);
      li.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          open();
        }
      });
      items.set(m.id, li);
      list.append(li);
    }
  };

  const more = h('div', { class: 'inbox-more' });
  const showMore = (cursor) => {
    mount(more, cursor && h('button', {
      type: 'button', class: 'secondary',
      onclick: (e) => {
        e.target.disabled = true;
        view.api.messages({ captured: 'true', limit: PAGE_SIZE, cursor }, view.signal).then((page) => {
          addItems(page);
          showMore(page.next_cursor);
        }, view.fail);
      },
    }, 'Load older'));
  };

  addItems(first);
  showMore(first.next_cursor);
  mount(view.main, head, h('div', { class: 'inbox' }, h('div', { class: 'inbox-side' }, list, more), reader));

  // The message in the URL, or the newest one; a linked message not on the first page is
  // fetched on its own so the link still opens it.
  const wanted = view.id ? first.items.find((m) => m.id === view.id) ?? (await linkedMessage(view)) : first.items[0];
  await select(wanted, false);
}

/** A message linked by id that is not on the first page: GET …/messages/:id has every field shown. */
async function linkedMessage(view) {
  return await view.api.message(view.id, view.signal);
}

function mail(m, preview, view) {
  const row = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
  return h('article', { class: 'mail', 'data-id': m.id },
    h('header', { class: 'mail-head' },
      h('h2', {}, preview.subject || m.subject || '(no subject)'),
      h('dl', { class: 'mail-fields' },
        row('From', m.from),
        row('To', m.recipients.map((r) => r.address).join(', ')),
        row('Date', dateTime(m.created_at)),
        row('Held by', m.test_mode ? 'a test key' : `route ${m.route}`),
        row('Tag', h('span', { class: 'tag' }, m.tag))),
      h('div', { class: 'actions' }, mimeButton(view.api, m.id, 'Download .eml'), h('a', { class: 'button-link', href: `#/messages/${m.id}` }, 'Timeline and details →'))),
    previewOrNote(preview));
}
