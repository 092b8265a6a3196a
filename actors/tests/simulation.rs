//! Deterministic simulation of crashes: random requests against the engine
//! over in-memory ports, with a journal whose records are durable only when
//! the test syncs it, snapshots taken at random moments, and crashes at
//! random points (everything not durable is lost; the store restarts from its
//! last snapshot). After every restart, everything that was acknowledged must
//! still be there; at the end every delivery reaches a final status.
//!
//! Each run prints its seed; `PUSHD_TEST_SEED=<seed>` replays one.

mod support;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use pushd_actors::model::{Audience, DEFAULT_APP, Device, Environment, MessageSpec, Platform};
use pushd_actors::person::{DeviceReport, PutCustomer, PutDevice, SendMessage};
use pushd_actors::status::{MessageStatus, Report};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{Answer, Harness, MemJournal, MemState, MemStore, ScriptedProvider, wait_for};

const RUNS: u64 = 16;
const STEPS: usize = 200;
const CUSTOMERS: usize = 6;

/// What the engine acknowledged.
#[derive(Default)]
struct Acked {
    customers: HashSet<String>,
    devices: HashSet<(String, String)>,
    deliveries: HashSet<String>,
    reports: Vec<(String, String, Report)>,
}

/// The seeds to run: the one asked for, or `RUNS` fresh ones.
fn seeds() -> Vec<u64> {
    match std::env::var("PUSHD_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("PUSHD_TEST_SEED is a number")],
        Err(_) => {
            let base: u64 = rand::random::<u32>().into();
            (base..base + RUNS).collect()
        }
    }
}

fn message() -> Arc<MessageSpec> {
    Arc::new(MessageSpec {
        id: "m".into(),
        name: "M".into(),
        campaign_id: None,
        title: "Hi".into(),
        body: "Body".into(),
        deep_link: None,
        audience: Audience::AllDevices,
        collapse_id: None,
        conversion: None,
        app: DEFAULT_APP.into(),
        push: Default::default(),
        rate_per_minute: None,
        created_at: 0,
    })
}

/// The engine of one life: between two crashes.
fn start(snapshot: &MemState, journal: MemJournal) -> Harness {
    let store = Arc::new(MemStore::from_snapshot(snapshot.clone()));
    Harness::on(
        store,
        Arc::new(journal),
        Arc::new(ScriptedProvider::default()),
    )
}

/// Issues one random request without waiting; its acknowledgement is noted
/// when (if) it comes.
fn request(h: &Harness, rng: &mut StdRng, acked: &Rc<RefCell<Acked>>) {
    let c = rng.gen_range(0..CUSTOMERS);
    let id = format!("c{c}");
    let registry = h.registry.clone();
    let acked = acked.clone();
    match rng.gen_range(0..10) {
        0 | 1 => {
            let put = PutCustomer {
                attributes: Default::default(),
                unsubscribed: false,
            };
            actix::spawn(async move {
                if registry.request(&id, put).await.is_ok() {
                    acked.borrow_mut().customers.insert(id);
                }
            });
        }
        2 | 3 => {
            let token = format!("t{c}-{}", rng.gen_range(0..3));
            let device = Device {
                id: token.clone(),
                platform: if rng.gen_bool(0.5) {
                    Platform::Ios
                } else {
                    Platform::Android
                },
                last_used: rng.gen_range(0..100),
                attributes: Default::default(),
                suppressed: false,
                opted_in: None,
                app: DEFAULT_APP.into(),
                environment: Environment::Production,
            };
            actix::spawn(async move {
                if registry.request(&id, PutDevice(device)).await.is_ok() {
                    acked.borrow_mut().devices.insert((id, token));
                }
            });
        }
        4..=6 => {
            for k in 0..3 {
                let answer = match rng.gen_range(0..10) {
                    0..=5 => Answer::Ok,
                    6 => Answer::Bounce,
                    _ => Answer::Hang,
                };
                h.provider.script(&format!("t{c}-{k}"), [answer]);
            }
            let send = SendMessage {
                message: message(),
                data: Value::Null,
                delivery_id: None,
            };
            actix::spawn(async move {
                if let Ok(delivery) = registry.request(&id, send).await {
                    acked.borrow_mut().deliveries.insert(delivery);
                }
            });
        }
        _ => {
            let known: Vec<String> = acked.borrow().deliveries.iter().cloned().collect();
            if known.is_empty() {
                return;
            }
            let delivery = known[rng.gen_range(0..known.len())].clone();
            // Read the way the daemon routes a report: the delivery, handed
            // on; other reports of it may be in flight, so the actor must
            // see when what was read is stale.
            let Ok(Some(seen)) = pushd_actors::ports::Store::delivery_as_of(&*h.store, &delivery)
            else {
                return;
            };
            let d = seen.value.clone();
            let Some(send) = d.sends.first() else { return };
            let report =
                [Report::Delivered, Report::Opened, Report::Converted][rng.gen_range(0..3)];
            let msg = DeviceReport {
                delivery_id: delivery.clone(),
                token: send.token.clone(),
                report,
                at: 1_764_100_100,
                seen: Some(Box::new(seen)),
            };
            let token = send.token.clone();
            let customer = d.customer_id.clone();
            actix::spawn(async move {
                if registry.request(&customer, msg).await.is_ok() {
                    acked.borrow_mut().reports.push((delivery, token, report));
                }
            });
        }
    }
}

/// Everything acknowledged is in the store.
fn check(h: &Harness, acked: &Acked, seed: u64) {
    let state = h.store.snapshot();
    for id in &acked.customers {
        assert!(
            state.customers.contains_key(id),
            "seed {seed}: customer {id} lost"
        );
    }
    for (id, token) in &acked.devices {
        let devices = &state.customers[id].devices;
        assert!(
            devices.iter().any(|d| &d.id == token),
            "seed {seed}: device {token} lost"
        );
    }
    for id in &acked.deliveries {
        assert!(
            state.deliveries.contains_key(id),
            "seed {seed}: delivery {id} lost"
        );
    }
    for (id, token, report) in &acked.reports {
        let d = &state.deliveries[id];
        let i = d.device_index(token).expect("reported device");
        let device = &d.state.devices[i];
        let kept = match report {
            Report::Delivered => device.delivered_at.is_some(),
            Report::Opened => device.opened_at.is_some(),
            Report::Converted => d.state.converted_at.is_some(),
        };
        assert!(kept, "seed {seed}: {report:?} report for {id} lost");
    }
}

async fn run(seed: u64) {
    eprintln!("simulation seed {seed} (PUSHD_TEST_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let acked = Rc::new(RefCell::new(Acked::default()));
    let mut snapshot = MemState::default();
    let mut h = start(&snapshot, MemJournal::manual());
    let mut restarts = 0;
    for _ in 0..STEPS {
        match rng.gen_range(0..40) {
            0..=23 => request(&h, &mut rng, &acked),
            24..=34 => h.journal.sync(),
            35..=37 => {
                // A checkpoint: the snapshot first, then the journal is made
                // durable past it (the store never covers what may be lost).
                snapshot = h.store.snapshot();
                h.journal.sync();
            }
            _ => {
                let journal = h.journal.crash();
                drop(h);
                h = start(&snapshot, journal);
                check(&h, &acked.borrow(), seed);
                restarts += 1;
            }
        }
        // Let the spawned requests and the actors (on their own threads) run.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // A last crash and restart, with a provider that answers every send.
    h.journal.sync();
    let journal = h.journal.crash();
    drop(h);
    let h = start(&snapshot, journal);
    check(&h, &acked.borrow(), seed);
    {
        let a = acked.borrow();
        eprintln!(
            "seed {seed}: {restarts} restarts, acked {} customers, {} devices, {} deliveries, {} reports",
            a.customers.len(),
            a.devices.len(),
            a.deliveries.len(),
            a.reports.len()
        );
    }
    wait_for(&h.store.commits, || {
        h.store
            .snapshot()
            .deliveries
            .values()
            .all(|d| d.status() != MessageStatus::Attempted)
    })
    .await;
}

#[actix::test]
async fn crashes_at_random_points_lose_nothing_acknowledged() {
    for seed in seeds() {
        run(seed).await;
    }
}
