// Open and click tracking (SPEC §6): the HTML rewrite on its own, the signed tokens, and the whole
// path through the real relay — a message sent over SMTP, its pixel and links fetched over HTTP,
// the events recorded and counted, forged tokens refused, the DKIM signature still valid.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
// mailauth is CommonJS; its deep module carries the one function we need.
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { createApiApp } from '../../src/api/app.ts';
import { PIXEL } from '../../src/api/tracking.ts';
import { uuidv7 } from '../../src/crypto.ts';
import { openDatabase } from '../../src/db/database.ts';
import type { ApiKey, Tenant } from '../../src/db/schema.ts';
import { rollUp } from '../../src/db/stats.repository.ts';
import { TrackingTokens } from '../../src/events/tracking-tokens.ts';
import { createLogger } from '../../src/log.ts';
import { applyHeaders } from '../../src/pipeline/apply-headers.ts';
import { newSubmission, type Submission } from '../../src/pipeline/submission.ts';
import { rewriteHtml, track, type TrackingLinks } from '../../src/pipeline/track.ts';
import { addDomain, domainView } from '../../src/services/domains.service.ts';
import { createKey, createTenant } from '../../src/services/tenants.service.ts';
import { TEST_SECRET } from '../helpers/context.ts';
import { chunk } from '../helpers/dns.ts';
import { callJson } from '../helpers/http.ts';
import { addRoute, sendForReply, startTestRelay, type TestRelay } from '../helpers/relay.ts';

const PUBLIC = 'https://track.relay.test';

/** Rewrites with readable stand-ins for tracking URLs: the original URL, percent-encoded. */
const fakeLinks = (over: Partial<TrackingLinks> = {}): TrackingLinks => ({
  trackClicks: true,
  click: (url) => `https://t.test/c?u=${encodeURIComponent(url)}`,
  ...over,
});
const tracked = (url: string) => `https://t.test/c?u=${encodeURIComponent(url)}`;
const PIXEL_TAG = (src: string) =>
  `<img src="${src}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">`;

describe('the HTML rewrite', () => {
  test('the open pixel goes just before </body>, and nothing else changes', () => {
    const html = '<html><body><p>Hello</p>\n</body>\n</html>';
    const out = rewriteHtml(html, fakeLinks({ pixel: 'https://t.test/o.gif', trackClicks: false }));
    assert.equal(out.html, `<html><body><p>Hello</p>\n${PIXEL_TAG('https://t.test/o.gif')}</body>\n</html>`);
  });

  test('without </body> the pixel goes at the end; an upper-case </BODY> is found', () => {
    assert.equal(rewriteHtml('<p>Hi</p>', fakeLinks({ pixel: 'P' })).html, `<p>Hi</p>${PIXEL_TAG('P')}`);
    assert.equal(rewriteHtml('<BODY>x</BODY >', fakeLinks({ pixel: 'P' })).html, `<BODY>x${PIXEL_TAG('P')}</BODY >`);
  });

  test('http and https links in <a> and <area> are rewritten, in place, keeping the rest byte for byte', () => {
    const html = [
      '<!DOCTYPE html><HTML><Body style="margin:0">',
      "<A class=btn HREF='https://shop.example/a?x=1'  target=_blank>Buy</A>",
      '<a href=http://shop.example/b>b</a>',
      '<map><area shape="rect" coords="0,0,1,1" href="https://shop.example/c"></map>',
      '<!-- <a href="https://in.comment/"> -->',
      '<!--[if mso]><a href="https://in.conditional/">x</a><![endif]-->',
      '<script>var s = "<a href=\'https://in.script/\'>";</script>',
      '<p title="&lt;a href=&quot;https://in.attribute/&quot;&gt;">&nbsp;caf\u00e9</p>',
      '</Body></HTML>',
    ].join('\n');
    const out = rewriteHtml(html, fakeLinks());
    const expected = html
      .replace("HREF='https://shop.example/a?x=1'", `HREF="${tracked('https://shop.example/a?x=1')}"`)
      .replace('href=http://shop.example/b', `href="${tracked('http://shop.example/b')}"`)
      .replace('href="https://shop.example/c"', `href="${tracked('https://shop.example/c')}"`);
    assert.equal(out.html, expected);
    assert.equal(out.links, 3);
  });

  test('mailto:, tel:, #anchors, relative and other non-http links are left alone', () => {
    const html = [
      '<a href="mailto:help@shop.example">m</a>',
      '<a href="tel:+15551234">t</a>',
      '<a href="#top">a</a>',
      '<a href="/relative/path">r</a>',
      '<a href="//shop.example/scheme-relative">s</a>',
      '<a href="javascript:alert(1)">j</a>',
      '<a href="ftp://files.example/x">f</a>',
      '<a href="https://">broken</a>',
      '<a name="no-href">n</a>',
      '<a href="">empty</a>',
    ].join('');
    const out = rewriteHtml(html, fakeLinks());
    assert.equal(out.html, html);
    assert.equal(out.links, 0);
  });

  test('data-txrelay-no-track keeps a link as it is and the attribute is removed', () => {
    const html = [
      '<a data-txrelay-no-track href="https://shop.example/unsubscribe">u</a>',
      '<a href="https://shop.example/keep" DATA-TXRELAY-NO-TRACK="">k</a>',
      '<a href=https://shop.example/x data-txrelay-no-track/>',
      '<a href="https://shop.example/tracked">t</a>',
    ].join('');
    const out = rewriteHtml(html, fakeLinks());
    assert.equal(
      out.html,
      [
        '<a href="https://shop.example/unsubscribe">u</a>',
        '<a href="https://shop.example/keep">k</a>',
        '<a href=https://shop.example/x />',
        `<a href="${tracked('https://shop.example/tracked')}">t</a>`,
      ].join(''),
    );
    assert.equal(out.links, 1);
  });

  test('the no-track attribute goes even when clicks are not tracked', () => {
    const out = rewriteHtml('<a href="https://x.example/" data-txrelay-no-track>x</a>', fakeLinks({ trackClicks: false }));
    assert.equal(out.html, '<a href="https://x.example/">x</a>');
  });

  test('entities in the href are decoded before signing; surrounding whitespace is trimmed', () => {
    let signed = '';
    const links = fakeLinks({ click: (url) => ((signed = url), 'https://t.test/c/1?a=1&b=2') });
    const out = rewriteHtml('<a href=" https://shop.example/p?a=1&amp;b=caf&#233;#x ">p</a>', links);
    assert.equal(signed, 'https://shop.example/p?a=1&b=caf\u00e9#x');
    // The tracking URL is written escaped, as an attribute value must be.
    assert.equal(out.html, '<a href="https://t.test/c/1?a=1&amp;b=2">p</a>');
  });

  test('only the first of repeated href attributes counts, as in a browser', () => {
    const out = rewriteHtml('<a href="https://one.example/" href="https://two.example/">x</a>', fakeLinks());
    assert.equal(out.html, `<a href="${tracked('https://one.example/')}" href="https://two.example/">x</a>`);
  });
});

describe('tracking tokens', () => {
  const tokens = new TrackingTokens(TEST_SECRET);
  const id = uuidv7();
  const url = 'https://shop.example/orders/42?utm_source=mail&x=%20#items';

  test('an open and a click token verify as what they claim, and are URL-safe', () => {
    const open = tokens.open(id);
    const click = tokens.click(id, url);
    assert.match(open, /^[A-Za-z0-9_-]+$/);
    assert.match(click, /^[A-Za-z0-9_-]+$/);
    assert.equal(open.length, 44, '1 + 16 + 16 bytes');
    assert.deepEqual(tokens.verify(open, 'open'), { kind: 'open', messageId: id });
    assert.deepEqual(tokens.verify(click, 'click'), { kind: 'click', messageId: id, url });
  });

  test('forged, altered, truncated, extended, mis-kinded and other-secret tokens are refused', () => {
    const open = tokens.open(id);
    const click = tokens.click(id, url);
    const flip = (t: string, i: number) => t.slice(0, i) + (t[i] === 'A' ? 'B' : 'A') + t.slice(i + 1);
    for (let i = 0; i < click.length; i++) assert.equal(tokens.verify(flip(click, i), 'click'), undefined, `char ${i} changed`);
    for (let i = 0; i < open.length; i++) assert.equal(tokens.verify(flip(open, i), 'open'), undefined, `char ${i} changed`);
    assert.equal(tokens.verify(click.slice(0, -1), 'click'), undefined);
    assert.equal(tokens.verify(`${click}A`, 'click'), undefined);
    assert.equal(tokens.verify(open, 'click'), undefined);
    assert.equal(tokens.verify(click, 'open'), undefined);
    assert.equal(tokens.verify(new TrackingTokens(`${TEST_SECRET}-other`).click(id, url), 'click'), undefined);
    assert.equal(tokens.verify('', 'open'), undefined);
    assert.equal(tokens.verify('not a token!', 'open'), undefined);
    assert.equal(tokens.verify('A'.repeat(20_000), 'click'), undefined);
  });

  test('a signed non-http URL is still refused: the redirector only ever sends to http(s)', () => {
    assert.equal(tokens.verify(tokens.click(id, 'javascript:alert(1)'), 'click'), undefined);
    assert.equal(tokens.verify(tokens.click(id, 'data:text/html,x'), 'click'), undefined);
  });
});

describe('the tracking stage', () => {
  const tokens = new TrackingTokens(TEST_SECRET);
  const stage = track(PUBLIC, tokens);
  const tenant = (opens: boolean, clicks: boolean) => ({ id: uuidv7(), name: 't', status: 'active', track_opens: opens, track_clicks: clicks }) as Tenant;
  const HTML = '<html><body><a href="https://shop.example/x">x</a></body></html>';

  function submission(t: Tenant, headers: Record<string, string> = {}, body: Partial<Submission> = { html: HTML }): Submission {
    return applyHeaders(
      newSubmission({
        source: 'http',
        envelope: { mailFrom: 'app@shop.example', rcptTo: ['c@example.org'] },
        principal: { key: {} as ApiKey, tenant: t },
        from: [{ address: 'app@shop.example', name: '' }],
        headers: Object.entries(headers).map(([name, value]) => ({ name: name.toLowerCase(), value })),
        ...body,
      }),
    );
  }

  test('the tenant defaults apply: nothing tracked leaves the HTML untouched', () => {
    const sub = stage(submission(tenant(false, false)));
    assert.equal(sub.html, HTML);
    assert.equal(sub.trackOpens, false);
    assert.equal(sub.trackClicks, false);
    assert.ok(!sub.verdicts.some((v) => v.rule === 'tracking'));
  });

  test('both tracked by default: pixel and link carry tokens for the message id the stage chose', () => {
    const sub = stage(submission(tenant(true, true)));
    assert.ok(sub.id);
    const pixel = /<img src="https:\/\/track\.relay\.test\/t\/o\/([A-Za-z0-9_-]+)\.gif"/.exec(sub.html!);
    const link = /<a href="https:\/\/track\.relay\.test\/t\/c\/([A-Za-z0-9_-]+)">/.exec(sub.html!);
    assert.ok(pixel && link, sub.html!);
    assert.deepEqual(tokens.verify(pixel[1], 'open'), { kind: 'open', messageId: sub.id });
    assert.deepEqual(tokens.verify(link[1], 'click'), { kind: 'click', messageId: sub.id, url: 'https://shop.example/x' });
    assert.deepEqual(sub.verdicts.find((v) => v.rule === 'tracking'), { rule: 'tracking', action: 'rewritten', detail: 'open pixel; 1 link(s)' });
  });

  test('the message headers override the tenant defaults, either way', () => {
    const off = stage(submission(tenant(true, true), { 'X-Transactional-Track-Opens': 'false', 'X-Transactional-Track-Clicks': 'false' }));
    assert.equal(off.html, HTML);
    const opensOnly = stage(submission(tenant(false, true), { 'X-Transactional-Track-Opens': 'true', 'X-Transactional-Track-Clicks': 'false' }));
    assert.match(opensOnly.html!, /\/t\/o\/[A-Za-z0-9_-]+\.gif/);
    assert.match(opensOnly.html!, /<a href="https:\/\/shop\.example\/x">/);
    const clicksOnly = stage(submission(tenant(false, false), { 'X-Transactional-Track-Clicks': 'true' }));
    assert.doesNotMatch(clicksOnly.html!, /\/t\/o\//);
    assert.match(clicksOnly.html!, /<a href="https:\/\/track\.relay\.test\/t\/c\//);
  });

  test('a text-only message, once turned into HTML, gets its pixel before </body>', () => {
    const sub = stage(submission(tenant(true, true), {}, { text: 'Hello\nhttps://shop.example/plain' }));
    assert.match(sub.html!, /<img src="https:\/\/track\.relay\.test\/t\/o\/[A-Za-z0-9_-]+\.gif"[^>]*><\/body><\/html>$/);
    // A bare URL in text is not a link: nothing to rewrite.
    assert.match(sub.html!, /https:\/\/shop\.example\/plain/);
  });
});

describe('tracking end to end', () => {
  let relay: TestRelay;
  let base: string;
  let tenantId: string;
  let liveKey: string;
  let testKey: string;
  let dkimRecord: { name: string; value: string };
  const DOMAIN = 'shop.example';
  const ORDER_URL = 'https://shop.example/orders/42?utm_source=mail&ref=a%20b#items';

  const HTML = [
    '<html><body><p>Your order</p>',
    '<a href="https://shop.example/orders/42?utm_source=mail&amp;ref=a%20b#items">see it</a>',
    '<a href="mailto:help@shop.example">help</a>',
    '<a data-txrelay-no-track href="https://shop.example/unsubscribe?u=1">unsubscribe</a>',
    '</body></html>',
  ].join('\n');

  async function send(key: string, extra: Record<string, unknown> = {}): Promise<string> {
    const reply = await sendForReply(relay.smtpPort, key, { from: `Shop <app@${DOMAIN}>`, to: 'reader@example.org', subject: 'Order', html: HTML, ...extra });
    const m = /queued as ([0-9a-f-]{36})/.exec(reply);
    assert.ok(m, reply);
    return m[1];
  }

  async function mimeOf(id: string): Promise<Buffer> {
    const res = await fetch(`${base}/admin/messages/${id}/mime`, { headers: { authorization: `Bearer ${relay.ctx.adminToken}` } });
    assert.equal(res.status, 200);
    return Buffer.from(await res.arrayBuffer());
  }

  async function htmlOf(id: string): Promise<string> {
    const parsed = await simpleParser(await mimeOf(id));
    assert.equal(typeof parsed.html, 'string');
    return parsed.html as string;
  }

  /** The pixel and the first tracked link of a stored message, as paths on our HTTP port. */
  async function trackingPaths(id: string): Promise<{ pixel: string; click: string }> {
    const html = await htmlOf(id);
    const pixel = /<img src="(https:\/\/track\.relay\.test\/t\/o\/[^"]+)"/.exec(html)?.[1];
    const click = /<a href="(https:\/\/track\.relay\.test\/t\/c\/[^"]+)"/.exec(html)?.[1];
    assert.ok(pixel && click, html);
    return { pixel: new URL(pixel).pathname, click: new URL(click).pathname };
  }

  async function events(id: string) {
    return await relay.ctx.db
      .selectFrom('events')
      .select(['type', 'detail', 'tenant_id', 'route'])
      .where('message_id', '=', id)
      .where('type', 'in', ['opened', 'clicked'])
      .orderBy('id')
      .execute();
  }

  async function engagementCount(): Promise<number> {
    const r = await relay.ctx.db.selectFrom('events').select((eb) => eb.fn.countAll<number>().as('n')).where('type', 'in', ['opened', 'clicked']).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  before(async () => {
    relay = await startTestRelay({ TXRELAY_PUBLIC_URL: PUBLIC });
    base = `http://127.0.0.1:${relay.httpPort}`;
    const t = await createTenant(relay.ctx.db, { name: 'tracked', track_opens: true, track_clicks: true });
    tenantId = t.id;
    const d = await addDomain(relay.ctx.db, relay.ctx.box, t.id, { name: DOMAIN, verified: true });
    const record = domainView(d).dns_records.find((r) => r.purpose === 'dkim');
    assert.ok(record);
    dkimRecord = record;
    liveKey = (await createKey(relay.ctx.db, t.id, { scope: 'send', mode: 'live' })).key;
    testKey = (await createKey(relay.ctx.db, t.id, { scope: 'send', mode: 'test' })).key;
    await addRoute(relay.ctx, t.id, { name: 'inbox', transport: 'capture' });
  });

  after(async () => {
    await relay?.close();
  });

  test('the stored message has the pixel before </body>, the link rewritten, the rest left as written', async () => {
    const id = await send(liveKey);
    const html = await htmlOf(id);
    assert.match(html, /<img src="https:\/\/track\.relay\.test\/t\/o\/[A-Za-z0-9_-]+\.gif" width="1" height="1" alt="" style="[^"]+">\n?<\/body>/);
    assert.match(html, /<a href="https:\/\/track\.relay\.test\/t\/c\/[A-Za-z0-9_-]+">see it<\/a>/);
    assert.match(html, /<a href="mailto:help@shop\.example">help<\/a>/);
    assert.match(html, /<a href="https:\/\/shop\.example\/unsubscribe\?u=1">unsubscribe<\/a>/);
    assert.doesNotMatch(html, /data-txrelay-no-track/);
    const view = await callJson(base, 'GET', `/admin/messages/${id}`);
    assert.ok(view.body.verdicts.some((v: { rule: string; detail: string }) => v.rule === 'tracking' && v.detail === 'open pixel; 1 link(s)'), view.text);
  });

  test('the DKIM signature covers the rewritten HTML and verifies (mailauth)', async () => {
    const mime = await mimeOf(await send(liveKey));
    const resolver = async (name: string, rr: string) => {
      if (rr !== 'TXT' || name.toLowerCase() !== dkimRecord.name) throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
      return [chunk(dkimRecord.value)];
    };
    const [result] = (await dkimVerify(mime, { resolver: resolver as never })).results;
    assert.equal(result.status.result, 'pass', JSON.stringify(result.status));
    // What was signed is the rewritten HTML.
    assert.match((await simpleParser(mime)).html || '', /track\.relay\.test\/t\/o\//);
  });

  test('the pixel answers a 43-byte GIF, uncached, and records opened: first true, then false', async () => {
    const id = await send(liveKey);
    const { pixel } = await trackingPaths(id);
    const first = await fetch(base + pixel, { headers: { 'user-agent': 'TestMail/1.0' } });
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('content-type'), 'image/gif');
    assert.equal(first.headers.get('cache-control'), 'no-store, private');
    const body = Buffer.from(await first.arrayBuffer());
    assert.equal(body.length, 43);
    assert.deepEqual(body, PIXEL);
    assert.equal(body.subarray(0, 6).toString('latin1'), 'GIF89a');
    const second = await fetch(base + pixel);
    assert.equal(second.status, 200);
    await second.arrayBuffer();
    const recorded = await events(id);
    assert.deepEqual(
      recorded.map((e) => [e.type, e.detail.first, e.tenant_id, e.route]),
      [['opened', true, tenantId, 'inbox'], ['opened', false, tenantId, 'inbox']],
    );
    assert.equal(recorded[0].detail.user_agent, 'TestMail/1.0');
    const view = await callJson(base, 'GET', `/admin/messages/${id}`);
    assert.deepEqual(view.body.events.filter((e: { type: string }) => e.type === 'opened').map((e: { detail: { first: boolean } }) => e.detail.first), [true, false]);
  });

  test('a click redirects (302) to the exact original URL and records clicked with the URL', async () => {
    const id = await send(liveKey);
    const { click } = await trackingPaths(id);
    const res = await fetch(base + click, { redirect: 'manual', headers: { 'user-agent': 'TestMail/2.0' } });
    assert.equal(res.status, 302);
    assert.equal(res.headers.get('location'), ORDER_URL);
    assert.equal(res.headers.get('cache-control'), 'no-store, private');
    await res.arrayBuffer();
    const again = await fetch(base + click, { redirect: 'manual', headers: { 'user-agent': 'TestMail/3.0' } });
    assert.equal(again.status, 302);
    await again.arrayBuffer();
    const recorded = await events(id);
    assert.deepEqual(recorded.map((e) => e.detail), [
      { first: true, url: ORDER_URL, user_agent: 'TestMail/2.0' },
      { first: false, url: ORDER_URL, user_agent: 'TestMail/3.0' },
    ]);
    assert.ok(recorded.every((e) => e.type === 'clicked' && e.tenant_id === tenantId && e.route === 'inbox'));
  });

  test('HEAD answers like GET but records nothing (link checkers are not readers)', async () => {
    const id = await send(liveKey);
    const { pixel, click } = await trackingPaths(id);
    const p = await fetch(base + pixel, { method: 'HEAD' });
    assert.equal(p.status, 200);
    assert.equal(p.headers.get('content-type'), 'image/gif');
    const c = await fetch(base + click, { method: 'HEAD', redirect: 'manual' });
    assert.equal(c.status, 302);
    assert.equal(c.headers.get('location'), ORDER_URL);
    assert.deepEqual(await events(id), []);
  });

  test('forged, altered, other-secret and wrong-kind tokens are 404 and record nothing', async () => {
    const id = await send(liveKey);
    const { pixel, click } = await trackingPaths(id);
    const clickToken = click.slice('/t/c/'.length);
    const openToken = pixel.slice('/t/o/'.length, -'.gif'.length);
    const i = Math.floor(clickToken.length / 2);
    const altered = clickToken.slice(0, i) + (clickToken[i] === 'A' ? 'B' : 'A') + clickToken.slice(i + 1);
    const other = new TrackingTokens(`${TEST_SECRET}-another-relay`);
    const before = await engagementCount();
    const paths = [
      `/t/c/${'A'.repeat(60)}`,
      `/t/c/${altered}`,
      `/t/c/${other.click(id, ORDER_URL)}`,
      `/t/c/${openToken}`,
      `/t/o/${clickToken}.gif`,
      `/t/o/${other.open(id)}.gif`,
      `/t/o/${openToken.slice(0, -2)}.gif`,
      `/t/o/${openToken}`,
      `/t/c/${encodeURIComponent('https://evil.example/')}`,
    ];
    for (const path of paths) {
      const res = await fetch(base + path, { redirect: 'manual' });
      assert.equal(res.status, 404, path);
      assert.equal(res.headers.get('location'), null, path);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found', path);
    }
    assert.equal(await engagementCount(), before);
    assert.deepEqual(await events(id), []);
  });

  test('a valid token for a message that no longer exists still answers, and records nothing', async () => {
    const gone = uuidv7();
    const before = await engagementCount();
    const p = await fetch(`${base}/t/o/${relay.ctx.tracking.open(gone)}.gif`);
    assert.equal(p.status, 200);
    assert.deepEqual(Buffer.from(await p.arrayBuffer()), PIXEL);
    const c = await fetch(`${base}/t/c/${relay.ctx.tracking.click(gone, ORDER_URL)}`, { redirect: 'manual' });
    assert.equal(c.status, 302);
    assert.equal(c.headers.get('location'), ORDER_URL);
    assert.equal(await engagementCount(), before);
  });

  test('test-key messages are tracked too, and many opens at once make exactly one first', async () => {
    const id = await send(testKey);
    const { pixel } = await trackingPaths(id);
    const answers = await Promise.all(Array.from({ length: 10 }, () => fetch(base + pixel).then((r) => r.arrayBuffer().then(() => r.status))));
    assert.deepEqual(answers, Array(10).fill(200));
    const recorded = await events(id);
    assert.equal(recorded.length, 10);
    assert.equal(recorded.filter((e) => e.detail.first === true).length, 1);
    const row = await relay.ctx.db.selectFrom('messages').select(['first_opened_at', 'first_clicked_at']).where('id', '=', id).executeTakeFirstOrThrow();
    assert.ok(row.first_opened_at instanceof Date);
    assert.equal(row.first_clicked_at, null);
  });

  test('the message headers turn tracking off against the tenant defaults', async () => {
    const id = await send(liveKey, { headers: { 'X-Transactional-Track-Opens': 'false', 'X-Transactional-Track-Clicks': 'false' } });
    const html = await htmlOf(id);
    assert.doesNotMatch(html, /track\.relay\.test/);
    assert.match(html, /<a href="https:\/\/shop\.example\/orders\/42\?utm_source=mail&amp;ref=a%20b#items">/);
    // The opt-out attribute is ours: it never reaches the reader.
    assert.doesNotMatch(html, /data-txrelay-no-track/);
  });

  test('stats count one unique open and one unique click after two of each, once rolled up', async () => {
    const t = await createTenant(relay.ctx.db, { name: 'counted', track_opens: true, track_clicks: true });
    await addDomain(relay.ctx.db, relay.ctx.box, t.id, { name: 'counted.example', verified: true });
    const key = (await createKey(relay.ctx.db, t.id, { scope: 'send', mode: 'live' })).key;
    await addRoute(relay.ctx, t.id, { name: 'inbox', transport: 'capture' });
    const id = await send(key, { from: 'app@counted.example', headers: { 'X-Transactional-Tag': 'receipts' } });
    const { pixel, click } = await trackingPaths(id);
    for (const path of [pixel, pixel, click, click]) {
      const res = await fetch(base + path, { redirect: 'manual' });
      await res.arrayBuffer();
    }
    for (let i = 0; i < 100 && (await rollUp(relay.ctx.db, 1000)) > 0; i++);
    const unrolled = await relay.ctx.db.selectFrom('events').select('id').where('tenant_id', '=', t.id).where('rolled_up', '=', false).execute();
    assert.deepEqual(unrolled, []);
    const stats = await callJson(base, 'GET', '/admin/stats?tenant=counted&interval=day');
    assert.equal(stats.status, 200, stats.text);
    const receipts = stats.body.tags.find((x: { tag: string }) => x.tag === 'receipts');
    assert.ok(receipts, stats.text);
    assert.equal(receipts.totals.unique_opens, 1);
    assert.equal(receipts.totals.unique_clicks, 1);
    assert.equal(receipts.totals.accepted, 1);
  });
});

describe('tracking when the database fails', () => {
  let relay: TestRelay;
  let server: http.Server;
  let base: string;
  const lines: string[] = [];
  // The same app, but its database refuses connections (nothing listens on port 1) and its log
  // is kept for the test to read.
  const dead = openDatabase('postgres://nobody:nothing@127.0.0.1:1/none');

  before(async () => {
    relay = await startTestRelay();
    const log = createLogger('warn', new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
    server = createApiApp({ ...relay.ctx, db: dead.db, log }).listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await dead.close();
    await relay?.close();
  });

  test('the pixel and the redirect still answer; a warning names the message, never the URL', async () => {
    const id = uuidv7();
    const secretUrl = 'https://shop.example/reset?token=s3cr3t-reset-token';
    const p = await fetch(`${base}/t/o/${relay.ctx.tracking.open(id)}.gif`);
    assert.equal(p.status, 200);
    assert.deepEqual(Buffer.from(await p.arrayBuffer()), PIXEL);
    const c = await fetch(`${base}/t/c/${relay.ctx.tracking.click(id, secretUrl)}`, { redirect: 'manual' });
    assert.equal(c.status, 302);
    assert.equal(c.headers.get('location'), secretUrl);
    const warnings = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'tracking event not recorded');
    assert.deepEqual(warnings.map((w) => [w.event, w.message_id, w.code]), [['opened', id, 'ECONNREFUSED'], ['clicked', id, 'ECONNREFUSED']]);
    assert.ok(!lines.join('\n').includes('s3cr3t'), 'the URL (and its query string) is never logged');
  });
});
