//! `pushd demo`: the daemon, fake APNs and FCM, and a simulated device
//! fleet in one command. It creates customers with iOS and Android devices
//! and a templated campaign with a conversion goal, sends it with a progress
//! bar, then shows the overview refreshing as late device reports arrive,
//! and ends with the dashboard URL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use pushd_actors::model::Platform;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::config::Config;
use crate::daemon::{ServeError, serve};
use crate::sim::fleet::{Fleet, FleetProfile, FleetStats};
use crate::sim::{Fake, FakeProviders, FaultMix};

/// `pushd demo` options.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Customers to create
    #[arg(long, default_value_t = 3000)]
    pub customers: usize,
    /// Address of the daemon (and its dashboard)
    #[arg(long, env = "PUSHD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Data directory (wiped at start: the demo starts fresh)
    #[arg(long, default_value = "./data-demo")]
    pub data_dir: PathBuf,
    /// Simulated seconds per real second for late reports
    #[arg(long, default_value_t = 1800.0)]
    pub time_scale: f64,
    /// Seconds to show the overview refreshing
    #[arg(long, default_value_t = 20)]
    pub watch_seconds: u64,
    /// Exit after the overview instead of serving until Ctrl-C
    #[arg(long)]
    pub exit: bool,
    /// Random seed of the fleet and the providers' faults
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The daemon failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Files or sockets.
    #[error("demo: {0}")]
    Io(#[from] std::io::Error),
    /// The API refused a call.
    #[error("demo: API call failed: {0}")]
    Api(String),
}

const API_KEY: &str = "demo-api-key";
const SDK_KEY: &str = "demo-sdk-key";
const MESSAGE: &str = "spring-sale";
const CAMPAIGN: &str = "spring";

/// The fakes, with their credentials written into the data dir.
async fn providers(args: &DemoArgs) -> Result<FakeProviders, DemoError> {
    let mix = FaultMix {
        unregistered: 0.02,
        transient: 0.05,
        latency: Duration::from_millis(15),
        seed: args.seed,
    };
    Ok(FakeProviders::start(&args.data_dir, mix).await?)
}

/// A small HTTP client of the demo's daemon.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, DemoError> {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .map_err(|e| DemoError::Api(e.to_string()))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match status.is_success() {
            true => Ok(v),
            false => Err(DemoError::Api(format!("{path}: {status} {v}"))),
        }
    }

    async fn healthy(&self) -> bool {
        let url = format!("{}/healthz", self.base);
        self.client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_message(what.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Creates customers (with devices) over the API; returns the fleet's phones.
async fn create_customers(
    api: &Api,
    args: &DemoArgs,
) -> Result<HashMap<String, crate::sim::fleet::SimDevice>, DemoError> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let profile = FleetProfile::default();
    let mut phones = HashMap::new();
    let mut calls = Vec::new();
    for i in 0..args.customers {
        let id = format!("customer-{i:05}");
        let plan = ["free", "pro", "team"][i % 3];
        let unsubscribed = rng.gen_bool(0.02);
        let mut devices = Vec::new();
        let roll: f64 = rng.r#gen();
        // About 45 % iOS only, 45 % Android only, 7 % both, 3 % no device.
        if roll < 0.45 || (0.9..0.97).contains(&roll) {
            devices.push((format!("{:064x}", rng.r#gen::<u128>()), Platform::Ios));
        }
        if (0.45..0.97).contains(&roll) {
            devices.push((format!("fcm-{}", rng.r#gen::<u64>()), Platform::Android));
        }
        for (token, platform) in &devices {
            phones.insert(token.clone(), profile.device(&id, *platform, &mut rng));
        }
        let customer = json!({"attributes": {"first_name": format!("Pat {i}"), "plan": plan}, "unsubscribed": unsubscribed});
        calls.push((id, customer, devices));
    }
    let progress = bar(calls.len(), "customers");
    let mut done = stream::iter(calls.into_iter().map(|(id, customer, devices)| async move {
        api.call(reqwest::Method::PUT, &format!("/v1/customers/{id}"), customer).await?;
        for (i, (token, platform)) in devices.iter().enumerate() {
            let device = json!({"device": {"id": token, "platform": platform, "last_used": 1_764_100_000 + i as i64}});
            api.call(reqwest::Method::PUT, &format!("/v1/customers/{id}/devices"), device).await?;
        }
        Ok::<_, DemoError>(())
    }))
    .buffer_unordered(64);
    while let Some(result) = done.next().await {
        result?;
        progress.inc(1);
    }
    progress.finish();
    Ok(phones)
}

/// Sends the campaign to everyone, in batches; returns the deliveries.
async fn send_campaign(api: &Api, customers: usize) -> Result<usize, DemoError> {
    let message = json!({"name": "Spring sale", "campaign_id": CAMPAIGN,
        "title": "{{customer.first_name}}, spring is here",
        "body": "20% off your {{customer.plan}} plan{% if event.code %} with {{event.code}}{% endif %}",
        "deep_link": "myapp://sale?c={{customer.id}}", "audience": "all_devices",
        "conversion": {"event": "purchase", "window_seconds": 86400}});
    api.call(
        reqwest::Method::PUT,
        &format!("/v1/messages/{MESSAGE}"),
        message,
    )
    .await?;
    let ids: Vec<String> = (0..customers).map(|i| format!("customer-{i:05}")).collect();
    let progress = bar(customers, "sending");
    let mut sent = 0;
    for chunk in ids.chunks(250) {
        let body =
            json!({"message_id": MESSAGE, "customer_ids": chunk, "data": {"code": "SPRING20"}});
        let v = api
            .call(reqwest::Method::POST, "/v1/send/push", body)
            .await?;
        let n = v["deliveries"].as_array().map_or(0, Vec::len);
        sent += n;
        progress.inc(n as u64);
    }
    progress.finish();
    Ok(sent)
}

const COLUMNS: [&str; 9] = [
    "sends",
    "sent",
    "delivered",
    "opened",
    "converted",
    "failed",
    "bounced",
    "undeliverable",
    "suppressed",
];

/// The overview table: totals by person, then devices by platform.
fn overview(m: &Value) -> String {
    let mut out = format!("{:<16}", "");
    for c in COLUMNS {
        out.push_str(&format!("{c:>14}"));
    }
    out.push('\n');
    let rows = [
        ("people", &m),
        ("iOS devices", &&m["by_platform"]["ios"]),
        ("Android devices", &&m["by_platform"]["android"]),
    ];
    for (name, row) in rows {
        out.push_str(&format!("{name:<16}"));
        for c in COLUMNS {
            out.push_str(&format!("{:>14}", row[c].as_i64().unwrap_or(0)));
        }
        out.push('\n');
    }
    let rate = |k: &str| m["rates"][k].as_f64().unwrap_or(0.0) * 100.0;
    out.push_str(&format!(
        "rates over sent: delivered {:.1}%  opened {:.1}%  converted {:.1}%   (iOS reports delivered only for opted-in users)\n",
        rate("delivered"),
        rate("opened"),
        rate("converted")
    ));
    out
}

/// Shows the overview refreshing while late reports arrive.
async fn watch(api: &Api, stats: &FleetStats, seconds: u64) -> Result<(), DemoError> {
    use std::io::IsTerminal;
    let redraw = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut lines = 0;
    loop {
        let m = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/campaigns/{CAMPAIGN}/metrics"),
                Value::Null,
            )
            .await?;
        let table = format!(
            "{}fleet: {} pushes received, {} reports accepted, {} still to come\n",
            overview(&m),
            stats.received.load(Ordering::Relaxed),
            stats.reported.load(Ordering::Relaxed),
            stats.pending.load(Ordering::Relaxed),
        );
        let done = started.elapsed() >= Duration::from_secs(seconds);
        if redraw {
            if lines > 0 {
                print!("\x1b[{lines}A");
            }
            print!("{table}");
            lines = table.lines().count();
        } else if done || started.elapsed().as_secs().is_multiple_of(5) {
            println!("{table}");
        }
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let _ = std::fs::remove_dir_all(&args.data_dir);
    std::fs::create_dir_all(&args.data_dir)?;
    let fakes = providers(&args).await?;
    let config = Config {
        listen: args.listen.clone(),
        data_dir: args.data_dir.join("store"),
        api_key: Some(API_KEY.into()),
        sdk_key: Some(SDK_KEY.into()),
        apns: fakes.apns_config.clone(),
        fcm: fakes.fcm_config.clone(),
        ..Config::default()
    };
    let daemon = actix_web::rt::spawn(serve(config));
    let api = Api {
        base: format!("http://{}", args.listen),
        client: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api.healthy().await {
        if daemon.is_finished() || Instant::now() > deadline {
            return match daemon.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(DemoError::Api("the daemon did not become healthy".into())),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "pushd demo: {} customers, fake APNs at {}, fake FCM at {}",
        args.customers,
        fakes.apns.endpoint(),
        fakes.fcm.endpoint()
    );
    let devices = create_customers(&api, &args).await?;
    let (tx, inbox) = tokio::sync::mpsc::unbounded_channel();
    for mut rx in [fakes.apns.subscribe(), fakes.fcm.subscribe()] {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(push) = rx.recv().await {
                let _ = tx.send(push);
            }
        });
    }
    let fleet = Fleet {
        devices,
        profile: FleetProfile::default(),
        base_url: api.base.clone(),
        sdk_key: SDK_KEY.into(),
        time_scale: args.time_scale,
        goal: "purchase".into(),
    };
    let stats = fleet.run(inbox, args.seed);
    let sent = send_campaign(&api, args.customers).await?;
    println!("{sent} deliveries accepted; overview of campaign {CAMPAIGN} as reports arrive:\n");
    watch(&api, &stats, args.watch_seconds).await?;
    println!("\ndashboard: {}/  (API key: {API_KEY})", api.base);
    println!(
        "delivery log: {}/v1/deliveries?campaign_id={CAMPAIGN}",
        api.base
    );
    if args.exit {
        return Ok(());
    }
    println!("serving until Ctrl-C");
    match daemon.await {
        Ok(result) => Ok(result?),
        Err(e) => Err(DemoError::Api(e.to_string())),
    }
}
