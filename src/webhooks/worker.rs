//! One webhook's worker: reads the event log from the webhook's cursor,
//! posts each event it takes, retries a failed post with backoff until the
//! event is older than the retry window, then drops it and counts it.
//!
//! At most `in_flight` posts (and retries) are under way at once, and the
//! window of events read but not done is bounded too, so a slow or dead
//! receiver holds a few events in memory and the rest wait on disk. The
//! cursor moves only over events that are done (posted, dropped, or of a
//! kind the webhook does not take), so a crash or a restart posts again,
//! never skips: at least once, and the receiver drops copies by
//! `event_id`. Posts may complete out of order. An event whose customer is
//! erased while its posts are retried is not posted again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::header::CONTENT_TYPE;

use super::book::Live;
use super::hook::{Active, Hook};
use super::{Settings, Shared, signature, target};
use crate::events::source::still_kept;
use crate::events::{ReadError, Source, StoredEvent};

/// Most events read and not yet done (posted ones included).
const MAX_WINDOW: usize = 4096;

/// Bytes of a receiver's answer read at most; once this many have come,
/// the connection is dropped (the status alone decides the post).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An event read from the log and not yet passed by the cursor.
struct Slot {
    seq: u64,
    offset: u64,
    time_ms: i64,
    done: bool,
}

/// Runs the worker of `hook` until it is aborted or the source closes.
pub async fn run(hook: Arc<Hook>, shared: Arc<Shared>) {
    let source = &shared.source;
    let mut appended = source.watch();
    let mut cursor = hook.progress().cursor;
    let end = end_now(source).await;
    if cursor > end {
        tracing::warn!(webhook = %hook.id, cursor, end, "webhook cursor past the event log's end; it goes on from the end");
        cursor = end;
        hook.update(|p| p.cursor = end);
    }
    let mut read = cursor;
    let mut window: VecDeque<Slot> = VecDeque::new();
    let mut posts = FuturesUnordered::new();
    loop {
        appended.borrow_and_update();
        while posts.len() < shared.settings.in_flight && window.len() < MAX_WINDOW {
            let room = (shared.settings.in_flight - posts.len()).min(MAX_WINDOW - window.len());
            let page = match source.read(read, room).await {
                Ok(page) => page,
                Err(e @ (ReadError::Io(_) | ReadError::Unavailable(_))) => {
                    tracing::error!(webhook = %hook.id, error = %e, "cannot read the event log; trying again in a second");
                    shared.clock.sleep(Duration::from_secs(1)).await;
                    break;
                }
                Err(e) => {
                    tracing::error!(webhook = %hook.id, error = %e, "webhook cursor unusable; it goes on from the event log's end");
                    read = end_now(source).await;
                    break;
                }
            };
            if page.events.first().is_some_and(|e| e.offset > read) {
                tracing::warn!(webhook = %hook.id, cursor = read, "events older than the retention were deleted before this webhook posted them");
            }
            if page.events.is_empty() {
                break;
            }
            for event in page.events {
                let takes = hook.takes(event.status);
                window.push_back(Slot {
                    seq: event.seq,
                    offset: event.offset,
                    time_ms: event.time_ms,
                    done: !takes,
                });
                if takes {
                    posts.push(deliver(hook.clone(), shared.clone(), event));
                }
            }
            read = page.next;
        }
        settle(&hook, &shared, &mut window, read, &mut cursor, posts.len());
        tokio::select! {
            Some(seq) = posts.next(), if !posts.is_empty() => {
                if let Ok(i) = window.binary_search_by_key(&seq, |s| s.seq) {
                    window[i].done = true;
                }
                // At once, before reading on: a post's outcome and the
                // queue it leaves are seen together.
                settle(&hook, &shared, &mut window, read, &mut cursor, posts.len());
            }
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where `source` ends now, read afresh (a cluster's stream is otherwise
/// known only as of its last poll, which may be before a cursor another
/// node saved).
async fn end_now(source: &Arc<dyn Source>) -> u64 {
    let reading = source.clone();
    match tokio::task::spawn_blocking(move || reading.end()).await {
        Ok(tail) => tail.offset,
        Err(_) => source.tail().offset,
    }
}

/// Passes the events done at the window's front, moves the cursor over
/// them (every event before the first one pending, or before where
/// reading stopped) and reports the live figures.
fn settle(
    hook: &Hook,
    shared: &Shared,
    window: &mut VecDeque<Slot>,
    read: u64,
    cursor: &mut u64,
    in_flight: usize,
) {
    while window.front().is_some_and(|s| s.done) {
        window.pop_front();
    }
    let done = window.front().map_or(read, |s| s.offset);
    if done != *cursor {
        *cursor = done;
        hook.update(|p| p.cursor = done);
    }
    report(hook, shared, window, in_flight);
}

/// Publishes the worker's live figures (API and Prometheus).
fn report(hook: &Hook, shared: &Shared, window: &VecDeque<Slot>, in_flight: usize) {
    let live = Live {
        queue_depth: window.front().map_or(0, |s| shared.source.behind(s.seq)),
        oldest_ms: window.front().map(|s| s.time_ms),
        in_flight,
    };
    hook.report(live);
    let age = live
        .oldest_ms
        .map_or(0.0, |t| (shared.clock.now_ms() - t).max(0) as f64 / 1000.0);
    let id = hook.id.clone();
    metrics::gauge!("pushd_webhook_queue_depth", "webhook" => id.clone())
        .set(live.queue_depth as f64);
    metrics::gauge!("pushd_webhook_oldest_undelivered_seconds", "webhook" => id).set(age);
}

/// Why a post did not succeed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    /// The receiver answered, but not 2xx.
    #[error("HTTP {0}")]
    Status(u16),
    /// The receiver answered a redirect, which is never followed.
    #[error("{0} redirect not followed")]
    Redirect(u16),
    /// The target is not a public address (and private targets are not
    /// allowed); nothing was connected to.
    #[error("{0}")]
    Refused(target::Refused),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection, or it broke.
    #[error("{0}")]
    Network(String),
}

impl PostError {
    /// The `outcome` label of `pushd_webhook_attempts_total`.
    fn outcome(&self) -> &'static str {
        match self {
            PostError::Status(_) | PostError::Redirect(_) => "http_error",
            PostError::Timeout(_) => "timeout",
            PostError::Network(_) | PostError::Refused(_) => "network",
        }
    }
}

/// Posts `event` until a receiver takes it or its retry window closes;
/// answers its number.
async fn deliver(hook: Arc<Hook>, shared: Arc<Shared>, event: StoredEvent) -> u64 {
    let settings = &shared.settings;
    let body = Bytes::from(event.body);
    let deadline = event.time_ms + settings.max_age.as_millis() as i64;
    let mut failures = 0;
    loop {
        if failures > 0 && !still_kept(&shared.source, event.offset).await {
            // Erased since it was read (its customer erased): not posted.
            return event.seq;
        }
        let now = shared.clock.now();
        let result = post(&shared.client, &hook.active(), body.clone(), now, settings).await;
        let outcome = result
            .as_ref()
            .map_or_else(PostError::outcome, |()| "success");
        metrics::counter!("pushd_webhook_attempts_total", "webhook" => hook.id.clone(), "outcome" => outcome)
            .increment(1);
        let error = match result {
            Ok(()) => {
                hook.update(|p| {
                    p.delivered += 1;
                    p.last_success_at = Some(now);
                });
                return event.seq;
            }
            Err(e) => e,
        };
        hook.update(|p| {
            p.failed_attempts += 1;
            p.last_error = Some(error.to_string());
            p.last_error_at = Some(now);
        });
        failures += 1;
        let left = deadline - shared.clock.now_ms();
        if left <= 0 {
            tracing::warn!(webhook = %hook.id, seq = event.seq, error = %error, "event dropped: its retry window closed");
            hook.update(|p| p.dropped += 1);
            metrics::counter!("pushd_webhook_dropped_total", "webhook" => hook.id.clone())
                .increment(1);
            return event.seq;
        }
        let wait = backoff(settings, failures).min(Duration::from_millis(left as u64));
        shared.clock.sleep(wait).await;
    }
}

/// The wait before retry number `failures`: doubling from the base up to
/// the maximum, the second half of it random so receivers that fail
/// together do not all come back at once.
fn backoff(settings: &Settings, failures: u32) -> Duration {
    let ceiling = settings
        .backoff_base
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(settings.backoff_max);
    ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0)
}

/// One signed post. Its status decides it: 2xx is taken, a redirect is
/// not followed and fails, like any other status. The answer's body is
/// read to its end or until [`MAX_ANSWER_BYTES`] have come, whichever is
/// first.
async fn post(
    client: &reqwest::Client,
    active: &Active,
    body: Bytes,
    now: i64,
    settings: &Settings,
) -> Result<(), PostError> {
    let url = &active.definition.url;
    // An IP host is connected to without the resolver: checked here.
    if !settings.allow_private_targets
        && let Some(ip) = reqwest::Url::parse(url)
            .ok()
            .as_ref()
            .and_then(target::literal)
    {
        target::check_ip(ip).map_err(PostError::Refused)?;
    }
    let signed = signature::sign(&active.key, now, &body);
    let sent = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(signature::HEADER, signed)
        .timeout(settings.timeout)
        .body(body)
        .send()
        .await;
    let mut response = sent.map_err(|e| match e.is_timeout() {
        true => PostError::Timeout(settings.timeout),
        false => {
            refused(&e).map_or_else(|| PostError::Network(network_words(&e)), PostError::Refused)
        }
    })?;
    let status = response.status();
    // Read a small answer whole, so the connection can carry the next post;
    // once the cap is reached (or on a broken answer) the connection is
    // dropped. Each chunk is let go as soon as it is counted.
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %network_words(&e), "webhook answer body not read to its end");
                break;
            }
        }
    }
    drop(response);
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(PostError::Redirect(status.as_u16()))
    } else {
        Err(PostError::Status(status.as_u16()))
    }
}

/// The refusal of a target by the resolver, if that is why `e` happened.
fn refused(e: &reqwest::Error) -> Option<target::Refused> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<target::Refused>() {
            return Some(refused.clone());
        }
        source = cause.source();
    }
    None
}

/// A network error in words, with its cause (reqwest's own text names only
/// the request).
fn network_words(e: &reqwest::Error) -> String {
    let mut words = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        words = format!("{words}: {cause}");
        source = cause.source();
    }
    words
}
