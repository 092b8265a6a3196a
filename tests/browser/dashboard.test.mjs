// End-to-end test of the pushd web dashboard in a real headless Chromium.
//
// Starts the real daemon (`target/debug/pushd serve`, or $PUSHD_BIN) on a loopback port
// the system picks (the daemon prints it), with a fresh data dir and no provider
// credentials, seeds customers, devices and a message over the HTTP API, sends a push to
// 50 customers, then drives the dashboard with playwright-core and checks what the page
// shows against what the API answers (overview, delivery log, webhooks, a message's
// preview), at desktop width and at 390 px. The preview of pushes as they go on the wire
// runs on a second daemon started with --simulated-providers.
//
// Run: (cd tests/browser && npm ci) && cargo build && node --test tests/browser/
// Env: PUSHD_BIN (daemon binary), CHROMIUM_PATH (default /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startDaemon } from '../support/daemon.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = process.env.PUSHD_BIN ?? path.join(ROOT, 'target', 'debug', 'pushd');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'target', 'browser');
const API_KEY = 'test-api-key-0123456789';
const SDK_KEY = 'test-sdk-key-0123456789';

const MESSAGE = 'welcome';
const CAMPAIGN = 'onboarding';
const N = 50;
const cid = (i) => `cust-${String(i).padStart(2, '0')}`;
// Seed shape: every 10th customer has no device (undeliverable/no_devices); customer 7
// lacks the `plan` attribute the body uses (failed/liquid_variable_missing); the rest
// have an iOS (odd) or Android (even) device, every 3rd both, and fail with
// credentials_not_found because no provider credentials are configured.
const NO_DEVICES = (i) => i % 10 === 0;
const LIQUID = 7;
const TWO_DEVICES = 3; // odd and divisible by 3: iOS + Android

const FINAL = new Set(['sent', 'delivered', 'opened', 'converted', 'failed', 'undeliverable', 'bounced']);
const COUNTERS = ['sends', 'attempted', 'sent', 'delivered', 'opened', 'converted', 'failed', 'bounced', 'undeliverable', 'suppressed', 'recipients'];
const RATES = ['delivered', 'opened', 'converted', 'opened_of_delivered'];

let daemon;
let dataDir;
let base;
let browser;
let page;
const pageErrors = [];
const deliveryOf = new Map(); // customer id -> delivery id
let boundary; // the creation second of a delivery made after every other one (Unix seconds)

// ---------------------------------------------------------------------------------------
// Helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(method, p, body, { expect } = {}) {
  const res = await fetch(base + p, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (expect !== undefined) {
    const ok = Array.isArray(expect) ? expect.includes(res.status) : res.status === expect;
    assert.ok(ok, `${method} ${p} → ${res.status} (expected ${expect}): ${text}`);
  }
  return { status: res.status, json };
}

async function until(what, fn, timeoutMs = 30_000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

const dig = (obj, key) => key.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
const pct = (r) => `${(r * 100).toFixed(1)}%`;
/** The count each rate is taken over; a rate over a zero count shows n/a. */
const RATE_BASE = { delivered: 'sent', opened: 'sent', converted: 'sent', opened_of_delivered: 'delivered', delivered_of_opted_in: 'opted_in_sent' };
/** The text a rate of metrics `m` should show: n/a over nothing (or for a silent push's opens). */
const shownRate = (m, key, kind) => ((kind === 'background' && !['delivered', 'delivered_of_opted_in'].includes(key))
  || m[RATE_BASE[key]] === 0 ? 'n/a' : pct(m.rates[key]));

/** Every `[data-metric]` on the page: {metric, platform, value, text}. */
function readMetrics() {
  return page.$$eval('[data-metric]', (els) => els.map((e) => ({
    metric: e.dataset.metric,
    platform: e.dataset.platform ?? null,
    value: e.dataset.value ?? null,
    text: e.textContent.trim(),
  })));
}

function assertMetricsShown(cells, m, label) {
  const cell = (metric, platform = null) => {
    const found = cells.filter((c) => c.metric === metric && c.platform === platform);
    assert.equal(found.length, 1, `${label}: exactly one element for ${metric}${platform ? ` (${platform})` : ''}`);
    return found[0];
  };
  const check = (c, v, isRate, what, base) => {
    if (typeof v !== 'number') return;
    assert.equal(Number(c.value), v, `${what}: data-value`);
    const rate = () => (base && base.m[RATE_BASE[base.key]] === 0 ? 'n/a' : pct(v));
    assert.equal(c.text, isRate ? rate() : v.toLocaleString('en-US'), `${what}: text`);
  };
  for (const k of COUNTERS) {
    assert.equal(typeof m[k], 'number', `${label}: API metrics has ${k}`);
    check(cell(k), m[k], false, `${label} ${k}`);
  }
  for (const k of ['delivered', 'opened', 'converted']) {
    assert.equal(typeof m.rates?.[k], 'number', `${label}: API metrics has rates.${k}`);
  }
  for (const k of RATES) check(cell(`rates.${k}`), m.rates?.[k], true, `${label} rates.${k}`, { m, key: k });
  for (const p of ['ios', 'android']) {
    assert.ok(m.by_platform?.[p], `${label}: API metrics has by_platform.${p}`);
    for (const k of COUNTERS) check(cell(k, p), m.by_platform[p][k], false, `${label} ${p} ${k}`);
    for (const k of RATES) check(cell(`rates.${k}`, p), m.by_platform[p].rates?.[k], true, `${label} ${p} rates.${k}`, { m: m.by_platform[p], key: k });
    assert.equal(typeof m.by_platform[p].opted_in_sent, 'number', `${label}: API metrics has by_platform.${p}.opted_in_sent`);
    check(cell('opted_in_sent', p), m.by_platform[p].opted_in_sent, false, `${label} ${p} opted_in_sent`);
    check(cell('rates.delivered_of_opted_in', p), m.by_platform[p].rates?.delivered_of_opted_in, true, `${label} ${p} rates.delivered_of_opted_in`, { m: m.by_platform[p], key: 'delivered_of_opted_in' });
  }
}

/** Unix seconds as the value of a datetime-local picker, in the page's zone (the
 * browser leaves out zero seconds). */
function localInput(t) {
  return page.evaluate((sec) => {
    const d = new Date(sec * 1000);
    const pad = (n) => String(n).padStart(2, '0');
    const seconds = d.getSeconds() ? `:${pad(d.getSeconds())}` : '';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}${seconds}`;
  }, t);
}

/** Whether each numeric column's header is aligned as its cells are, in table `sel`. */
function headersAlignWithCells(sel) {
  return page.$eval(sel, (table) => {
    const heads = [...table.querySelectorAll('thead th')];
    const row = table.querySelector('tbody tr:not(.empty-row)');
    return heads.map((th, i) => {
      const cell = row?.children[i];
      return {
        header: th.textContent.trim(),
        numeric: cell?.classList.contains('numeric') ?? false,
        th: getComputedStyle(th).textAlign,
        td: cell ? getComputedStyle(cell).textAlign : null,
      };
    }).filter((c) => c.numeric);
  });
}

/** The failure-reasons table's rows, top to bottom. */
function readReasonRows() {
  return page.$$eval('#reasons-table tbody tr', (trs) => trs.map((tr) => {
    const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
    return {
      reason: tr.dataset.reason ?? null,
      count: cell('count')?.dataset.value ?? null,
      countText: cell('count')?.textContent.trim() ?? null,
      share: cell('share')?.dataset.value ?? null,
      shareText: cell('share')?.textContent.trim() ?? null,
      fix: cell('fix')?.textContent.trim() ?? null,
      text: tr.textContent.trim(),
    };
  }));
}

/** The table lists exactly the API's `failure_reasons`, in its order, with its numbers. */
function assertReasonsShown(rows, m, label) {
  assert.deepEqual(rows.map((r) => r.reason), m.failure_reasons.map((r) => r.reason), `${label}: reasons, largest first`);
  for (const [row, r] of rows.map((row, i) => [row, m.failure_reasons[i]])) {
    assert.equal(Number(row.count), r.count, `${label} ${r.reason}: data-value of count`);
    assert.equal(row.countText, r.count.toLocaleString('en-US'), `${label} ${r.reason}: count`);
    assert.equal(Number(row.share), r.share, `${label} ${r.reason}: data-value of share`);
    assert.equal(row.shareText, pct(r.share), `${label} ${r.reason}: share`);
    assert.equal(row.fix, r.fix, `${label} ${r.reason}: what to do`);
  }
}

async function shot(name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
  return file;
}

/** The page's device rows of the delivery shown. */
function readDeviceRows() {
  return page.$$eval('#devices-table tbody tr', (rows) => rows.map((r) => {
    const f = (k) => r.querySelector(`[data-field="${k}"]`);
    return {
      token: r.dataset.token,
      platform: f('platform').textContent.trim(),
      status: r.dataset.status,
      attempts: f('attempts').dataset.value ?? null,
      last_error: f('last_error').textContent.trim(),
      provider_id: f('provider_id').textContent.trim(),
      sent_at: f('sent_at').dataset.value ?? null,
    };
  }));
}

function assertDevicesShown(rows, d) {
  assert.equal(rows.length, d.devices.length, 'one row per device');
  for (const dev of d.devices) {
    const row = rows.find((r) => r.token === dev.token);
    assert.ok(row, `row for device ${dev.token}`);
    assert.equal(row.platform, dev.platform === 'ios' ? 'iOS' : 'Android');
    assert.equal(row.status, dev.status);
    assert.equal(row.attempts, String(dev.attempts));
    assert.equal(row.last_error, dev.last_error ?? '\u2014');
    assert.equal(row.provider_id, dev.provider_id ?? '\u2014');
    assert.equal(row.sent_at, dev.sent_at == null ? null : String(dev.sent_at));
  }
}

async function openDelivery(deliveryId) {
  await page.goto(`${base}/#/deliveries/${encodeURIComponent(deliveryId)}`);
  await page.locator('#delivery-summary [data-field="delivery_id"]', { hasText: deliveryId }).waitFor();
}

/** Press Retry, check the page called the API, and wait for the re-rendered result. */
async function pressRetry(deliveryId) {
  const retried = page.waitForResponse((r) => r.url().endsWith(`/v1/deliveries/${encodeURIComponent(deliveryId)}/retry`) && r.request().method() === 'POST');
  await page.locator('#retry').click();
  const res = await retried;
  assert.equal(res.status(), 202, 'retry answered 202');
  await page.locator('#retry-result').waitFor({ timeout: 40_000 });
  return page.locator('#retry-result').getAttribute('data-outcome');
}

// ---------------------------------------------------------------------------------------
// Daemon and browser

before(async () => {
  assert.ok(fs.existsSync(BIN), `daemon binary ${BIN} (build it with cargo build, or set PUSHD_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushd-browser-'));
  daemon = await startDaemon(BIN, dataDir, {
    PUSHD_API_KEY: API_KEY,
    PUSHD_SDK_KEY: SDK_KEY,
    // The webhooks test points a webhook at a (closed) loopback port.
    PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
  });
  base = daemon.base;
  await until('GET /healthz', async () => {
    daemon.alive();
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    } catch {
      return false;
    }
  }, 30_000);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // A 404 of the optional timeseries endpoint is logged by Chromium as a failed
    // resource load; that is expected, anything else is not.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(`console: ${m.text()}`);
  });
}, { timeout: 90_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await daemon?.stop();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
}, { timeout: 30_000 });

process.on('exit', () => { if (daemon?.process.exitCode === null) daemon.process.kill('SIGKILL'); });

// ---------------------------------------------------------------------------------------
// Tests (they run in order and share the daemon, the data and the page)

test('seed over the API: 50 sends end failed, undeliverable or liquid-failed', { timeout: 60_000 }, async () => {
  await api('PUT', `/v1/messages/${MESSAGE}`, {
    name: 'Welcome push', campaign_id: CAMPAIGN,
    title: 'Hi {{customer.first_name}}', body: 'Your {{customer.plan}} plan is ready',
    deep_link: 'myapp://home', audience: 'all_devices',
    conversion: { event: 'purchase', window_seconds: 86400 },
  }, { expect: [200, 201, 204] });

  const ids = [];
  for (let i = 1; i <= N; i++) {
    const id = cid(i);
    ids.push(id);
    const attributes = { first_name: `Person ${i}` };
    if (i !== LIQUID) attributes.plan = i % 2 ? 'pro' : 'free';
    await api('PUT', `/v1/customers/${id}`, { attributes, unsubscribed: false }, { expect: [200, 201, 204] });
    if (NO_DEVICES(i)) continue;
    const devices = [];
    if (i % 2 === 1 || i % 3 === 0) devices.push({ id: `ios-token-${i}`, platform: 'ios' });
    if (i % 2 === 0 || i % 3 === 0) devices.push({ id: `android-token-${i}`, platform: 'android' });
    for (const [n, d] of devices.entries()) {
      await api('PUT', `/v1/customers/${id}/devices`, {
        device: { ...d, last_used: 1764100000 + i * 10 + n, attributes: { app_version: '2.1.0' } },
      }, { expect: [200, 201, 204] });
    }
  }

  const sent = await api('POST', '/v1/send/push', { message_id: MESSAGE, customer_ids: ids }, { expect: 202 });
  assert.equal(sent.json.deliveries.length, N);
  for (const d of sent.json.deliveries) deliveryOf.set(d.customer_id, d.delivery_id);

  const all = await until('all 50 deliveries to settle', async () => {
    const { json } = await api('GET', `/v1/deliveries?channel=push&message_id=${MESSAGE}&limit=100`, null, { expect: 200 });
    return json.deliveries.length === N && json.deliveries.every((d) => FINAL.has(d.status)) ? json.deliveries : null;
  }, 45_000, 250);

  const byCustomer = new Map(all.map((d) => [d.customer_id, d]));
  for (let i = 1; i <= N; i++) {
    const d = byCustomer.get(cid(i));
    if (NO_DEVICES(i)) assert.equal(d.status, 'undeliverable', `${cid(i)} has no devices`);
    else if (i === LIQUID) assert.deepEqual([d.status, d.failure_reason], ['failed', 'liquid_variable_missing'], `${cid(i)} lacks plan`);
    else assert.deepEqual([d.status, d.failure_reason], ['failed', 'credentials_not_found'], `${cid(i)} has no credentials`);
  }
});

test('the API key form: a wrong key brings it back, the right one opens the dashboard', { timeout: 30_000 }, async () => {
  const res = await page.goto(`${base}/`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  for (const [asset, type] of [['app.js', /^text\/javascript/], ['style.css', /^text\/css/]]) {
    const r = await fetch(`${base}/assets/${asset}`);
    assert.equal(r.status, 200, asset);
    assert.match(r.headers.get('content-type'), type, asset);
  }

  await page.locator('#login').waitFor();
  await page.getByLabel('API key').fill('wrong-key');
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.locator('#login-reason', { hasText: 'not accepted' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pushd.apiKey')), null);

  const sawBearer = page.waitForRequest((r) => r.url().includes('/v1/') && r.headers().authorization === `Bearer ${API_KEY}`);
  await page.getByLabel('API key').fill(API_KEY);
  await page.getByRole('button', { name: 'Continue' }).click();
  await sawBearer;
  await page.locator('#view-overview').waitFor();
  assert.equal(await page.locator('#login').isVisible(), false);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pushd.apiKey')), API_KEY);
});

test('overview opens on the campaigns and messages, newest first, with their headline figures', { timeout: 30_000 }, async () => {
  await page.goto(`${base}/#/overview`);
  const { json: list } = await api('GET', '/v1/messages', null, { expect: 200 });
  const { json: camps } = await api('GET', '/v1/campaigns', null, { expect: 200 });
  await page.locator(`#messages-table tr[data-message-id="${MESSAGE}"]`).waitFor();
  const rows = (table, key) => page.$$eval(`#${table} tbody tr[data-${key}-id]`, (trs, k) => trs.map((tr) => ({
    id: tr.dataset[`${k}Id`],
    text: tr.querySelector('th').textContent,
    sends: tr.querySelector('[data-field="sends"]').dataset.value,
    sent: tr.querySelector('[data-field="sent"]').dataset.value,
    delivered: tr.querySelector('[data-field="rates.delivered"]').textContent,
    opened: tr.querySelector('[data-field="rates.opened"]').textContent,
    converted: tr.querySelector('[data-field="rates.converted"]').textContent,
  })), key);
  const shown = await rows('messages-table', 'message');
  assert.deepEqual(shown.map((r) => r.id), list.messages.map((m) => m.message_id), 'messages in the API\u2019s order');
  for (const [i, m] of list.messages.entries()) {
    assert.ok(shown[i].text.includes(m.name), `the message\u2019s name is shown: ${shown[i].text}`);
    assert.equal(shown[i].sends, String(m.metrics.sends));
    assert.equal(shown[i].sent, String(m.metrics.sent));
    assert.equal(shown[i].delivered, shownRate(m.metrics, 'delivered', m.kind));
    assert.equal(shown[i].opened, shownRate(m.metrics, 'opened', m.kind));
    assert.equal(shown[i].converted, shownRate(m.metrics, 'converted', m.kind));
  }
  const shownCamps = await rows('campaigns-table', 'campaign');
  assert.deepEqual(shownCamps.map((r) => r.id), camps.campaigns.map((c) => c.campaign_id));
  assert.equal(shownCamps[0].sends, String(camps.campaigns[0].metrics.sends));
  assert.equal(await page.locator('#overview-body').isVisible(), false, 'no empty metrics form');
  await shot('overview-lists');
});

test('overview shows the metrics of the campaign and of the message as the API reports them', { timeout: 60_000 }, async () => {
  // Delivered and opened reported at the same minute for one device: the chart's two
  // lines are equal and must both stay visible.
  const reported = deliveryOf.get(cid(5));
  const { json: before } = await api('GET', `/v1/deliveries/${reported}`, null, { expect: 200 });
  for (const event of ['delivered', 'opened']) {
    const res = await fetch(`${base}/push/events`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${SDK_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ delivery_id: reported, event, device_id: 'ios-token-5', timestamp: before.created_at + 60 }),
    });
    assert.equal(res.status, 200, event);
  }

  for (const [kind, id, apiPath] of [
    ['campaign', CAMPAIGN, `/v1/campaigns/${CAMPAIGN}/metrics`],
    ['message', MESSAGE, `/v1/messages/${MESSAGE}/metrics`],
  ]) {
    await page.goto(`${base}/#/overview`);
    const { json: m } = await api('GET', apiPath, null, { expect: 200 });
    assert.equal(m.sends, N, `${kind} sends`);
    await page.locator(`[data-recent="${kind}"]`, { hasText: kind === 'message' ? 'Welcome push' : id }).click();
    await page.waitForFunction((v) => document.querySelector('[data-metric="sends"]:not([data-platform])')?.dataset.value === String(v), m.sends);
    await page.locator('#overview-subject', { hasText: id }).waitFor();
    assertMetricsShown(await readMetrics(), m, kind);
    // The reasons are the delivery log's, counted over its failed and undeliverable rows.
    const logged = {};
    const { json: log } = await api('GET', `/v1/deliveries?channel=push&message_id=${MESSAGE}&limit=100`, null, { expect: 200 });
    for (const d of log.deliveries.filter((d) => d.status === 'failed' || d.status === 'undeliverable')) {
      logged[d.failure_reason] = (logged[d.failure_reason] ?? 0) + 1;
    }
    assert.deepEqual(Object.fromEntries(m.failure_reasons.map((r) => [r.reason, r.count])), logged, `${kind}: failure_reasons count the log's reasons`);
    assertReasonsShown(await readReasonRows(), m, kind);

    const ts = await api('GET', `/v1/${kind}s/${id}/timeseries`);
    const points = ts.status === 200 ? ts.json.points.length : 0;
    assert.equal(await page.locator('#chart svg.chart-svg').getAttribute('data-points'), String(points), `${kind} chart points`);
    assert.ok(points > 0, 'the reports made points');
    const style = (series) => page.$eval(`#chart polyline[data-series="${series}"]`, (el) => {
      const cs = getComputedStyle(el);
      return { dash: cs.strokeDasharray, color: cs.stroke, total: el.dataset.total };
    });
    const [delivered, opened] = [await style('delivered'), await style('opened')];
    assert.equal(delivered.total, opened.total, 'equal lines');
    assert.equal(delivered.dash, 'none', 'delivered is solid');
    assert.notEqual(opened.dash, 'none', 'opened is dashed, so delivered shows through');
    assert.notEqual(delivered.color, opened.color);
    assert.ok(await page.locator('#chart circle.dot-delivered').count() > 0, 'delivered markers');
    assert.ok(await page.locator('#chart rect.dot-opened').count() > 0, 'opened markers');
    // Nothing here is sent on iOS with a lower delivered rate: no note.
    assert.equal(await page.locator('#ios-note').isVisible(), false, 'no iOS note without a gap to explain');
  }
  await shot('overview');

  // With iOS's delivered rate below Android's, the note explains why.
  const { json: real } = await api('GET', `/v1/messages/${MESSAGE}/metrics`, null, { expect: 200 });
  const gap = structuredClone(real);
  gap.by_platform.ios = { ...gap.by_platform.ios, sent: 10, delivered: 3, rates: { ...gap.by_platform.ios.rates, delivered: 0.3 } };
  gap.by_platform.android = { ...gap.by_platform.android, sent: 10, delivered: 9, rates: { ...gap.by_platform.android.rates, delivered: 0.9 } };
  await page.route(`**/v1/messages/${MESSAGE}/metrics`, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(gap) }));
  await page.goto(`${base}/#/overview?campaign=${CAMPAIGN}`);
  await page.goto(`${base}/#/overview?message=${MESSAGE}`);
  await page.locator('#ios-note').waitFor({ state: 'visible' });
  const note = await page.locator('#ios-note').textContent();
  assert.match(note, /opted in/);
  assert.match(note, /Delivered rate, opted in/);
  // The opted-in rate sits right after the plain one, per platform.
  const rowLabels = await page.$$eval('#platform-table tbody th', (ths) => ths.map((th) => th.textContent.trim()));
  const plainRate = rowLabels.indexOf('Delivered rate');
  assert.equal(rowLabels[plainRate + 1], 'Delivered rate, opted in', rowLabels.join(' | '));
  assert.match(note, /Android/);
  await page.unroute(`**/v1/messages/${MESSAGE}/metrics`);
  await page.goto(`${base}/#/overview?campaign=${CAMPAIGN}`);
  await page.goto(`${base}/#/overview?message=${MESSAGE}`);
  await page.waitForFunction(() => document.querySelector('#ios-note').hidden);

  // Nothing failed: the table says so instead of listing reasons.
  const none = { ...real, failed: 0, undeliverable: 0, failure_reasons: [] };
  await page.route(`**/v1/messages/${MESSAGE}/metrics`, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(none) }));
  await page.goto(`${base}/#/overview?campaign=${CAMPAIGN}`);
  await page.goto(`${base}/#/overview?message=${MESSAGE}`);
  await page.locator('#reasons-table tbody tr.empty-row', { hasText: 'No failures' }).waitFor();
  assert.deepEqual((await readReasonRows()).map((r) => r.reason), [null], 'only the empty row');
  await page.unroute(`**/v1/messages/${MESSAGE}/metrics`);
  await page.goto(`${base}/#/overview?campaign=${CAMPAIGN}`);
  await page.goto(`${base}/#/overview?message=${MESSAGE}`);
  await page.locator('#reasons-table tbody tr[data-reason]').first().waitFor();
});

test('overview refreshes by itself within 5 s when the metrics move', { timeout: 40_000 }, async () => {
  // Still on the message overview. One more send moves `sends` to 51.
  const extra = cid(N + 1);
  await api('PUT', `/v1/customers/${extra}`, { attributes: { first_name: 'Late', plan: 'pro' } }, { expect: [200, 201, 204] });
  const sent = await api('POST', '/v1/send/push', { message_id: MESSAGE, customer_ids: [extra] }, { expect: 202 });
  deliveryOf.set(extra, sent.json.deliveries[0].delivery_id);
  await until('the extra delivery to settle', async () => {
    const { json } = await api('GET', `/v1/deliveries/${deliveryOf.get(extra)}`, null, { expect: 200 });
    return FINAL.has(json.status);
  }, 20_000);
  const { json: m } = await api('GET', `/v1/messages/${MESSAGE}/metrics`, null, { expect: 200 });
  assert.equal(m.sends, N + 1);
  await page.waitForFunction((v) => document.querySelector('[data-metric="sends"]:not([data-platform])')?.dataset.value === String(v), m.sends, { timeout: 12_000 });
  assertMetricsShown(await readMetrics(), m, 'message after refresh');
  assertReasonsShown(await readReasonRows(), m, 'message after refresh');
  // When it last refreshed, in the browser's zone, named.
  const updated = await page.locator('#overview-updated').textContent();
  const zone = await page.evaluate(() => new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(new Date()).find((p) => p.type === 'timeZoneName').value);
  assert.match(updated, /^Updated \d\d:\d\d:\d\d /, 'the refresh time');
  assert.ok(updated.endsWith(` ${zone}.`), `the refresh time names the zone ${zone}: ${updated}`);
});

test('overview date range: the picker narrows metrics, failure reasons and chart to the API\u2019s answer for it', { timeout: 60_000 }, async () => {
  // One more delivery, created after every other one: a range from its second holds it alone.
  const { json: log } = await api('GET', '/v1/deliveries?limit=1000', null, { expect: 200 });
  const newest = Math.max(...log.deliveries.map((d) => d.created_at));
  await until('the clock to pass the newest delivery\u2019s second', async () => Date.now() >= (newest + 1) * 1000, 5_000, 50);
  const late = cid(N + 2);
  await api('PUT', `/v1/customers/${late}`, { attributes: { first_name: 'Later', plan: 'pro' } }, { expect: [200, 201, 204] });
  const sent = await api('POST', '/v1/send/push', { message_id: MESSAGE, customer_ids: [late] }, { expect: 202 });
  const id = sent.json.deliveries[0].delivery_id;
  deliveryOf.set(late, id);
  const settled = await until('the late delivery to settle', async () => {
    const { json } = await api('GET', `/v1/deliveries/${id}`, null, { expect: 200 });
    return FINAL.has(json.status) ? json : null;
  }, 20_000);
  boundary = settled.created_at;
  assert.ok(boundary > newest);

  await page.goto(`${base}/#/overview?message=${MESSAGE}`);
  await page.locator('#overview-subject', { hasText: MESSAGE }).waitFor();
  const zone = (await page.locator('#range-form [data-zone]').textContent()).trim();
  const pageZone = await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone);
  assert.ok(zone.includes(pageZone), `the pickers name the browser\u2019s zone: ${zone}`);
  assert.equal(await page.locator('#range-shown').textContent(), 'Showing every delivery (all time).');

  const metricsPath = `/v1/messages/${MESSAGE}/metrics`;
  for (const [label, range] of [['from the boundary', { from: boundary }], ['before the boundary', { to: boundary }]]) {
    const q = new URLSearchParams(Object.entries(range).map(([k, v]) => [k, String(v)])).toString();
    const { json: m } = await api('GET', `${metricsPath}?${q}`, null, { expect: 200 });
    const { json: ts } = await api('GET', `/v1/messages/${MESSAGE}/timeseries?${q}`, null, { expect: 200 });
    await page.fill('#range-from', range.from ? await localInput(range.from) : '');
    await page.fill('#range-to', range.to ? await localInput(range.to) : '');
    const sawRanged = page.waitForRequest((r) => r.url().includes(`${metricsPath}?${q}`));
    await page.getByRole('button', { name: 'Apply range' }).click();
    await sawRanged;
    await page.waitForFunction((v) => document.querySelector('[data-metric="sends"]:not([data-platform])')?.dataset.value === String(v), m.sends);
    assert.equal(new URLSearchParams(await page.evaluate(() => location.hash.split('?')[1])).get(Object.keys(range)[0]), String(Object.values(range)[0]), `${label}: the range is in the URL`);
    assertMetricsShown(await readMetrics(), m, label);
    assertReasonsShown(await readReasonRows(), m, label);
    assert.equal(await page.locator('#chart svg.chart-svg').getAttribute('data-points'), String(ts.points.length), `${label}: chart points`);
    assert.match(await page.locator('#range-shown').textContent(), range.from ? /^Showing deliveries created from / : /^Showing deliveries created before /);
    // The pickers keep the range as applied (a reload reads it back from the URL).
    assert.equal(await page.inputValue(range.from ? '#range-from' : '#range-to'), await localInput(range.from ?? range.to));
  }
  const { json: from } = await api('GET', `${metricsPath}?from=${boundary}`, null, { expect: 200 });
  const { json: before } = await api('GET', `${metricsPath}?to=${boundary}`, null, { expect: 200 });
  const { json: all } = await api('GET', metricsPath, null, { expect: 200 });
  assert.deepEqual([from.sends, from.undeliverable, before.sends], [1, 1, N + 1], 'each side holds its own deliveries');
  assert.equal(from.sends + before.sends, all.sends);

  // A start not before the end is refused on the page, and nothing is asked.
  await page.fill('#range-from', await localInput(boundary));
  await page.fill('#range-to', await localInput(boundary));
  await page.getByRole('button', { name: 'Apply range' }).click();
  await page.locator('#flash', { hasText: 'start must be before its end' }).waitFor();

  await page.getByRole('button', { name: 'All time' }).click();
  await page.waitForFunction((v) => document.querySelector('[data-metric="sends"]:not([data-platform])')?.dataset.value === String(v), all.sends);
  assertMetricsShown(await readMetrics(), all, 'all time again');
  assert.equal(await page.inputValue('#range-from'), '');
  for (const c of await headersAlignWithCells('#reasons-table')) {
    assert.equal(c.th, c.td, `${c.header}: the header is aligned as its numbers`);
  }
  await shot('overview-range');

  // In another zone the pickers show the same second in that zone's local time, and
  // name the zone; a range picked there asks the API for the same second.
  const tokyo = await browser.newContext({ timezoneId: 'Asia/Tokyo', viewport: { width: 1280, height: 900 } });
  try {
    const there = await tokyo.newPage();
    await there.goto(`${base}/`);
    await there.evaluate((key) => sessionStorage.setItem('pushd.apiKey', key), API_KEY);
    await there.goto(`${base}/#/overview?message=${MESSAGE}&from=${boundary}`);
    await there.waitForFunction((v) => document.querySelector('[data-metric="sends"]:not([data-platform])')?.dataset.value === String(v), from.sends);
    assert.match(await there.locator('#range-form [data-zone]').textContent(), /Asia\/Tokyo/);
    const d = new Date((boundary + 9 * 3600) * 1000); // Tokyo is UTC+9 all year
    const want = d.toISOString().slice(0, 19).replace(/:00$/, '');
    assert.equal(await there.inputValue('#range-from'), want, 'the picker shows Tokyo\u2019s local time');
    await there.fill('#range-to', want);
    await there.fill('#range-from', '');
    const sawTo = there.waitForRequest((r) => r.url().includes(`${metricsPath}?to=${boundary}`));
    await there.getByRole('button', { name: 'Apply range' }).click();
    await sawTo;
  } finally {
    await tokyo.close();
  }
});

test('delivery log: filter by status, page with Next/Previous, filter by customer', { timeout: 60_000 }, async () => {
  await page.getByRole('link', { name: 'Delivery log' }).click();
  await page.locator('#view-deliveries').waitFor();

  const rowIds = () => page.$$eval('#log-table tbody tr[data-delivery-id]', (rows) => rows.map((r) => r.dataset.deliveryId));
  const waitRows = (ids) => page.waitForFunction((want) =>
    JSON.stringify([...document.querySelectorAll('#log-table tbody tr[data-delivery-id]')].map((r) => r.dataset.deliveryId)) === JSON.stringify(want), ids);

  // Unfiltered: 51 deliveries, so two pages of 50.
  const p1 = (await api('GET', '/v1/deliveries?channel=push&limit=50&total=true', null, { expect: 200 })).json;
  await waitRows(p1.deliveries.map((d) => d.delivery_id));
  assert.equal(p1.deliveries.length, 50);
  assert.ok(p1.next_cursor, 'a second page exists');
  const p2 = (await api('GET', `/v1/deliveries?channel=push&limit=50&cursor=${encodeURIComponent(p1.next_cursor)}`, null, { expect: 200 })).json;
  await page.getByRole('button', { name: /Next/ }).click();
  await waitRows(p2.deliveries.map((d) => d.delivery_id));
  assert.ok(p2.deliveries.length >= 1);
  await page.getByRole('button', { name: /Previous/ }).click();
  await waitRows(p1.deliveries.map((d) => d.delivery_id));
  assert.equal(await page.getByRole('button', { name: /Previous/ }).isDisabled(), true);

  // status = failed
  await page.getByLabel('Status').selectOption('failed');
  const sawFilter = page.waitForRequest((r) => r.url().includes('/v1/deliveries?') && r.url().includes('status=failed') && r.url().includes('limit=50') && r.url().includes('channel=push'));
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await sawFilter;
  const failed = (await api('GET', '/v1/deliveries?channel=push&status=failed&limit=50', null, { expect: 200 })).json;
  await waitRows(failed.deliveries.map((d) => d.delivery_id));
  const statuses = await page.$$eval('#log-table tbody tr[data-delivery-id]', (rows) => rows.map((r) => r.dataset.status));
  assert.ok(statuses.length > 0 && statuses.every((s) => s === 'failed'), `only failed rows: ${statuses}`);
  const shownIds = await rowIds();
  assert.ok(!shownIds.includes(deliveryOf.get(cid(10))), 'undeliverable delivery is filtered out');

  // customer = the liquid-failure customer
  await page.getByLabel('Status').selectOption('');
  await page.getByLabel('Customer ID').fill(cid(LIQUID));
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await waitRows([deliveryOf.get(cid(LIQUID))]);
  const row = page.locator(`#log-table tr[data-delivery-id="${deliveryOf.get(cid(LIQUID))}"]`);
  assert.equal(await row.locator('[data-field="customer_id"]').textContent(), cid(LIQUID));
  assert.equal(await row.locator('[data-field="message_id"]').textContent(), MESSAGE);
  assert.equal(await row.locator('[data-field="name"]').textContent(), 'Welcome push', 'the message\u2019s name');
  assert.equal(await row.locator('[data-field="status"] .status').textContent(), 'failed');
  await shot('delivery-log');
});

test('delivery log: a Platform column, the total, and the date-range filters', { timeout: 60_000 }, async () => {
  await page.goto(`${base}/#/deliveries`);
  const rowIds = () => page.$$eval('#log-table tbody tr[data-delivery-id]', (rows) => rows.map((r) => r.dataset.deliveryId));
  const waitRows = (ids) => page.waitForFunction((want) =>
    JSON.stringify([...document.querySelectorAll('#log-table tbody tr[data-delivery-id]')].map((r) => r.dataset.deliveryId)) === JSON.stringify(want), ids);
  const total = () => page.$eval('#log-total', (el) => ({ n: el.dataset.total, text: el.textContent }));

  const { json: all } = await api('GET', '/v1/deliveries?channel=push&limit=50&total=true', null, { expect: 200 });
  await waitRows(all.deliveries.map((d) => d.delivery_id));
  assert.equal(all.total, N + 2, 'every delivery of the seed, the refresh and the range');
  assert.deepEqual(await total(), { n: String(all.total), text: `${all.total} deliveries match.` });
  const platforms = await page.$$eval('#log-table tbody tr[data-delivery-id]', (rows) => rows.map((r) => {
    const cell = r.querySelector('[data-field="platforms"]');
    return { id: r.dataset.deliveryId, value: cell.dataset.value, text: cell.textContent };
  }));
  const words = { ios: 'iOS', android: 'Android' };
  for (const [i, d] of all.deliveries.entries()) {
    assert.equal(platforms[i].value, d.platforms.join(','), `${d.delivery_id}: the API\u2019s platforms`);
    assert.equal(platforms[i].text, d.platforms.length ? d.platforms.map((p) => words[p]).join(', ') : '\u2014');
  }
  for (const text of ['iOS, Android', 'iOS', 'Android', '\u2014']) {
    assert.ok(platforms.some((p) => p.text === text), `a row shows ${text}`);
  }
  for (const c of await headersAlignWithCells('#log-table')) {
    assert.equal(c.th, c.td, `${c.header}: the header is aligned as its numbers`);
  }

  // From the boundary: the late delivery alone.
  await page.fill('#f-from', await localInput(boundary));
  const sawFrom = page.waitForRequest((r) => r.url().includes('/v1/deliveries?') && r.url().includes(`from=${boundary}`));
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await sawFrom;
  const { json: late } = await api('GET', `/v1/deliveries?channel=push&from=${boundary}&limit=50`, null, { expect: 200 });
  assert.deepEqual(late.deliveries.map((d) => d.delivery_id), [deliveryOf.get(cid(N + 2))]);
  await waitRows([deliveryOf.get(cid(N + 2))]);
  await page.locator('#log-total', { hasText: '1 delivery matches.' }).waitFor();

  // Before it, with a status filter too: the page and total the API answers.
  await page.fill('#f-from', '');
  await page.fill('#f-to', await localInput(boundary));
  await page.getByLabel('Status').selectOption('undeliverable');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  const { json: early } = await api('GET', `/v1/deliveries?channel=push&status=undeliverable&to=${boundary}&limit=50&total=true`, null, { expect: 200 });
  assert.ok(early.total >= N / 10 && early.total === early.deliveries.length, 'every 10th customer has no devices');
  await waitRows(early.deliveries.map((d) => d.delivery_id));
  assert.deepEqual(await total(), { n: String(early.total), text: `${early.total} deliveries match.` });
  assert.equal(await page.inputValue('#f-to'), await localInput(boundary), 'the picker keeps the range');
  assert.match(await page.locator('#filters [data-zone]').textContent(), /\S/, 'the zone is named');
  await shot('delivery-log-range');

  await page.getByRole('button', { name: 'Clear' }).click();
  await waitRows(all.deliveries.map((d) => d.delivery_id));
  assert.equal(await page.inputValue('#f-to'), '');
});

test('delivery detail: device rows, failure reason in words, Retry only on failed', { timeout: 30_000 }, async () => {
  // From the log (still filtered by the liquid customer), open the delivery.
  const liquidId = deliveryOf.get(cid(LIQUID));
  await page.locator(`#log-table tr[data-delivery-id="${liquidId}"] a`).first().click();
  await page.locator('#delivery-summary [data-field="delivery_id"]', { hasText: liquidId }).waitFor();
  await page.locator('#failure[data-failure-reason="liquid_variable_missing"]').waitFor();
  assert.match(await page.locator('#failure').textContent(), /variable is missing[\s\S]*How to fix it/);

  // A credentials failure on a customer with an iOS and an Android device.
  const credId = deliveryOf.get(cid(TWO_DEVICES));
  await openDelivery(credId);
  const { json: d } = await api('GET', `/v1/deliveries/${credId}`, null, { expect: 200 });
  assert.equal(d.devices.length, 2);
  assert.deepEqual(d.devices.map((x) => x.platform).sort(), ['android', 'ios']);
  assertDevicesShown(await readDeviceRows(), d);
  assert.equal(await page.locator('#delivery-status').textContent(), 'failed');
  assert.equal(d.name, 'Welcome push');
  assert.equal(await page.locator('#delivery-summary [data-field="name"]').textContent(), d.name);
  assert.equal(await page.locator('#delivery-summary [data-field="devices_attempted"]').textContent(), String(d.devices_attempted));
  const failure = page.locator('#failure[data-failure-reason="credentials_not_found"]');
  await failure.waitFor();
  const text = await failure.textContent();
  assert.match(text, /Credentials not found/);
  assert.match(text, /How to fix it/);
  assert.match(text, /APNs/);
  if (d.failure_message) assert.ok(text.includes(d.failure_message), 'the daemon\u2019s failure_message is shown');
  assert.equal(await page.locator('#retry').isVisible(), true);

  // No devices: undeliverable, explained, and no Retry button.
  await openDelivery(deliveryOf.get(cid(10)));
  assert.equal(await page.locator('#delivery-status').textContent(), 'undeliverable');
  await page.locator('#no-devices').waitFor();
  assert.equal(await page.locator('#retry').count(), 0);
  const { json: u } = await api('GET', `/v1/deliveries/${deliveryOf.get(cid(10))}`, null, { expect: 200 });
  if (u.failure_reason) {
    await page.locator(`#failure[data-failure-reason="${u.failure_reason}"]`).waitFor();
  }
});

test('Retry on a credentials failure re-fetches and shows the new attempt', { timeout: 60_000 }, async () => {
  const id = deliveryOf.get(cid(TWO_DEVICES));
  await openDelivery(id);
  const { json: before } = await api('GET', `/v1/deliveries/${id}`, null, { expect: 200 });
  const outcome = await pressRetry(id);
  const { json: afterward } = await until('the retried delivery to settle', async () => {
    const r = await api('GET', `/v1/deliveries/${id}`, null, { expect: 200 });
    return r.json.status !== 'attempted' ? r : null;
  });
  assert.notEqual(outcome, 'pending', 'the page saw the retry settle');
  // Still no credentials: it fails again, but the attempt moved and the page shows it.
  assert.equal(afterward.status, 'failed');
  assert.equal(await page.locator('#delivery-status').textContent(), afterward.status);
  const sum = (d) => d.devices.reduce((n, x) => n + x.attempts, 0);
  assert.ok(sum(afterward) > sum(before) || afterward.attempted_at > before.attempted_at,
    `the retry moved attempts (${sum(before)} → ${sum(afterward)}) or attempted_at (${before.attempted_at} → ${afterward.attempted_at})`);
  assertDevicesShown(await readDeviceRows(), afterward);
  assert.equal(await page.locator('#delivery-summary [data-field="attempted_at"] time').getAttribute('data-value'), String(afterward.attempted_at));
  assert.match(await page.locator('#retry-result').textContent(), /still failed/i);
  await shot('delivery-retried-credentials');
});

test('Retry on a liquid failure after fixing the attribute ends in another state', { timeout: 60_000 }, async () => {
  const id = deliveryOf.get(cid(LIQUID));
  const { json: c } = await api('GET', `/v1/customers/${cid(LIQUID)}`, null, { expect: 200 });
  await api('PUT', `/v1/customers/${cid(LIQUID)}`, { attributes: { ...c.attributes, plan: 'pro' }, unsubscribed: false }, { expect: [200, 201, 204] });

  await openDelivery(id);
  await page.locator('#failure[data-failure-reason="liquid_variable_missing"]').waitFor();
  const outcome = await pressRetry(id);
  const { json: afterward } = await until('the retried delivery to settle', async () => {
    const r = await api('GET', `/v1/deliveries/${id}`, null, { expect: 200 });
    return r.json.status !== 'attempted' ? r : null;
  });
  assert.notEqual(outcome, 'pending');
  assert.notEqual(afterward.failure_reason, 'liquid_variable_missing', 'the fixed attribute renders now');
  assert.equal(await page.locator('#delivery-status').textContent(), afterward.status);
  if (afterward.failure_reason) {
    await page.locator(`#failure[data-failure-reason="${afterward.failure_reason}"]`).waitFor();
  } else {
    assert.equal(await page.locator('#failure').count(), 0);
  }
  assert.equal(await page.locator('#failure[data-failure-reason="liquid_variable_missing"]').count(), 0);
  const note = await page.locator('#retry-result').textContent();
  if (afterward.status === 'failed') assert.match(note, /now because/, note);
  else assert.match(note, new RegExp(`from failed to ${afterward.status}`), note);
  assertDevicesShown(await readDeviceRows(), afterward);
  await shot('delivery-retried-liquid');
});

test('webhooks: each webhook with its queue depth and last error, as the API reports them', { timeout: 30_000 }, async () => {
  // Nothing listens on port 9: every post fails to connect and the event stays queued.
  await api('PUT', '/v1/webhooks/warehouse', { url: 'http://127.0.0.1:9/events', secret: 'browser-secret' }, { expect: 200 });
  await api('POST', '/v1/send/push', { message_id: MESSAGE, customer_ids: [cid(0)] }, { expect: 202 });
  const w = await until('the webhook to fail a post', async () => {
    const { json } = await api('GET', '/v1/webhooks/warehouse', null, { expect: 200 });
    return json.stats.last_error && json.stats.queue_depth === 1 ? json : null;
  });
  await page.goto(`${base}/#/webhooks`);
  const row = page.locator('#webhooks-table tr[data-webhook-id="warehouse"]');
  await row.waitFor();
  const field = (k) => row.locator(`[data-field="${k}"]`);
  assert.equal(await field('queue_depth').getAttribute('data-value'), '1');
  assert.equal(await field('delivered').textContent(), '0');
  const lastError = await field('last_error').textContent();
  assert.ok(lastError.includes(w.stats.last_error), `the API's last error is shown: ${lastError}`);
  assert.equal(await field('last_error').getAttribute('data-recovered'), 'false', 'no post succeeded since');
  // Times are the browser's local time, with its zone named.
  const when = (await field('last_error').locator('time').first().textContent()).trim();
  const zone = await page.evaluate(() => new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' })
    .formatToParts(new Date()).find((p) => p.type === 'timeZoneName').value);
  assert.match(when, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S+$/, `a time with its zone: ${when}`);
  assert.ok(when.endsWith(` ${zone}`), `the zone ${zone} ends ${when}`);
  assert.match(lastError, /cannot connect/);
  assert.equal(await page.locator('[data-nav="webhooks"][aria-current="page"]').count(), 1);
  await shot('webhooks');
});

/** Fills the message page's Preview form with `customer` and `data` (JSON text), submits
 * it, and waits for its answer; `on` is the page. */
async function previewOnPage(on, customer, data) {
  await on.fill('#preview-customer', customer);
  await on.fill('#preview-data', data);
  await on.locator('#preview-result').evaluate((el) => el.replaceChildren());
  await on.click('#preview-form button[type=submit]');
  await on.locator('#preview-verdict').waitFor();
}

/** What the page's Preview shows: the verdict, the failure, the devices and the pushes. */
function readPreview(on) {
  return on.$eval('#preview-result', (root) => {
    const attr = (sel, a) => root.querySelector(sel)?.getAttribute(a) ?? null;
    return {
      outcome: attr('#preview-verdict', 'data-outcome'),
      failure: attr('#preview-failure', 'data-failure-reason'),
      failureMessage: root.querySelector('#preview-failure [data-field="failure_message"]')?.textContent.trim() ?? null,
      title: root.querySelector('#preview-content [data-field="title"]')?.textContent.trim() ?? null,
      body: root.querySelector('#preview-content [data-field="body"]')?.textContent.trim() ?? null,
      devices: [...root.querySelectorAll('#preview-devices tbody tr')].map((tr) => ({
        token: tr.dataset.token, chosen: tr.dataset.chosen === 'true', skipped_reason: tr.dataset.skippedReason || null,
      })),
      pushes: [...root.querySelectorAll('.preview-push')].map((sec) => ({
        token: sec.dataset.token,
        platform: sec.dataset.platform,
        url: sec.querySelector('[data-field="url"]')?.textContent ?? null,
        headers: sec.querySelector('[data-field="headers"]')?.textContent ?? null,
        payload: sec.querySelector('[data-field="payload"]')?.textContent ?? null,
        failure: sec.querySelector('[data-field="failure"]')?.dataset.failureReason ?? null,
      })),
    };
  });
}

/** The page shows exactly the API's preview `p`. */
function assertPreviewShown(shown, p, label) {
  assert.equal(shown.outcome, p.would_send ? 'would_send' : 'would_fail', `${label}: verdict`);
  assert.equal(shown.failure, p.failure?.reason ?? null, `${label}: failure reason`);
  if (p.failure) assert.equal(shown.failureMessage, p.failure.message, `${label}: failure message`);
  assert.equal(shown.title, p.content?.title ?? null, `${label}: rendered title`);
  assert.equal(shown.body, p.content?.body ?? null, `${label}: rendered body`);
  assert.deepEqual(shown.devices, p.devices.map((d) => ({ token: d.token, chosen: d.chosen, skipped_reason: d.skipped_reason })), `${label}: devices`);
  assert.deepEqual(shown.pushes.map((x) => x.token), p.pushes.map((x) => x.token), `${label}: one push per chosen device`);
  for (const [x, want] of shown.pushes.map((x, i) => [x, p.pushes[i]])) {
    assert.equal(x.platform, want.platform, `${label} ${x.token}: platform`);
    assert.equal(x.failure, want.failure?.reason ?? null, `${label} ${x.token}: refusal`);
    if (want.failure) continue;
    assert.equal(x.url, want.url, `${label} ${x.token}: url`);
    assert.deepEqual(JSON.parse(x.payload), want.payload, `${label} ${x.token}: payload`);
    // apns-expiration counts from the moment of each preview.
    const lines = x.headers.split('\n').filter((l) => !l.startsWith('apns-expiration:'));
    const wanted = Object.entries(want.headers).filter(([k]) => k !== 'apns-expiration').map(([k, v]) => `${k}: ${v}`);
    assert.deepEqual(lines, wanted, `${label} ${x.token}: headers`);
  }
}

test('a message page previews a send for a customer: the failure a send would record, as the API says', { timeout: 30_000 }, async () => {
  await page.evaluate((key) => sessionStorage.setItem('pushd.apiKey', key), API_KEY);
  await page.goto(`${base}/#/overview?message=${MESSAGE}`);
  await page.locator('#preview').waitFor();
  const before = (await api('GET', `/v1/deliveries?message_id=${MESSAGE}&limit=100`, null, { expect: 200 })).json.deliveries.length;
  // A customer without the attribute the body uses; customer 3 has two devices and this
  // daemon no credentials; customer 10 has no device.
  await api('PUT', '/v1/customers/no-plan', { attributes: { first_name: 'No Plan' } }, { expect: 200 });
  await api('PUT', '/v1/customers/no-plan/devices', { device: { id: 'ios-token-no-plan', platform: 'ios' } }, { expect: 200 });
  const cases = [['no-plan', 'liquid_variable_missing'], [cid(TWO_DEVICES), 'credentials_not_found'], [cid(10), 'no_devices']];
  for (const [customer, reason] of cases) {
    await previewOnPage(page, customer, '');
    const p = (await api('POST', `/v1/messages/${MESSAGE}/preview`, { customer_id: customer }, { expect: 200 })).json;
    assert.equal(p.failure?.reason, reason, `${customer}: ${JSON.stringify(p)}`);
    assertPreviewShown(await readPreview(page), p, customer);
  }
  await shot('preview-failure');
  // Data that is not JSON is refused on the page; an unknown customer is the API's answer.
  await previewOnPage(page, cid(1), '{"order": ');
  assert.equal(await page.locator('#preview-verdict').getAttribute('data-outcome'), 'bad_data');
  const after = (await api('GET', `/v1/deliveries?message_id=${MESSAGE}&limit=100`, null, { expect: 200 })).json.deliveries.length;
  assert.equal(after, before, 'previews make no delivery');
  // The panel is a message's: a campaign's page has none.
  await page.goto(`${base}/#/overview?campaign=${CAMPAIGN}`);
  await page.locator('#overview-cards .card').first().waitFor();
  assert.equal(await page.locator('#preview').isVisible(), false);
});

test('with providers to send to, the preview shows each chosen push as it would go on the wire', { timeout: 60_000 }, async () => {
  const simDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushd-browser-sim-'));
  const sim = await startDaemon(BIN, simDir, { PUSHD_API_KEY: API_KEY, PUSHD_SDK_KEY: SDK_KEY }, 30_000, ['--simulated-providers']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const call = async (method, p, body) => {
      const res = await fetch(sim.base + p, {
        method,
        headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(10_000),
      });
      const json = await res.json();
      assert.ok(res.ok, `${method} ${p} → ${res.status}: ${JSON.stringify(json)}`);
      return json;
    };
    await call('PUT', '/v1/messages/order', {
      title: 'Hi {{customer.first_name}}', body: 'Order {{event.order}} shipped', deep_link: 'myapp://orders/{{event.order}}',
      audience: 'all_devices', push: { badge: 1, data: { screen: 'orders' } },
    });
    await call('PUT', '/v1/customers/ada', { attributes: { first_name: 'Ada' } });
    // APNs tokens are 64 hex digits; the simulated providers bounce a token starting with `dead`.
    const apns = (n) => String(n).repeat(64);
    const devices = [[apns(1), 'ios', 'default'], ['android-ada', 'android', 'default'], [apns(2), 'ios', 'shop'], ['dead-ada', 'android', 'default']];
    for (const [n, [id, platform, app]] of devices.entries()) {
      await call('PUT', '/v1/customers/ada/devices', { device: { id, platform, app, last_used: 1764100000 + n } });
    }
    // A send bounces the dead token, which is suppressed from then on.
    const sent = await call('POST', '/v1/send/push', { message_id: 'order', customer_ids: ['ada'], data: { order: 'A-1' } });
    await until('the dead token to be suppressed', async () => {
      const c = await call('GET', '/v1/customers/ada');
      return c.devices.find((d) => d.id === 'dead-ada')?.suppressed;
    });
    const logged = async () => (await call('GET', '/v1/deliveries?customer_id=ada')).deliveries.length;
    assert.equal(await logged(), sent.deliveries.length);

    const on = await context.newPage();
    on.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    await on.goto(`${sim.base}/`);
    await on.evaluate((key) => sessionStorage.setItem('pushd.apiKey', key), API_KEY);
    await on.goto(`${sim.base}/#/overview?message=order`);
    await on.locator('#preview').waitFor();
    await previewOnPage(on, 'ada', '{"order": "A-17"}');
    const p = await call('POST', '/v1/messages/order/preview', { customer_id: 'ada', data: { order: 'A-17' } });
    assert.equal(p.would_send, true);
    assert.deepEqual(p.devices.map((d) => d.skipped_reason), [null, null, 'other_app', 'suppressed']);
    assert.equal(p.pushes.length, 2);
    const shown = await readPreview(on);
    assertPreviewShown(shown, p, 'ada');
    assert.equal(shown.body, 'Order A-17 shipped', 'the data is rendered');
    await on.screenshot({ path: path.join(SHOTS, 'preview-pushes.png'), fullPage: true });
    assert.equal(await logged(), sent.deliveries.length, 'the preview made no delivery');
  } finally {
    await context.close();
    await sim.stop();
    fs.rmSync(simDir, { recursive: true, force: true });
  }
});

test('at 390 px wide the filter bar, the radio labels and the preview form fit and stay readable', { timeout: 30_000 }, async () => {
  const narrow = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
  const phone = await narrow.newPage();
  await phone.goto(`${base}/`);
  await phone.evaluate((key) => sessionStorage.setItem('pushd.apiKey', key), API_KEY);
  const fits = async (where) => {
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${where}: the page does not scroll sideways (${overflow} px too wide)`);
  };
  const inside = async (selector) => {
    for (const el of await phone.locator(selector).all()) {
      const box = await el.boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `${selector} within the screen: ${JSON.stringify(box)}`);
    }
  };

  await phone.goto(`${base}/#/overview`);
  await phone.locator('#messages-table tbody tr').first().waitFor();
  await fits('overview');
  await inside('#overview-form label, #overview-form input, #overview-form button');
  for (const label of await phone.locator('#overview-form label.radio').all()) {
    const [lb, input] = [await label.boundingBox(), await label.locator('input').boundingBox()];
    assert.ok(lb.height < 40, `a radio label takes one line: ${JSON.stringify(lb)}`);
    const mid = input.y + input.height / 2;
    assert.ok(mid > lb.y && mid < lb.y + lb.height, 'the radio sits beside its text');
  }
  await phone.screenshot({ path: path.join(SHOTS, 'narrow-overview.png'), fullPage: true });

  await phone.goto(`${base}/#/overview?message=${MESSAGE}`);
  await phone.locator('#preview-form').waitFor();
  await previewOnPage(phone, cid(TWO_DEVICES), '{"order": "A-17"}');
  await fits('message page with a preview');
  await inside('#preview-form label, #preview-form input, #preview-form textarea, #preview-form button');

  await phone.goto(`${base}/#/deliveries`);
  await phone.locator('#log-table tbody tr').first().waitFor();
  await fits('delivery log');
  await inside('#filters label, #filters input, #filters select, #filters button');
  const labels = await phone.locator('#filters label').all();
  for (const label of labels) {
    const box = await label.boundingBox();
    assert.ok(box.height < 30, `filter label on one line: ${await label.textContent()}`);
  }
  fs.mkdirSync(SHOTS, { recursive: true });
  await phone.screenshot({ path: path.join(SHOTS, 'narrow-delivery-log.png'), fullPage: true });
  await narrow.close();
});

test('a message page shows when its next scheduled push goes out, and follows cancels', { timeout: 40_000 }, async () => {
  await api('PUT', '/v1/messages/later', {
    name: 'Later push', title: 'Later {{customer.first_name}}', body: 'Held until its time', audience: 'all_devices',
  }, { expect: [200, 201] });
  const second = (ms) => Math.floor(ms / 1000) * 1000;
  const inOneDay = second(Date.now() + 86_400_000);
  const inTwoDays = inOneDay + 86_400_000;
  const schedule = async (customer, at) => {
    const { json } = await api('POST', '/v1/send/push', {
      message_id: 'later', customer_ids: [customer], schedule: { at: new Date(at).toISOString() },
    }, { expect: 202 });
    return json.deliveries[0].delivery_id;
  };
  const later = await schedule(cid(1), inTwoDays);
  const sooner = await schedule(cid(2), inOneDay);
  const metrics = async () => (await api('GET', '/v1/messages/later/metrics', null, { expect: 200 })).json;
  const m = await until('both held', async () => { const x = await metrics(); return x.scheduled === 2 && x; });
  assert.equal(m.next_release_at, inOneDay / 1000, 'the API names the sooner one');

  const shown = () => page.evaluate(() => {
    const el = document.querySelector('[data-metric="next_release_at"]');
    return el && { value: el.dataset.value ?? null, text: el.textContent };
  });
  await page.goto(`${base}/#/overview?message=later`);
  await page.waitForFunction((v) => document.querySelector('[data-metric="next_release_at"]')?.dataset.value === String(v), m.next_release_at);
  const local = await page.evaluate((t) => { const d = new Date(t * 1000); return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`; }, m.next_release_at);
  assert.ok((await shown()).text.startsWith(local), `the date in the browser's zone: ${(await shown()).text}`);
  assert.equal(await page.locator('[data-metric="scheduled"]:not([data-platform])').getAttribute('data-value'), '2');

  // Canceling the sooner one moves it to the later one, on the next refresh.
  await api('DELETE', `/v1/deliveries/${sooner}`, null, { expect: 200 });
  assert.equal((await metrics()).next_release_at, inTwoDays / 1000);
  await page.waitForFunction((v) => document.querySelector('[data-metric="next_release_at"]')?.dataset.value === String(v), inTwoDays / 1000, { timeout: 12_000 });
  await api('DELETE', `/v1/deliveries/${later}`, null, { expect: 200 });
  assert.equal((await metrics()).next_release_at, null);
  await page.waitForFunction(() => document.querySelector('[data-metric="next_release_at"]')?.textContent === 'None held', null, { timeout: 12_000 });
  assert.equal((await shown()).value, null);

  // A campaign's page has no such card: its metrics carry no next release.
  await page.goto(`${base}/#/overview?campaign=${CAMPAIGN}`);
  await page.waitForFunction((s) => document.querySelector('#overview-cards')?.dataset.subject === s, `campaign:${CAMPAIGN}`);
  assert.ok(await page.locator('[data-metric="sends"]:not([data-platform])').count() > 0, 'the campaign\'s cards are shown');
  assert.equal(await page.locator('[data-metric="next_release_at"]').count(), 0);
});

test('a 401 brings the API key form back', { timeout: 20_000 }, async () => {
  await page.evaluate(() => sessionStorage.setItem('pushd.apiKey', 'revoked-key'));
  await page.goto(`${base}/#/deliveries`);
  await page.locator('#login-reason', { hasText: 'not accepted' }).waitFor();
  assert.equal(await page.locator('#view-deliveries').isVisible(), false);
});

test('no script errors on the page', () => {
  assert.deepEqual(pageErrors, []);
});
