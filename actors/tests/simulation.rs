//! A deterministic simulation of the engine, after TigerBeetle's: one seed
//! draws a script of requests and faults, and the whole engine runs on this
//! test's one thread, so the seed alone decides what happens, in which order.
//!
//! The engine runs on in-memory ports: a journal whose records are durable
//! only when the simulation syncs it, a store restarted from the last
//! checkpoint's snapshot, a provider whose answers and delays the seed draws,
//! a manual clock and a seeded [`Entropy`]. The registry starts its actors in
//! the `LocalSet` of one engine life; dropping that set is a crash. Each step
//! does one thing (a request, a journal sync, a checkpoint, time passing, a
//! crash, a fault), then lets the engine run until nothing changes any more
//! (it yields to the runtime; nothing sleeps), then checks the invariants.
//! Time moves only in a step of its own, to the next sleeper's deadline.
//!
//! Faults: crashes at any step; provider errors (503, a GOAWAY that left the
//! push unprocessed, 429 with `Retry-After`, bounces) and slow answers; a
//! journal whose write or `fdatasync` fails (it fails for good, so the engine
//! refuses writes) and a full disk (appends refused for a while), each
//! followed a few steps later by a restart, as an operator would (the
//! daemon's journals know no full disk apart from a failed write); customer
//! loads that fail, within a life only: a load that fails while recovery
//! wakes a customer leaves its unsettled sends waiting for its next request,
//! which the end would flag as never settled; and a store whose reads
//! stall: the store port is synchronous, so a stalled read holds this one
//! thread while the clock moves on by the stall (timers due meanwhile, the
//! retries' and idle checks', fire late), as a slow disk holds an actor's
//! thread.
//!
//! Invariants, at every step: everything acknowledged (customers, devices,
//! deliveries, reports) is in the store, after every restart too; every
//! answer of one idempotency key names the same delivery; each
//! message's counters equal a recount of its deliveries; in a life without
//! journal faults no device is pushed twice. At the end, with the faults
//! off, after a last restart: every delivery reaches a final status (the
//! clock is driven until they do), every delivery pushed is in the store,
//! and a device pushed more than once counts a duplicate.
//!
//! Every step, answer, fault, clock move and provider call goes into a trace
//! hash; the same seed twice gives the same hash. `PUSHD_SIM_SEEDS=<n>` runs
//! n seeds (200 by default), `PUSHD_TEST_SEED=<seed>` replays one.
//!
//! [`Entropy`]: pushd_actors::ports::Entropy

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushd_actors::engine::Ports;
use pushd_actors::idempotency::{Claim, SendAnswer, SentTo};
use pushd_actors::model::{Audience, DEFAULT_APP, Device, Environment, MessageSpec, Platform};
use pushd_actors::person::{DeviceReport, PutCustomer, PutDevice, SendMessage};
use pushd_actors::ports::{
    Accepted, BoxFuture, Clock, ManualClock, Provider, ProviderError, Push, SeededEntropy, Slot,
    Store,
};
use pushd_actors::registry::Registry;
use pushd_actors::status::Report;
use pushd_actors::tally::{Tally, contribution};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{MemJournal, MemState, MemStore, PlainRenderer, config};
use tokio::task::LocalSet;

/// Seeds a plain `cargo test` runs.
const SEEDS: u64 = 200;
/// Steps of one seed, before the end.
const STEPS: usize = 300;
/// Customers the requests spread over.
const CUSTOMERS: usize = 5;
/// Device tokens per customer.
const TOKENS: usize = 3;
/// Idempotency keys; key `k` always sends message `k % 2` to customer
/// `k % CUSTOMERS`, so a key never comes back with another body.
const KEYS: usize = 8;
/// Where the clock starts.
const START_MS: i64 = 1_764_100_000_000;
/// Yields without a change after which the engine counts as idle.
const QUIET_YIELDS: usize = 4;
/// Yields within which the engine must go idle after a step.
const MAX_YIELDS: usize = 10_000;
/// Clock moves the end may take to settle every delivery.
const MAX_END_ROUNDS: usize = 1_000;

/// Set by the panic hook: a panic inside an actor's task is caught by the
/// runtime, so the simulation looks here after every step.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Everything the simulation did and saw, hashed in order.
#[derive(Default)]
struct Trace {
    hasher: Mutex<DefaultHasher>,
    events: AtomicU32,
}

impl Trace {
    fn note(&self, event: &str) {
        let mut hasher = self.hasher.lock().unwrap();
        hasher.write(event.as_bytes());
        hasher.write_u8(0);
        self.events.fetch_add(1, Ordering::SeqCst);
    }

    fn events(&self) -> u32 {
        self.events.load(Ordering::SeqCst)
    }

    fn hash(&self) -> u64 {
        self.hasher.lock().unwrap().finish()
    }
}

/// One accepted push: which life made it, to which device of which delivery.
#[derive(Clone, Debug)]
struct Pushed {
    life: u32,
    delivery: String,
    token: String,
}

/// A provider whose answers and delays the seed draws; it keeps every push
/// it accepted.
struct SimProvider {
    rng: Mutex<StdRng>,
    clock: Arc<ManualClock>,
    trace: Arc<Trace>,
    /// Errors and slow answers drawn; off at the end, when everything must
    /// settle.
    faulty: AtomicBool,
    life: AtomicU32,
    pushed: Mutex<Vec<Pushed>>,
}

impl Provider for SimProvider {
    fn reserve(&self, _: &Push) -> BoxFuture<Slot> {
        Box::pin(async { Slot::free() })
    }

    fn send(&self, push: Push, _: Slot) -> BoxFuture<Result<Accepted, ProviderError>> {
        let mut rng = self.rng.lock().unwrap();
        let faulty = self.faulty.load(Ordering::SeqCst);
        let roll = if faulty { rng.gen_range(0..100) } else { 99 };
        let transient = |detail: &str, retry_after| ProviderError::Transient {
            detail: detail.into(),
            retry_after,
        };
        let answer = match roll {
            0..=7 => Err(transient("503 ServiceUnavailable", None)),
            // The provider client retries a GOAWAY's unprocessed stream
            // below the port; here it costs the send an attempt.
            8..=11 => Err(transient("GOAWAY: stream unprocessed", None)),
            12..=13 => {
                let hint = Duration::from_secs(rng.gen_range(1..30));
                Err(transient("429 TooManyRequests", Some(hint)))
            }
            14..=17 => Err(ProviderError::Bounced {
                detail: "410 Unregistered".into(),
            }),
            _ => Ok(Accepted {
                provider_id: Some(format!("p-{}-{}", push.delivery_id, push.token)),
            }),
        };
        let delay = match faulty && rng.gen_bool(0.15) {
            true => Duration::from_millis(rng.gen_range(1..20_000)),
            false => Duration::ZERO,
        };
        drop(rng);
        self.trace.note(&format!(
            "push {} {} -> {answer:?} in {delay:?}",
            push.delivery_id, push.token
        ));
        if answer.is_ok() {
            self.pushed.lock().unwrap().push(Pushed {
                life: self.life.load(Ordering::SeqCst),
                delivery: push.delivery_id.to_string(),
                token: push.token.to_string(),
            });
        }
        let wait = self.clock.sleep(delay);
        Box::pin(async move {
            wait.await;
            answer
        })
    }
}

/// What the engine acknowledged.
#[derive(Default)]
struct Acked {
    customers: BTreeSet<String>,
    devices: BTreeSet<(String, String)>,
    deliveries: BTreeSet<String>,
    reports: Vec<(String, String, Report)>,
    /// The delivery each answer of a keyed send named, by key.
    keyed: Vec<(String, String)>,
}

/// What outlives a crash: the world around the engine.
struct World {
    seed: u64,
    rng: StdRng,
    clock: Arc<ManualClock>,
    entropy: Arc<SeededEntropy>,
    provider: Arc<SimProvider>,
    trace: Arc<Trace>,
    acked: Rc<RefCell<Acked>>,
    /// The last checkpoint: what a restarted store holds before replay.
    snapshot: MemState,
    requests: u64,
    restarts: u32,
}

/// One life of the engine, between two crashes.
struct Life {
    /// Where its actors and requests run; dropped, they all stop at once.
    tasks: LocalSet,
    store: Arc<MemStore>,
    journal: Arc<MemJournal>,
    registry: Arc<Registry>,
    /// A journal fault happened in this life: a write it refused may leave
    /// a device to be sent again, counted as a duplicate, before a restart.
    journal_faults: bool,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = Arc::new(ManualClock::new(START_MS));
        let trace = Arc::new(Trace::default());
        let provider = Arc::new(SimProvider {
            rng: Mutex::new(StdRng::seed_from_u64(rng.r#gen())),
            clock: clock.clone(),
            trace: trace.clone(),
            faulty: AtomicBool::new(true),
            life: AtomicU32::new(0),
            pushed: Mutex::new(Vec::new()),
        });
        World {
            seed,
            entropy: Arc::new(SeededEntropy::new(rng.r#gen())),
            rng,
            clock,
            provider,
            trace,
            acked: Rc::default(),
            snapshot: MemState::default(),
            requests: 0,
            restarts: 0,
        }
    }

    /// Starts a life on `journal` and the last snapshot, and recovers it.
    async fn start(&mut self, journal: MemJournal) -> Life {
        let store = Arc::new(MemStore::from_snapshot(self.snapshot.clone()));
        let journal = Arc::new(journal);
        let ports = Ports {
            provider: self.provider.clone(),
            journal: journal.clone(),
            store: store.clone(),
            renderer: Arc::new(PlainRenderer),
            clock: self.clock.clone(),
            entropy: self.entropy.clone(),
            catalog: store.clone(),
        };
        let registry = Arc::new(Registry::on_this_thread(ports, config()));
        let tasks = LocalSet::new();
        let recovery = tasks
            .run_until(async { registry.recover() })
            .await
            .unwrap_or_else(|e| panic!("seed {}: recovery failed: {e}", self.seed));
        self.trace.note(&format!("recovered {recovery:?}"));
        let life = Life {
            tasks,
            store,
            journal,
            registry,
            journal_faults: false,
        };
        self.settle(&life).await;
        life
    }

    /// A crash: what the journal did not make durable is lost, and every
    /// task of the life stops where it is. Then a restart.
    async fn crash(&mut self, life: Life) -> Life {
        let journal = life.journal.crash();
        drop(life);
        self.restarts += 1;
        self.provider.life.fetch_add(1, Ordering::SeqCst);
        self.trace.note("crash");
        let life = self.start(journal).await;
        self.check(&life, "after a restart");
        life
    }

    /// Runs the life's tasks until a few yields in a row change nothing:
    /// no trace event, no record, no sleeper, no actor started or stopped.
    async fn settle(&self, life: &Life) {
        let progress = || {
            (
                self.trace.events(),
                life.store.covered().expect("covered"),
                self.clock.sleepers(),
                life.registry.active(),
            )
        };
        life.tasks
            .run_until(async {
                let (mut last, mut quiet) = (progress(), 0);
                for _ in 0..MAX_YIELDS {
                    tokio::task::yield_now().await;
                    let now = progress();
                    quiet = if now == last { quiet + 1 } else { 0 };
                    last = now;
                    if quiet == QUIET_YIELDS {
                        return;
                    }
                }
                panic!(
                    "seed {}: the engine did not go idle in {MAX_YIELDS} yields",
                    self.seed
                );
            })
            .await;
        assert!(
            !PANICKED.load(Ordering::SeqCst),
            "seed {}: a task panicked",
            self.seed
        );
    }

    /// Moves the clock to the next sleeper's deadline, if one waits.
    fn advance(&self) -> bool {
        let Some(at) = self.clock.next_wake() else {
            return false;
        };
        let now = self.clock.now_ms();
        self.clock
            .advance(Duration::from_millis(at.saturating_sub(now) as u64));
        self.trace.note(&format!("clock {}", at - START_MS));
        true
    }

    /// A checkpoint: the store's snapshot, kept once the journal is durable
    /// past it (a snapshot never covers a record a crash could lose).
    fn checkpoint(&mut self, life: &Life) {
        let snapshot = life.store.snapshot();
        life.journal.sync();
        let kept = life.journal.durable_position() >= snapshot.covered;
        if kept {
            self.snapshot = snapshot;
        }
        self.trace.note(&format!("checkpoint kept {kept}"));
    }

    /// Issues one request the seed draws, without waiting for its answer;
    /// its acknowledgement is noted when (if) it comes.
    fn request(&mut self, life: &Life) {
        let c = self.rng.gen_range(0..CUSTOMERS);
        let customer = format!("c{c}");
        let n = self.requests;
        self.requests += 1;
        let (registry, acked, trace) = (
            life.registry.clone(),
            self.acked.clone(),
            self.trace.clone(),
        );
        let answered = move |what: String, ok: bool| {
            trace.note(&format!("answer {n}: {what} ok {ok}"));
            ok
        };
        match self.rng.gen_range(0..10) {
            0 | 1 => {
                let mut attributes = serde_json::Map::new();
                if self.rng.gen_bool(0.7) {
                    attributes.insert("name".into(), Value::from(format!("N{c}")));
                }
                let put = PutCustomer {
                    attributes,
                    unsubscribed: self.rng.gen_bool(0.1),
                };
                self.trace.note(&format!("request {n}: {customer} {put:?}"));
                life.tasks.spawn_local(async move {
                    let answer = registry.request(&customer, put).await;
                    if answered(format!("{answer:?}"), answer.is_ok()) {
                        acked.borrow_mut().customers.insert(customer);
                    }
                });
            }
            2..=4 => {
                let token = format!("t{c}-{}", self.rng.gen_range(0..TOKENS));
                let device = Device {
                    id: token.clone(),
                    platform: match self.rng.gen_bool(0.5) {
                        true => Platform::Ios,
                        false => Platform::Android,
                    },
                    last_used: self.rng.gen_range(0..100),
                    attributes: Default::default(),
                    suppressed: false,
                    opted_in: None,
                    app: DEFAULT_APP.into(),
                    environment: Environment::Production,
                };
                self.trace
                    .note(&format!("request {n}: {customer} put device {token}"));
                life.tasks.spawn_local(async move {
                    let answer = registry.request(&customer, PutDevice(device)).await;
                    if answered(format!("{answer:?}"), answer.is_ok()) {
                        acked.borrow_mut().devices.insert((customer, token));
                    }
                });
            }
            5 => self.keyed_send(life, n),
            6 | 7 => {
                let message = message(self.rng.gen_range(0..2));
                self.trace
                    .note(&format!("request {n}: {customer} send {}", message.id));
                let send = SendMessage {
                    message,
                    data: Value::Null,
                    delivery_id: None,
                    time: None,
                    rules: Default::default(),
                };
                life.tasks.spawn_local(async move {
                    let answer = registry.request(&customer, send).await;
                    if answered(format!("{answer:?}"), answer.is_ok()) {
                        acked.borrow_mut().deliveries.insert(answer.unwrap());
                    }
                });
            }
            _ => self.report(life, n),
        }
    }

    /// A send call with an idempotency key, as the daemon makes it: claim
    /// the key, send under the ticket's delivery id, record the answer. A
    /// key answered again (replayed, or finished after a crash) must name
    /// the same delivery.
    fn keyed_send(&mut self, life: &Life, n: u64) {
        let k = self.rng.gen_range(0..KEYS);
        let key = format!("k{k}");
        let customer = format!("c{}", k % CUSTOMERS);
        let message = message(k % 2);
        let fingerprint = format!("{customer} {}", message.id);
        self.trace.note(&format!("request {n}: keyed send {key}"));
        let (registry, acked, trace) = (
            life.registry.clone(),
            self.acked.clone(),
            self.trace.clone(),
        );
        life.tasks.spawn_local(async move {
            let answer = match registry.idempotent_sends().claim(&key, &fingerprint).await {
                Ok(Claim::Replay(answer)) => Ok(answer),
                Ok(Claim::Send(ticket)) => {
                    let send = SendMessage {
                        message,
                        data: Value::Null,
                        delivery_id: Some(ticket.delivery_id(0)),
                        time: None,
                        rules: Default::default(),
                    };
                    match registry.request(&customer, send).await {
                        Ok(delivery_id) => {
                            let answer = SendAnswer {
                                deliveries: vec![SentTo {
                                    customer_id: customer,
                                    delivery_id,
                                }],
                                failed: Vec::new(),
                            };
                            ticket.record(&answer).await.map(|()| answer)
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            trace.note(&format!("answer {n}: {answer:?}"));
            if let Ok(answer) = answer {
                let mut acked = acked.borrow_mut();
                for sent in answer.deliveries {
                    acked.deliveries.insert(sent.delivery_id.clone());
                    acked.keyed.push((key.clone(), sent.delivery_id));
                }
            }
        });
    }

    /// Reports a device of an acknowledged delivery, read the way the
    /// daemon routes a report: the delivery, handed on (other reports of it
    /// may be in flight, so the actor must see when what was read is stale).
    fn report(&mut self, life: &Life, n: u64) {
        let known: Vec<String> = self.acked.borrow().deliveries.iter().cloned().collect();
        if known.is_empty() {
            return;
        }
        let delivery = known[self.rng.gen_range(0..known.len())].clone();
        let Ok(Some(seen)) = life.store.delivery_as_of(&delivery) else {
            return;
        };
        let d = seen.value.clone();
        if d.sends.is_empty() {
            return;
        }
        let token = d.sends[self.rng.gen_range(0..d.sends.len())].token.clone();
        let report =
            [Report::Delivered, Report::Opened, Report::Converted][self.rng.gen_range(0..3)];
        self.trace.note(&format!(
            "request {n}: report {delivery} {token} {report:?}"
        ));
        let msg = DeviceReport {
            delivery_id: delivery.clone(),
            token: token.clone(),
            report,
            at: self.clock.now(),
            seen: Some(Box::new(seen)),
        };
        let (registry, acked, trace) = (
            life.registry.clone(),
            self.acked.clone(),
            self.trace.clone(),
        );
        life.tasks.spawn_local(async move {
            let answer = registry.request(&d.customer_id, msg).await;
            trace.note(&format!("answer {n}: {answer:?}"));
            if answer.is_ok() {
                acked.borrow_mut().reports.push((delivery, token, report));
            }
        });
    }

    /// The invariants every step keeps.
    fn check(&self, life: &Life, when: &str) {
        let seed = self.seed;
        let state = life.store.snapshot();
        let acked = self.acked.borrow();
        for id in &acked.customers {
            assert!(
                state.customers.contains_key(id),
                "seed {seed}, {when}: acknowledged customer {id} lost"
            );
        }
        for (id, token) in &acked.devices {
            let kept = state
                .customers
                .get(id)
                .is_some_and(|c| c.devices.iter().any(|d| &d.id == token));
            assert!(
                kept,
                "seed {seed}, {when}: acknowledged device {token} lost"
            );
        }
        for id in &acked.deliveries {
            assert!(
                state.deliveries.contains_key(id),
                "seed {seed}, {when}: acknowledged delivery {id} lost"
            );
        }
        for (id, token, report) in &acked.reports {
            let d = &state.deliveries[id];
            let i = d.device_index(token).expect("a reported device");
            let device = &d.state.devices[i];
            let kept = match report {
                Report::Delivered => device.delivered_at.is_some(),
                Report::Opened => device.opened_at.is_some(),
                Report::Converted => d.state.converted_at.is_some(),
            };
            assert!(kept, "seed {seed}, {when}: {report:?} of {id} {token} lost");
        }
        let mut keyed: BTreeMap<&String, &String> = BTreeMap::new();
        for (key, delivery) in &acked.keyed {
            let first = keyed.entry(key).or_insert(delivery);
            assert_eq!(
                first, &delivery,
                "seed {seed}, {when}: key {key} answered two deliveries"
            );
        }
        let mut recount: BTreeMap<String, Tally> = BTreeMap::new();
        for d in state.deliveries.values() {
            *recount.entry(d.message_id.clone()).or_default() += contribution(d);
        }
        for (message, tally) in &state.tallies {
            let counted = recount.remove(message).unwrap_or_default();
            assert_eq!(
                *tally, counted,
                "seed {seed}, {when}: the counters of {message} are not a recount"
            );
        }
        assert!(
            recount.values().all(Tally::is_zero),
            "seed {seed}, {when}: deliveries counted nowhere"
        );
        if !life.journal_faults {
            let life_now = self.provider.life.load(Ordering::SeqCst);
            let mut pushes = BTreeSet::new();
            let pushed = self.provider.pushed.lock().unwrap();
            for p in pushed.iter().filter(|p| p.life == life_now) {
                assert!(
                    pushes.insert((&p.delivery, &p.token)),
                    "seed {seed}, {when}: {} of {} pushed twice in one life",
                    p.token,
                    p.delivery
                );
            }
        }
    }

    /// The end: faults off, a last crash and restart, then the clock driven
    /// until every delivery reaches a final status.
    async fn finish(&mut self, life: Life) {
        let seed = self.seed;
        self.provider.faulty.store(false, Ordering::SeqCst);
        life.journal.sync();
        let life = self.crash(life).await;
        for _ in 0..MAX_END_ROUNDS {
            life.journal.sync();
            self.settle(&life).await;
            self.check(&life, "at the end");
            let settled = life
                .store
                .snapshot()
                .deliveries
                .values()
                .all(|d| d.state.settled());
            if settled {
                break;
            }
            assert!(
                self.advance(),
                "seed {seed}: unsettled deliveries and nothing scheduled"
            );
        }
        let state = life.store.snapshot();
        let unsettled: Vec<&String> = (state.deliveries.values())
            .filter(|d| !d.state.settled())
            .map(|d| &d.id)
            .collect();
        assert!(
            unsettled.is_empty(),
            "seed {seed}: never settled: {unsettled:?}"
        );
        let mut pushes: BTreeMap<(String, String), u32> = BTreeMap::new();
        for p in self.provider.pushed.lock().unwrap().iter() {
            *pushes
                .entry((p.delivery.clone(), p.token.clone()))
                .or_default() += 1;
        }
        for ((delivery, token), times) in pushes {
            let d = state.deliveries.get(&delivery);
            let d = d.unwrap_or_else(|| panic!("seed {seed}: pushed {delivery}, not in the store"));
            let i = d.device_index(&token).expect("a pushed device");
            assert!(
                times == 1 || d.sends[i].duplicates > 0,
                "seed {seed}: {token} of {delivery} pushed {times} times, no duplicate counted"
            );
        }
        drop(life);
    }

    /// Runs the seed's script and its end; answers the trace's hash.
    async fn run(mut self) -> u64 {
        let mut life = self.start(MemJournal::manual()).await;
        // A fault that leaves the journal refusing is followed by a restart
        // at this step.
        let mut restart_at = None;
        for step in 0..STEPS {
            self.trace.note(&format!("step {step}"));
            match self.rng.gen_range(0..100) {
                0..=44 => self.request(&life),
                45..=68 => {
                    if self.rng.gen_bool(0.02) {
                        self.journal_fault(&mut life, "fdatasync: EIO", step, &mut restart_at);
                    } else {
                        life.journal.sync();
                        self.trace.note("sync");
                    }
                }
                69..=80 => {
                    self.advance();
                }
                81..=84 => self.checkpoint(&life),
                85 => restart_at = Some(step),
                86 if self.rng.gen_bool(0.5) => {
                    self.journal_fault(&mut life, "write: EIO", step, &mut restart_at)
                }
                86 => {
                    let appends = self.rng.gen_range(1..6);
                    life.journal.refuse(appends);
                    self.trace.note(&format!("disk full for {appends} appends"));
                    life.journal_faults = true;
                    restart_at.get_or_insert(step + self.rng.gen_range(1..8));
                }
                87..=88 => {
                    let loads = self.rng.gen_range(1..3);
                    life.store.fail_loads(loads);
                    self.trace.note(&format!("{loads} customer loads fail"));
                }
                89..=90 => {
                    let reads = self.rng.gen_range(1..6);
                    let each = Duration::from_millis(self.rng.gen_range(50..20_000));
                    life.store.stall_reads(reads, each, self.clock.clone());
                    self.trace.note(&format!(
                        "{reads} store reads stall {} ms",
                        each.as_millis()
                    ));
                }
                _ => self.trace.note("nothing"),
            }
            if restart_at == Some(step) {
                restart_at = None;
                life = self.crash(life).await;
            }
            self.settle(&life).await;
            self.check(&life, &format!("step {step}"));
        }
        self.finish(life).await;
        let a = self.acked.borrow();
        let pushes = self.provider.pushed.lock().unwrap().len();
        eprintln!(
            "seed {}: {} restarts, {} requests, {pushes} pushes; acknowledged {} customers, \
             {} devices, {} deliveries, {} reports; {} events, trace {:016x}",
            self.seed,
            self.restarts,
            self.requests,
            a.customers.len(),
            a.devices.len(),
            a.deliveries.len(),
            a.reports.len(),
            self.trace.events(),
            self.trace.hash()
        );
        self.trace.hash()
    }

    /// Fails the journal for good; the operator restarts a few steps later.
    fn journal_fault(
        &mut self,
        life: &mut Life,
        why: &str,
        step: usize,
        restart_at: &mut Option<usize>,
    ) {
        life.journal.fail(why);
        life.journal_faults = true;
        self.trace.note(&format!("journal fails: {why}"));
        restart_at.get_or_insert(step + self.rng.gen_range(1..8));
    }
}

/// Message `n` of two: a plain one, and one that names `customer.name`
/// (which fails to render for a customer without it), in a campaign.
fn message(n: usize) -> Arc<MessageSpec> {
    Arc::new(MessageSpec {
        id: format!("m{n}"),
        name: format!("M{n}"),
        campaign_id: (n == 1).then(|| "g1".into()),
        title: "Hi".into(),
        body: match n {
            0 => "Body".into(),
            _ => "Hi {{customer.name}}".into(),
        },
        deep_link: None,
        audience: match n {
            0 => Audience::AllDevices,
            _ => Audience::LastDevice,
        },
        collapse_id: None,
        conversion: None,
        app: DEFAULT_APP.into(),
        push: Default::default(),
        rate_per_minute: None,
        lane: Default::default(),
        created_at: 0,
    })
}

/// Notes panics of the engine's tasks, which the runtime would swallow.
fn watch_panics() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        hook(info);
    }));
}

/// The seeds to run: the one `PUSHD_TEST_SEED` names, or `PUSHD_SIM_SEEDS`
/// (else [`SEEDS`]) consecutive ones from a random first.
fn seeds() -> std::ops::Range<u64> {
    if let Ok(seed) = std::env::var("PUSHD_TEST_SEED") {
        let seed: u64 = seed.parse().expect("PUSHD_TEST_SEED is a number");
        return seed..seed + 1;
    }
    let count = std::env::var("PUSHD_SIM_SEEDS")
        .map(|n| n.parse().expect("PUSHD_SIM_SEEDS is a number"))
        .unwrap_or(SEEDS);
    let first: u64 = rand::random::<u32>().into();
    first..first + count
}

/// Prints the seed of a run that panics, so it can be replayed.
struct Replay(u64);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation seed {0} failed; PUSHD_TEST_SEED={0} replays it",
                self.0
            );
        }
    }
}

#[actix::test]
async fn seeds_of_requests_crashes_and_faults_lose_nothing_acknowledged() {
    watch_panics();
    let seeds = seeds();
    eprintln!(
        "simulation: {} seeds from {} (PUSHD_TEST_SEED=<seed> replays one)",
        seeds.end - seeds.start,
        seeds.start
    );
    for seed in seeds.clone() {
        let replay = Replay(seed);
        World::new(seed).run().await;
        drop(replay);
    }
    eprintln!("simulation: {} seeds ran", seeds.end - seeds.start);
}

#[actix::test]
async fn a_seed_replays_the_same_trace() {
    watch_panics();
    let seed = seeds().start;
    let replay = Replay(seed);
    let first = World::new(seed).run().await;
    let second = World::new(seed).run().await;
    eprintln!("seed {seed}: traces {first:016x} and {second:016x}");
    assert_eq!(first, second, "seed {seed} ran two ways");
    drop(replay);
}
