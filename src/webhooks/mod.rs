//! Webhooks: each one posts the delivery events it takes to its URL, signed
//! (see [`signature`]), at least once, in the event log's order (posts in
//! flight may complete out of order), with retries for up to a day.
//!
//! Definitions and progress live in a [`Book`]: a single node's own durable
//! file, or a cluster's shared bucket. Every webhook has a worker (see
//! `worker.rs`) reading a [`Source`] of events, on the thread
//! `pushd-webhooks`, which also saves progress and runs the event log's
//! retention: nothing of the engine or the API waits on a receiver. In a
//! cluster, a webhook's worker runs on the one node its [`Placement`] puts
//! it on, and each node follows the others' changes every second.

pub mod book;
mod hook;
pub mod signature;
mod target;
mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pushd_actors::ports::Clock;
use pushd_actors::status::MessageStatus;
use pushd_actors::transition::EVENT_STATUSES;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

pub use hook::{Stats, View};

pub use crate::events::Source;
pub use book::{Book, FileBook};
use book::{Change, Definition, Saved};
use hook::Hook;

/// How progress is saved and retention runs, at most.
const SAVE_EVERY: Duration = Duration::from_millis(250);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often a node sharing its webhooks with others reads their changes
/// and places the workers.
const REVIEW_EVERY: Duration = Duration::from_secs(1);

/// Longest webhook URL, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest secret, bytes.
pub const MAX_SECRET_BYTES: usize = 256;

/// How webhooks post and retry.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// A post not answered within this fails (and is retried).
    pub timeout: Duration,
    /// The first retry waits about this long; each next one twice as long.
    pub backoff_base: Duration,
    /// The longest wait between two tries.
    pub backoff_max: Duration,
    /// An event still failing this long after it was recorded is dropped.
    pub max_age: Duration,
    /// Posts (and retries) under way at once, per webhook.
    pub in_flight: usize,
    /// Whether receivers may be on loopback, link-local, private, CGNAT,
    /// multicast, unspecified or broadcast addresses (see `target.rs`):
    /// for tests and private networks.
    pub allow_private_targets: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(4),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(24 * 3600),
            in_flight: 16,
            allow_private_targets: false,
        }
    }
}

/// Why a webhook call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No webhook with this id.
    #[error("webhook {0:?} not found")]
    NotFound(String),
    /// The definition cannot be used; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The webhooks' book could not be read or written.
    #[error("{place}: {source}")]
    Io {
        /// The book (its file, or bucket).
        place: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A webhook as asked for by `PUT /v1/webhooks/{id}`.
#[derive(Clone, Debug)]
pub struct Request {
    /// The receiver.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The event kinds to post; all of them if `None`.
    pub events: Option<Vec<MessageStatus>>,
}

impl Request {
    /// The events it takes, checked, without duplicates, in the API's order.
    fn events(&self) -> Result<Vec<MessageStatus>, Error> {
        let Some(asked) = &self.events else {
            return Ok(EVENT_STATUSES.to_vec());
        };
        if asked.is_empty() {
            return Err(Error::Invalid(
                "events must name at least one event (leave it out for all of them)".into(),
            ));
        }
        if let Some((i, s)) = asked
            .iter()
            .enumerate()
            .find(|(_, s)| !EVENT_STATUSES.contains(s))
        {
            let names: Vec<&str> = EVENT_STATUSES.iter().map(|s| s.as_str()).collect();
            return Err(Error::Invalid(format!(
                "events[{i}]: \"{}\" is not an event; use {}",
                s.as_str(),
                names.join(", ")
            )));
        }
        Ok(EVENT_STATUSES
            .into_iter()
            .filter(|s| asked.contains(s))
            .collect())
    }

    /// Refuses a URL that is not http(s), or (unless `allow_private`) not
    /// on a public address, and a secret out of bounds.
    fn check(&self, allow_private: bool) -> Result<(), Error> {
        let url = reqwest::Url::parse(&self.url).ok().filter(|u| {
            self.url.len() <= MAX_URL_BYTES
                && matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
        });
        let Some(url) = url else {
            return Err(Error::Invalid(format!(
                "url must be an http:// or https:// URL of at most {MAX_URL_BYTES} bytes, not {:?}",
                hook::masked(&self.url)
            )));
        };
        if !allow_private {
            target::check_url(&url).map_err(|e| Error::Invalid(e.to_string()))?;
        }
        if self.secret.is_empty() || self.secret.len() > MAX_SECRET_BYTES {
            return Err(Error::Invalid(format!(
                "secret must be 1 to {MAX_SECRET_BYTES} bytes, not {}",
                self.secret.len()
            )));
        }
        Ok(())
    }
}

/// What the workers share.
pub(crate) struct Shared {
    source: Arc<dyn Source>,
    settings: Settings,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

enum Command {
    Start(Arc<Hook>),
    Stop(String),
}

/// Which webhooks' workers run on this node: in a cluster, each webhook's
/// on the node serving the partition its id hashes to.
pub type Placement = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The webhooks: their definitions, their workers.
pub struct Webhooks {
    book: Box<dyn Book>,
    /// `None`: every worker runs here (a single node).
    placement: Option<Placement>,
    hooks: Mutex<BTreeMap<String, Arc<Hook>>>,
    /// The webhooks whose workers run here.
    running: Mutex<BTreeSet<String>>,
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Webhooks {
    /// Loads the webhooks of `book` and starts their workers (those
    /// `placement` puts here) on the thread `pushd-webhooks`, posting the
    /// events of `source`.
    pub fn start(
        book: Box<dyn Book>,
        source: Arc<dyn Source>,
        settings: Settings,
        clock: Arc<dyn Clock>,
        placement: Option<Placement>,
    ) -> Result<Arc<Webhooks>, Error> {
        let place = book.place();
        let io = |source| Error::Io {
            place: place.clone(),
            source,
        };
        let saved = book.load().map_err(io)?;
        let hooks: BTreeMap<String, Arc<Hook>> = saved
            .into_iter()
            .map(|(id, s)| (id.clone(), Hook::new(id, s)))
            .collect();
        for id in hooks.keys() {
            crate::telemetry::register_webhook(id);
        }
        let mut client = reqwest::Client::builder()
            .user_agent(concat!("pushd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if !settings.allow_private_targets {
            // Checked on connecting: the resolver filters names, and no
            // proxy (HTTP_PROXY, ...) may connect on a post's behalf.
            client = client.dns_resolver(Arc::new(target::Resolver)).no_proxy();
        }
        let client = client.build().map_err(|e| io(std::io::Error::other(e)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let webhooks = Arc::new(Webhooks {
            book,
            placement,
            hooks: Mutex::new(BTreeMap::new()),
            running: Mutex::default(),
            shared: Arc::new(Shared {
                source,
                settings: Settings {
                    in_flight: settings.in_flight.max(1),
                    ..settings
                },
                client,
                clock,
            }),
            commands: Mutex::new(Some(tx)),
            thread: Mutex::new(None),
        });
        for hook in hooks.values().filter(|h| webhooks.runs_here(&h.id)) {
            lock(&webhooks.running).insert(hook.id.clone());
            webhooks.command(Command::Start(hook.clone()));
        }
        *lock(&webhooks.hooks) = hooks;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io)?;
        let supervisor = webhooks.clone();
        let thread = std::thread::Builder::new()
            .name("pushd-webhooks".into())
            .spawn(move || runtime.block_on(supervisor.supervise(rx)))
            .map_err(io)?;
        *lock(&webhooks.thread) = Some(thread);
        Ok(webhooks)
    }

    /// Whether webhook `id`'s worker belongs on this node.
    fn runs_here(&self, id: &str) -> bool {
        self.placement.as_ref().is_none_or(|here| here(id))
    }

    /// In a shared book, takes what other nodes changed: webhooks created,
    /// replaced or deleted there, and the progress of those whose workers
    /// run elsewhere.
    fn refresh(&self) -> Result<(), Error> {
        if !self.book.shared() {
            return Ok(());
        }
        let saved = self.book.load().map_err(|e| self.io(e))?;
        let mut hooks = lock(&self.hooks);
        let running = lock(&self.running).clone();
        hooks.retain(|id, _| {
            let kept = saved.contains_key(id);
            if !kept {
                self.command(Command::Stop(id.clone()));
            }
            kept
        });
        for (id, s) in saved {
            match hooks.get(&id) {
                Some(hook) if running.contains(&id) => {
                    if hook.active().definition != s.definition {
                        hook.replace(s.definition);
                    }
                }
                Some(hook) => hook.refresh(s),
                None => {
                    crate::telemetry::register_webhook(&id);
                    hooks.insert(id.clone(), Hook::new(id, s));
                }
            }
        }
        Ok(())
    }

    /// Starts the workers placed here that do not run, and stops those no
    /// longer placed here (saving their progress first).
    fn place_workers(&self) {
        let hooks = lock(&self.hooks);
        let mut running = lock(&self.running);
        for (id, hook) in hooks.iter() {
            match (self.runs_here(id), running.contains(id)) {
                (true, false) => {
                    running.insert(id.clone());
                    self.command(Command::Start(hook.clone()));
                }
                (false, true) => {
                    self.command(Command::Stop(id.clone()));
                    let all = BTreeMap::from([(id.clone(), hook.saved())]);
                    if let Err(e) =
                        self.book
                            .save(&all, std::slice::from_ref(id), Change::Progressed)
                    {
                        tracing::warn!(webhook = %id, error = %e, "progress of a webhook moving away not saved; its new node posts again from before");
                    }
                    running.remove(id);
                }
                _ => {}
            }
        }
        running.retain(|id| hooks.contains_key(id));
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            place: self.book.place(),
            source,
        }
    }

    /// Creates or replaces webhook `id`; answers once the definition is
    /// durable. A new webhook posts the events recorded from now on; a
    /// replaced one goes on from where it was.
    pub fn put(&self, id: &str, request: Request) -> Result<View, Error> {
        request.check(self.shared.settings.allow_private_targets)?;
        let events = request.events()?;
        self.refresh()?;
        let now = self.shared.clock.now();
        let mut hooks = lock(&self.hooks);
        let existing = hooks.get(id).cloned();
        let definition = Definition {
            url: request.url,
            secret: request.secret,
            events,
            created_at: existing
                .as_ref()
                .map_or(now, |h| h.active().definition.created_at),
            updated_at: now,
        };
        let progress = existing.as_ref().map_or_else(
            || book::Progress {
                cursor: self.shared.source.end().offset,
                ..Default::default()
            },
            |h| h.progress(),
        );
        let saved = Saved {
            definition: definition.clone(),
            progress,
            live: book::Live::default(),
        };
        let mut all = self.snapshot(&hooks);
        all.insert(id.to_string(), saved.clone());
        self.save(&hooks, &all, Change::Defined(id))?;
        let hook = match existing {
            Some(hook) => {
                hook.replace(definition);
                hook
            }
            None => {
                crate::telemetry::register_webhook(id);
                let hook = Hook::new(id.to_string(), saved);
                hooks.insert(id.to_string(), hook.clone());
                if self.runs_here(id) {
                    lock(&self.running).insert(id.to_string());
                    self.command(Command::Start(hook.clone()));
                }
                hook
            }
        };
        Ok(hook.view(self.shared.clock.now_ms()))
    }

    /// Webhook `id` with its delivery figures.
    pub fn get(&self, id: &str) -> Result<View, Error> {
        self.refresh()?;
        let hook = lock(&self.hooks)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(hook.view(self.shared.clock.now_ms()))
    }

    /// Every webhook, by id.
    pub fn list(&self) -> Result<Vec<View>, Error> {
        self.refresh()?;
        let now = self.shared.clock.now_ms();
        Ok(lock(&self.hooks).values().map(|h| h.view(now)).collect())
    }

    /// Deletes webhook `id` and stops its posts; answers once durable.
    pub fn delete(&self, id: &str) -> Result<(), Error> {
        self.refresh()?;
        let mut hooks = lock(&self.hooks);
        let mut all = self.snapshot(&hooks);
        if all.remove(id).is_none() {
            return Err(Error::NotFound(id.to_string()));
        }
        self.save(&hooks, &all, Change::Removed(id))?;
        hooks.remove(id);
        lock(&self.running).remove(id);
        self.command(Command::Stop(id.to_string()));
        Ok(())
    }

    /// Stops every worker and saves their progress; again, does nothing.
    pub fn stop(&self) {
        lock(&self.commands).take();
        if let Some(thread) = lock(&self.thread).take()
            && thread.join().is_err()
        {
            tracing::error!("webhooks thread panicked");
        }
    }

    /// Every webhook with its progress as of now, as the book keeps them
    /// (the book itself may be a moment behind).
    pub fn saved(&self) -> BTreeMap<String, Saved> {
        self.snapshot(&lock(&self.hooks))
    }

    fn command(&self, command: Command) {
        if let Some(tx) = lock(&self.commands).as_ref() {
            let _ = tx.send(command);
        }
    }

    /// Every webhook as the book keeps it, now.
    fn snapshot(&self, hooks: &BTreeMap<String, Arc<Hook>>) -> BTreeMap<String, Saved> {
        hooks
            .iter()
            .map(|(id, h)| (id.clone(), h.saved()))
            .collect()
    }

    /// Saves `change` to the book; called with the webhooks locked, so
    /// saves never cross. On failure every webhook's progress is saved
    /// again next time.
    fn save(
        &self,
        hooks: &BTreeMap<String, Arc<Hook>>,
        all: &BTreeMap<String, Saved>,
        change: Change<'_>,
    ) -> Result<(), Error> {
        let running: Vec<String> = lock(&self.running).iter().cloned().collect();
        self.book.save(all, &running, change).map_err(|source| {
            for hook in hooks.values() {
                hook.update(|_| ());
            }
            self.io(source)
        })
    }

    /// Saves progress if any changed.
    fn save_progress(&self) {
        let hooks = lock(&self.hooks);
        if !hooks.values().any(|h| h.dirty()) {
            return;
        }
        let all = self.snapshot(&hooks);
        if let Err(e) = self.save(&hooks, &all, Change::Progressed) {
            tracing::error!(error = %e, "cannot save webhook progress; retrying");
        }
    }

    /// In a shared book, takes other nodes' changes and moves workers to
    /// where they are placed now.
    fn review(&self) {
        if !self.book.shared() {
            return;
        }
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "cannot read the webhooks; trying again");
            return;
        }
        self.place_workers();
    }

    /// Runs the workers until [`Webhooks::stop`], saving progress and
    /// pruning the event log on the way (and, in a shared book, following
    /// other nodes' changes and where each worker belongs).
    async fn supervise(self: Arc<Self>, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut workers = JoinSet::new();
        let mut running: HashMap<String, AbortHandle> = HashMap::new();
        let mut save = tokio::time::interval(SAVE_EVERY);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let mut review = tokio::time::interval(REVIEW_EVERY);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start(hook)) => {
                        let id = hook.id.clone();
                        let handle = workers.spawn(worker::run(hook, self.shared.clone()));
                        if let Some(old) = running.insert(id, handle) {
                            old.abort();
                        }
                    }
                    Some(Command::Stop(id)) => {
                        if let Some(handle) = running.remove(&id) {
                            handle.abort();
                        }
                        metrics::gauge!("pushd_webhook_queue_depth", "webhook" => id.clone()).set(0.0);
                        metrics::gauge!("pushd_webhook_oldest_undelivered_seconds", "webhook" => id).set(0.0);
                    }
                    None => break,
                },
                _ = save.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || me.save_progress()).await;
                }
                _ = review.tick(), if self.book.shared() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || me.review()).await;
                }
                _ = prune.tick() => {
                    let source = self.shared.source.clone();
                    let _ = tokio::task::spawn_blocking(move || source.prune()).await;
                }
                Some(ended) = workers.join_next(), if !workers.is_empty() => {
                    if let Err(e) = ended && e.is_panic() {
                        tracing::error!(error = %e, "a webhook worker panicked; it restarts with the daemon");
                    }
                }
            }
        }
        workers.shutdown().await;
        self.save_progress();
    }
}
