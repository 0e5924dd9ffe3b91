// What to do when there is nothing to show yet: how to send a first message, with this relay's
// own SMTP settings (GET /v1/smtp/info) filled in. Keys are never echoed: the commands carry a
// placeholder the user replaces with a key of the send or full scope.
import { codeBlock, h } from './dom.js';

let cachedInfo;

async function smtpInfo(view) {
  if (view.api.admin) return null;
  cachedInfo ??= view.api.smtpInfo(view.signal).catch(() => null);
  return await cachedInfo;
}

function swaks(info, password) {
  const host = info?.host ?? location.hostname;
  const starttls = info ? info.ports.starttls[0] : 587;
  const implicit = info?.ports.implicit_tls[0];
  const server = starttls !== undefined ? `${host}:${starttls}` : `${host}:${implicit}`;
  const tls = starttls !== undefined ? '--tls' : '--tlsc';
  return [
    `swaks --server ${server} ${tls} \\`,
    `  --auth-user txrelay --auth-password '${password}' \\`,
    `  --from you@your-verified-domain.example --to someone@example.org \\`,
    `  --header 'Subject: Hello' --header 'X-Transactional-Tag: welcome'`,
  ].join('\n');
}

function curl(password) {
  const body = { from: 'you@your-verified-domain.example', to: ['someone@example.org'], subject: 'Hello', html: '<p>Hello!</p>', tag: 'welcome' };
  return [
    `curl -X POST ${location.origin}/v1/messages \\`,
    `  -H 'Authorization: Bearer ${password}' -H 'Content-Type: application/json' \\`,
    `  -d '${JSON.stringify(body)}'`,
  ].join('\n');
}

/** A short how-to: SMTP with swaks, or the HTTP API. `test`: with a test key, for the inbox. */
export async function sendHelp(view, { test = false } = {}) {
  const info = await smtpInfo(view);
  const password = test ? '<test key: txr_test_…>' : '<send key: txr_live_…>';
  return [
    h('p', {}, view.api.admin
      ? 'Messages appear here once the tenant sends. With one of the tenant\'s keys, over SMTP:'
      : 'Send one over SMTP (the API key is the password; any username works):'),
    codeBlock(swaks(info, password)),
    h('p', {}, 'or over HTTP:'),
    codeBlock(curl(password)),
  ];
}
