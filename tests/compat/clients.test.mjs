// pushd driven by the client libraries teams already use, unmodified, from npm:
// customerio-node (its Track client with `url` at /api/v1, its Data Pipelines client at
// /ingest/v1), @segment/analytics-node (host + path at /ingest) and
// @rudderstack/rudder-sdk-node (data plane URL at /ingest, gzip on).
//
// Starts the real daemon (`target/debug/pushd serve`, or $PUSHD_BIN) on a loopback port the
// system picks, with a fake APNs (HTTP/2 without TLS, on loopback, here) that keeps each push's
// payload the way a phone would get it. For each client: the client identifies a customer with
// an iOS device, pushd sends it a push through the fake, the "phone" reads `CIO-Delivery-ID` and
// `CIO-Delivery-Token` from the payload, the client reports received and tapped the way its
// ecosystem does, then a conversion event; the test checks the delivery log
// (GET /v1/deliveries/{id}) and the metrics (GET /v1/messages/{id}/metrics, GET /metrics).
//
// Run: (cd tests/compat && npm ci) && cargo build && node --test tests/compat/
// Env: PUSHD_BIN (daemon binary).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TrackClient, PipelinesClient } from 'customerio-node';
import { Analytics } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';
import { startDaemon } from '../support/daemon.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = process.env.PUSHD_BIN ?? path.join(ROOT, 'target', 'debug', 'pushd');
const API_KEY = 'test-api-key-0123456789';
const SDK_KEY = 'test-sdk-key-0123456789';
const SITE_ID = 'site-compat-test';
const WRITE_KEY = 'write-key-compat-0001';
const TOPIC = 'io.pushd.compat';
const MESSAGE = 'spring-sale';
const CAMPAIGN = 'spring';

let daemon;
let dataDir;
let base;
let apns;
/** Payloads the fake APNs received, by device token. */
const pushes = new Map();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, timeoutMs = 20_000, everyMs = 25) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${daemon.log().slice(-3000)}`);
    await sleep(everyMs);
  }
}

async function api(method, p, body) {
  const r = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** A fake APNs: accepts every push to /3/device/<token> and keeps its payload. */
function startFakeApns() {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      const token = String(headers[':path']).replace('/3/device/', '');
      pushes.set(token, JSON.parse(Buffer.concat(chunks).toString()));
      stream.respond({ ':status': 200, 'apns-id': crypto.randomUUID() });
      stream.end();
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `daemon binary ${BIN} (build it with cargo build, or set PUSHD_BIN)`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushd-compat-'));
  apns = await startFakeApns();
  const apnsUrl = `http://127.0.0.1:${apns.address().port}`;
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyFile = path.join(dataDir, 'apns.p8');
  fs.writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  daemon = await startDaemon(BIN, dataDir, {
    PUSHD_API_KEY: API_KEY,
    PUSHD_SDK_KEY: SDK_KEY,
    PUSHD_IDENTITY_VERIFICATION: 'off',
    PUSHD_APNS_ENDPOINT: apnsUrl,
    PUSHD_APNS_SANDBOX_ENDPOINT: apnsUrl,
    PUSHD_APNS_KEY_FILE: keyFile,
    PUSHD_APNS_KEY_ID: 'KEYID12345',
    PUSHD_APNS_TEAM_ID: 'TEAMID1234',
    PUSHD_APNS_TOPIC: TOPIC,
    PUSHD_COMPAT_CUSTOMERIO_SITE_ID: SITE_ID,
    PUSHD_COMPAT_INGEST_WRITE_KEYS: `other-write-key-9,${WRITE_KEY}`,
  });
  base = daemon.base;

  const message = await api('PUT', `/v1/messages/${MESSAGE}`, {
    name: 'Spring sale', campaign_id: CAMPAIGN, title: 'Spring sale',
    body: 'Hello {{customer.first_name}}', audience: 'all_devices',
    conversion: { event: 'Order Completed', window_seconds: 86400 },
  });
  assert.equal(message.status, 200, JSON.stringify(message.body));
}, { timeout: 60_000 });

after(async () => {
  await daemon?.stop();
  apns?.close();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

const tokenOf = (n) => crypto.createHash('sha256').update(`device-${n}`).digest('hex');

/** The customer's identity is in pushd (name and device): the attribute and the token. */
async function assertIdentified(customer, token, firstName) {
  const c = await api('GET', `/v1/customers/${customer}`);
  assert.equal(c.status, 200, JSON.stringify(c.body));
  assert.equal(c.body.attributes.first_name, firstName);
  assert.deepEqual(c.body.devices.map((d) => [d.id, d.platform]), [[token, 'ios']]);
}

/** pushd sends the message to `customer`; answers the push as the phone got it. */
async function pushTo(customer, token) {
  const sent = await api('POST', '/v1/send/push', { message_id: MESSAGE, customer_ids: [customer] });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const deliveryId = sent.body.deliveries[0].delivery_id;
  const payload = await until(`the push to ${customer}`, async () => pushes.get(token));
  assert.equal(payload['CIO-Delivery-ID'], deliveryId);
  assert.equal(payload['CIO-Delivery-Token'], token);
  assert.equal(payload.aps.alert.body, `Hello ${customer.split('-')[0]}`);
  return { deliveryId, payload };
}

/** Waits until the delivery reaches `status` in the delivery log; answers it. */
async function deliveryReaches(deliveryId, status) {
  return until(`delivery ${deliveryId} ${status}`, async () => {
    const d = await api('GET', `/v1/deliveries/${deliveryId}`);
    return d.body.status === status ? d.body : null;
  });
}

/** The message's counters, and the daemon's Prometheus text. */
async function metrics() {
  const m = await api('GET', `/v1/messages/${MESSAGE}/metrics`);
  assert.equal(m.status, 200, JSON.stringify(m.body));
  const prometheus = await (await fetch(`${base}/metrics`)).text();
  return { ...m.body, prometheus };
}

function counter(text, name, labels) {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return Number(line?.split(' ').pop() ?? NaN);
}

/** Deliveries that entered `status`, from the Prometheus text of `m`. */
const entered = (m, status) => counter(m.prometheus, 'pushd_delivery_status_total', `status="${status}"`);

/** Delivered, opened and converted counted once more than `before`: the message's counters
 * and the daemon's metrics. */
async function assertCounted(before) {
  const after = await until('the message metrics', async () => {
    const m = await metrics();
    const done = m.converted > before.converted && entered(m, 'converted') > entered(before, 'converted');
    return done ? m : null;
  });
  for (const status of ['delivered', 'opened', 'converted']) {
    assert.equal(after[status], before[status] + 1, `${status}: ${JSON.stringify(after)}`);
    assert.equal(entered(after, status), entered(before, status) + 1, `pushd_delivery_status_total{status="${status}"}`);
  }
}

test('customerio-node: Track API identify, addDevice, trackPush, track', async () => {
  const before = await metrics();
  const customer = 'ana-cio';
  const token = tokenOf(1);
  const cio = new TrackClient(SITE_ID, API_KEY, { url: `${base}/api/v1` });
  await cio.identify(customer, { first_name: 'ana', email: 'ana@example.com', created_at: 1_764_000_000 });
  await cio.addDevice(customer, token, 'ios', { last_used: Math.floor(Date.now() / 1000) });
  await assertIdentified(customer, token, 'ana');

  const { payload } = await pushTo(customer, token);
  // The app's Customer.io SDK reports with the ids the push carried (a float time, as it may).
  const now = Date.now() / 1000;
  const report = (event) => cio.trackPush({
    delivery_id: payload['CIO-Delivery-ID'], event, device_id: payload['CIO-Delivery-Token'], timestamp: now,
  });
  await report('delivered');
  await deliveryReaches(payload['CIO-Delivery-ID'], 'delivered');
  await report('opened');
  await deliveryReaches(payload['CIO-Delivery-ID'], 'opened');
  await cio.track(customer, { name: 'Order Completed', data: { total: 25 } });
  const d = await deliveryReaches(payload['CIO-Delivery-ID'], 'converted');
  assert.ok(d.converted_at, JSON.stringify(d));
  assert.deepEqual(d.heuristic_reports, [], 'matched by its delivery id');
  await assertCounted(before);

  // A wrong key is a 401 the client raises at once (no retry).
  const wrong = new TrackClient(SITE_ID, 'not-the-key-0123456789', { url: `${base}/api/v1` });
  await assert.rejects(wrong.identify(customer, { first_name: 'x' }), (e) => e.statusCode === 401);
});

test('customerio-node: Data Pipelines client at /ingest/v1', async () => {
  const before = await metrics();
  const customer = 'ben-pipelines';
  const token = tokenOf(2);
  const cio = new PipelinesClient(WRITE_KEY, { url: `${base}/ingest/v1` });
  await cio.identify({
    userId: customer,
    traits: { first_name: 'ben' },
    context: { device: { token }, os: { name: 'iOS' }, app: { name: 'Shop', version: '4.2' } },
  });
  await assertIdentified(customer, token, 'ben');

  const { payload } = await pushTo(customer, token);
  const report = (metric) => cio.track({
    userId: customer,
    event: 'Report Delivery Event',
    properties: { deliveryId: payload['CIO-Delivery-ID'], metric, recipient: payload['CIO-Delivery-Token'] },
  });
  await report('delivered');
  await report('opened');
  await cio.track({ userId: customer, event: 'Order Completed', properties: { total: 10 } });
  const d = await deliveryReaches(payload['CIO-Delivery-ID'], 'converted');
  assert.ok(d.devices[0].delivered_at && d.devices[0].opened_at, JSON.stringify(d));
  await assertCounted(before);
});

test('@segment/analytics-node: host and path at /ingest', async () => {
  const before = await metrics();
  const customer = 'cleo-segment';
  const token = tokenOf(3);
  const errors = [];
  const analytics = new Analytics({ writeKey: WRITE_KEY, host: base, path: '/ingest/v1/batch', flushAt: 1, maxRetries: 0 });
  analytics.on('error', (e) => errors.push(e));
  const flush = async () => {
    await analytics.closeAndFlush({ timeout: 10_000 });
    assert.deepEqual(errors, []);
  };
  let client = analytics;
  client.identify({
    userId: customer,
    traits: { first_name: 'cleo' },
    context: { device: { token, type: 'ios' }, os: { name: 'iOS', version: '18.1' }, app: { name: 'Shop', build: '42' } },
  });
  await flush();
  await assertIdentified(customer, token, 'cleo');

  const { payload } = await pushTo(customer, token);
  // A fresh client per step: closeAndFlush ends one.
  client = new Analytics({ writeKey: WRITE_KEY, host: base, path: '/ingest/v1/batch', flushAt: 10, maxRetries: 0 });
  client.on('error', (e) => errors.push(e));
  client.track({ userId: customer, event: 'Push Notification Received', properties: { 'CIO-Delivery-ID': payload['CIO-Delivery-ID'] } });
  client.track({ userId: customer, event: 'Push Notification Tapped', properties: { pushd_delivery_id: payload['CIO-Delivery-ID'] } });
  client.track({ userId: customer, event: 'Order Completed', properties: { revenue: 12 } });
  await client.closeAndFlush({ timeout: 10_000 });
  assert.deepEqual(errors, []);
  await deliveryReaches(payload['CIO-Delivery-ID'], 'converted');
  await assertCounted(before);

  // A wrong write key is a 401 the client gives up on at once, retries allowed or not.
  const wrong = new Analytics({ writeKey: 'not-a-write-key-1', host: base, path: '/ingest/v1/batch', flushAt: 1, maxRetries: 3 });
  const sent = [];
  const failed = [];
  wrong.on('http_response', (r) => sent.push(r.status));
  wrong.on('error', (e) => failed.push(e));
  wrong.track({ userId: customer, event: 'Order Completed' });
  await wrong.closeAndFlush({ timeout: 10_000 });
  assert.deepEqual(sent, [401]);
  assert.equal(failed.length, 1);
});

test('@rudderstack/rudder-sdk-node: data plane URL at /ingest, gzipped', async () => {
  const before = await metrics();
  const customer = 'dana-rudder';
  const token = tokenOf(4);
  const rudder = new RudderAnalytics(WRITE_KEY, { dataPlaneUrl: `${base}/ingest`, flushAt: 1, maxRetries: 0 });
  const call = (method, message) => new Promise((resolve, reject) => {
    rudder[method](message, (err) => (err ? reject(err) : resolve()));
  });
  await call('identify', {
    userId: customer,
    traits: { first_name: 'dana' },
    context: { device: { token }, os: { name: 'iOS' } },
  });
  await rudder.flush();
  await until('the identify', async () => (await api('GET', `/v1/customers/${customer}`)).status === 200);
  await assertIdentified(customer, token, 'dana');

  const { payload } = await pushTo(customer, token);
  // No delivery id in these events: pushd matches them by customer and campaign, and says so.
  const campaign = { name: CAMPAIGN, source: 'pushd', medium: 'push' };
  await call('track', { userId: customer, event: 'Push Notification Received', properties: { campaign } });
  await deliveryReaches(payload['CIO-Delivery-ID'], 'delivered');
  await call('track', { userId: customer, event: 'Push Notification Tapped', properties: { campaign } });
  await deliveryReaches(payload['CIO-Delivery-ID'], 'opened');
  await call('track', { userId: customer, event: 'Order Completed', properties: { revenue: 3 } });
  const d = await deliveryReaches(payload['CIO-Delivery-ID'], 'converted');
  assert.deepEqual(d.heuristic_reports.map((r) => [r.event, r.device_id, r.matched_on]), [
    ['delivered', token, 'customer+campaign'],
    ['opened', token, 'customer+campaign'],
  ]);
  await assertCounted(before);
  const heuristic = (m) => counter(m.prometheus, 'pushd_ingest_reports_total', 'match="heuristic"');
  assert.equal(heuristic(await metrics()), heuristic(before) + 2);
});
