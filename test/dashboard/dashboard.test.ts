// The dashboard in a real browser: Debian's Chromium driven by playwright-core against the whole
// relay. Messages are sent for real (two tags; delivered upstream, refused upstream, captured by
// route and by test key); the page must then show the same numbers, a message's timeline and
// preview, and the capture inbox with its raw MIME. A preview must load nothing from the
// network: a remote image in the HTML (the way a tracking pixel arrives) is never requested.
//
// Screenshots of every view go to test-output/screenshots/ (printed at the end).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { addDomain } from '../../src/services/domains.service.ts';
import { createKey, createTenant, revokeKey } from '../../src/services/tenants.service.ts';
import { callJson } from '../helpers/http.ts';
import { TEST_ADMIN_TOKEN } from '../helpers/context.ts';
import { addRoute, eventually, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { smtpError, startUpstream, type Upstream } from '../helpers/upstream.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (Debian package "chromium"): the browser test needs it`;
// No outside network here: without these flags Chromium tries to reach Google's services.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SCREENSHOTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-output/screenshots');

/** What is sent, per tag, and so what the tag table must show. */
const EXPECTED = {
  receipt: { accepted: '4', sent: '3', deferred: '0', failed: '1', delivery_rate: '75.0%' },
  welcome: { accepted: '3', sent: '3', deferred: '0', failed: '0', delivery_rate: '100.0%' },
};

describe('dashboard in Chromium', { skip }, () => {
  let relay: TestRelay;
  let upstream: Upstream;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let base: string;
  let acmeId: string;
  let pixel: http.Server;
  let pixelHits = 0;
  /** Chromium's reports of the remote image refused by the preview's CSP. */
  let blockedPixels = 0;
  let pixelUrl: string;
  const keys = { read: '', send: '', full: '', test: '', emptyRead: '' };
  const ids = { delivered: '', failed: '', captured: [] as string[] };
  const shots: string[] = [];
  /** Script errors and console errors (CSP violations among them): there must be none. */
  const problems: string[] = [];

  /**
   * The whole page. Not `fullPage`: Chromium does not paint a sandboxed frame outside the
   * viewport, so the viewport is stretched to the page's height for the shot instead.
   */
  async function shot(name: string): Promise<void> {
    const viewport = page.viewportSize()!;
    const height = Number(await page.evaluate('document.documentElement.scrollHeight'));
    await page.setViewportSize({ width: viewport.width, height: Math.max(viewport.height, Math.min(height, 8000)) });
    await page.evaluate('new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))');
    const file = path.join(SCREENSHOTS, `${name}.png`);
    await page.screenshot({ path: file });
    await page.setViewportSize(viewport);
    shots.push(file);
  }

  async function send(key: string, extra: Record<string, unknown>): Promise<string> {
    const r = await callJson(base, 'POST', '/v1/messages', {
      token: key,
      body: {
        from: 'Acme Shop <shop@acme.example>',
        to: ['jane@example.org'],
        subject: 'Your receipt',
        html: `<h1>Thanks for your order, Jane</h1><p>Order <b>42</b> is on its way.</p><img src="${pixelUrl}" alt="" width="1" height="1">`,
        ...extra,
      },
    });
    assert.equal(r.status, 202, r.text);
    return r.body.id;
  }

  /** Signs in afresh, whoever was signed in before. */
  async function signIn(credential: string): Promise<void> {
    if (page.url().startsWith(base)) await page.evaluate('sessionStorage.clear()');
    await page.goto(`${base}/dashboard`);
    await page.fill('#credential', credential);
    await page.click('button[type=submit]');
  }

  /** The tag table's cells for one tag, by column. */
  async function tagRow(tag: string): Promise<Record<string, string>> {
    const row = page.locator(`[data-testid=tag-table] tbody tr[data-tag="${tag}"]`);
    await row.waitFor();
    const out: Record<string, string> = {};
    for (const col of ['accepted', 'sent', 'deferred', 'failed', 'delivery_rate']) {
      out[col] = (await row.locator(`td[data-col=${col}]`).innerText()).trim();
    }
    return out;
  }

  before(async () => {
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
    // Stands in for a tracking pixel or any remote image: a preview must never request it.
    pixel = http.createServer((_req, res) => {
      pixelHits++;
      res.writeHead(200, { 'content-type': 'image/gif' }).end();
    });
    await new Promise<void>((resolve) => pixel.listen(0, '127.0.0.1', resolve));
    pixelUrl = `http://127.0.0.1:${(pixel.address() as AddressInfo).port}/t/o/pixel.gif`;

    upstream = await startUpstream();
    upstream.behaviour.onRcpt = (address) => (address.startsWith('nobody@') ? smtpError(550, '5.1.1 <nobody@example.org>: no such user here') : undefined);
    relay = await startTestRelay();
    base = `http://127.0.0.1:${relay.httpPort}`;
    const db = relay.ctx.db;
    const acme = await createTenant(db, { name: 'acme' });
    acmeId = acme.id;
    await addDomain(db, relay.ctx.box, acme.id, { name: 'acme.example', verified: true });
    await addRoute(relay.ctx, acme.id, { name: 'main', transport: 'smtp', config: { host: '127.0.0.1', port: upstream.port } });
    await addRoute(relay.ctx, acme.id, { name: 'inbox', transport: 'capture' });
    keys.read = (await createKey(db, acme.id, { scope: 'read' })).key;
    keys.send = (await createKey(db, acme.id, { scope: 'send' })).key;
    keys.full = (await createKey(db, acme.id, { scope: 'full' })).key;
    keys.test = (await createKey(db, acme.id, { scope: 'send', mode: 'test' })).key;
    const empty = await createTenant(db, { name: 'quiet' });
    keys.emptyRead = (await createKey(db, empty.id, { scope: 'read' })).key;

    // receipt: three delivered, one refused upstream. welcome: two through the capture route, one with a test key.
    ids.delivered = await send(keys.full, { route: 'main', tag: 'receipt' });
    for (let i = 0; i < 2; i++) await send(keys.full, { route: 'main', tag: 'receipt', subject: `Your receipt #${i + 2}` });
    ids.failed = await send(keys.full, { route: 'main', tag: 'receipt', to: ['nobody@example.org'], subject: 'Receipt for nobody' });
    for (let i = 0; i < 2; i++) ids.captured.push(await send(keys.full, { route: 'inbox', tag: 'welcome', subject: `Welcome aboard, Jane (${i + 1})`, to: [`jane+${i}@example.org`] }));
    ids.captured.push(await send(keys.test, { tag: 'welcome', subject: 'Welcome (sent with a test key)', to: ['dev@example.org'] }));
    await eventually(async () => {
      const r = await callJson(base, 'GET', '/v1/messages?limit=50', { token: keys.read });
      const settled = r.body.items.filter((m: { status: string }) => m.status === 'sent' || m.status === 'failed');
      return settled.length === 7;
    }, 30_000, 'all seven messages settled');

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    context = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'en-US', timezoneId: 'Europe/Berlin', acceptDownloads: true });
    page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      // Refused sign-ins, unknown messages and invalid filters are answered 4xx by the API on
      // purpose, and Chromium logs each such fetch. A page asset failing is a problem.
      if (/status of 4\d\d/.test(m.text()) && /\/(v1|admin)\//.test(new URL(m.location().url).pathname)) return;
      // The preview's remote image, refused by its policy: what must happen.
      if (m.text().includes(pixelUrl) && /violates the following Content Security Policy/.test(m.text())) blockedPixels++;
      else problems.push(`console: ${m.text()}`);
    });
  });

  after(async () => {
    await browser?.close();
    await relay?.close();
    await upstream?.close();
    await new Promise((resolve) => pixel?.close(resolve));
    if (shots.length) console.log(`screenshots:\n${shots.map((s) => `  ${s}`).join('\n')}`);
  });

  test('a wrong key, and a send-only key, are refused with a reason', async () => {
    await signIn('txr_live_' + 'x'.repeat(32));
    await page.locator('.form-error', { hasText: 'Key not accepted' }).waitFor();
    await signIn('not-the-admin-token');
    await page.locator('.form-error', { hasText: 'neither an API key' }).waitFor();
    await signIn(keys.send);
    await page.locator('.form-error', { hasText: 'cannot read' }).waitFor();
    await shot('01-sign-in-refused');
  });

  test('signed in with a read key, the tag table counts what was sent', async () => {
    await signIn(keys.read);
    await page.locator('[data-testid=tag-table]').waitFor();
    assert.deepEqual(await tagRow('receipt'), EXPECTED.receipt);
    assert.deepEqual(await tagRow('welcome'), EXPECTED.welcome);
    // Totals across both tags, and the chart drew.
    assert.equal(await page.locator('tfoot td[data-col=accepted]').innerText(), '7');
    await page.locator('[data-testid=chart] canvas').waitFor();
    // The credential is kept for this tab only.
    assert.equal(await page.evaluate('localStorage.length'), 0);
    await shot('02-tags');
  });

  test('the period, interval and route filters change what is counted', async () => {
    await page.click('.segmented button:text-is("Last 30 days")');
    await page.locator('.segmented button.on:text-is("Last 30 days")').waitFor();
    assert.equal(await page.locator('select[name=interval]').inputValue(), 'day');
    assert.deepEqual(await tagRow('receipt'), EXPECTED.receipt);

    await page.fill('input[name=route]', 'inbox');
    await page.click('.toolbar button[type=submit]');
    await page.locator('.page-head p', { hasText: 'route inbox' }).waitFor();
    // Only the two messages of the capture route: no receipt, and no test-key message.
    assert.deepEqual(await tagRow('welcome'), { accepted: '2', sent: '2', deferred: '0', failed: '0', delivery_rate: '100.0%' });
    assert.equal(await page.locator('[data-testid=tag-table] tbody tr').count(), 1);

    await page.fill('input[name=route]', 'no-such-route');
    await page.click('.toolbar button[type=submit]');
    await page.locator('.empty', { hasText: 'Nothing went through route “no-such-route”' }).waitFor();
  });

  test('the message log filters by status and pages back and forth', async () => {
    await page.goto(`${base}/dashboard#/messages?limit=3`);
    const table = page.locator('[data-testid=message-log]');
    const rows = table.locator('tbody tr');
    const idsShown = () => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')));
    /** Clicks a pager button and waits for the page that replaces the one showing `shown`. */
    const turn = async (label: string, shown: (string | null)[]) => {
      await page.click(`.pager button:text-is("${label}")`);
      await table.locator(`tr[data-id="${shown[0]}"]`).waitFor({ state: 'detached' });
      await table.waitFor();
      return await idsShown();
    };
    await table.waitFor();
    const first = await idsShown();
    assert.equal(first.length, 3);
    const second = await turn('Older →', first);
    assert.equal(second.length, 3);
    const third = await turn('Older →', second);
    assert.equal(third.length, 1);
    assert.equal(await page.locator('.pager button:text-is("Older →")').count(), 0, 'the last page has no older one');
    assert.deepEqual(await turn('← Newer', third), second);
    assert.equal(new Set([...first, ...second, ...third]).size, 7, 'every message once, on one page only');

    await page.selectOption('select[name=status]', 'failed');
    await page.click('form.filters button[type=submit]');
    await page.locator('.pager', { hasText: '1 message on this page' }).waitFor();
    assert.deepEqual(await idsShown(), [ids.failed]);
    await page.fill('input[name=recipient]', 'someone-else@example.org');
    await page.click('form.filters button[type=submit]');
    await page.locator('.empty', { hasText: 'No messages match these filters' }).waitFor();
  });

  test('a tag leads to its messages; a message shows its timeline and a preview that loads nothing', async () => {
    await page.goto(`${base}/dashboard#/tags`);
    await page.click('[data-testid=tag-table] a:text-is("receipt")');
    const log = page.locator('[data-testid=message-log]');
    await log.waitFor();
    assert.equal(await log.locator('tbody tr').count(), 4);
    await shot('03-message-log');

    await log.locator(`tr[data-id="${ids.delivered}"] a`).click();
    const timeline = page.locator('[data-testid=timeline]');
    await timeline.waitFor();
    assert.deepEqual(await timeline.locator('li').evaluateAll((lis) => lis.map((li) => li.getAttribute('data-type'))), ['accepted', 'sent']);
    assert.match(await timeline.locator('li[data-type=sent]').innerText(), /Upstream reply\s+250 queued upstream/);
    assert.match(await page.locator('[data-testid=verdicts]').innerText(), /platform-headers/);

    const frame = page.frameLocator('iframe.preview');
    assert.equal(await frame.locator('h1').innerText(), 'Thanks for your order, Jane');
    const sandbox = await page.locator('iframe.preview').getAttribute('sandbox');
    assert.equal(sandbox, '', 'sandboxed, with no allow-* at all');
    await page.waitForLoadState('networkidle');
    assert.equal(pixelHits, 0, 'the preview requested the remote image');
    assert.ok(blockedPixels > 0, 'the remote image was refused by the preview\'s policy');
    await shot('04-message');
  });

  test('a refused message shows the upstream\'s reply', async () => {
    await page.goto(`${base}/dashboard#/messages/${ids.failed}`);
    const failed = page.locator('[data-testid=timeline] li[data-type=failed]');
    await failed.waitFor();
    assert.match(await failed.innerText(), /550.*no such user/);
    assert.match(await page.locator('[data-testid=recipients]').innerText(), /nobody@example\.org\s+✕\s+failed\s+550 5\.1\.1/);
    await shot('05-message-failed');
  });

  test('the capture inbox holds the captured messages, with their raw MIME', async () => {
    await page.click('nav a[data-nav=inbox]');
    const list = page.locator('[data-testid=inbox-list]');
    await list.waitFor();
    const shown = await list.locator('li').evaluateAll((lis) => lis.map((li) => li.getAttribute('data-id')));
    assert.deepEqual(shown, [...ids.captured].reverse(), 'the captured messages, newest first, and nothing else');
    // The newest is open: a test-key message.
    await page.locator('.mail', { hasText: 'a test key' }).waitFor();
    assert.match(await page.frameLocator('iframe.preview').locator('body').innerText(), /Order 42 is on its way/);

    await list.locator(`li[data-id="${ids.captured[0]}"]`).click();
    await page.locator('.mail h2', { hasText: 'Welcome aboard, Jane (1)' }).waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('.mail [data-action=download-mime]')]);
    assert.equal(download.suggestedFilename(), `${ids.captured[0]}.eml`);
    const mime = fs.readFileSync(await download.path(), 'utf8');
    assert.match(mime, /^[A-Za-z][A-Za-z0-9-]*: /, 'starts with a MIME header');
    assert.match(mime, /\r\nSubject: Welcome aboard, Jane \(1\)\r\n/);
    assert.equal(pixelHits, 0);
    await shot('06-capture-inbox');
  });

  test('a tenant with nothing yet is told how to send', async () => {
    await page.click('text=Sign out');
    assert.equal(await page.evaluate('sessionStorage.length'), 0, 'signing out forgets the credential');
    await signIn(keys.emptyRead);
    await page.locator('.empty', { hasText: 'No messages in this period' }).waitFor();
    assert.match(await page.locator('.empty').innerText(), /swaks --server relay\.test:\d+/);
    await shot('07-empty-tags');
    await page.click('nav a[data-nav=inbox]');
    await page.locator('.empty', { hasText: 'Nothing captured yet' }).waitFor();
    await shot('08-empty-inbox');
    await page.click('text=Sign out');
  });

  test('the admin token signs in with a tenant picker', async () => {
    await signIn(TEST_ADMIN_TOKEN);
    const picker = page.locator('select#tenant');
    await picker.waitFor();
    await page.locator('select#tenant:not([disabled])').waitFor();
    // First tenant by name is picked: acme.
    await page.locator('[data-testid=tag-table]').waitFor();
    assert.equal(await picker.inputValue(), 'acme');
    assert.deepEqual(await tagRow('receipt'), EXPECTED.receipt);
    await shot('09-admin-tags');
    await picker.selectOption('quiet');
    await page.locator('.empty', { hasText: 'No messages in this period' }).waitFor();
    await picker.selectOption('acme');
    await page.click('nav a[data-nav=messages]');
    await page.locator('[data-testid=message-log]').waitFor();
    assert.equal(await page.locator('[data-testid=message-log] tbody tr').count(), 7);
    await shot('10-admin-log');

    // A small laptop screen.
    await page.setViewportSize({ width: 1024, height: 700 });
    await page.goto(`${base}/dashboard#/messages/${ids.failed}`);
    await page.locator('[data-testid=timeline]').waitFor();
    await shot('11-message-1024px');
    await page.setViewportSize({ width: 1366, height: 900 });
  });

  test('an unknown message, invalid filters and a revoked key are each explained', async () => {
    const key = await createKey(relay.ctx.db, acmeId, { scope: 'read' });
    await signIn(key.key);
    await page.locator('[data-testid=tag-table]').waitFor();

    await page.goto(`${base}/dashboard#/messages/${randomUUID()}`);
    await page.locator('.problem h2', { hasText: 'Not found' }).waitFor();
    await page.goto(`${base}/dashboard#/messages?recipient=ab`);
    await page.locator('.problem', { hasText: 'These filters are not valid' }).waitFor();
    assert.match(await page.locator('.problem').innerText(), /recipient/);
    await shot('12-invalid-filter');
    await page.click('.problem a:text-is("Clear the filters")');
    await page.locator('[data-testid=message-log]').waitFor();

    await revokeKey(relay.ctx.db, acmeId, key.id);
    await page.click('nav a[data-nav=inbox]');
    await page.locator('.form-error', { hasText: 'not accepted any more' }).waitFor();
    assert.equal(await page.evaluate('sessionStorage.length'), 0, 'the dead credential is forgotten');
  });

  test('no script error and no CSP violation on any page', () => {
    assert.deepEqual(problems, []);
  });
});
