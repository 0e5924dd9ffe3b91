// The dashboard's shell: sign-in, the header (navigation, the admin's tenant picker, sign-out)
// and hash routing to the views. Plain browser modules, no build step, no framework.
//
//   #/tags             counts per tag for a period, and a chart        views/tags.js
//   #/messages         the message log, filtered and paginated         views/messages.js
//   #/messages/<id>    one message: timeline, verdicts, preview        views/message.js
//   #/inbox[/<id>]     the capture inbox, like a development mailbox   views/inbox.js
import { ApiError, clearSession, client, keyLabel, loadSession, saveSession, signIn } from './api.js';
import { h, loading, mount } from './dom.js';
import { zoneLabel } from './format.js';
import { renderInbox } from './views/inbox.js';
import { renderMessage } from './views/message.js';
import { renderLog } from './views/messages.js';
import { renderTags } from './views/tags.js';

const root = document.getElementById('app');

const ROUTES = [
  { pattern: /^\/tags$/, nav: 'tags', render: renderTags },
  { pattern: /^\/messages$/, nav: 'messages', render: renderLog },
  { pattern: /^\/messages\/([0-9a-fA-F-]{36})$/, nav: 'messages', render: renderMessage },
  { pattern: /^\/inbox(?:\/([0-9a-fA-F-]{36}))?$/, nav: 'inbox', render: renderInbox },
];

const NAV = [
  { id: 'tags', href: '#/tags', label: 'Tags' },
  { id: 'messages', href: '#/messages', label: 'Message log' },
  { id: 'inbox', href: '#/inbox', label: 'Capture inbox' },
];

/** The view being shown; navigating away aborts its requests so a late answer draws nothing. */
let current = new AbortController();
/** The header and the element views draw into, built once per sign-in. */
let shell = null;

/** `#/messages?tag=x` → {path: '/messages', params}. */
function parseHash() {
  const hash = location.hash.replace(/^#/, '') || '/tags';
  const [path, search = ''] = hash.split('?');
  return { path, params: new URLSearchParams(search) };
}

/** Goes to `path` with `params` (empty ones left out); the hashchange draws it. */
function navigate(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const hash = `#${path}${q.size ? `?${q}` : ''}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---- sign-in -------------------------------------------------------------------------------

function showSignIn(notice) {
  shell = null;
  const input = h('input', {
    id: 'credential', name: 'credential', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    placeholder: 'txr_live_… or the admin token',
  });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: !notice }, notice ?? '');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h(
    'form',
    { class: 'signin-card', onsubmit: (e) => submit(e) },
    h('div', { class: 'brand big' }, h('span', { class: 'logo', 'aria-hidden': 'true' }, '✉'), 'txrelay'),
    h('h1', {}, 'Sign in to the dashboard'),
    h('label', { for: 'credential' }, 'API key or admin token'),
    input,
    error,
    button,
    h(
      'p', { class: 'hint' },
      'Use a tenant key with the ', h('code', {}, 'read'), ' or ', h('code', {}, 'full'), ' scope to see that tenant, or the admin token (',
      h('code', {}, 'TXRELAY_ADMIN_TOKEN'), ') to see every tenant. It is kept in this browser tab only and forgotten when you sign out or close the tab.',
    ),
  );

  async function submit(e) {
    e.preventDefault();
    const credential = input.value.trim();
    if (!credential) return;
    button.disabled = true;
    button.textContent = 'Checking…';
    try {
      saveSession(await signIn(credential));
      // A new hash draws through hashchange; the same hash needs drawing by hand.
      if (!location.hash || location.hash === '#/') location.hash = '#/tags';
      else route();
    } catch (err) {
      error.hidden = false;
      error.textContent = signInProblem(err, credential);
      button.disabled = false;
      button.textContent = 'Sign in';
      input.select();
    }
  }

  mount(root, h('main', { class: 'signin' }, form));
  input.focus();
}

function signInProblem(err, credential) {
  if (!(err instanceof ApiError)) return `Sign-in failed: ${err.message}`;
  if (err.status === 401) {
    return /^txr_/.test(credential)
      ? 'Key not accepted: it is unknown, revoked or mistyped.'
      : 'Not accepted: this is neither an API key (txr_live_… / txr_test_…) nor the admin token.';
  }
  if (err.status === 403) return 'This key cannot read: it has the send scope. Use a key with the read or full scope.';
  return err.message;
}

function signOut() {
  current.abort();
  clearSession();
  history.replaceState(null, '', location.pathname);
  showSignIn();
}

// ---- the shell -----------------------------------------------------------------------------

function buildShell(session) {
  const api = client(session);
  const nav = h('nav', { class: 'tabs', 'aria-label': 'Views' }, NAV.map((n) => h('a', { href: n.href, 'data-nav': n.id }, n.label)));
  const who = session.kind === 'admin'
    ? h('span', { class: 'who' }, h('span', { class: 'pill admin' }, 'admin'), tenantPicker(session))
    : h('span', { class: 'who' }, h('span', { class: 'pill' }, 'tenant key'), h('code', { title: 'the key you signed in with' }, keyLabel(session.credential)));
  const main = h('main', { id: 'main', class: 'content', tabindex: '-1' });
  mount(
    root,
    h(
      'header', { class: 'topbar' },
      h('a', { class: 'brand', href: '#/tags' }, h('span', { class: 'logo', 'aria-hidden': 'true' }, '✉'), 'txrelay'),
      nav,
      h('div', { class: 'session' }, who, h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out')),
    ),
    main,
    h('footer', { class: 'footer' }, `Times are shown in your time zone (${zoneLabel()}). The API and the statistics buckets use UTC.`),
  );
  return { api, nav, main, session };
}

/** The admin's tenant picker; filled once the tenants are loaded. '' means every tenant. */
function tenantPicker(session) {
  const select = h('select', { id: 'tenant', 'aria-label': 'Tenant', disabled: true }, h('option', {}, 'Loading tenants…'));
  select.addEventListener('change', () => {
    saveSession({ ...session, tenant: select.value });
    session.tenant = select.value;
    // A message of the previous tenant makes no sense under the new one: back to the list.
    const { path } = parseHash();
    navigate(path.startsWith('/messages/') ? '/messages' : path.startsWith('/inbox') ? '/inbox' : path);
  });
  return h('label', { class: 'picker' }, h('span', { class: 'sr-only' }, 'Tenant'), select);
}

async function fillTenantPicker(s) {
  const select = root.querySelector('#tenant');
  const tenants = await s.api.tenants();
  if (s.session.tenant === undefined) {
    // First sign-in: the first tenant by name, or every tenant when there is none yet.
    s.session.tenant = tenants[0]?.name ?? '';
    saveSession(s.session);
  }
  mount(
    select,
    h('option', { value: '' }, 'All tenants'),
    tenants.map((t) => h('option', { value: t.name }, t.status === 'active' ? t.name : `${t.name} (${t.status})`)),
  );
  select.value = s.session.tenant;
  select.disabled = false;
}

// ---- routing -------------------------------------------------------------------------------

async function route() {
  current.abort();
  current = new AbortController();
  const signal = current.signal;
  const session = loadSession();
  if (!session) return showSignIn();
  if (!shell || shell.session.credential !== session.credential) {
    shell = buildShell(session);
    // Once per sign-in, not per view: leaving a view while it loads must not cancel it.
    shell.ready = session.kind === 'admin' ? fillTenantPicker(shell) : Promise.resolve();
  }
  const s = shell;
  try {
    await s.ready;
  } catch (err) {
    // "Try again" builds the shell anew, picker included.
    if (shell === s) shell = null;
    return failed(err, signal);
  }
  if (signal.aborted) return;
  const { path, params } = parseHash();
  const match = ROUTES.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  for (const a of shell.nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.nav === match?.r.nav);
  if (!match) return navigate('/tags');
  document.title = `${NAV.find((n) => n.id === match.r.nav).label} · txrelay`;
  mount(shell.main, loading());
  const view = {
    main: shell.main, api: shell.api, session: shell.session, params, id: match.m[1], signal, navigate,
    /** For failures after the view was drawn (a click that fetches): shown like a view's own. */
    fail: (err) => failed(err, signal),
  };
  try {
    await match.r.render(view);
  } catch (err) {
    failed(err, signal);
  }
}

/** A view's failure: 401 means the credential stopped working (revoked?), so sign in again. */
function failed(err, signal) {
  if (signal.aborted || err?.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) {
    clearSession();
    return showSignIn('Your key or token is not accepted any more (revoked, or the admin token changed). Sign in again.');
  }
  const [title, text] =
    err instanceof ApiError && err.status === 403
      ? ['This key cannot read', 'Use a key with the read or full scope: send keys can only send.']
      : err instanceof ApiError && err.status === 404
        ? ['Not found', `${err.message}. It may belong to another tenant, or the link is mistyped.`]
        : err instanceof ApiError && err.status === 422
          ? ['These filters are not valid', (err.details?.fields ?? []).map((f) => `${f.path}: ${f.message}`).join('; ') || err.message]
          : ['Something went wrong', err?.message ?? String(err)];
  // Invalid filters would fail again as they are: offer the same view without them.
  const retry = err instanceof ApiError && err.status === 422
    ? h('a', { class: 'button-link', href: `#${parseHash().path}` }, 'Clear the filters')
    : h('button', { type: 'button', onclick: () => route() }, 'Try again');
  mount(
    shell?.main ?? root,
    h('div', { class: 'problem', role: 'alert' }, h('h2', {}, title), h('p', {}, text),
      h('p', { class: 'actions' }, retry, h('a', { href: '#/tags' }, 'Back to tags'))),
  );
}

window.addEventListener('hashchange', () => route());
route();
