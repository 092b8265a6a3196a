//! `pushd demo`: the daemon, fake APNs and FCM, and a simulated device
//! fleet in one command. It creates customers with iOS and Android devices
//! (each saying whether its user allowed notifications; a few iOS ones are
//! development builds on the APNs sandbox) and, for some, a second app
//! (`shop`, with its own fake providers and credentials). It sends a
//! templated campaign with a conversion goal with a progress bar, and a
//! silent push to the shop app, then shows the overview refreshing as late
//! device reports arrive on compressed simulated time (see [`SimClock`]),
//! and ends with the dashboard URL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::providers::AppConfig;
use clap::Args;
use futures_util::{StreamExt, stream};
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use pushd_actors::model::Platform;
use pushd_actors::ports::Clock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::config::{Config, ConfigError};
use crate::daemon::{ServeError, bind, serve_with};
use crate::sim::fleet::{self, Fleet, FleetProfile, FleetStats};
use crate::sim::{Fake, FakeProviders, FaultMix, SimClock};

/// `pushd demo` options.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Customers to create
    #[arg(long, default_value_t = 3000)]
    pub customers: usize,
    /// Address of the daemon (and its dashboard)
    #[arg(long, env = "PUSHD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Data directory, wiped at start (only one the demo made: it holds a
    /// .pushd-demo file)
    #[arg(long, default_value = "./data-demo")]
    pub data_dir: PathBuf,
    /// Simulated seconds per real second while late reports arrive
    #[arg(long, default_value_t = 1800.0)]
    pub time_scale: f64,
    /// Longest time to show the overview refreshing, seconds; it stops
    /// earlier once every simulated report arrived
    #[arg(long, default_value_t = 90)]
    pub watch_seconds: u64,
    /// Exit after the overview (the daemon and its dashboard stop too)
    /// instead of serving until Ctrl-C
    #[arg(long)]
    pub exit: bool,
    /// Random seed of the fleet and the providers' faults
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Have the fake APNs and FCM close each connection gracefully (HTTP/2
    /// GOAWAY) after this many requests, as real providers and servers do
    #[arg(long, env = "PUSHD_FAKE_GOAWAY_EVERY")]
    pub goaway_every: Option<usize>,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The daemon failed.
    #[error(transparent)]
    Serve(Box<ServeError>),
    /// Files or sockets.
    #[error("demo: {0}")]
    Io(#[from] std::io::Error),
    /// The listen address is invalid or taken.
    #[error(transparent)]
    Listen(#[from] ConfigError),
    /// The data directory is not one the demo made, so it is not wiped.
    #[error(
        "refusing to wipe {0}: it is not empty and does not look like a directory `pushd demo` \
         made (it has no {MARKER} file); pick another --data-dir, or remove it yourself"
    )]
    ForeignDataDir(PathBuf),
    /// The API refused a call.
    #[error("demo: API call failed: {0}")]
    Api(String),
}

const API_KEY: &str = "demo-api-key-0123456789";
const SDK_KEY: &str = "demo-sdk-key-0123456789";
const MESSAGE: &str = "spring-sale";
const CAMPAIGN: &str = "spring";
/// The second app, and its silent push.
const SHOP_APP: &str = "shop";
const SHOP_SYNC: &str = "shop-cart-sync";
/// The file that marks a data directory as the demo's own.
const MARKER: &str = ".pushd-demo";

/// Empties `dir` for a fresh demo, if it is the demo's own (or new, or
/// empty), and marks it as the demo's.
fn fresh_data_dir(dir: &Path) -> Result<(), DemoError> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e.into()),
    };
    if !empty {
        if !dir.join(MARKER).is_file() {
            return Err(DemoError::ForeignDataDir(dir.to_path_buf()));
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "made by `pushd demo`, which wipes this directory at its next start\n",
    )?;
    Ok(())
}

impl From<ServeError> for DemoError {
    fn from(e: ServeError) -> Self {
        DemoError::Serve(Box::new(e))
    }
}

/// The fakes of the app `default` and of the app [`SHOP_APP`], with their
/// credentials written into the data dir.
async fn providers(args: &DemoArgs) -> Result<(FakeProviders, FakeProviders), DemoError> {
    let mix = FaultMix {
        unregistered: 0.02,
        transient: 0.05,
        latency: Duration::from_millis(15),
        seed: args.seed,
        goaway_every: args.goaway_every,
        ..FaultMix::default()
    };
    let main = FakeProviders::start(&args.data_dir, mix.clone()).await?;
    let shop = FakeProviders::start_app(&args.data_dir, SHOP_APP, mix).await?;
    Ok((main, shop))
}

/// One device the demo registers.
struct DemoDevice {
    token: String,
    platform: Platform,
    app: &'static str,
    /// A development build's token, on the APNs sandbox.
    sandbox: bool,
}

/// Who got what: the fleet's phones, the customers with the shop app, and
/// the development builds' tokens.
struct Population {
    phones: HashMap<String, crate::sim::fleet::SimDevice>,
    shop_customers: Vec<String>,
    sandbox_tokens: Vec<String>,
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

/// A progress bar on stdout, beside the demo's other lines (hidden when
/// stdout is not a terminal).
fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stdout())
        .with_message(what.to_string());
    // A whole number per second: `1,359/s`, not `1359.1034/s`.
    let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}/s", HumanCount(state.per_sec().round() as u64));
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {human_pos}/{human_len} {rate}")
            .expect("valid template")
            .with_key("rate", rate)
            .progress_chars("=> "),
    );
    bar
}

/// Leaves a finished bar on screen, and the cursor on the next line.
fn finish(bar: &ProgressBar) {
    bar.finish();
    if !bar.is_hidden() {
        println!();
    }
}

/// A random token for `platform`.
fn token(platform: Platform, rng: &mut StdRng) -> String {
    match platform {
        Platform::Ios => format!("{:064x}", rng.r#gen::<u128>()),
        Platform::Android => format!("fcm-{}", rng.r#gen::<u64>()),
    }
}

/// Creates customers (with devices) over the API. Each device says whether
/// its user allowed notifications; every 30th customer is a tester whose
/// iPhone runs a development build (a sandbox token, issued by the fake
/// APNs); about a quarter of the people also have the shop app.
async fn create_customers(
    api: &Api,
    args: &DemoArgs,
    fakes: &FakeProviders,
) -> Result<Population, DemoError> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let profile = FleetProfile::default();
    let mut people = Population {
        phones: HashMap::new(),
        shop_customers: Vec::new(),
        sandbox_tokens: Vec::new(),
    };
    let mut calls = Vec::new();
    for i in 0..args.customers {
        let id = format!("customer-{i:05}");
        let plan = ["free", "pro", "team"][i % 3];
        let unsubscribed = rng.gen_bool(0.02);
        let mut platforms = Vec::new();
        let roll: f64 = rng.r#gen();
        // About 45 % iOS only, 45 % Android only, 7 % both, 3 % no device.
        if roll < 0.45 || (0.9..0.97).contains(&roll) {
            platforms.push(Platform::Ios);
        }
        if (0.45..0.97).contains(&roll) {
            platforms.push(Platform::Android);
        }
        // Every 30th customer is one of the team's testers, whose iPhone
        // runs a development build.
        let tester = i % 30 == 0;
        if tester && !platforms.contains(&Platform::Ios) {
            platforms.push(Platform::Ios);
        }
        let mut devices: Vec<DemoDevice> = (platforms.iter())
            .map(|&platform| DemoDevice {
                token: token(platform, &mut rng),
                platform,
                app: pushd_actors::model::DEFAULT_APP,
                sandbox: tester && platform == Platform::Ios,
            })
            .collect();
        if let Some(&platform) = platforms.first().filter(|_| rng.gen_bool(0.25)) {
            devices.push(DemoDevice {
                token: token(platform, &mut rng),
                platform,
                app: SHOP_APP,
                sandbox: false,
            });
            people.shop_customers.push(id.clone());
        }
        for d in devices.iter().filter(|d| d.sandbox) {
            fakes.apns.issue_sandbox_token(&d.token);
            people.sandbox_tokens.push(d.token.clone());
        }
        let mut bodies = Vec::new();
        for (n, d) in devices.iter().enumerate() {
            let phone = profile.device(&id, d.platform, &mut rng);
            let environment = if d.sandbox { "sandbox" } else { "production" };
            bodies.push(
                json!({"device": {"id": d.token, "platform": d.platform, "app": d.app,
                "environment": environment, "opted_in": phone.opted_in,
                "last_used": 1_764_100_000 + n as i64}}),
            );
            people.phones.insert(d.token.clone(), phone);
        }
        let customer = json!({"attributes": {"first_name": format!("Pat {i}"), "plan": plan}, "unsubscribed": unsubscribed});
        calls.push((id, customer, bodies));
    }
    let progress = bar(calls.len(), "customers");
    let mut done = stream::iter(calls.into_iter().map(|(id, customer, devices)| async move {
        api.call(
            reqwest::Method::PUT,
            &format!("/v1/customers/{id}"),
            customer,
        )
        .await?;
        for device in devices {
            api.call(
                reqwest::Method::PUT,
                &format!("/v1/customers/{id}/devices"),
                device,
            )
            .await?;
        }
        Ok::<_, DemoError>(())
    }))
    .buffer_unordered(64);
    while let Some(result) = done.next().await {
        result?;
        progress.inc(1);
    }
    finish(&progress);
    Ok(people)
}

/// Sends the shop app's silent push (it wakes the app to sync the cart and
/// shows nothing) to the customers who have the app; returns the
/// deliveries.
async fn send_silent(api: &Api, customers: &[String]) -> Result<usize, DemoError> {
    let message = json!({"name": "Cart sync", "app": SHOP_APP,
        "push": {"kind": "background", "data": {"sync": "cart", "customer": "{{customer.id}}"}}});
    api.call(
        reqwest::Method::PUT,
        &format!("/v1/messages/{SHOP_SYNC}"),
        message,
    )
    .await?;
    let mut sent = 0;
    for chunk in customers.chunks(250) {
        let body = json!({"message_id": SHOP_SYNC, "customer_ids": chunk});
        let v = api
            .call(reqwest::Method::POST, "/v1/send/push", body)
            .await?;
        sent += v["deliveries"].as_array().map_or(0, Vec::len);
    }
    Ok(sent)
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
    finish(&progress);
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
    let platform_rate =
        |p: &str, k: &str| m["by_platform"][p]["rates"][k].as_f64().unwrap_or(0.0) * 100.0;
    out.push_str(&format!(
        "delivered of sent, all devices / opted-in devices: iOS {:.1}% / {:.1}%  Android {:.1}% / {:.1}%\n",
        platform_rate("ios", "delivered"),
        platform_rate("ios", "delivered_of_opted_in"),
        platform_rate("android", "delivered"),
        platform_rate("android", "delivered_of_opted_in"),
    ));
    out
}

/// Redraws a block of lines in place on a terminal. Each line is cleared to
/// its end and whatever a longer earlier frame left below is cleared, so no
/// characters of an earlier frame remain (`still to comee`).
#[derive(Default)]
struct Redraw {
    /// Lines of the frame on screen.
    lines: usize,
}

impl Redraw {
    /// The bytes that replace the frame on screen with `text`.
    fn frame(&mut self, text: &str) -> String {
        let mut out = String::new();
        if self.lines > 0 {
            out.push_str(&format!("\x1b[{}A\r", self.lines));
        }
        for line in text.lines() {
            out.push_str(line);
            out.push_str("\x1b[K\n");
        }
        out.push_str("\x1b[J");
        self.lines = text.lines().count();
        out
    }
}

/// Simulated time in words, e.g. `3 h 12 min`.
fn span(seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    match minutes / 60 {
        0 => format!("{minutes} min"),
        hours => format!("{hours} h {} min", minutes % 60),
    }
}

/// Shows the overview refreshing while late reports arrive, until every
/// simulated report arrived or `seconds` passed; says what is still to come.
async fn watch(
    api: &Api,
    stats: &FleetStats,
    clock: &SimClock,
    sent_at: i64,
    seconds: u64,
) -> Result<(), DemoError> {
    use std::io::{IsTerminal, Write};
    let redraw = std::io::stdout().is_terminal();
    let mut screen = Redraw::default();
    let started = Instant::now();
    loop {
        let m = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/campaigns/{CAMPAIGN}/metrics"),
                Value::Null,
            )
            .await?;
        let pending = stats.pending.load(Ordering::Relaxed);
        let fleet_done = clock.caught_up() && pending == 0;
        let clock_line = if clock.caught_up() {
            "simulated clock: caught up with real time".to_string()
        } else {
            format!(
                "simulated clock: {} after the send",
                span(clock.now().saturating_sub(sent_at))
            )
        };
        let table = format!(
            "{}fleet: {} pushes received, {} reports accepted, {pending} still to come\n{clock_line}\n",
            overview(&m),
            stats.received.load(Ordering::Relaxed),
            stats.reported.load(Ordering::Relaxed),
        );
        let done = fleet_done || started.elapsed() >= Duration::from_secs(seconds);
        if redraw {
            print!("{}", screen.frame(&table));
            let _ = std::io::stdout().flush();
        } else if done || started.elapsed().as_secs().is_multiple_of(5) {
            println!("{table}");
        }
        if done {
            if fleet_done {
                println!("every simulated report arrived.");
            } else {
                println!(
                    "{pending} reports are still to come; they keep arriving while the demo serves \
                     (the dashboard shows them)."
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    // Bind first: a taken port fails before anything is wiped or started.
    let listener = bind(&Config {
        listen: args.listen.clone(),
        ..Config::default()
    })?;
    let addr: SocketAddr = listener.local_addr()?;
    fresh_data_dir(&args.data_dir)?;
    let (fakes, shop) = providers(&args).await?;
    let shop_app = AppConfig {
        apns: shop.apns_config.clone(),
        fcm: shop.fcm_config.clone(),
    };
    let config = Config {
        listen: addr.to_string(),
        data_dir: args.data_dir.join("store"),
        api_key: Some(API_KEY.into()),
        sdk_key: Some(SDK_KEY.into()),
        apns: fakes.apns_config.clone(),
        fcm: fakes.fcm_config.clone(),
        apps: [(SHOP_APP.to_owned(), shop_app)].into(),
        ..Config::default()
    };
    // The clock stands far enough back for every late report to be dated
    // in the past; it runs once the campaign is sent.
    let lead = fleet::horizon() + Duration::from_secs(600);
    let clock = Arc::new(SimClock::new(lead, args.time_scale));
    let daemon = actix_web::rt::spawn(serve_with(config, listener, clock.clone(), false));
    let api = Api {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    };
    while !api.healthy().await {
        if daemon.is_finished() {
            return match daemon.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(DemoError::Api(
                    "the daemon stopped before it was healthy".into(),
                )),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "pushd demo: daemon at {}, {} customers, fake APNs at {} (sandbox {}), fake FCM at {}; \
         app {SHOP_APP}: fake APNs at {}, fake FCM at {}",
        api.base,
        args.customers,
        fakes.apns.endpoint(),
        fakes.apns.sandbox_endpoint(),
        fakes.fcm.endpoint(),
        shop.apns.endpoint(),
        shop.fcm.endpoint(),
    );
    let catch_up = lead.as_secs_f64() / (args.time_scale - 1.0).max(1.0);
    println!(
        "simulated time: the demo's clock stands {} back while it creates customers and sends; \
         then it runs {}x faster than real time until it catches up with now (about {catch_up:.0} s), \
         so a day of late device reports arrives in a minute. Times the demo shows, and the \
         dashboard's times for this campaign, are simulated and never in the future.",
        span(lead.as_secs() as i64),
        HumanCount(args.time_scale.round() as u64),
    );
    let people = create_customers(&api, &args, &fakes).await?;
    let (tx, inbox) = tokio::sync::mpsc::unbounded_channel();
    let subscriptions = [
        fakes.apns.subscribe(),
        fakes.fcm.subscribe(),
        shop.apns.subscribe(),
        shop.fcm.subscribe(),
    ];
    for mut rx in subscriptions {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(push) = rx.recv().await {
                let _ = tx.send(push);
            }
        });
    }
    let fleet = Fleet {
        devices: people.phones,
        profile: FleetProfile::default(),
        base_url: api.base.clone(),
        sdk_key: SDK_KEY.into(),
        identity_secret: crate::keys::identity_secret(API_KEY),
        clock: clock.clone(),
        goal: "purchase".into(),
    };
    let stats = fleet.run(inbox, args.seed);
    let sent_at = clock.now();
    let sent = send_campaign(&api, args.customers).await?;
    let silent = send_silent(&api, &people.shop_customers).await?;
    clock.start();
    println!("silent push {SHOP_SYNC} (app {SHOP_APP}, background): {silent} deliveries accepted");
    println!("{sent} deliveries accepted; overview of campaign {CAMPAIGN} as reports arrive:\n");
    watch(&api, &stats, &clock, sent_at, args.watch_seconds).await?;
    let sandbox: usize = (people.sandbox_tokens.iter())
        .map(|t| fakes.apns.pushes(t).len())
        .sum();
    println!(
        "app default: {} pushes accepted by its fake APNs ({sandbox} on the sandbox, to {} \
         development builds) and {} by its fake FCM; app {SHOP_APP}: {} by APNs, {} by FCM",
        fakes.apns.accepted(),
        people.sandbox_tokens.len(),
        fakes.fcm.accepted(),
        shop.apns.accepted(),
        shop.fcm.accepted(),
    );
    if args.exit {
        println!("--exit: the demo stops here, and its daemon and dashboard with it.");
        return Ok(());
    }
    println!("\ndashboard: {}/  (API key: {API_KEY})", api.base);
    println!(
        "campaign {CAMPAIGN}: {}/#/overview?campaign={CAMPAIGN}\n\
         its delivery log: {}/#/deliveries?campaign_id={CAMPAIGN}",
        api.base, api.base
    );
    println!("serving until Ctrl-C");
    match daemon.await {
        Ok(result) => Ok(result?),
        Err(e) => Err(DemoError::Api(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a terminal shows after `bytes`, row by row, trailing blanks cut.
    fn screen(bytes: &str) -> Vec<String> {
        let mut parser = vt100::Parser::new(10, 60, 0);
        // The terminal driver turns each newline into CR LF (onlcr).
        parser.process(bytes.replace('\n', "\r\n").as_bytes());
        let rows: Vec<String> = parser
            .screen()
            .rows(0, 60)
            .map(|r| r.trim_end().to_string())
            .collect();
        let used = rows
            .iter()
            .rposition(|r| !r.is_empty())
            .map_or(0, |i| i + 1);
        rows[..used].to_vec()
    }

    #[test]
    fn a_shorter_frame_leaves_no_characters_of_the_longer_one() {
        let mut redraw = Redraw::default();
        let mut out = redraw.frame("sends 1000\nfleet: 12 still to come\nclock: 3 h 2 min\n");
        out += &redraw.frame("sends 1000\nfleet: 9 still to come\n");
        assert_eq!(screen(&out), ["sends 1000", "fleet: 9 still to come"]);
        out += &redraw.frame("sends 1000\nfleet: 0 still to come\nclock: caught up\n");
        assert_eq!(
            screen(&out),
            ["sends 1000", "fleet: 0 still to come", "clock: caught up"]
        );
    }

    #[test]
    fn only_a_demo_made_directory_is_wiped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        fresh_data_dir(&data).unwrap();
        std::fs::write(data.join("old"), "x").unwrap();
        fresh_data_dir(&data).unwrap();
        assert!(
            !data.join("old").exists(),
            "the demo's own directory is wiped"
        );
        let foreign = dir.path().join("mine");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("precious"), "x").unwrap();
        let e = fresh_data_dir(&foreign).unwrap_err();
        assert!(e.to_string().contains("refusing to wipe"), "{e}");
        assert!(foreign.join("precious").exists(), "nothing was removed");
    }
}
