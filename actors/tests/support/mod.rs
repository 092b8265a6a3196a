//! In-memory doubles of the engine's ports, with signals tests can await.
#![allow(dead_code, reason = "each test binary uses part of the support module")]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushd_actors::engine::{EngineConfig, Ports};
use pushd_actors::group_commit::GroupCommit;
use pushd_actors::idempotency::SendRecord;
use pushd_actors::model::{Content, Customer, Delivery, MessageSpec};
use pushd_actors::ports::{
    Accepted, AsOf, BoxFuture, Catalog, Change, Entry, Journal, JournalError, ManualClock,
    OsEntropy, Position, Provider, ProviderError, Push, RenderError, Renderer, Slot, Store,
    StoreError,
};
use pushd_actors::registry::Registry;
use pushd_actors::status::Timestamp;
use pushd_actors::tally::Tally;
use serde_json::Value;
use tokio::sync::Notify;

/// Waits for `cond`, woken by `notify`; panics after 10 s so a bug fails
/// the test instead of hanging it.
pub async fn wait_for(notify: &Notify, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let woken = notify.notified();
            if cond() {
                return;
            }
            woken.await;
        }
    })
    .await
    .expect("condition not reached in 10 s");
}

/// A store in memory: the state of every applied record, and the position
/// of the last one. A [`MemStore::snapshot`] is what a checkpoint keeps.
/// Its maps are ordered, so what it answers does not depend on a hasher's
/// random keys (the simulation replays a seed exactly).
#[derive(Default)]
pub struct MemStore {
    pub state: Mutex<MemState>,
    pub commits: Notify,
    /// Customer loads that fail before loads work again.
    failing_loads: std::sync::atomic::AtomicUsize,
    /// Reads that stall before reads answer at once again.
    stalling: Mutex<Option<Stall>>,
}

/// Reads that hold their caller while time passes: a disk that stalls.
struct Stall {
    reads: usize,
    each: Duration,
    clock: Arc<ManualClock>,
}

/// The whole state of a [`MemStore`].
#[derive(Clone, Default, Debug)]
pub struct MemState {
    pub customers: BTreeMap<String, Customer>,
    pub deliveries: BTreeMap<String, Delivery>,
    pub messages: BTreeMap<String, MessageSpec>,
    pub sends: BTreeMap<String, SendRecord>,
    /// Each message's counters, kept incrementally as the daemon's store
    /// keeps them: they must equal a recount of its deliveries.
    pub tallies: BTreeMap<String, Tally>,
    pub covered: Position,
}

impl MemStore {
    /// A store holding `state`, as after a restart from that snapshot.
    pub fn from_snapshot(state: MemState) -> MemStore {
        MemStore {
            state: Mutex::new(state),
            commits: Notify::new(),
            failing_loads: Default::default(),
            stalling: Mutex::new(None),
        }
    }

    /// The state as it is now, with the position it covers.
    pub fn snapshot(&self) -> MemState {
        self.state.lock().unwrap().clone()
    }

    /// Makes the next `n` customer loads fail.
    pub fn fail_loads(&self, n: usize) {
        self.failing_loads
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the next `reads` reads each hold their caller (an actor's
    /// thread, with everything on it) while `clock` moves on by `each`, as
    /// a stalled disk does: timers due meanwhile fire late.
    pub fn stall_reads(&self, reads: usize, each: Duration, clock: Arc<ManualClock>) {
        *self.stalling.lock().unwrap() = Some(Stall { reads, each, clock });
    }

    /// Holds this read if reads stall.
    fn stall(&self) {
        let mut stalling = self.stalling.lock().unwrap();
        if let Some(stall) = stalling.as_mut().filter(|s| s.reads > 0) {
            stall.reads -= 1;
            stall.clock.advance(stall.each);
        }
    }

    pub fn delivery_now(&self, id: &str) -> Delivery {
        self.state.lock().unwrap().deliveries[id].clone()
    }
}

/// The messages the store holds: what a released scheduled delivery renders.
impl Catalog for MemStore {
    fn message(&self, id: &str) -> BoxFuture<Result<Option<MessageSpec>, StoreError>> {
        let found = self.state.lock().unwrap().messages.get(id).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}

impl Store for MemStore {
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        self.stall();
        let failing = &self.failing_loads;
        let fail = failing
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if fail {
            return Err(StoreError("disk on fire".into()));
        }
        Ok(self.state.lock().unwrap().customers.get(id).cloned())
    }

    fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.stall();
        Ok(self.state.lock().unwrap().deliveries.get(id).cloned())
    }

    fn delivery_as_of(&self, id: &str) -> Result<Option<AsOf<Delivery>>, StoreError> {
        self.stall();
        let state = self.state.lock().unwrap();
        Ok(state.deliveries.get(id).map(|d| AsOf {
            value: d.clone(),
            position: state.covered,
        }))
    }

    fn unsettled_deliveries(&self, customer_id: &str) -> Result<Vec<Delivery>, StoreError> {
        self.stall();
        let state = self.state.lock().unwrap();
        Ok(state
            .deliveries
            .values()
            .filter(|d| d.customer_id == customer_id && !d.state.settled() && !d.state.held)
            .cloned()
            .collect())
    }

    fn held_deliveries(&self, each: &mut dyn FnMut(&Delivery)) -> Result<(), StoreError> {
        let state = self.state.lock().unwrap();
        state
            .deliveries
            .values()
            .filter(|d| d.state.held)
            .for_each(each);
        Ok(())
    }

    fn deliveries_between(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        let state = self.state.lock().unwrap();
        let mut found: Vec<Delivery> = state
            .deliveries
            .values()
            .filter(|d| d.customer_id == customer_id && (from..=to).contains(&d.listed_at()))
            .cloned()
            .collect();
        found.sort_by(|a, b| (b.listed_at(), &b.id).cmp(&(a.listed_at(), &a.id)));
        Ok(found)
    }

    fn customers_with_unsettled(&self) -> Result<Vec<String>, StoreError> {
        let state = self.state.lock().unwrap();
        let mut ids: Vec<String> = state
            .deliveries
            .values()
            .filter(|d| !d.state.settled() && !d.state.held)
            .map(|d| d.customer_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn send_record(&self, key: &str) -> Result<Option<SendRecord>, StoreError> {
        Ok(self.state.lock().unwrap().sends.get(key).cloned())
    }

    fn covered(&self) -> Result<Position, StoreError> {
        Ok(self.state.lock().unwrap().covered)
    }

    fn apply(&self, position: Position, changes: Vec<Change>) {
        let mut state = self.state.lock().unwrap();
        assert!(position > state.covered, "records apply in journal order");
        for change in changes {
            if let (Entry::Delivery(after), Some(before)) = (&change.entry, &change.before) {
                assert_eq!(
                    state.deliveries.get(&after.id),
                    Some(&**before),
                    "the engine's before is the stored value"
                );
            }
            match change.entry {
                Entry::Customer(c) => {
                    state.customers.insert(c.id.clone(), c);
                }
                Entry::CustomerDeleted(id) => {
                    state.customers.remove(&id);
                }
                Entry::Message(m) => {
                    state.messages.insert(m.id.clone(), *m);
                }
                Entry::Delivery(after) => {
                    let delta = Tally::delta(state.deliveries.get(&after.id), &after);
                    *state.tallies.entry(after.message_id.clone()).or_default() += delta;
                    state.deliveries.insert(after.id.clone(), *after);
                }
                Entry::SendRecord(record) => {
                    state.sends.insert(record.key.clone(), *record);
                }
                Entry::SendRecordsExpired(before) => {
                    state.sends.retain(|_, r| r.started_ms >= before);
                }
                Entry::CustomerErased(id) => {
                    state.customers.remove(&id);
                    state.deliveries.retain(|_, d| d.customer_id != id);
                }
            }
        }
        state.covered = position;
        drop(state);
        self.commits.notify_waiters();
    }
}

/// A journal in memory, on the engine's group commit. Records are durable
/// at once unless it was made [`MemJournal::manual`]; then only
/// [`MemJournal::sync`] makes them durable, and [`MemJournal::crash`] keeps
/// only what was. It fails when told: a full disk refuses appends for a
/// while ([`MemJournal::refuse`]), a failed write or sync fails it for good
/// ([`MemJournal::fail`]).
pub struct MemJournal {
    commit: GroupCommit,
    /// Each durable record as its encoded bytes, as a file journal keeps it.
    records: Mutex<Vec<(Position, Vec<u8>)>>,
    manual: bool,
    /// Appends still to refuse (a full disk).
    refusing: std::sync::atomic::AtomicUsize,
    /// Why the journal failed for good, once it did.
    failed: Mutex<Option<String>>,
}

impl Default for MemJournal {
    fn default() -> MemJournal {
        MemJournal::with(Vec::new(), 0, false)
    }
}

impl MemJournal {
    fn with(records: Vec<(Position, Vec<u8>)>, last: Position, manual: bool) -> MemJournal {
        MemJournal {
            commit: GroupCommit::new(last, 0),
            records: Mutex::new(records),
            manual,
            refusing: Default::default(),
            failed: Mutex::new(None),
        }
    }

    /// Refuses the next `n` appends, as a full disk does; then appends
    /// work again.
    pub fn refuse(&self, n: usize) {
        self.refusing.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fails the journal for good, as a failed write or `fdatasync` does:
    /// the records not yet durable are not (their waiters get `why`), and
    /// every later append is refused until a restart.
    pub fn fail(&self, why: &str) {
        let _records = self.records.lock().unwrap();
        self.failed
            .lock()
            .unwrap()
            .get_or_insert_with(|| why.to_string());
        if let Some(group) = self.commit.take_group() {
            self.commit.finish(group, Err(why.to_string()));
        }
    }

    /// Whether the journal failed for good.
    pub fn failed(&self) -> bool {
        self.failed.lock().unwrap().is_some()
    }

    /// The last durable position.
    pub fn durable_position(&self) -> Position {
        self.commit.last_durable()
    }

    /// A journal whose records wait for [`MemJournal::sync`].
    pub fn manual() -> MemJournal {
        MemJournal::with(Vec::new(), 0, true)
    }

    /// Makes every record durable, as one group, and wakes their waiters.
    pub fn sync(&self) {
        let mut records = self.records.lock().unwrap();
        if let Some(group) = self.commit.take_group() {
            records.extend(group.records().map(|(p, bytes)| (p, bytes.to_vec())));
            self.commit.finish(group, Ok(()));
        }
    }

    /// The journal a restart finds: only the durable records, appending
    /// after them.
    pub fn crash(&self) -> MemJournal {
        let records = self.records.lock().unwrap();
        MemJournal::with(records.clone(), self.commit.last_durable(), self.manual)
    }
}

impl Journal for MemJournal {
    fn append(&self, changes: &[Change]) -> Result<Position, JournalError> {
        if let Some(why) = self.failed.lock().unwrap().clone() {
            return Err(JournalError(why));
        }
        let full = self.refusing.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
        if full.is_ok() {
            return Err(JournalError("no space left on device".into()));
        }
        let entries: Vec<&Entry> = changes.iter().map(|c| &c.entry).collect();
        let position = self.commit.append(|_, buf| {
            postcard::to_io(&entries, buf)
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        if !self.manual {
            self.sync();
        }
        Ok(position)
    }

    fn durable(&self, position: Position) -> BoxFuture<Result<(), JournalError>> {
        self.commit.durable(position)
    }

    fn replay(
        &self,
        after: Position,
        apply: &mut dyn FnMut(Position, Vec<Entry>) -> Result<(), StoreError>,
    ) -> Result<Position, JournalError> {
        let records = self.records.lock().unwrap().clone();
        let mut last = after;
        for (position, bytes) in records.into_iter().filter(|(p, _)| *p > after) {
            let entries: Vec<Entry> =
                postcard::from_bytes(&bytes).map_err(|e| JournalError(e.to_string()))?;
            apply(position, entries).map_err(|e| JournalError(e.to_string()))?;
            last = position;
        }
        Ok(last)
    }
}

/// What a scripted provider answers for a token.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    Transient,
    Bounce,
    /// Never answers: the send hangs (a crash stand-in).
    Hang,
    /// Panics while the send polls it (a bug in a provider client).
    Panic,
}

/// A provider that answers from a per-token script (then `Ok`).
#[derive(Default)]
pub struct ScriptedProvider {
    pub scripts: Mutex<HashMap<String, VecDeque<Answer>>>,
    pub calls: Mutex<Vec<Push>>,
    pub called: Notify,
}

impl ScriptedProvider {
    pub fn script(&self, token: &str, answers: impl IntoIterator<Item = Answer>) {
        self.scripts
            .lock()
            .unwrap()
            .insert(token.to_string(), answers.into_iter().collect());
    }

    pub fn calls_to(&self, token: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p.token == *token)
            .count()
    }
}

impl Provider for ScriptedProvider {
    fn reserve(&self, _: &Push) -> BoxFuture<Slot> {
        Box::pin(async { Slot::free() })
    }

    fn send(&self, push: Push, _: Slot) -> BoxFuture<Result<Accepted, ProviderError>> {
        let answer = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&*push.token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok);
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(push);
            calls.len()
        };
        self.called.notify_waiters();
        let result = match answer {
            Answer::Ok => Ok(Accepted {
                provider_id: Some(format!("id-{n}")),
            }),
            Answer::Transient => Err(ProviderError::Transient {
                detail: "503 ServiceUnavailable".into(),
                retry_after: None,
            }),
            Answer::Bounce => Err(ProviderError::Bounced {
                detail: "410 Unregistered".into(),
            }),
            Answer::Hang => return Box::pin(std::future::pending()),
            Answer::Panic => return Box::pin(async { panic!("the provider port panicked") }),
        };
        Box::pin(async move { result })
    }
}

/// Replaces `{{customer.KEY}}`; a missing key is an error, like Liquid.
pub struct PlainRenderer;

impl PlainRenderer {
    fn fill(text: &str, customer: &Customer) -> Result<String, RenderError> {
        let attributes = customer.attributes.to_map();
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{customer.") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| RenderError::Syntax(text.into()))?;
            let key = &rest[start + 11..start + end];
            match attributes.get(key) {
                Some(Value::String(s)) => out.push_str(s),
                Some(v) => out.push_str(&v.to_string()),
                None => return Err(RenderError::VariableMissing(key.into())),
            }
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl Renderer for PlainRenderer {
    fn render(&self, m: &MessageSpec, c: &Customer, _: &Value) -> Result<Content, RenderError> {
        Ok(Content {
            title: Self::fill(&m.title, c)?,
            body: Self::fill(&m.body, c)?,
            deep_link: None,
            collapse_id: m.collapse_id.clone(),
            options: m.push.clone(),
            rate_per_minute: m.rate_per_minute,
            lane: m.lane,
        })
    }
}

/// An engine over the doubles.
pub struct Harness {
    pub store: Arc<MemStore>,
    pub journal: Arc<MemJournal>,
    pub provider: Arc<ScriptedProvider>,
    pub clock: Arc<ManualClock>,
    pub registry: Arc<Registry>,
}

/// Where a harness's clock starts: 2025-11-25T19:46:40Z.
pub const START_MS: i64 = 1_764_100_000_000;

/// A message `id` with `title` and the body "News", to every device of
/// the default app, without a campaign, conversion or pacing.
pub fn news(id: &str, title: &str) -> MessageSpec {
    MessageSpec {
        id: id.into(),
        name: "News".into(),
        campaign_id: None,
        title: title.into(),
        body: "News".into(),
        deep_link: None,
        audience: pushd_actors::model::Audience::AllDevices,
        collapse_id: None,
        conversion: None,
        app: pushd_actors::model::DEFAULT_APP.into(),
        push: pushd_actors::model::PushOptions::default(),
        rate_per_minute: None,
        lane: Default::default(),
        created_at: 0,
    }
}

pub fn config() -> EngineConfig {
    EngineConfig {
        max_attempts: 10,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        retry_after_max: Duration::from_secs(900),
        frequency_caps: Vec::new(),
        quiet_hours: None,
        release_spread_seconds: 0,
    }
}

impl Harness {
    /// Puts customer `id` with `attributes` (and `unsubscribed`) and one
    /// opted-in production iOS device of the default app, token `t-<id>`.
    pub async fn ios_customer(
        &self,
        id: &str,
        attributes: serde_json::Map<String, Value>,
        unsubscribed: bool,
    ) {
        use pushd_actors::model::{DEFAULT_APP, Device, Environment, Platform};
        use pushd_actors::person::{PutCustomer, PutDevice};
        let put = PutCustomer {
            attributes,
            unsubscribed,
        };
        self.registry.request(id, put).await.unwrap();
        let device = Device {
            id: format!("t-{id}"),
            platform: Platform::Ios,
            app: DEFAULT_APP.into(),
            environment: Environment::Production,
            last_used: 1,
            attributes: Default::default(),
            suppressed: false,
            opted_in: Some(true),
        };
        self.registry.request(id, PutDevice(device)).await.unwrap();
    }

    pub fn new() -> Self {
        Self::on(
            Arc::new(MemStore::default()),
            Arc::new(MemJournal::default()),
            Arc::new(ScriptedProvider::default()),
        )
    }

    /// An engine on an existing store and journal: a restart after a crash.
    /// It recovers (replays the journal's tail, resumes unsettled sends).
    pub fn on(
        store: Arc<MemStore>,
        journal: Arc<MemJournal>,
        provider: Arc<ScriptedProvider>,
    ) -> Self {
        Self::at(START_MS, store, journal, provider)
    }

    /// [`Harness::on`] with the clock standing at `start_ms`: a restart
    /// after some time down.
    pub fn at(
        start_ms: i64,
        store: Arc<MemStore>,
        journal: Arc<MemJournal>,
        provider: Arc<ScriptedProvider>,
    ) -> Self {
        Self::tuned(start_ms, store, journal, provider, config())
    }

    /// A fresh engine with `config`'s tuning.
    pub fn configured(config: EngineConfig) -> Self {
        let (store, journal) = (Default::default(), Default::default());
        Self::tuned(START_MS, store, journal, Default::default(), config)
    }

    fn tuned(
        start_ms: i64,
        store: Arc<MemStore>,
        journal: Arc<MemJournal>,
        provider: Arc<ScriptedProvider>,
        config: EngineConfig,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(start_ms));
        let ports = Ports {
            provider: provider.clone(),
            journal: journal.clone(),
            store: store.clone(),
            renderer: Arc::new(PlainRenderer),
            clock: clock.clone(),
            entropy: Arc::new(OsEntropy),
            catalog: store.clone(),
        };
        let registry = Arc::new(Registry::new(ports, config, 2));
        registry.recover().expect("recovers");
        registry.start_releases();
        Harness {
            store,
            journal,
            provider,
            clock,
            registry,
        }
    }
}
