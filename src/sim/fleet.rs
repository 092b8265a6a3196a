//! A simulated device fleet: phones that receive the fake providers' pushes
//! and report back over pushd's real HTTP API, the way the platforms let
//! apps report (see the push-metrics reference):
//!
//! * app in the **foreground** reports at once; in the **background** iOS
//!   reports within its 30 s window, Android unless Doze blocks it; a
//!   **closed** app reports only when the user next opens it, hours later;
//! * **iOS** reports `delivered` only when the user opted in to
//!   notifications (otherwise nothing shows, so nothing is tapped either);
//!   **Android** reports regardless of opt-in;
//! * some phones are **offline** for a while, and some run an app version
//!   **without the SDK** and never report;
//! * users open a push and then convert with set probabilities;
//! * a **silent** (background) push shows nothing: it needs no opt-in, the
//!   app reports it `delivered` when it gets to run, and nobody opens it.
//!
//! Time is the demo's [`SimClock`]: report timestamps are simulated (hours
//! of late reports arrive in a minute) and never in the future, because a
//! report waits until the simulated clock reads its time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pushd_actors::model::Platform;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::ReceivedPush;
use super::clock::SimClock;
use pushd_actors::ports::Clock;

/// Longest time a phone stays offline after a push, simulated seconds.
const MAX_OFFLINE_SECS: u64 = 4 * 3600;
/// Longest wait of a closed or dozing app before it next runs.
const MAX_NEXT_RUN_SECS: u64 = 12 * 3600;
/// Longest time from a shown push to its tap.
const MAX_OPEN_SECS: u64 = 1800;
/// Longest time from a tap to the purchase.
const MAX_CONVERT_SECS: u64 = 3600;
/// Longest time before an app that can report does.
const MAX_REPORT_SECS: u64 = 30;

/// Where the app is when a push arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppState {
    /// On screen.
    Foreground,
    /// Running, not on screen.
    Background,
    /// Not running.
    Closed,
}

/// One simulated phone.
#[derive(Clone, Debug)]
pub struct SimDevice {
    /// The customer who owns it.
    pub customer_id: String,
    /// Its platform.
    pub platform: Platform,
    /// App state at push time.
    pub state: AppState,
    /// iOS: notifications allowed.
    pub opted_in: bool,
    /// Android: Doze blocks background work.
    pub dozing: bool,
    /// The app has the SDK and reports.
    pub has_sdk: bool,
    /// Offline for this long (simulated seconds) after the push.
    pub offline_secs: u64,
}

/// Probabilities that shape a fleet.
#[derive(Clone, Debug)]
pub struct FleetProfile {
    /// Share of apps in the foreground.
    pub foreground: f64,
    /// Share in the background (the rest are closed).
    pub background: f64,
    /// iOS users who allowed notifications.
    pub ios_opt_in: f64,
    /// Android phones in Doze.
    pub doze: f64,
    /// Apps with the SDK.
    pub sdk: f64,
    /// Phones offline for a while.
    pub offline: f64,
    /// Users who tap a shown push.
    pub open: f64,
    /// Users who convert after tapping.
    pub convert: f64,
}

impl Default for FleetProfile {
    fn default() -> Self {
        FleetProfile {
            foreground: 0.2,
            background: 0.5,
            ios_opt_in: 0.6,
            doze: 0.3,
            sdk: 0.9,
            offline: 0.1,
            open: 0.3,
            convert: 0.3,
        }
    }
}

impl FleetProfile {
    /// A random phone for `customer_id`.
    pub fn device(&self, customer_id: &str, platform: Platform, rng: &mut StdRng) -> SimDevice {
        let roll: f64 = rng.r#gen();
        let state = if roll < self.foreground {
            AppState::Foreground
        } else if roll < self.foreground + self.background {
            AppState::Background
        } else {
            AppState::Closed
        };
        SimDevice {
            customer_id: customer_id.to_string(),
            platform,
            state,
            opted_in: rng.gen_bool(self.ios_opt_in),
            dozing: rng.gen_bool(self.doze),
            has_sdk: rng.gen_bool(self.sdk),
            offline_secs: match rng.gen_bool(self.offline) {
                true => rng.gen_range(600..MAX_OFFLINE_SECS),
                false => 0,
            },
        }
    }
}

/// The longest time from a push to the last thing its phone does: how
/// far the demo's clock must run for every report to arrive.
pub fn horizon() -> Duration {
    Duration::from_secs(
        MAX_OFFLINE_SECS + MAX_REPORT_SECS + MAX_NEXT_RUN_SECS + MAX_OPEN_SECS + MAX_CONVERT_SECS,
    )
}

/// Something the phone tells pushd, `after` simulated seconds past the push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `POST /push/events` with this event.
    Report(&'static str),
    /// `POST /v1/customers/{id}/events` with the goal event.
    Goal,
}

/// Whether a push the fakes received is silent: APNs `content-available`
/// without an alert, or an FCM message without a notification.
pub fn is_silent(push: &ReceivedPush) -> bool {
    match push.platform {
        Platform::Ios => {
            let aps = &push.payload["aps"];
            aps["content-available"] == 1 && aps.get("alert").is_none()
        }
        Platform::Android => push.payload["message"].get("notification").is_none(),
    }
}

/// What a phone does with one push (`silent`: a background push): actions
/// and when (simulated seconds).
pub fn plan(
    device: &SimDevice,
    profile: &FleetProfile,
    silent: bool,
    rng: &mut StdRng,
) -> Vec<(u64, Action)> {
    let shown = device.platform == Platform::Android || device.opted_in;
    if !device.has_sdk {
        return Vec::new();
    }
    // When the app next gets to run and report.
    let can_report_now = match (device.state, device.platform) {
        (AppState::Foreground, _) => true,
        (AppState::Background, Platform::Ios) => true,
        (AppState::Background, Platform::Android) => !device.dozing,
        (AppState::Closed, _) => false,
    };
    let mut at = device.offline_secs + rng.gen_range(1..MAX_REPORT_SECS);
    if !can_report_now {
        at += rng.gen_range(3600..MAX_NEXT_RUN_SECS);
    }
    let mut actions = Vec::new();
    if silent {
        // The app ran to take it: it reports, and shows nothing to open.
        return vec![(at, Action::Report("delivered"))];
    }
    if shown {
        actions.push((at, Action::Report("delivered")));
    }
    if shown && rng.gen_bool(profile.open) {
        let opened = at + rng.gen_range(5..MAX_OPEN_SECS);
        actions.push((opened, Action::Report("opened")));
        if rng.gen_bool(profile.convert) {
            actions.push((opened + rng.gen_range(30..MAX_CONVERT_SECS), Action::Goal));
        }
    }
    actions
}

/// Counts of what the fleet reported.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Pushes received from the fakes.
    pub received: AtomicU64,
    /// Reports and events pushd accepted.
    pub reported: AtomicU64,
    /// Reports still scheduled.
    pub pending: AtomicU64,
    /// Reports pushd refused or that failed to reach it.
    pub errors: AtomicU64,
}

/// The fleet: phones by token, reporting to one pushd.
pub struct Fleet {
    /// Phones by push token.
    pub devices: HashMap<String, SimDevice>,
    /// Behaviour probabilities.
    pub profile: FleetProfile,
    /// pushd's base URL.
    pub base_url: String,
    /// The SDK key.
    pub sdk_key: String,
    /// The identity secret the app's backend signs customer ids with: each
    /// phone sends its customer's proof (`Pushd-Customer-Auth`), as an app
    /// given it at sign-in would.
    pub identity_secret: String,
    /// Simulated time, shared with the daemon.
    pub clock: Arc<SimClock>,
    /// The goal event name.
    pub goal: String,
}

impl Fleet {
    /// Starts taking pushes from `inbox` (the fakes' subscriptions merged)
    /// and reporting; returns the live counts.
    pub fn run(self, mut inbox: UnboundedReceiver<ReceivedPush>, seed: u64) -> Arc<FleetStats> {
        use rand::SeedableRng;
        let stats = Arc::new(FleetStats::default());
        let fleet = Arc::new(self);
        let client = reqwest::Client::new();
        let counts = stats.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while let Some(push) = inbox.recv().await {
                counts.received.fetch_add(1, Ordering::Relaxed);
                let (Some(device), Some(delivery)) =
                    (fleet.devices.get(&push.token), push.delivery_id.clone())
                else {
                    continue;
                };
                let sent_at = fleet.clock.now();
                let silent = is_silent(&push);
                for (after, action) in plan(device, &fleet.profile, silent, &mut rng) {
                    let job = Report {
                        fleet: fleet.clone(),
                        client: client.clone(),
                        stats: counts.clone(),
                        token: push.token.clone(),
                        delivery: delivery.clone(),
                        at: sent_at.saturating_add(after as i64),
                        action,
                    };
                    counts.pending.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(job.send());
                }
            }
        });
        stats
    }
}

/// One scheduled report.
struct Report {
    fleet: Arc<Fleet>,
    client: reqwest::Client,
    stats: Arc<FleetStats>,
    token: String,
    delivery: String,
    /// When it happens, simulated Unix seconds.
    at: i64,
    action: Action,
}

impl Report {
    async fn send(self) {
        let f = &self.fleet;
        // Never dated ahead of the clock: wait until it reads `at`.
        loop {
            let wait = f.clock.until(self.at);
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
        let customer = &f.devices[&self.token].customer_id;
        let proof = crate::keys::identity_proof(&f.identity_secret, customer);
        let request = match self.action {
            Action::Report(event) => self
                .client
                .post(format!("{}/push/events", f.base_url))
                .json(&json!({"delivery_id": self.delivery, "event": event,
                    "device_id": self.token, "timestamp": self.at})),
            Action::Goal => self
                .client
                .post(format!("{}/v1/customers/{customer}/events", f.base_url))
                .json(&json!({"name": f.goal, "data": {"source": "fleet"}, "timestamp": self.at})),
        };
        let ok = request
            .bearer_auth(&f.sdk_key)
            .header(crate::http::CUSTOMER_AUTH, proof)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let counter = if ok {
            &self.stats.reported
        } else {
            &self.stats.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn phone(platform: Platform, state: AppState, opted_in: bool) -> SimDevice {
        SimDevice {
            customer_id: "c".into(),
            platform,
            state,
            opted_in,
            dozing: false,
            has_sdk: true,
            offline_secs: 0,
        }
    }

    #[test]
    fn ios_reports_only_when_opted_in_android_regardless() {
        let profile = FleetProfile {
            open: 1.0,
            ..FleetProfile::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let ios_out = plan(
            &phone(Platform::Ios, AppState::Foreground, false),
            &profile,
            false,
            &mut rng,
        );
        assert!(ios_out.is_empty());
        let ios_in = plan(
            &phone(Platform::Ios, AppState::Foreground, true),
            &profile,
            false,
            &mut rng,
        );
        assert_eq!(ios_in[0].1, Action::Report("delivered"));
        assert_eq!(ios_in[1].1, Action::Report("opened"));
        let android = plan(
            &phone(Platform::Android, AppState::Foreground, false),
            &profile,
            false,
            &mut rng,
        );
        assert_eq!(android[0].1, Action::Report("delivered"));
    }

    #[test]
    fn a_silent_push_is_reported_delivered_without_opt_in_and_never_opened() {
        let profile = FleetProfile {
            open: 1.0,
            ..FleetProfile::default()
        };
        let mut rng = StdRng::seed_from_u64(4);
        let not_opted_in = phone(Platform::Ios, AppState::Background, false);
        let actions = plan(&not_opted_in, &profile, true, &mut rng);
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].1, Action::Report("delivered"));
        let push = |platform, payload| ReceivedPush {
            platform,
            environment: pushd_actors::model::Environment::Production,
            token: "t".into(),
            delivery_id: None,
            payload,
            headers: Default::default(),
        };
        let silent = json!({"aps": {"content-available": 1}});
        assert!(is_silent(&push(Platform::Ios, silent)));
        let alert = json!({"aps": {"alert": {"title": "Hi"}}});
        assert!(!is_silent(&push(Platform::Ios, alert)));
        assert!(is_silent(&push(
            Platform::Android,
            json!({"message": {"data": {}}})
        )));
        let shown = json!({"message": {"notification": {"title": "Hi"}}});
        assert!(!is_silent(&push(Platform::Android, shown)));
    }

    #[test]
    fn closed_and_dozing_apps_report_hours_later_and_no_sdk_never() {
        let profile = FleetProfile::default();
        let mut rng = StdRng::seed_from_u64(2);
        let closed = plan(
            &phone(Platform::Android, AppState::Closed, true),
            &profile,
            false,
            &mut rng,
        );
        assert!(closed[0].0 >= 3600);
        let mut dozing = phone(Platform::Android, AppState::Background, true);
        dozing.dozing = true;
        assert!(plan(&dozing, &profile, false, &mut rng)[0].0 >= 3600);
        let fg = plan(
            &phone(Platform::Android, AppState::Foreground, true),
            &profile,
            false,
            &mut rng,
        );
        assert!(fg[0].0 < 60);
        let mut old_app = phone(Platform::Ios, AppState::Foreground, true);
        old_app.has_sdk = false;
        assert!(plan(&old_app, &profile, false, &mut rng).is_empty());
    }

    #[test]
    fn every_plan_ends_within_the_horizon() {
        let profile = FleetProfile {
            open: 1.0,
            convert: 1.0,
            offline: 1.0,
            ..FleetProfile::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let mut device = profile.device("c", Platform::Android, &mut rng);
            device.state = AppState::Closed;
            device.has_sdk = true;
            for (after, _) in plan(&device, &profile, false, &mut rng) {
                assert!(Duration::from_secs(after) <= horizon());
            }
        }
    }
}
