//! `--latency`: will a single push wait behind a campaign? Single sends (a
//! password reset, say: a `transactional` message) arrive open loop at a
//! fixed rate, each to a customer of its own, first with the daemon idle
//! (the floor), then while a campaign to every other customer saturates
//! the fakes. Each one's latency is from its send call to the fakes'
//! accepting its first push; the campaign's throughput is set against the
//! bare client's on the same fakes.
//!
//! The providers bound the campaign here, as APNs and FCM do, not the two
//! shared cores: the fakes answer after [`PROVIDER_RTT`] and take
//! [`PROVIDER_STREAMS`] pushes in flight per endpoint, and pushd and the
//! bare client are given that many streams ([`Provider::daemon_env`]). The
//! question is then the one lanes answer: does a single push wait for a
//! stream behind the campaign's pushes?

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
use pushd::sim::{Fake, FakeProviders, FaultMix};

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
/// How long the fakes take to answer a push: a provider's round trip.
pub const PROVIDER_RTT: Duration = Duration::from_millis(20);
/// Pushes in flight per provider endpoint, pushd's and the bare client's.
pub const PROVIDER_STREAMS: usize = 80;

/// The provider capacity both pushd and the bare client get.
pub struct Provider;

impl Provider {
    /// The fakes' behaviour: every push answered after [`PROVIDER_RTT`].
    pub fn mix() -> FaultMix {
        FaultMix {
            latency: PROVIDER_RTT,
            ..FaultMix::default()
        }
    }

    /// pushd's settings for [`PROVIDER_STREAMS`] streams per endpoint, on
    /// one connection.
    pub fn daemon_env() -> Vec<(&'static str, String)> {
        vec![
            ("PUSHD_PROVIDER_CONNECTIONS", "1".to_owned()),
            ("PUSHD_PROVIDER_STREAMS", PROVIDER_STREAMS.to_string()),
        ]
    }
}

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
    /// The send call's own answer (202), median: the rest of the
    /// latency is after it, on the way to the provider.
    pub answer_p50_ms: f64,
    /// The send call's answer, 99th percentile.
    pub answer_p99_ms: f64,
}

/// What the phase measured.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    /// Customers the campaign was sent to.
    pub campaign_customers: usize,
    /// Single sends per second.
    pub single_rate: u32,
    /// The single sends' lane.
    pub single_lane: String,
    /// How long the fakes take to answer, ms.
    pub provider_rtt_ms: u128,
    /// Pushes in flight per provider endpoint.
    pub provider_streams: usize,
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
    /// APNs pushes in flight at the fake during the campaign, on average.
    pub apns_in_flight: f64,
    /// p99 during the campaign over p99 idle.
    pub p99_over_idle: f64,
}

/// Single sends started: delivery id → when its call started, and how
/// long it took to answer.
type Started = Arc<Mutex<HashMap<String, (Instant, Duration)>>>;

/// Runs the phase: `campaign` customers (0..campaign) for the campaign,
/// single sends at `rate` per second to customers after them.
pub async fn run(
    api: &Api,
    fakes: &FakeProviders,
    campaign: usize,
    rate: u32,
    single_lane: &str,
) -> Res<LatencyResult> {
    workload::message(api, CAMPAIGN).await?;
    workload::message_in(api, SINGLE, single_lane).await?;
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
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let singles = singles_until(api, rate, next, &started, async {
        let _ = finished.await;
        let _ = stop.send(());
    });
    let sampled = in_flight(fakes, stopped);
    let (campaign_elapsed, last, apns_in_flight) = tokio::join!(campaign_done, singles, sampled);
    let campaign_elapsed = campaign_elapsed?;
    if last? > campaign + set_aside {
        return Err("more single sends than customers set aside".into());
    }
    let during_campaign = arrivals.latencies(&started).await;

    let bare = sends::baseline_with(fakes, campaign, PROVIDER_STREAMS).await?;
    let campaign_pushes_per_s = (2 * campaign) as f64 / campaign_elapsed.as_secs_f64();
    Ok(LatencyResult {
        campaign_customers: campaign,
        single_rate: rate,
        single_lane: single_lane.to_owned(),
        provider_rtt_ms: PROVIDER_RTT.as_millis(),
        provider_streams: PROVIDER_STREAMS,
        p99_over_idle: during_campaign.p99_ms / idle.p99_ms.max(f64::MIN_POSITIVE),
        idle,
        during_campaign,
        campaign_pushes_per_s,
        bare_pushes_per_s: bare.rate(),
        campaign_ratio: campaign_pushes_per_s / bare.rate(),
        apns_in_flight,
    })
}

/// The mean of APNs pushes in flight at the fake (received, not yet
/// answered), sampled every 10 ms until `stop`.
async fn in_flight(fakes: &FakeProviders, stop: tokio::sync::oneshot::Receiver<()>) -> f64 {
    let mut every = tokio::time::interval(Duration::from_millis(10));
    let (mut sum, mut n) = (0usize, 0usize);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                sum += fakes.apns.requests().saturating_sub(fakes.apns.accepted());
                n += 1;
            }
        }
    }
    sum as f64 / n.max(1) as f64
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
    let answered = at.elapsed();
    started
        .lock()
        .expect("started")
        .insert(id.to_owned(), (at, answered));
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
            .filter_map(|(d, (s, _))| Some((*first.get(d)? - *s).as_secs_f64() * 1e3))
            .collect();
        ms.sort_by(f64::total_cmp);
        let mut answer_ms: Vec<f64> = (started.values())
            .map(|(_, answered)| answered.as_secs_f64() * 1e3)
            .collect();
        answer_ms.sort_by(f64::total_cmp);
        Latency {
            sends: started.len(),
            arrived: ms.len(),
            p50_ms: percentile(&ms, 0.5),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or_default(),
            answer_p50_ms: percentile(&answer_ms, 0.5),
            answer_p99_ms: percentile(&answer_ms, 0.99),
        }
    }
}
