// pushd dashboard: campaign overview and delivery log.
//
// A plain ES module, no framework and no build step. It talks only to the daemon that
// served it, over the documented HTTP API, sending `Authorization: Bearer <key>` with the
// key kept in sessionStorage. Views are picked by the URL hash:
//
//   #/overview?message=<id>&from=&to= | #/overview?campaign=<id>&from=&to=
//   #/deliveries?status=&message_id=&campaign_id=&customer_id=&from=&to=&cursor=
//
// `from` and `to` are Unix seconds (the API's date range: deliveries created from `from`
// up to, not including, `to`); the pickers show them in the browser's zone.
//   #/deliveries/<delivery id>
//   #/webhooks
//
// Every number on the overview sits in an element with `data-metric="<key>"` (the key's
// path in the metrics JSON, e.g. `sent` or `rates.delivered`), `data-platform="ios|android"`
// for per-platform cells, and `data-value` holding the raw number, so tests can read them.
// `#overview-cards[data-subject="<kind>:<id>"]` names whose figures the cards show, once
// they have loaded (the cards are emptied when the subject changes).
// The failure-reasons table has a row per reason (`data-reason="<code>"`) with cells
// `data-field="count|share|fix"`, the numbers again in `data-value`. The delivery log's
// match count is `#log-total[data-total]`, each row's platforms `[data-field="platforms"]`
// with `data-value` the API's list joined by commas.

const KEY_STORAGE = 'pushd.apiKey';
const REFRESH_MS = 5000;
const LOG_PAGE_SIZE = 50;
const RETRY_POLL_MS = 500;
const RETRY_WAIT_MS = 30000;

const STATUSES = ['scheduled', 'attempted', 'sent', 'delivered', 'opened', 'converted', 'failed', 'undeliverable', 'bounced', 'canceled'];

const STATUS_TEXT = {
  scheduled: 'The send asked for a later time: the push is held until then, and rendered and sent at that time.',
  canceled: 'The scheduled push was canceled before its time; nothing was sent.',
  attempted: 'We are in the process of sending the push to APNs or FCM.',
  sent: 'The push was handed to the push provider (APNs or FCM) for every targeted device. This does not mean it was delivered.',
  delivered: 'A device reported back that it received the push.',
  opened: 'The person tapped the notification on one of their devices.',
  converted: 'The person reached the message\u2019s conversion goal after receiving it.',
  failed: 'We could not hand the push to the provider for any of the person\u2019s devices.',
  undeliverable: 'We could not attempt delivery, for example because the person has no usable devices.',
  bounced: 'The provider reported the device token as invalid, expired or uninstalled.',
  suppressed: 'This device bounced before and is no longer sent to until the app registers it again.',
};

// failure_reason codes: what they mean and how to fix them.
export const FAILURES = {
  liquid_variable_missing: {
    title: 'Liquid error: variable is missing',
    means: 'A variable used in the message has no value. For example, if the message uses {{customer.email}} and the customer has no email attribute, or {{event.order}} and the send\u2019s data has no order, the message fails.',
    fix: 'Check the variable name in the message\u2019s title, body and deep link, and either give it a fallback (for example {{customer.first_name | default: "there"}}), set the attribute on the customer (customer.*), or send the field in the send\u2019s data (event.*). Then retry the delivery.',
  },
  liquid_syntax: {
    title: 'Liquid error: syntax',
    means: 'The message\u2019s title, body or deep link is not valid Liquid, so it could not be rendered for anyone.',
    fix: 'Correct the template (unclosed {{ or {% tags, unknown filters, mismatched quotes) with PUT /v1/messages/{id}, then retry the delivery.',
  },
  template_limit_exceeded: {
    title: 'Template limit exceeded',
    means: 'Rendering the message for this customer went past a template limit: too many loop iterations, too much text, or too much CPU time. The failure message names the limit and the field. Nothing was sent.',
    fix: 'Make the template\u2019s loops and text smaller (or the customer data it loops over) with PUT /v1/messages/{id}, or raise the limit in [templates] of pushd.toml, then retry the delivery.',
  },
  customer_not_found: {
    title: 'Customer doesn\u2019t exist',
    means: 'A rare error: the customer ID the message was sent to does not exist (or was deleted).',
    fix: 'Make sure you are using the correct customer ID. Create the customer with PUT /v1/customers/{id} if it should exist, then retry.',
  },
  customer_unsubscribed: {
    title: 'Customer is unsubscribed',
    means: 'The customer has opted out of receiving messages.',
    fix: 'Verify the customer\u2019s subscription status. Only resubscribe them (unsubscribed: false) if they asked to receive messages again.',
  },
  credentials_not_found: {
    title: 'Credentials not found',
    means: 'The push credentials of the message\u2019s app for this platform failed or were empty, so the provider could not be called.',
    fix: 'Check the push credentials and that they have not expired: for iOS the APNs key (PUSHD_APNS_KEY_FILE, PUSHD_APNS_KEY_ID, PUSHD_APNS_TEAM_ID, PUSHD_APNS_TOPIC); for Android the FCM service account (PUSHD_FCM_SERVICE_ACCOUNT_FILE); for an app other than "default", its [apps.<app_id>.apns] or [apps.<app_id>.fcm] section in pushd.toml. Restart the daemon with them set, then retry.',
  },
  provider_rejected: {
    title: 'Rejected by the push provider',
    means: 'APNs or FCM refused the push for a reason other than the token, for example because the topic or project did not match the token, or the request was malformed. The token is not suppressed. Each device\u2019s last error shows the provider\u2019s reason.',
    fix: 'Read the last error on the device rows below, correct the message or the credentials\u2019 topic/project accordingly, then retry.',
  },
  payload_too_large: {
    title: 'Payload too large',
    means: 'The rendered push is larger than the provider accepts (APNs 4,096 bytes, FCM 4,000 bytes), so it was not sent. The token is not suppressed.',
    fix: 'Shorten the title, body or push data, or the customer attributes they use (the device\u2019s last error tells the size), then retry.',
  },
  retries_exhausted: {
    title: 'Retries exhausted',
    means: 'The provider could not be reached or kept answering with temporary errors, and we gave up after retrying up to ten times.',
    fix: 'Check the daemon\u2019s network access to APNs and FCM and the providers\u2019 status, then retry the delivery.',
  },
  devices_suppressed: {
    title: 'All devices suppressed',
    means: 'Every device of this person bounced before (app uninstalled, token expired or invalid), so their devices are suppressed and nothing was sent. The person counts as suppressed in the metrics.',
    fix: 'Nothing to fix on the message. The device is sent to again once the app registers its token anew (PUT /v1/customers/{id}/devices), which happens when the person reinstalls or opens the app.',
  },
  canceled: {
    title: 'Canceled',
    means: 'The delivery was scheduled for a later time and canceled (DELETE /v1/deliveries/{id}) before it; nothing was sent.',
    fix: 'Nothing to fix. Send the message again if the cancel was a mistake.',
  },
  quiet_hours: {
    title: 'Quiet hours',
    means: 'The send fell inside the person\u2019s quiet hours (their local time), whose action is drop, so nothing was sent. The failure message names the window and the time zone.',
    fix: 'Nothing to fix. Send after the quiet hours end, use action hold to send when they end, or send with bypass_quiet_hours for a push that must go out.',
  },
  frequency_capped: {
    title: 'Frequency capped',
    means: 'The person already got as many pushes as a frequency cap allows in its window (the failure message names the cap), so this one was not sent.',
    fix: 'Nothing to fix: the cap did its job. Send later, or send with bypass_frequency_caps for a push that must go out.',
  },
  local_time_passed: {
    title: 'Local time already passed',
    means: 'The send named a local time that had already passed in the person\u2019s time zone, and said if_past: skip, so nothing was sent.',
    fix: 'Send again with a later local time, or with if_past: send_now to send at once when the time has passed.',
  },
  no_devices: {
    title: 'No devices',
    means: 'The person has no device registered, so there was nothing to send to.',
    fix: 'Make sure the app registers the push token for this customer (SDK identify, or PUT /v1/customers/{id}/devices).',
  },
};

const COUNTERS = [
  ['sends', 'Sends', 'Every delivery, bounced and suppressed ones included'],
  ['recipients', 'Recipients', 'Sends minus suppressed and bounced'],
  ['attempted', 'Attempted', 'Being sent to the provider now'],
  ['sent', 'Sent', 'Handed to APNs or FCM'],
  ['delivered', 'Delivered', 'A device reported receipt'],
  ['opened', 'Opened', 'The notification was tapped'],
  ['converted', 'Converted', 'Reached the conversion goal'],
  ['failed', 'Failed', 'Could not be sent'],
  ['bounced', 'Bounced', 'Token invalid or app uninstalled'],
  ['undeliverable', 'Undeliverable', 'No usable device'],
  ['suppressed', 'Suppressed', 'Every device was suppressed'],
  ['scheduled', 'Scheduled', 'Held until their time'],
  ['canceled', 'Canceled', 'Canceled while scheduled'],
];

const RATES = [
  ['delivered', 'Delivered rate', 'delivered ÷ sent'],
  ['opened', 'Open rate', 'opened ÷ sent'],
  ['converted', 'Conversion rate', 'converted ÷ sent'],
  ['opened_of_delivered', 'Opened of delivered', 'opened ÷ delivered'],
];

const PLATFORMS = [['ios', 'iOS'], ['android', 'Android']];

// Rows only the platform table has: devices whose user allowed notifications (the app
// says so when it registers the device), shown beside the plain counter and rate they
// refine. iOS reports delivered only from those, so this rate compares iOS and Android
// like with like.
const OPTED_IN_AFTER = {
  sent: ['opted_in_sent', 'Sent, opted in', false, (pm) => pm?.opted_in_sent],
  'rates.delivered': ['rates.delivered_of_opted_in', 'Delivered rate, opted in', true, (pm) => pm?.rates?.delivered_of_opted_in],
};

// ---------------------------------------------------------------------------------------
// Small helpers

const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Build an element: h('a', {href: '#'}, 'text', child). Text is always set as text. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false).map(toNode));
  return el;
}

function toNode(c) {
  return c instanceof Node ? c : document.createTextNode(String(c));
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined).map(toNode));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function fmtInt(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '\u2014';
}

function fmtPct(r) {
  return typeof r === 'number' && Number.isFinite(r) ? `${(r * 100).toFixed(1)}%` : '\u2014';
}

/**
 * The count each rate is taken over: a rate over nothing (no push sent yet,
 * none delivered) is not 0 %, it does not apply.
 */
const RATE_BASE = {
  delivered: 'sent', opened: 'sent', converted: 'sent',
  opened_of_delivered: 'delivered', delivered_of_opted_in: 'opted_in_sent',
};

/** Whether rate `key` of metrics `m` applies: its base is not zero, and a
 * silent (background) push has no opens or conversions to count. */
function rateApplies(m, key, kind) {
  if (kind === 'background' && key !== 'delivered' && key !== 'delivered_of_opted_in') return false;
  const base = RATE_BASE[key];
  return !(base && m && typeof m[base] === 'number' && m[base] === 0);
}

/** A rate cell's text: the percentage, or n/a where it does not apply. */
function fmtRate(m, key, kind) {
  return rateApplies(m, key, kind) ? fmtPct(m?.rates?.[key]) : 'n/a';
}

function pad(n) {
  return String(n).padStart(2, '0');
}

/** The browser's time zone as its short name at `d` ("UTC", "GMT+1", "PST"). */
function zoneName(d) {
  const parts = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(d);
  return parts.find((p) => p.type === 'timeZoneName')?.value ?? '';
}

/** The time of day of `d` in the browser's zone, with the zone ("14:05:09 UTC"). */
function clockTime(d) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneName(d)}`;
}

/** Unix seconds as a <time> element in local time with its zone, or a dash. */
function timeEl(t, attrs = {}) {
  if (typeof t !== 'number') return h('span', { ...attrs, class: 'muted' }, '\u2014');
  const d = new Date(t * 1000);
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clockTime(d)}`;
  return h('time', { ...attrs, datetime: d.toISOString(), title: d.toISOString(), 'data-value': t }, text);
}

function statusBadge(status, attrs = {}) {
  return h('span', { ...attrs, class: `status status-${status}`, 'data-value': status }, status ?? '\u2014');
}

function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

class AuthError extends Error {}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call the API with the stored key. A 401 clears the key and brings the form back. */
async function api(path, { method = 'GET', body } = {}) {
  const key = getKey();
  if (!key) {
    showLogin();
    throw new AuthError('no API key');
  }
  const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  if (res.status === 401) {
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin('That API key was not accepted. Enter it again.');
    throw new AuthError('unauthorized');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.error?.code ?? `http_${res.status}`, data?.error?.message ?? `${res.status} ${res.statusText}`);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const str = q.toString();
  return str ? `?${str}` : '';
}

function flash(message) {
  const el = $('#flash');
  el.textContent = message ?? '';
  el.hidden = !message;
}

function reportError(err) {
  if (err instanceof AuthError) return;
  flash(err instanceof ApiError ? `${err.message} (${err.code})` : `Could not reach the daemon: ${err.message}`);
}

// ---------------------------------------------------------------------------------------
// Routing

const state = {
  generation: 0, // bumped on every navigation; stale async work checks it and stops
  refreshTimer: null,
  logStack: [], // cursors of the pages before the current one
  logFilterKey: null,
  lastLogHash: '#/deliveries',
  view: null, // the view shown: overview | deliveries | delivery
  hasRouted: false,
};

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/overview';
  const [path, qs = ''] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(qs) };
}

function showView(name) {
  const changed = state.view !== name;
  state.view = name;
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${name}`;
  // Moving to another page: put keyboard and screen-reader focus on its heading.
  if (changed && state.hasRouted) $(`#view-${name} h1`)?.focus({ preventScroll: true });
  state.hasRouted = true;
  $('#login').hidden = true;
  $('#logout').hidden = false;
  for (const a of document.querySelectorAll('[data-nav]')) {
    const current = a.dataset.nav === name || (name === 'delivery' && a.dataset.nav === 'deliveries');
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function showLogin(reason) {
  state.generation++;
  state.view = null;
  clearTimeout(state.refreshTimer);
  for (const v of document.querySelectorAll('.view')) v.hidden = true;
  $('#logout').hidden = true;
  flash('');
  $('#login-reason').textContent = reason ?? 'Enter the daemon\u2019s API key. It is kept for this browser tab only.';
  $('#login').hidden = false;
  $('#api-key').value = '';
  $('#api-key').focus();
}

function route() {
  state.generation++;
  clearTimeout(state.refreshTimer);
  flash('');
  if (!getKey()) {
    showLogin();
    return;
  }
  const { parts, params } = parseHash();
  const gen = state.generation;
  let work;
  if (parts[0] === 'deliveries' && parts.length > 1) {
    showView('delivery');
    work = showDelivery(parts.slice(1).join('/'), gen);
  } else if (parts[0] === 'deliveries') {
    state.lastLogHash = location.hash || '#/deliveries';
    showView('deliveries');
    work = showLog(params, gen);
  } else if (parts[0] === 'webhooks') {
    showView('webhooks');
    document.title = 'Webhooks \u2013 pushd';
    work = refreshWebhooks(gen);
  } else {
    showView('overview');
    work = showOverview(params, gen);
  }
  work.catch(reportError);
}

// ---------------------------------------------------------------------------------------
// Overview

async function showOverview(params, gen) {
  const kind = params.has('campaign') ? 'campaign' : 'message';
  const id = params.get(kind) ?? '';
  const form = $('#overview-form');
  form.elements.kind.value = kind;
  form.elements.id.value = id;
  $('#overview-body').hidden = !id;
  $('#overview-lists').hidden = Boolean(id);
  showPreviewPanel(kind === 'message' ? id : null);
  if (!id) {
    document.title = 'Overview \u2013 pushd';
    await refreshLists(gen);
    return;
  }
  document.title = `${id} \u2013 Overview \u2013 pushd`;
  // Another subject's figures never stand under this one's heading while its own load.
  const subject = `${kind}:${id}`;
  if ($('#overview-cards').dataset.subject !== subject) {
    $('#overview-cards').replaceChildren();
    delete $('#overview-cards').dataset.subject;
  }
  $('#overview-subject').textContent = `${kind === 'campaign' ? 'Campaign' : 'Message'} ${id}`;
  const range = rangeOf(params);
  showRange($('#range-form'), range);
  $('#range-shown').textContent = rangeText(range);
  await refreshOverview(kind, id, gen, range);
}

/** The campaigns and messages tables, newest first, refreshed every few seconds. */
async function refreshLists(gen) {
  try {
    const [campaigns, messages] = await Promise.all([
      api(`/v1/campaigns${query({ limit: 100 })}`),
      api(`/v1/messages${query({ limit: 100 })}`),
    ]);
    if (gen !== state.generation) return;
    renderLists(campaigns?.campaigns ?? [], messages?.messages ?? []);
  } catch (err) {
    if (err instanceof AuthError || gen !== state.generation) return;
    reportError(err);
  }
  if (gen === state.generation) {
    state.refreshTimer = setTimeout(() => {
      if (gen === state.generation) refreshLists(gen);
    }, REFRESH_MS);
  }
}

/** Headline figures of one row: sends, sent, and the rates over sent (n/a
 * where a rate does not apply: nothing sent, or a silent push's opens). */
function figures(m, kind) {
  return [
    h('td', { class: 'numeric', 'data-field': 'sends', 'data-value': m?.sends }, fmtInt(m?.sends)),
    h('td', { class: 'numeric', 'data-field': 'sent', 'data-value': m?.sent }, fmtInt(m?.sent)),
    ...['delivered', 'opened', 'converted'].map((k) =>
      h('td', { class: 'numeric', 'data-field': `rates.${k}`, 'data-value': m?.rates?.[k], 'data-applies': String(rateApplies(m, k, kind)) }, fmtRate(m, k, kind))),
  ];
}

function renderLists(campaigns, messages) {
  const empty = (cols, text) => h('tr', { class: 'empty-row' }, h('td', { colspan: cols }, text));
  $('#campaigns-table tbody').replaceChildren(...(campaigns.length
    ? campaigns.map((c) => h('tr', { 'data-campaign-id': c.campaign_id },
        h('th', { scope: 'row' }, h('a', { href: `#/overview${query({ campaign: c.campaign_id })}`, 'data-recent': 'campaign' }, c.campaign_id)),
        h('td', {}, (c.message_ids ?? []).join(', ')),
        ...figures(c.metrics)))
    : [empty(7, 'No campaigns yet: a message with a campaign_id starts one.')]));
  $('#messages-table tbody').replaceChildren(...(messages.length
    ? messages.map((m) => h('tr', { 'data-message-id': m.message_id },
        h('th', { scope: 'row' },
          h('a', { href: `#/overview${query({ message: m.message_id })}`, 'data-recent': 'message' }, m.name || m.message_id),
          m.name && m.name !== m.message_id ? h('span', { class: 'mono muted sub' }, m.message_id) : null),
        h('td', {}, m.campaign_id
          ? h('a', { href: `#/overview${query({ campaign: m.campaign_id })}` }, m.campaign_id)
          : h('span', { class: 'muted' }, '\u2014')),
        h('td', {}, timeEl(m.created_at || null)),
        ...figures(m.metrics, m.kind)))
    : [empty(8, 'No messages yet: create one with PUT /v1/messages/{id}.')]));
  const seen = {
    message: messages.map((m) => m.message_id),
    campaign: campaigns.map((c) => c.campaign_id),
  };
  const kind = $('#overview-form').elements.kind.value;
  $('#overview-ids').replaceChildren(...seen[kind].map((id) => h('option', { value: id })));
  $('#overview-lists').dataset.seen = JSON.stringify(seen);
}

// ---------------------------------------------------------------------------------------
// Webhooks

/** The webhooks table, refreshed every few seconds. */
async function refreshWebhooks(gen) {
  try {
    const list = await api('/v1/webhooks');
    if (gen !== state.generation) return;
    renderWebhooks(list?.webhooks ?? []);
    const now = new Date();
    $('#webhooks-updated').textContent = `Updated ${clockTime(now)}.`;
  } catch (err) {
    if (err instanceof AuthError || gen !== state.generation) return;
    reportError(err);
  }
  if (gen === state.generation) {
    state.refreshTimer = setTimeout(() => {
      if (gen === state.generation) refreshWebhooks(gen);
    }, REFRESH_MS);
  }
}

/** The age of the oldest waiting event, in words: 45 s, 12 min, 3 h (a dash when none waits). */
function fmtAge(seconds, waiting) {
  if (!waiting) return '\u2014';
  if (!seconds) return '< 1 s';
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

/** Whether a webhook's last error was followed by a successful post. */
function recovered(stats) {
  return typeof stats.last_success_at === 'number' && typeof stats.last_error_at === 'number'
    && stats.last_success_at >= stats.last_error_at;
}

function renderWebhooks(webhooks) {
  const num = (field, value, text = fmtInt(value)) =>
    h('td', { class: 'numeric', 'data-field': field, 'data-value': value }, text);
  $('#webhooks-table tbody').replaceChildren(...(webhooks.length
    ? webhooks.map((w) => {
        const s = w.stats ?? {};
        return h('tr', { 'data-webhook-id': w.id },
          h('th', { scope: 'row' }, w.id, h('span', { class: 'mono muted sub' }, w.url)),
          h('td', {}, (w.events ?? []).join(', ')),
          num('queue_depth', s.queue_depth),
          num('oldest_undelivered_seconds', s.oldest_undelivered_seconds, fmtAge(s.oldest_undelivered_seconds, s.queue_depth)),
          num('delivered', s.delivered),
          num('failed_attempts', s.failed_attempts),
          num('dropped', s.dropped),
          h('td', { 'data-field': 'last_error', 'data-recovered': String(recovered(s)) }, s.last_error
            ? [h('span', { class: recovered(s) ? 'muted' : 'error-text' }, s.last_error), ' ',
              timeEl(s.last_error_at, { class: 'muted' }),
              ...(recovered(s) ? [h('span', { class: 'muted' }, ' \u2014 posts succeed again since '), timeEl(s.last_success_at, { class: 'muted' })] : [])]
            : h('span', { class: 'muted' }, 'None')));
      })
    : [h('tr', { class: 'empty-row' }, h('td', { colspan: 8 }, 'No webhooks yet: create one with PUT /v1/webhooks/{id}.'))]));
}

async function refreshOverview(kind, id, gen, range = {}) {
  const base = `/v1/${kind === 'campaign' ? 'campaigns' : 'messages'}/${enc(id)}`;
  try {
    const [metrics, series] = await Promise.all([
      api(`${base}/metrics${query(range)}`),
      api(`${base}/timeseries${query(range)}`).catch((err) => {
        if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return null;
        throw err;
      }),
    ]);
    if (gen !== state.generation) return;
    renderMetrics(metrics);
    $('#overview-cards').dataset.subject = `${kind}:${id}`;
    renderChart(series?.points ?? []);
    const now = new Date();
    $('#overview-updated').textContent = `Updated ${clockTime(now)}.`;
    flash('');
  } catch (err) {
    if (err instanceof AuthError || gen !== state.generation) return;
    if (err instanceof ApiError && err.status === 404) {
      $('#overview-body').hidden = true;
      flash(`No ${kind} with ID \u201c${id}\u201d.`);
      return;
    }
    reportError(err);
  }
  if (gen === state.generation) {
    state.refreshTimer = setTimeout(() => {
      if (gen === state.generation) refreshOverview(kind, id, gen, range);
    }, REFRESH_MS);
  }
}

function metricValue(value, attrs, isRate, applies = true) {
  const shown = !applies ? 'n/a' : isRate ? fmtPct(value) : fmtInt(value);
  return h('span', { ...attrs, class: 'num', 'data-value': typeof value === 'number' ? value : null }, shown);
}

function renderMetrics(m) {
  $('#overview-body').hidden = false;
  const cards = $('#overview-cards');
  cards.replaceChildren(
    ...COUNTERS.flatMap(([key, label, help]) => [
      h('div', { class: `card card-${key}` },
        h('span', { class: 'card-label' }, label),
        metricValue(m[key], { 'data-metric': key }, false),
        h('span', { class: 'card-help' }, help)),
      ...(key === 'scheduled' ? nextReleaseCard(m) : []),
    ]),
    ...RATES.map(([key, label, help]) =>
      h('div', { class: 'card card-rate' },
        h('span', { class: 'card-label' }, label),
        metricValue(m.rates?.[key], { 'data-metric': `rates.${key}` }, true, rateApplies(m, key)),
        h('span', { class: 'card-help' }, help))),
  );

  const byPlatform = m.by_platform ?? {};
  const plain = [
    ...COUNTERS.map(([key, label]) => [key, label, false, (p) => byPlatform[p]?.[key]]),
    ...RATES.map(([key, label]) => [`rates.${key}`, label, true, (p) => byPlatform[p]?.rates?.[key]]),
  ];
  const rows = plain.flatMap((row) => {
    const extra = OPTED_IN_AFTER[row[0]];
    if (!extra) return [row];
    const [key, label, isRate, get] = extra;
    return [row, [key, label, isRate, (p) => get(byPlatform[p])]];
  });
  $('#platform-table tbody').replaceChildren(
    ...rows.map(([key, label, isRate, get]) =>
      h('tr', { class: isRate ? 'rate-row' : null },
        h('th', { scope: 'row' }, label),
        ...PLATFORMS.map(([p]) => h('td', {}, metricValue(get(p), { 'data-metric': key, 'data-platform': p }, isRate,
          !isRate || rateApplies(byPlatform[p], key.replace(/^rates\./, ''))))))),
  );
  renderFailureReasons(m.failure_reasons ?? []);
  // The note explains a gap; it shows only when iOS's delivered rate is lower.
  const ios = byPlatform.ios?.rates?.delivered;
  const android = byPlatform.android?.rates?.delivered;
  $('#ios-note').hidden = !(byPlatform.ios?.sent > 0 && byPlatform.android?.sent > 0 && ios < android);
}

// A message's next release (its metrics carry next_release_at; a campaign's do not):
// when the next of its scheduled pushes goes out, in the browser's zone.
function nextReleaseCard(m) {
  if (!('next_release_at' in m)) return [];
  const when = m.next_release_at == null
    ? h('span', { class: 'num muted', 'data-metric': 'next_release_at' }, 'None held')
    : timeEl(m.next_release_at, { class: 'num', 'data-metric': 'next_release_at' });
  return [h('div', { class: 'card card-next-release' },
    h('span', { class: 'card-label' }, 'Next release'),
    when,
    h('span', { class: 'card-help' }, 'When the next scheduled push goes out'))];
}

// One row per failure reason, largest first as the API orders them.
function renderFailureReasons(reasons) {
  $('#reasons-table tbody').replaceChildren(...(reasons.length
    ? reasons.map((r) =>
      h('tr', { 'data-reason': r.reason },
        h('td', { 'data-field': 'reason' }, FAILURES[r.reason]?.title ?? r.reason,
          h('span', { class: 'mono muted sub' }, r.reason)),
        h('td', { 'data-field': 'fix' }, r.fix ?? ''),
        h('td', { class: 'numeric', 'data-field': 'count', 'data-value': r.count }, fmtInt(r.count)),
        h('td', { class: 'numeric', 'data-field': 'share', 'data-value': r.share }, fmtPct(r.share))))
    : [h('tr', { class: 'empty-row' }, h('td', { colspan: 4 }, 'No failures.'))]));
}

// Inline SVG chart of delivered and opened since the send. The API gives sparse
// per-minute counts (minutes since the delivery was created, first report per
// delivery); the chart draws their running totals as step lines, so a minute without
// reports keeps the line flat. The "Chart data" table lists the per-minute counts.
function renderChart(points) {
  const W = 720, H = 260, M = { top: 16, right: 16, bottom: 40, left: 52 };
  const iw = W - M.left - M.right, ih = H - M.top - M.bottom;
  const pts = [...points].filter((p) => typeof p.minute === 'number').sort((a, b) => a.minute - b.minute);
  let totD = 0, totO = 0;
  const cum = pts.map((p) => ({ minute: p.minute, delivered: (totD += p.delivered ?? 0), opened: (totO += p.opened ?? 0) }));
  const maxX = Math.max(1, ...pts.map((p) => p.minute));
  const maxY = niceMax(Math.max(totD, totO));
  const x = (v) => M.left + (v / maxX) * iw;
  const y = (v) => M.top + ih - (v / maxY) * ih;

  const children = [
    s('title', { id: 'chart-svg-title' }, 'Delivered and opened since the send, running totals by minute'),
    s('desc', { id: 'chart-svg-desc' }, pts.length
      ? `Over ${maxX} minutes: ${totD} delivered and ${totO} opened.`
      : 'No data yet.'),
  ];
  for (const t of ticks(maxY, 5)) {
    children.push(s('line', { class: 'grid', x1: M.left, x2: M.left + iw, y1: y(t), y2: y(t) }));
    children.push(s('text', { class: 'tick', x: M.left - 8, y: y(t) + 4, 'text-anchor': 'end' }, fmtInt(t)));
  }
  // Past three hours the axis counts hours: 870 minutes reads as 14.5 hours.
  const perTick = maxX > 180 ? 60 : 1;
  for (const t of ticks(maxX / perTick, 6)) {
    children.push(s('text', { class: 'tick', x: x(t * perTick), y: M.top + ih + 18, 'text-anchor': 'middle' }, String(t)));
  }
  children.push(s('line', { class: 'axis', x1: M.left, x2: M.left + iw, y1: M.top + ih, y2: M.top + ih }));
  children.push(s('line', { class: 'axis', x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih }));
  children.push(s('text', { class: 'axis-label', x: M.left + iw / 2, y: H - 4, 'text-anchor': 'middle', 'data-unit': perTick === 60 ? 'hours' : 'minutes' },
    perTick === 60 ? 'Hours since the send' : 'Minutes since the send'));

  if (pts.length === 0) {
    children.push(s('text', { class: 'empty', x: M.left + iw / 2, y: M.top + ih / 2, 'text-anchor': 'middle' }, 'No data yet'));
  } else {
    for (const key of ['delivered', 'opened']) {
      // Step line from (0, 0): flat until a minute with reports, then up.
      const coords = [[0, 0]];
      let last = 0;
      for (const p of cum) {
        coords.push([p.minute, last], [p.minute, p[key]]);
        last = p[key];
      }
      coords.push([maxX, last]);
      const attr = coords.map(([mx, my]) => `${x(mx).toFixed(1)},${y(my).toFixed(1)}`).join(' ');
      children.push(s('polyline', { class: `series series-${key}`, points: attr, 'data-series': key, 'data-total': last }));
      // Delivered is a solid line with round dots, opened a dashed line with
      // hollow squares: where the two are equal both stay visible.
      if (cum.length <= 60) {
        for (const p of cum) {
          const [cx, cy] = [x(p.minute), y(p[key])];
          const tip = s('title', {}, `minute ${p.minute}: ${p[key]} ${key} in total`);
          children.push(key === 'delivered'
            ? s('circle', { class: `dot dot-${key}`, cx: cx.toFixed(1), cy: cy.toFixed(1), r: 3 }, tip)
            : s('rect', { class: `dot dot-${key}`, x: (cx - 4.5).toFixed(1), y: (cy - 4.5).toFixed(1), width: 9, height: 9 }, tip));
        }
      }
    }
  }
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-svg-title chart-svg-desc',
    class: 'chart-svg', 'data-points': pts.length, preserveAspectRatio: 'xMidYMid meet',
  }, ...children);

  const legend = h('ul', { class: 'legend' },
    h('li', { class: 'legend-delivered' }, `Delivered (${fmtInt(totD)})`),
    h('li', { class: 'legend-opened' }, `Opened (${fmtInt(totO)})`));
  const table = h('details', { class: 'chart-data' },
    h('summary', {}, 'Chart data'),
    pts.length
      ? h('table', {},
          h('thead', {}, h('tr', {}, ...['Minute', 'Delivered', 'Opened', 'Delivered, total', 'Opened, total'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, ...pts.map((p, i) => h('tr', {},
            h('td', {}, p.minute), h('td', {}, fmtInt(p.delivered ?? 0)), h('td', {}, fmtInt(p.opened ?? 0)),
            h('td', {}, fmtInt(cum[i].delivered)), h('td', {}, fmtInt(cum[i].opened))))))
      : h('p', { class: 'muted' }, 'No data yet.'));
  $('#chart').replaceChildren(legend, svg, table);
  $('#chart-caption').textContent = pts.length
    ? 'Running totals of people whose device first reported delivered or opened, by minute after the send.'
    : 'No delivered or opened reports yet for this send.';
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function ticks(max, n) {
  const step = Math.max(1, niceMax(max / n));
  const out = [];
  for (let t = 0; t <= max + 1e-9; t += step) out.push(Math.round(t * 100) / 100);
  return out;
}

// ---------------------------------------------------------------------------------------
// Delivery log

const FILTERS = ['status', 'message_id', 'campaign_id', 'customer_id'];

async function showLog(params, gen) {
  document.title = 'Delivery log \u2013 pushd';
  const filters = { ...Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? ''])), ...rangeOf(params) };
  const cursor = params.get('cursor') ?? '';
  const form = $('#filters');
  for (const f of FILTERS) form.elements[f].value = filters[f];
  showRange(form, filters);

  const filterKey = JSON.stringify(filters);
  if (filterKey !== state.logFilterKey || !cursor) {
    state.logFilterKey = filterKey;
    if (!cursor) state.logStack = [];
  }

  const status = $('#log-status');
  status.textContent = 'Loading\u2026';
  const page = await api(`/v1/deliveries${query({ channel: 'push', ...filters, limit: LOG_PAGE_SIZE, cursor, total: 'true' })}`);
  if (gen !== state.generation) return;
  const rows = page?.deliveries ?? [];
  const tbody = $('#log-table tbody');
  tbody.replaceChildren(...rows.map(logRow));
  if (!rows.length) {
    tbody.append(h('tr', { class: 'empty-row' }, h('td', { colspan: 8 }, 'No deliveries match these filters.')));
  }
  const pageNo = state.logStack.length + 1;
  status.replaceChildren(logTotal(page?.total), ` ${rows.length} on page ${pageNo}.`);
  $('#page-number').textContent = `Page ${pageNo}`;

  const next = $('#next-page');
  next.disabled = !page?.next_cursor;
  next.onclick = () => {
    state.logStack.push(cursor);
    location.hash = `#/deliveries${query({ ...filters, cursor: page.next_cursor })}`;
  };
  const prev = $('#prev-page');
  prev.disabled = pageNo === 1 && !cursor;
  prev.onclick = () => {
    const before = state.logStack.pop() ?? '';
    location.hash = `#/deliveries${query({ ...filters, cursor: before })}`;
  };
}

function logRow(d) {
  return h('tr', { 'data-delivery-id': d.delivery_id, 'data-status': d.status },
    h('td', { 'data-field': 'delivery_id' }, h('a', { href: `#/deliveries/${enc(d.delivery_id)}`, class: 'mono' }, d.delivery_id)),
    h('td', { 'data-field': 'customer_id' }, d.customer_id ?? ''),
    h('td', {}, d.message_id
      ? [h('a', { href: `#/overview${query({ message: d.message_id })}`, 'data-field': 'name' }, d.name || d.message_id),
          h('span', { class: 'mono muted sub', 'data-field': 'message_id' }, d.message_id)]
      : ''),
    h('td', { 'data-field': 'status' }, statusBadge(d.status),
      d.failure_reason ? h('span', { class: 'reason' }, FAILURES[d.failure_reason]?.title ?? d.failure_reason) : null),
    h('td', { 'data-field': 'platforms', 'data-value': (d.platforms ?? []).join(',') }, platformNames(d.platforms)),
    h('td', { 'data-field': 'devices_attempted', class: 'numeric' }, fmtInt(d.devices_attempted)),
    h('td', { 'data-field': 'attempted_at' }, timeEl(d.attempted_at)),
    h('td', { 'data-field': 'converted_at' }, timeEl(d.converted_at)));
}

/** "N deliveries match" (every page's rows), its number in `data-total`. */
function logTotal(total) {
  const n = typeof total === 'number' ? total : null;
  const text = n === null ? 'Deliveries matching: unknown.' : `${fmtInt(n)} ${n === 1 ? 'delivery matches' : 'deliveries match'}.`;
  return h('strong', { id: 'log-total', 'data-total': n }, text);
}

/** A delivery's platforms in words ("iOS, Android"), or a dash for none. */
function platformNames(platforms) {
  const names = Object.fromEntries(PLATFORMS);
  return platforms?.length ? platforms.map((p) => names[p] ?? p).join(', ') : h('span', { class: 'muted' }, '\u2014');
}

// ---------------------------------------------------------------------------------------
// Date ranges: `from`/`to` in the hash and the API are Unix seconds; the pickers are
// <input type="datetime-local"> in the browser's zone.

/** The range of a hash's params: {from, to} as Unix-seconds strings ('' when open). */
function rangeOf(params) {
  const seconds = (v) => (/^-?\d+$/.test(v ?? '') ? v : '');
  return { from: seconds(params.get('from')), to: seconds(params.get('to')) };
}

/** Unix seconds as a datetime-local value in the browser's zone ('' for none); zero
 * seconds are left out, as the browser writes such a value itself. */
function toLocalInput(t) {
  if (t === '' || t === undefined || t === null) return '';
  const d = new Date(Number(t) * 1000);
  const seconds = d.getSeconds() ? `:${pad(d.getSeconds())}` : '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}${seconds}`;
}

/** A datetime-local value (the browser's zone) as Unix seconds ('' when empty). */
function fromLocalInput(v) {
  const ms = v ? new Date(v).getTime() : NaN;
  return Number.isFinite(ms) ? String(Math.floor(ms / 1000)) : '';
}

/** The browser's zone: its IANA name and short name now ("Europe/Berlin, GMT+1"). */
function zoneLabel() {
  const iana = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const short = zoneName(new Date());
  return iana && iana !== short ? `${iana} (${short})` : short;
}

/** Puts `range` into `form`'s from/to pickers and names the zone they are in. */
function showRange(form, range) {
  form.elements.from.value = toLocalInput(range.from);
  form.elements.to.value = toLocalInput(range.to);
  const zone = form.querySelector('[data-zone]');
  if (zone) zone.textContent = zoneLabel();
}

/** `form`'s from/to pickers as a range; null (after saying why) when from is not before to. */
function readRange(form) {
  const range = { from: fromLocalInput(form.elements.from.value), to: fromLocalInput(form.elements.to.value) };
  if (range.from !== '' && range.to !== '' && Number(range.from) >= Number(range.to)) {
    flash('The range\u2019s start must be before its end.');
    return null;
  }
  return range;
}

/** What the overview's figures cover, in words. */
function rangeText(range) {
  const at = (t) => timeEl(Number(t)).textContent;
  if (!range.from && !range.to) return 'Showing every delivery (all time).';
  if (!range.to) return `Showing deliveries created from ${at(range.from)} on.`;
  if (!range.from) return `Showing deliveries created before ${at(range.to)}.`;
  return `Showing deliveries created from ${at(range.from)} until ${at(range.to)}.`;
}

/** Applies the overview's range form: the same message or campaign, the new range. */
function applyOverviewRange(range) {
  const { params } = parseHash();
  const kind = params.has('campaign') ? 'campaign' : 'message';
  location.hash = `#/overview${query({ [kind]: params.get(kind) ?? '', ...range })}`;
}

// ---------------------------------------------------------------------------------------
// One delivery

async function showDelivery(id, gen, notice) {
  $('#back-to-log').setAttribute('href', state.lastLogHash);
  document.title = `Delivery ${id} \u2013 pushd`;
  const body = $('#delivery-body');
  if (!notice) body.replaceChildren(h('p', { class: 'muted' }, 'Loading\u2026'));
  let d;
  try {
    d = await api(`/v1/deliveries/${enc(id)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && gen === state.generation) {
      body.replaceChildren(h('p', {}, `No delivery with ID \u201c${id}\u201d.`));
      return;
    }
    throw err;
  }
  if (gen !== state.generation) return;
  renderDelivery(d, gen, notice);
}

// A scheduled send's fields on the delivery's page: when it is (or was) due, the time
// zone its local time was read in and where that came from, and how late it went out.
function scheduleFields(d, field) {
  if (d.scheduled_for === undefined) return [];
  const heldFor = d.held_for === 'quiet_hours' ? 'the person\u2019s quiet hours' : 'the send\u2019s schedule';
  const zone = d.timezone ? `${d.timezone} (${d.timezone_source})` : '\u2014';
  const late = d.late_seconds === null ? 'not yet released' : `${fmtInt(d.late_seconds)} s`;
  return [
    ...field('Scheduled for', timeEl(d.scheduled_for), 'scheduled_for'),
    ...field('Held for', heldFor, 'held_for'),
    ...field('Time zone', zone, 'timezone'),
    ...field('Released late by', late, 'late_seconds'),
  ];
}

function renderDelivery(d, gen, notice) {
  const body = $('#delivery-body');
  const field = (label, value, key) => [h('dt', {}, label), h('dd', { 'data-field': key }, value)];
  const summary = h('dl', { class: 'summary', id: 'delivery-summary' },
    ...field('Delivery ID', h('span', { class: 'mono' }, d.delivery_id), 'delivery_id'),
    ...field('Customer', d.customer_id
      ? h('a', { href: `#/deliveries${query({ customer_id: d.customer_id })}` }, d.customer_id) : '\u2014', 'customer_id'),
    ...field('Message', d.message_id
      ? [h('a', { href: `#/overview${query({ message: d.message_id })}`, 'data-field': 'name' }, d.name || d.message_id),
          ' ', h('span', { class: 'mono muted' }, `(${d.message_id})`)]
      : '\u2014', 'message_id'),
    ...field('Campaign', d.campaign_id
      ? h('a', { href: `#/overview${query({ campaign: d.campaign_id })}` }, d.campaign_id) : '\u2014', 'campaign_id'),
    ...field('Channel', d.channel ?? 'push', 'channel'),
    ...field('Status', [statusBadge(d.status), ' ', h('span', { class: 'muted' }, STATUS_TEXT[d.status] ?? '')], 'status'),
    ...field('Devices attempted', fmtInt(d.devices_attempted), 'devices_attempted'),
    ...field('Created at', timeEl(d.created_at), 'created_at'),
    ...field('Attempted at', timeEl(d.attempted_at), 'attempted_at'),
    ...field('Converted at', timeEl(d.converted_at), 'converted_at'),
    ...scheduleFields(d, field),
    ...(d.content ? [
      ...field('Title', d.content.title ?? '', 'content_title'),
      ...field('Body', d.content.body ?? '', 'content_body'),
      ...field('Deep link', d.content.deep_link ? h('span', { class: 'mono' }, d.content.deep_link) : '\u2014', 'content_deep_link'),
    ] : []),
  );

  const parts = [];
  if (notice) parts.push(h('p', { class: `notice notice-${notice.kind}`, id: 'retry-result', role: 'status', tabindex: -1, 'data-outcome': notice.outcome }, notice.text));
  parts.push(h('div', { class: 'delivery-head' }, statusBadge(d.status, { id: 'delivery-status', 'data-field': 'status' }),
    d.status === 'failed'
      ? h('button', { type: 'button', id: 'retry', onclick: (e) => retry(d, gen, e.currentTarget) }, 'Retry delivery')
      : null,
    h('button', { type: 'button', class: 'secondary', id: 'refresh-delivery', onclick: () => showDelivery(d.delivery_id, gen, { kind: 'info', outcome: 'refreshed', text: 'Refreshed.' }).catch(reportError) }, 'Refresh')));
  parts.push(h('p', { id: 'retry-progress', class: 'muted', 'aria-live': 'polite' }));
  parts.push(summary);

  if (d.failure_reason) parts.push(failureBox(d.failure_reason, d.failure_message));

  parts.push(h('h2', { id: 'devices-title' }, 'Devices'));
  const devices = d.devices ?? [];
  parts.push(devices.length
    ? h('div', { class: 'table-wrap' }, h('table', { id: 'devices-table', class: 'log', 'aria-labelledby': 'devices-title' },
        h('thead', {}, h('tr', {}, ...['Token', 'Platform', 'Status', 'Attempts', 'Last error', 'Provider ID', 'Sent at', 'Delivered at', 'Opened at']
          .map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...devices.map(deviceRow))))
    : h('p', { class: 'muted', id: 'no-devices' }, 'No devices were targeted by this delivery.'));

  body.replaceChildren(...parts);
}

function deviceRow(dev) {
  return h('tr', { 'data-token': dev.token, 'data-status': dev.status },
    h('td', { 'data-field': 'token', class: 'mono token' }, dev.token),
    h('td', { 'data-field': 'platform' }, dev.platform === 'ios' ? 'iOS' : dev.platform === 'android' ? 'Android' : (dev.platform ?? '\u2014')),
    h('td', { 'data-field': 'status' }, statusBadge(dev.status),
      dev.failure_reason ? h('span', { class: 'reason', 'data-failure-reason': dev.failure_reason }, FAILURES[dev.failure_reason]?.title ?? dev.failure_reason) : null),
    h('td', { 'data-field': 'attempts', class: 'numeric', 'data-value': dev.attempts }, fmtInt(dev.attempts)),
    h('td', { 'data-field': 'last_error', class: 'error-text' }, dev.last_error ?? '\u2014'),
    h('td', { 'data-field': 'provider_id', class: 'mono' }, dev.provider_id ?? '\u2014'),
    h('td', { 'data-field': 'sent_at' }, timeEl(dev.sent_at)),
    h('td', { 'data-field': 'delivered_at' }, timeEl(dev.delivered_at)),
    h('td', { 'data-field': 'opened_at' }, timeEl(dev.opened_at)));
}

function failureBox(code, message) {
  const f = FAILURES[code];
  return h('section', { class: 'failure', id: 'failure', 'data-failure-reason': code, 'aria-labelledby': 'failure-title' },
    h('h2', { id: 'failure-title' }, `Why it failed: ${f?.title ?? code}`),
    h('p', { class: 'mono muted' }, code),
    message ? h('p', { class: 'failure-message', 'data-field': 'failure_message' }, message) : null,
    f ? h('h3', {}, 'What it means') : null,
    f ? h('p', { 'data-field': 'failure_means' }, f.means) : null,
    f ? h('h3', {}, 'How to fix it') : null,
    f ? h('p', { 'data-field': 'failure_fix' }, f.fix) : null);
}

/** POST retry, then re-fetch until the delivery settles in a changed state. */
async function retry(before, gen, button) {
  button.disabled = true;
  const progress = $('#retry-progress');
  progress.textContent = 'Asking the daemon to retry\u2026';
  try {
    await api(`/v1/deliveries/${enc(before.delivery_id)}/retry`, { method: 'POST' });
  } catch (err) {
    if (gen !== state.generation) return;
    button.disabled = false;
    progress.textContent = '';
    if (err instanceof ApiError && err.code === 'not_retryable') {
      await showDelivery(before.delivery_id, gen, { kind: 'error', outcome: 'not_retryable', text: `This delivery can no longer be retried: ${err.message}` });
      return;
    }
    reportError(err);
    return;
  }
  const snapshot = JSON.stringify(before);
  const deadline = Date.now() + RETRY_WAIT_MS;
  let current = before;
  let changed = false;
  progress.textContent = 'Retry accepted. Waiting for the new result\u2026';
  while (Date.now() < deadline) {
    await sleep(RETRY_POLL_MS);
    if (gen !== state.generation) return;
    current = await api(`/v1/deliveries/${enc(before.delivery_id)}`);
    if (gen !== state.generation) return;
    progress.textContent = `Retry accepted. Current status: ${current.status}\u2026`;
    if (current.status !== 'attempted' && JSON.stringify(current) !== snapshot) {
      // Settled only if a second look a moment later shows the same thing (a retry
      // of several devices may update them one by one).
      await sleep(RETRY_POLL_MS);
      if (gen !== state.generation) return;
      const again = await api(`/v1/deliveries/${enc(before.delivery_id)}`);
      if (gen !== state.generation) return;
      const settled = JSON.stringify(again) === JSON.stringify(current);
      current = again;
      if (settled) {
        changed = true;
        break;
      }
    }
  }
  let notice;
  if (!changed) {
    notice = { kind: 'info', outcome: 'pending', text: `Retry accepted; the delivery has not settled yet (status ${current.status}). Press Refresh to check again.` };
  } else if (current.status === before.status) {
    const title = (r) => FAILURES[r]?.title ?? r;
    let text = `Retried: still ${current.status}`;
    if (current.failure_reason && current.failure_reason !== before.failure_reason) {
      text += `, now because: ${title(current.failure_reason)}`;
      if (before.failure_reason) text += ` (before: ${title(before.failure_reason)})`;
    } else if (current.failure_reason) {
      text += ` (${title(current.failure_reason)})`;
    }
    notice = { kind: 'error', outcome: 'same_status', text: `${text}.` };
  } else {
    notice = { kind: 'ok', outcome: 'changed', text: `Retried: status changed from ${before.status} to ${current.status}.` };
  }
  renderDelivery(current, gen, notice);
  $('#retry-result')?.focus?.();
}

// ---------------------------------------------------------------------------------------
// Preview: what a send of the message shown would do for one customer
// (POST /v1/messages/{id}/preview). Nothing is sent or recorded.

const SKIPPED_TEXT = {
  other_app: 'Skipped: the device belongs to another app',
  not_last_used: 'Skipped: the message goes to the device used last, and another was used later',
  suppressed: 'Skipped: its token bounced before and is suppressed',
};
const PROVIDER_NAME = { ios: 'iOS (APNs)', android: 'Android (FCM)' };

/** Shows the Preview panel for message `id` (null hides it); another message clears the last answer. */
function showPreviewPanel(id) {
  const panel = $('#preview');
  panel.hidden = !id;
  if (panel.dataset.message !== (id ?? '')) {
    panel.dataset.message = id ?? '';
    $('#preview-result').replaceChildren();
  }
}

function previewNotice(kind, outcome, text) {
  return h('p', { class: `notice notice-${kind}`, id: 'preview-verdict', 'data-outcome': outcome }, text);
}

/** Asks the API for the preview of the form's customer and data, and shows it. */
async function submitPreview(e) {
  e.preventDefault();
  const form = e.currentTarget;
  const message = $('#preview').dataset.message;
  const customerId = form.elements.customer_id.value.trim();
  const dataText = form.elements.data.value.trim();
  const result = $('#preview-result');
  if (!message || !customerId) return;
  let data = null;
  if (dataText) {
    try {
      data = JSON.parse(dataText);
    } catch (err) {
      result.replaceChildren(previewNotice('error', 'bad_data', `Data is not valid JSON: ${err.message}`));
      return;
    }
  }
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  result.replaceChildren(h('p', { class: 'muted' }, 'Previewing\u2026'));
  try {
    const preview = await api(`/v1/messages/${enc(message)}/preview`, { method: 'POST', body: { customer_id: customerId, data } });
    if ($('#preview').dataset.message === message) renderPreview(preview);
  } catch (err) {
    if (err instanceof AuthError) return;
    const text = err instanceof ApiError ? `${err.message} (${err.code})` : `Could not reach the daemon: ${err.message}`;
    result.replaceChildren(previewNotice('error', 'error', text));
  } finally {
    button.disabled = false;
  }
}

function renderPreview(p) {
  const going = p.pushes.filter((x) => !x.failure).length;
  const verdict = p.would_send
    ? `A send to ${p.customer_id} would push to ${going} ${going === 1 ? 'device' : 'devices'}.`
    : `A send to ${p.customer_id} would push nothing: its delivery would end ${p.status}.`;
  const parts = [previewNotice(p.would_send ? 'ok' : 'error', p.would_send ? 'would_send' : 'would_fail', verdict)];
  if (p.failure) parts.push(previewFailure(p.failure));
  if (p.content) {
    const field = (label, value, key) => [h('dt', {}, label), h('dd', { 'data-field': key }, value)];
    parts.push(h('h4', {}, 'Rendered'), h('dl', { class: 'summary', id: 'preview-content' },
      ...field('Title', p.content.title ?? '', 'title'),
      ...field('Body', p.content.body ?? '', 'body'),
      ...field('Deep link', p.content.deep_link ? h('span', { class: 'mono' }, p.content.deep_link) : '\u2014', 'deep_link')));
  }
  parts.push(h('h4', { id: 'preview-devices-title' }, 'Devices'));
  parts.push(p.devices.length
    ? h('div', { class: 'table-wrap' }, h('table', { id: 'preview-devices', class: 'log', 'aria-labelledby': 'preview-devices-title' },
        h('thead', {}, h('tr', {}, ...['Token', 'Platform', 'App', 'Last used', 'Chosen'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...p.devices.map(previewDeviceRow))))
    : h('p', { class: 'muted', id: 'preview-no-devices' }, 'The customer has no devices.'));
  if (p.pushes.length) {
    parts.push(h('h4', {}, 'Pushes as they would go on the wire'));
    parts.push(...p.pushes.map(previewPush));
  }
  $('#preview-result').replaceChildren(...parts);
}

function previewDeviceRow(dev) {
  return h('tr', { 'data-token': dev.token, 'data-chosen': String(dev.chosen), 'data-skipped-reason': dev.skipped_reason ?? '' },
    h('td', { 'data-field': 'token', class: 'mono token' }, dev.token),
    h('td', { 'data-field': 'platform' }, PROVIDER_NAME[dev.platform] ?? dev.platform),
    h('td', { 'data-field': 'app' }, dev.app),
    h('td', { 'data-field': 'last_used' }, timeEl(dev.last_used)),
    h('td', { 'data-field': 'choice' }, dev.chosen ? 'Chosen' : (SKIPPED_TEXT[dev.skipped_reason] ?? `Skipped: ${dev.skipped_reason}`)));
}

/** Why the send would fail, in the delivery log's words. */
function previewFailure(f) {
  const known = FAILURES[f.reason];
  return h('section', { class: 'failure', id: 'preview-failure', 'data-failure-reason': f.reason },
    h('h4', {}, `Why it would fail: ${known?.title ?? f.reason}`),
    h('p', { class: 'mono muted' }, f.reason),
    h('p', { class: 'failure-message', 'data-field': 'failure_message' }, f.message),
    known ? h('p', { 'data-field': 'failure_fix' }, known.fix) : null);
}

/** One push: where it goes, its headers and its JSON payload, or why it would be refused. */
function previewPush(push) {
  const title = h('h5', {}, PROVIDER_NAME[push.platform] ?? push.platform, ' \u2192 ', h('span', { class: 'mono token' }, push.token));
  const attrs = { class: 'preview-push', 'data-token': push.token, 'data-platform': push.platform };
  if (push.failure) {
    return h('section', attrs, title,
      h('p', { class: 'error-text', 'data-field': 'failure', 'data-failure-reason': push.failure.reason ?? '' },
        `Refused before sending: ${FAILURES[push.failure.reason]?.title ?? push.failure.reason ?? 'error'} \u2014 ${push.failure.detail}`));
  }
  const headers = Object.entries(push.headers ?? {}).map(([k, v]) => `${k}: ${v}`).join('\n');
  return h('section', attrs, title,
    h('p', {}, 'POST ', h('span', { class: 'mono', 'data-field': 'url' }, push.url)),
    h('pre', { class: 'mono wire', 'data-field': 'headers' }, headers),
    h('pre', { class: 'mono wire', 'data-field': 'payload' }, JSON.stringify(push.payload, null, 2)));
}

// ---------------------------------------------------------------------------------------
// Wiring

function init() {
  $('#login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('#api-key').value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $('#api-key').value = '';
    route();
  });
  $('#logout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin();
  });
  $('#overview-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const id = form.elements.id.value.trim();
    if (!id) return;
    location.hash = `#/overview${query({ [form.elements.kind.value]: id })}`;
  });
  for (const radio of $('#overview-form').querySelectorAll('input[name=kind]')) {
    radio.addEventListener('change', () => {
      const seen = JSON.parse($('#overview-lists').dataset.seen ?? '{"message":[],"campaign":[]}');
      $('#overview-ids').replaceChildren(...(seen[radio.value] ?? []).map((id) => h('option', { value: id })));
    });
  }
  $('#range-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const range = readRange(e.currentTarget);
    if (range) applyOverviewRange(range);
  });
  $('#range-form').addEventListener('reset', (e) => {
    e.preventDefault();
    applyOverviewRange({});
  });
  $('#filters').addEventListener('submit', (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const range = readRange(form);
    if (!range) return;
    const filters = { ...Object.fromEntries(FILTERS.map((f) => [f, form.elements[f].value.trim()])), ...range };
    state.logStack = [];
    const target = `#/deliveries${query(filters)}`;
    if (location.hash === target) route();
    else location.hash = target;
  });
  $('#filters').addEventListener('reset', () => {
    state.logStack = [];
    location.hash = '#/deliveries';
  });
  $('#preview-form').addEventListener('submit', submitPreview);
  window.addEventListener('hashchange', route);
  route();
}

init();
