//! `--latency`: will a single push wait behind a campaign? Single sends (a
//! password reset, say) arrive open loop at a fixed rate, each to a
//! customer of its own, first with the daemon idle (the floor), then while
//! a campaign to every other customer saturates the fakes. Each one's
//! latency is from its send call to the fakes' accepting its first push;
//! the campaign's throughput is set against the bare client's on the same
//! fakes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::daemon::{API_KEY, Api, Res};
use crate::sends;
use crate::stats::percentile;
use crate::workload;
use pushd::sim::{Fake, FakeProviders};

/// The campaign's template.
const CAMPAIGN: &str = "campaign";
/// The single sends' template.
const SINGLE: &str = "single";
/// How long the campaign may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// How long the single sends of the idle floor run.
const IDLE_FOR: Duration = Duration::from_secs(5);
/// How long a single send's push may take to arrive before it counts as
/// lost.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(30);

/// Latency figures of the single sends of one part, ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Single sends made.
    pub sends: usize,
    /// Those whose push arrived.
    pub arrived: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

/// What the phase measured.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    /// Customers the campaign was sent to.
    pub campaign_customers: usize,
    /// Single sends per second.
    pub single_rate: u32,
    /// The single sends with the daemon idle.
    pub idle: Latency,
    /// The single sends during the campaign.
    pub during_campaign: Latency,
    /// The campaign's pushes per second.
    pub campaign_pushes_per_s: f64,
    /// The bare client's pushes per second on the same fakes.
    pub bare_pushes_per_s: f64,
    /// Campaign over bare client.
    pub campaign_ratio: f64,
    /// p99 during the campaign over p99 idle.
    pub p99_over_idle: f64,
}

/// Single sends started: delivery id → when its call started.
type Started = Arc<Mutex<HashMap<String, Instant>>>;

/// Runs the phase: `campaign` customers (0..campaign) for the campaign,
/// single sends at `rate` per second to customers after them.
pub async fn run(
    api: &Api,
    fakes: &FakeProviders,
    campaign: usize,
    rate: u32,
) -> Res<LatencyResult> {
    workload::message(api, CAMPAIGN).await?;
    workload::message(api, SINGLE).await?;
    // Enough for the idle floor and a campaign of up to two minutes.
    let set_aside = rate as usize * 130;
    let far = Instant::now() + Duration::from_secs(3600);
    let everyone = campaign + set_aside;
    eprintln!("[latency] registering {everyone} customers");
    if workload::register(api, 0..everyone, far).await? != everyone {
        return Err("registration stopped early".into());
    }
    let arrivals = Arrivals::watch(fakes);

    eprintln!("[latency] single sends at {rate}/s, daemon idle");
    let started = Started::default();
    let until = Instant::now() + IDLE_FOR;
    let next = singles_until(api, rate, campaign, &started, async move {
        tokio::time::sleep_until(until.into()).await
    })
    .await?;
    let idle = arrivals.latencies(&started).await;

    eprintln!("[latency] the same during a campaign to {campaign} customers");
    let started = Started::default();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let campaign_done = async {
        workload::send(api, CAMPAIGN, 0..campaign).await?;
        api.wait_metrics(CAMPAIGN, SETTLE_LIMIT, |m| {
            m["sends"] == campaign && m["attempted"] == 0
        })
        .await?;
        let elapsed = t0.elapsed();
        let _ = done.send(());
        Res::Ok(elapsed)
    };
    let singles = singles_until(api, rate, next, &started, async {
        let _ = finished.await;
    });
    let (campaign_elapsed, last) = tokio::join!(campaign_done, singles);
    let campaign_elapsed = campaign_elapsed?;
    if last? > campaign + set_aside {
        return Err("more single sends than customers set aside".into());
    }
    let during_campaign = arrivals.latencies(&started).await;

    let bare = sends::baseline(fakes, campaign).await?;
    let campaign_pushes_per_s = (2 * campaign) as f64 / campaign_elapsed.as_secs_f64();
    Ok(LatencyResult {
        campaign_customers: campaign,
        single_rate: rate,
        p99_over_idle: during_campaign.p99_ms / idle.p99_ms.max(f64::MIN_POSITIVE),
        idle,
        during_campaign,
        campaign_pushes_per_s,
        bare_pushes_per_s: bare.rate(),
        campaign_ratio: campaign_pushes_per_s / bare.rate(),
    })
}

/// Sends one single send every `1 / rate` s, open loop (each on schedule,
/// whether or not the ones before were answered), to customers from
/// `first` on, until `stop` resolves; answers the next customer number.
async fn singles_until(
    api: &Api,
    rate: u32,
    first: usize,
    started: &Started,
    stop: impl Future<Output = ()>,
) -> Res<usize> {
    let mut every = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    let mut next = first;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                let (api, started) = (api.clone(), started.clone());
                let customer = workload::customer_id(next);
                next += 1;
                calls.spawn(async move { single(&api, &customer, &started).await });
            }
        }
    }
    while let Some(done) = calls.join_next().await {
        done??;
    }
    Ok(next)
}

/// One single send to `customer`; notes when its call started.
async fn single(api: &Api, customer: &str, started: &Started) -> Res<()> {
    let at = Instant::now();
    let body = json!({"message_id": SINGLE, "customer_ids": [customer]});
    let (status, v) = api
        .call(API_KEY, Method::POST, "/v1/send/push", Some(&body))
        .await?;
    let id = v["deliveries"][0]["delivery_id"]
        .as_str()
        .ok_or_else(|| format!("single send refused: {status} {v}"))?;
    started.lock().expect("started").insert(id.to_owned(), at);
    Ok(())
}

/// The first arrival at the fakes of each delivery's pushes, recorded as
/// they come.
struct Arrivals {
    first: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Arrivals {
    /// Records from now on.
    fn watch(fakes: &FakeProviders) -> Arrivals {
        let first: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (mut apns, mut fcm) = (fakes.apns.subscribe(), fakes.fcm.subscribe());
        let recording = first.clone();
        tokio::spawn(async move {
            loop {
                let push = tokio::select! {
                    Some(p) = apns.recv() => p,
                    Some(p) = fcm.recv() => p,
                    else => return,
                };
                let at = Instant::now();
                if let Some(id) = push.delivery_id {
                    recording.lock().expect("arrivals").entry(id).or_insert(at);
                }
            }
        });
        Arrivals { first }
    }

    /// Each of `started`'s latency, from its call's start to its first
    /// push's arrival, once every one arrived (or after a bounded wait).
    async fn latencies(&self, started: &Started) -> Latency {
        let started = started.lock().expect("started").clone();
        let deadline = Instant::now() + ARRIVAL_LIMIT;
        loop {
            let arrived = {
                let first = self.first.lock().expect("arrivals");
                started.keys().filter(|d| first.contains_key(*d)).count()
            };
            if arrived == started.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first = self.first.lock().expect("arrivals");
        let mut ms: Vec<f64> = (started.iter())
            .filter_map(|(d, s)| Some((*first.get(d)? - *s).as_secs_f64() * 1e3))
            .collect();
        ms.sort_by(f64::total_cmp);
        Latency {
            sends: started.len(),
            arrived: ms.len(),
            p50_ms: percentile(&ms, 0.5),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or_default(),
        }
    }
}
