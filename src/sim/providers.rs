//! Both fakes at once, with credentials written where a daemon can read
//! them: what tests, the load harness and `pushd demo` start. Each app of a
//! daemon gets its own pair, with its own APNs topic and Firebase project,
//! so a push that went out with the wrong app's credentials is refused.

use std::collections::BTreeMap;
use std::path::Path;

use crate::providers::{ApnsConfig, AppConfig, FcmConfig};

use super::{ApnsTestKey, Fake, FakeApns, FakeApnsConfig, FakeFcm, FakeFcmConfig, FaultMix};

/// A fake APNs and a fake FCM on loopback, and the client configuration
/// that reaches them with valid credentials.
pub struct FakeProviders {
    /// The fake APNs.
    pub apns: FakeApns,
    /// The fake FCM (and its OAuth token endpoint).
    pub fcm: FakeFcm,
    /// The APNs signing key (its .p8 is written beside the service account).
    pub apns_key: ApnsTestKey,
    /// What the fake APNs accepts.
    pub apns_accepts: FakeApnsConfig,
    /// What the fake FCM accepts.
    pub fcm_accepts: FakeFcmConfig,
    /// pushd's `[apns]` section for the fake.
    pub apns_config: ApnsConfig,
    /// pushd's `[fcm]` section for the fake.
    pub fcm_config: FcmConfig,
}

/// Tokens the providers of `pushd serve --simulated-providers` answer as
/// unregistered, so a push to one bounces (`dead` and 60 more hex digits
/// is a well-formed APNs token).
pub const DEAD_TOKEN_PREFIX: &str = "dead";

impl FakeProviders {
    /// The providers of `pushd serve --simulated-providers`: both fakes
    /// accept every push after 5 ms, except to a token starting with
    /// [`DEAD_TOKEN_PREFIX`], which is unregistered; credentials go in
    /// `dir`.
    pub async fn simulated(dir: &Path) -> std::io::Result<FakeProviders> {
        let mix = FaultMix {
            latency: std::time::Duration::from_millis(5),
            unregistered_prefix: Some(DEAD_TOKEN_PREFIX.to_owned()),
            ..FaultMix::default()
        };
        FakeProviders::start(dir, mix).await
    }

    /// Points every app of `config` (the `default` one and each
    /// `[apps.<app_id>]`) at these fakes, in place of their credentials.
    pub fn serve_every_app(&self, config: &mut crate::config::Config) {
        config.apns = self.apns_config.clone();
        config.fcm = self.fcm_config.clone();
        for app in config.apps.values_mut() {
            app.apns = self.apns_config.clone();
            app.fcm = self.fcm_config.clone();
        }
    }

    /// Starts both fakes with the outcome `mix` (topic `io.pushd.demo`,
    /// project `pushd-test`); writes `apns.p8` and `fcm.json` into `dir`.
    pub async fn start(dir: &Path, mix: FaultMix) -> std::io::Result<FakeProviders> {
        let apns_key = ApnsTestKey::generate();
        let apns_accepts = FakeApnsConfig {
            mix: mix.clone(),
            ..FakeApnsConfig::new(&apns_key)
        };
        let fcm_accepts = FakeFcmConfig {
            mix,
            ..FakeFcmConfig::default()
        };
        FakeProviders::start_with(dir, apns_key, apns_accepts, fcm_accepts).await
    }

    /// Starts both fakes for the app `app`: APNs topic `io.pushd.<app>`,
    /// Firebase project `pushd-<app>`; writes `apns.p8` and `fcm.json`
    /// into `dir/<app>`.
    pub async fn start_app(dir: &Path, app: &str, mix: FaultMix) -> std::io::Result<FakeProviders> {
        let apns_key = ApnsTestKey::generate();
        let apns_accepts = FakeApnsConfig {
            topic: format!("io.pushd.{app}"),
            mix: mix.clone(),
            ..FakeApnsConfig::new(&apns_key)
        };
        let fcm_accepts = FakeFcmConfig {
            project_id: format!("pushd-{app}"),
            mix,
            ..FakeFcmConfig::default()
        };
        let dir = dir.join(app);
        std::fs::create_dir_all(&dir)?;
        FakeProviders::start_with(&dir, apns_key, apns_accepts, fcm_accepts).await
    }

    async fn start_with(
        dir: &Path,
        apns_key: ApnsTestKey,
        apns_accepts: FakeApnsConfig,
        fcm_accepts: FakeFcmConfig,
    ) -> std::io::Result<FakeProviders> {
        let key_file = dir.join("apns.p8");
        apns_key.write_p8(&key_file)?;
        let apns = FakeApns::start(apns_accepts.clone()).await?;
        let fcm = FakeFcm::start(fcm_accepts.clone()).await?;
        let account = dir.join("fcm.json");
        fcm.write_service_account(&account)?;
        Ok(FakeProviders {
            apns_config: apns.client_config(&key_file),
            fcm_config: fcm.client_config(&account),
            apns,
            fcm,
            apns_key,
            apns_accepts,
            fcm_accepts,
        })
    }

    /// The `PUSHD_APNS_*` / `PUSHD_FCM_*` variables pointing a daemon here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let (a, f) = (&self.apns_config, &self.fcm_config);
        [
            ("PUSHD_APNS_ENDPOINT", &a.endpoint),
            ("PUSHD_APNS_SANDBOX_ENDPOINT", &a.sandbox_endpoint),
            ("PUSHD_APNS_KEY_FILE", &a.key_file),
            ("PUSHD_APNS_KEY_ID", &a.key_id),
            ("PUSHD_APNS_TEAM_ID", &a.team_id),
            ("PUSHD_APNS_TOPIC", &a.topic),
            ("PUSHD_FCM_ENDPOINT", &f.endpoint),
            ("PUSHD_FCM_SERVICE_ACCOUNT_FILE", &f.service_account_file),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.clone()?)))
        .collect()
    }

    /// pushd.toml's `[apps.<app>.apns]` and `[apps.<app>.fcm]` sections
    /// pointing the app `app` here.
    pub fn app_toml(&self, app: &str) -> String {
        let section = AppConfig {
            apns: self.apns_config.clone(),
            fcm: self.fcm_config.clone(),
        };
        let apps = BTreeMap::from([(app.to_owned(), section)]);
        let file = BTreeMap::from([("apps", apps)]);
        toml::to_string(&file).expect("a configuration serializes to TOML")
    }

    /// Push requests both fakes received, whatever their answer.
    pub fn requests(&self) -> usize {
        self.apns.requests() + self.fcm.requests()
    }
}
