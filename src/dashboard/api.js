// The dashboard's only door to the relay: the JSON API, with the credential the user signed in
// with as a bearer token. The credential lives in sessionStorage only (this tab, until it closes
// or the user signs out), never in localStorage, a cookie or a URL.
//
// A tenant key reads /v1 (its own tenant); the admin token reads /admin, narrowed to the tenant
// picked in the header with `?tenant=`. Views call the same functions either way.

const STORE = 'txrelay.dashboard.session';
const KEY_FORMAT = /^txr_(live|test)_/;

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    /** Validation errors: {fields: [{path, message}]}. */
    this.details = details;
  }
}

/** {kind: 'key' | 'admin', credential, tenant?: the admin's picked tenant name ('' = all)} or null. */
export function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE) ?? 'null');
    return s && typeof s.credential === 'string' && (s.kind === 'key' || s.kind === 'admin') ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(STORE, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(STORE);
}

/** The first characters of a key, as the admin API shows them: enough to recognise, not to use. */
export const keyLabel = (credential) => `${credential.slice(0, 13)}…`;

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function call(credential, path, { params, signal, accept = 'application/json' } = {}) {
  let res;
  try {
    res = await fetch(path + query(params), { headers: { authorization: `Bearer ${credential}`, accept }, signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'The relay did not answer. Is it running, and is this page served by it?');
  }
  if (res.ok) return res;
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  throw new ApiError(res.status, body?.error?.code ?? 'http_error', body?.error?.message ?? `HTTP ${res.status}`, body?.error?.details);
}

const json = async (promise) => (await promise).json();

/**
 * Tells a key from the admin token and checks it can read. Keys have a fixed format (SPEC §2);
 * anything else can only be the admin token, which /admin/tenants accepts. Throws ApiError
 * (401: not accepted; 403: a key that cannot read).
 */
export async function signIn(credential) {
  if (KEY_FORMAT.test(credential)) {
    await call(credential, '/v1/smtp/info');
    return { kind: 'key', credential };
  }
  await call(credential, '/admin/tenants', { params: { limit: 1 } });
  return { kind: 'admin', credential, tenant: undefined };
}

/** The endpoints a view needs, for the signed-in session. */
export function client(session) {
  const admin = session.kind === 'admin';
  const base = admin ? '/admin' : '/v1';
  // The admin's tenant picker narrows lists and stats; one message is found by id alone.
  const scoped = (params) => (admin && session.tenant ? { ...params, tenant: session.tenant } : params);
  const get = (path, options) => call(session.credential, path, options);
  return {
    admin,
    stats: (params, signal) => json(get(`${base}/stats`, { params: scoped(params), signal })),
    messages: (params, signal) => json(get(`${base}/messages`, { params: scoped(params), signal })),
    message: (id, signal) => json(get(`${base}/messages/${encodeURIComponent(id)}`, { signal })),
    html: (id, signal) => json(get(`${base}/messages/${encodeURIComponent(id)}/html`, { signal })),
    mime: async (id) => (await get(`${base}/messages/${encodeURIComponent(id)}/mime`, { accept: 'message/rfc822' })).blob(),
    /** Tenants only: how to connect over SMTP (for the empty states). */
    smtpInfo: (signal) => (admin ? Promise.resolve(null) : json(get('/v1/smtp/info', { signal }))),
    /** Admin only: every tenant, a page at a time (bounded: a picker of 5,000 names is plenty). */
    async tenants(signal) {
      const all = [];
      let cursor;
      for (let page = 0; page < 25; page++) {
        const r = await json(get('/admin/tenants', { params: { limit: 200, cursor }, signal }));
        all.push(...r.items);
        if (!r.next_cursor) break;
        cursor = r.next_cursor;
      }
      return all;
    },
    /** Admin only: the picked tenant's route names, to suggest in the route filter. */
    async routes(signal) {
      if (!admin || !session.tenant) return [];
      const r = await json(get(`/admin/tenants/${encodeURIComponent(session.tenant)}/routes`, { signal }));
      return r.items.map((route) => route.name);
    },
  };
}
