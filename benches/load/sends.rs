//! Phase 1: device pushes per second end to end through pushd, against a
//! bare HTTP/2 client sending the same pushes to the same fakes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushd::sim::fake_fcm::TEST_RSA_PRIVATE_KEY_PEM;
use serde_json::{Value, json};

use crate::daemon::{Api, Collector, Res, Syncs, android_token, ios_token};
use crate::stats::{Bucket, percentile, series};
use crate::workload::{self, SEND_BATCH, SENDS_IN_FLIGHT};
use pushd::sim::FakeProviders;

/// The template of this phase.
const MESSAGE: &str = "load";
/// How long the sends may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// Width of a time-series bucket.
const BUCKET: Duration = Duration::from_millis(250);
/// The fakes serve at most this many streams per connection, so neither
/// pushd nor the baseline can have more pushes in flight per provider.
const STREAMS_PER_PROVIDER: usize = 1000;

/// What the sends phase measured.
pub struct SendsResult {
    /// Device pushes.
    pub pushes: usize,
    /// From the first send call to every delivery final.
    pub elapsed: Duration,
    /// Per push: send call start → the fake accepted it, ms, sorted.
    pub latency_ms: Vec<f64>,
    /// Per `POST /v1/send/push`: call → 202, ms, sorted.
    pub batch_ms: Vec<f64>,
    /// Throughput and latency over time.
    pub series: Vec<Bucket>,
    /// Deliveries acknowledged: `(delivery id, customer number)`.
    pub deliveries: Vec<(String, usize)>,
    /// Store group commits during the phase.
    pub syncs: Syncs,
}

impl SendsResult {
    /// Device pushes per second.
    pub fn rate(&self) -> f64 {
        self.pushes as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends to customers `0..n` and waits until every delivery is final.
pub async fn run(api: &Api, fakes: &FakeProviders, n: usize) -> Res<SendsResult> {
    workload::message(api, MESSAGE).await?;
    let syncs = Syncs::read(api).await?;
    let collector = Collector::start(fakes);
    let t0 = Instant::now();
    let batches = workload::send(api, MESSAGE, 0..n).await?;
    api.wait_metrics(MESSAGE, SETTLE_LIMIT, |m| {
        m["sends"] == n && m["attempted"] == 0
    })
    .await?;
    let elapsed = t0.elapsed();
    let syncs = Syncs::read(api).await?.since(syncs);
    let arrivals = collector.finish().await?;
    let started: HashMap<&str, Instant> = batches
        .iter()
        .flat_map(|b| b.deliveries.iter().map(|(d, _)| (d.as_str(), b.started)))
        .collect();
    let timed: Vec<(Duration, f64)> = arrivals
        .iter()
        .filter_map(|a| {
            let s = started.get(a.delivery.as_str())?;
            Some((a.at - t0, (a.at - *s).as_secs_f64() * 1e3))
        })
        .collect();
    let mut latency_ms: Vec<f64> = timed.iter().map(|(_, l)| *l).collect();
    latency_ms.sort_by(f64::total_cmp);
    let mut batch_ms: Vec<f64> = batches.iter().map(|b| b.took.as_secs_f64() * 1e3).collect();
    batch_ms.sort_by(f64::total_cmp);
    Ok(SendsResult {
        pushes: 2 * n,
        elapsed,
        latency_ms,
        batch_ms,
        series: series(&timed, BUCKET),
        deliveries: batches.into_iter().flat_map(|b| b.deliveries).collect(),
        syncs,
    })
}

/// What the bare client measured.
pub struct Baseline {
    /// Pushes sent (all answered 200).
    pub pushes: usize,
    /// How long they took.
    pub elapsed: Duration,
    /// Per request, ms, sorted.
    pub latency_ms: Vec<f64>,
}

impl Baseline {
    /// Pushes per second.
    pub fn rate(&self) -> f64 {
        self.pushes as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q`.
    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.latency_ms, q)
    }
}

/// Sends `n` pushes to each fake (the same payloads and auth headers pushd
/// sends) over one HTTP/2 connection per fake, with as many in flight as
/// pushd can have.
pub async fn baseline(fakes: &FakeProviders, n: usize) -> Res<Baseline> {
    baseline_with(
        fakes,
        n,
        STREAMS_PER_PROVIDER.min(SEND_BATCH * SENDS_IN_FLIGHT),
    )
    .await
}

/// [`baseline`] with `concurrency` pushes in flight to each fake.
pub async fn baseline_with(fakes: &FakeProviders, n: usize, concurrency: usize) -> Res<Baseline> {
    let apns = Apns::new(fakes)?;
    let fcm = Fcm::new(fakes).await?;
    let t0 = Instant::now();
    let (a, f) = tokio::try_join!(
        timed(n, concurrency, |i| apns.send(i)),
        timed(n, concurrency, |i| fcm.send(i)),
    )?;
    let elapsed = t0.elapsed();
    let mut latency_ms: Vec<f64> = a.into_iter().chain(f).collect();
    latency_ms.sort_by(f64::total_cmp);
    Ok(Baseline {
        pushes: 2 * n,
        elapsed,
        latency_ms,
    })
}

/// Runs `send(0..n)` with `concurrency` in flight; each call's latency, ms.
async fn timed<F, Fut>(n: usize, concurrency: usize, send: F) -> Res<Vec<f64>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Res<()>>,
{
    stream::iter(0..n)
        .map(|i| {
            let call = send(i);
            async move {
                let t = Instant::now();
                call.await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(t.elapsed().as_secs_f64() * 1e3)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// An h2c client with prior knowledge, as pushd uses for `http://` endpoints.
fn h2c() -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Fails unless the answer is 200; reads the body as pushd does.
async fn expect_ok(resp: reqwest::Response) -> Res<()> {
    let status = resp.status();
    resp.bytes().await?;
    if status != 200 {
        return Err(format!("baseline push answered {status}").into());
    }
    Ok(())
}

/// The bare APNs sender: one JWT, pushd's payload and headers.
struct Apns {
    http: reqwest::Client,
    endpoint: String,
    auth: String,
    topic: String,
}

impl Apns {
    fn new(fakes: &FakeProviders) -> Res<Apns> {
        let config = &fakes.apns_accepts;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(config.key_id.clone());
        let claims = json!({"iss": config.team_id, "iat": unix_now()});
        let key = EncodingKey::from_ec_pem(fakes.apns_key.p8_pem.as_bytes())?;
        let jwt = jsonwebtoken::encode(&header, &claims, &key)?;
        Ok(Apns {
            http: h2c()?,
            endpoint: fakes.apns.endpoint(),
            auth: format!("bearer {jwt}"),
            topic: config.topic.clone(),
        })
    }

    async fn send(&self, i: usize) -> Res<()> {
        let token = ios_token(i);
        let body = json!({
            "aps": {"alert": {"title": format!("Hi N{i}"), "body": "Your pro plan is ready"},
                    "sound": "default"},
            "CIO-Delivery-ID": format!("baseline-{i}"),
            "CIO-Delivery-Token": token,
            "deep_link": "myapp://home",
        });
        let resp = self
            .http
            .post(format!("{}/3/device/{token}", self.endpoint))
            .header("authorization", &self.auth)
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-expiration", (unix_now() + 86_400).to_string())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        expect_ok(resp).await
    }
}

/// The bare FCM sender: one access token from the fake's token endpoint.
struct Fcm {
    http: reqwest::Client,
    url: String,
    auth: String,
}

impl Fcm {
    async fn new(fakes: &FakeProviders) -> Res<Fcm> {
        let http = h2c()?;
        let token_uri = fakes.fcm.token_uri();
        let now = unix_now();
        let claims = json!({"iss": fakes.fcm_accepts.client_email, "aud": token_uri,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "iat": now, "exp": now + 3600});
        let key = EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_KEY_PEM.as_bytes())?;
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let answer: Value = http
            .post(&token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await?
            .json()
            .await?;
        let token = answer["access_token"].as_str().ok_or("no access token")?;
        Ok(Fcm {
            http,
            url: format!(
                "{}/v1/projects/{}/messages:send",
                fakes.fcm.endpoint(),
                fakes.fcm_accepts.project_id
            ),
            auth: format!("Bearer {token}"),
        })
    }

    async fn send(&self, i: usize) -> Res<()> {
        let token = android_token(i);
        let body = json!({"message": {
            "token": token,
            "notification": {"title": format!("Hi N{i}"), "body": "Your pro plan is ready"},
            "data": {"CIO-Delivery-ID": format!("baseline-{i}"), "CIO-Delivery-Token": token,
                     "deep_link": "myapp://home"},
            "android": {"priority": "high"},
        }});
        let resp = self
            .http
            .post(&self.url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        expect_ok(resp).await
    }
}

/// Now, Unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
