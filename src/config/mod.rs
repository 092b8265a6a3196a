//! Configuration: `pushd.toml`, overridden by `PUSHD_*` environment
//! variables and command-line flags, with a default for every key.
//!
//! Precedence, lowest first: defaults, the TOML file (`--config` /
//! `PUSHD_CONFIG`, `./pushd.toml` if present), then each flag or its
//! environment variable. `pushd serve --help` lists every key with its
//! variable and default.
//!
//! Each setting is declared once, with `settings!` (`setting.rs`): the
//! top level here, `[cluster]` in `cluster.rs`, the other sections in
//! `sections.rs`.

mod cluster;
mod sections;
mod sending;
mod setting;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, value_parser};
use pushd_actors::engine::EngineConfig;
use pushd_actors::model::DEFAULT_APP;
use serde::Deserialize;

pub use cluster::ClusterSection;
pub use sections::{
    ApnsConfig, CompatSection, EngineSection, EventsSection, FcmConfig, HttpSection, KeysSection,
    ProvidersSection, StoreSection, TemplatesSection, WebhooksSection,
};
pub use sending::{QuietHoursSetting, SendingSection};
use setting::{Section, settings};

use crate::providers::{AppConfig, ClientOptions};

settings! {
    /// The whole configuration.
    #[derive(Clone, Debug, Deserialize)]
    pub struct Config {
        /// Address to listen on.
        #[setting(flag = "listen", env = "PUSHD_LISTEN")]
        pub listen: String = "127.0.0.1:8080".into(),
        /// Directory of the sled store.
        #[setting(flag = "data-dir", env = "PUSHD_DATA_DIR")]
        pub data_dir: PathBuf = "./data".into(),
        /// Management API key, from the environment only (a flag would show
        /// it in `ps`).
        #[setting(
            flag = "api-key",
            env = "PUSHD_API_KEY",
            shown = "generated on first start, kept in the data dir",
            hide = true,
            hide_env_values = true
        )]
        pub api_key: Option<String>,
        /// Device/SDK key, from the environment only (a flag would show it in
        /// `ps`).
        #[setting(
            flag = "sdk-key",
            env = "PUSHD_SDK_KEY",
            shown = "generated on first start, kept in the data dir",
            hide = true,
            hide_env_values = true
        )]
        pub sdk_key: Option<String>,
        /// What the SDK key may do.
        #[setting(section)]
        pub keys: KeysSection,
        /// Largest request body in bytes.
        #[setting(flag = "max-body-bytes", env = "PUSHD_MAX_BODY_BYTES")]
        pub max_body_bytes: usize = 1 << 20,
        /// Seconds a SIGTERM may take (draining HTTP, then the last
        /// checkpoint) before pushd exits anyway, status 1.
        #[setting(flag = "shutdown-timeout-secs", env = "PUSHD_SHUTDOWN_TIMEOUT_SECS")]
        pub shutdown_timeout_secs: u64 = 30,
        /// sled page cache in MiB.
        #[setting(flag = "store-cache-mb", env = "PUSHD_STORE_CACHE_MB")]
        pub store_cache_mb: u64 = 64,
        /// The snapshot: how long deliveries are kept.
        #[setting(section)]
        pub store: StoreSection,
        /// APNs credentials of the app `default`.
        #[setting(section)]
        pub apns: ApnsConfig,
        /// FCM credentials of the app `default`.
        #[setting(section)]
        pub fcm: FcmConfig,
        /// `[apps.<app_id>]`: the other apps' credentials, by app id.
        #[setting(file_only)]
        pub apps: BTreeMap<String, AppConfig>,
        /// Sends and actors.
        #[setting(section)]
        pub engine: EngineSection,
        /// The provider connections.
        #[setting(section)]
        pub providers: ProvidersSection,
        /// How webhooks post and retry.
        #[setting(section)]
        pub webhooks: WebhooksSection,
        /// What a template's render may spend.
        #[setting(section)]
        pub templates: TemplatesSection,
        /// The HTTP server's limits.
        #[setting(section)]
        pub http: HttpSection,
        /// The delivery event log.
        #[setting(section)]
        pub events: EventsSection,
        /// Cluster mode: several nodes over NATS JetStream.
        #[setting(section)]
        pub cluster: ClusterSection,
        /// What the migration endpoints (`/api/v1/`, `/ingest/v1/`) accept.
        #[setting(section)]
        pub compat: CompatSection,
        /// The frequency caps and quiet hours sends keep by default.
        #[setting(file_only)]
        pub sending: SendingSection,
    }
}

/// The fewest characters a configured API or SDK key may have: a shorter
/// one is guessable. Generated keys are far longer (src/keys.rs).
pub const MIN_KEY_CHARS: usize = 16;

/// The longest delivery retention taken, days (100 years): a longer one
/// is meant as for ever, which is 0.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// Whether an SDK-key call about a customer must prove it speaks for
/// that customer (`Pushd-Customer-Auth`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum IdentityVerification {
    /// The proof is required.
    Required,
    /// No proof: the SDK key may send events for any customer id.
    Off,
}

impl Config {
    /// The provider clients' tuning: `[engine]`'s connection counts and
    /// transactional share, and `[providers]`' connection age.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            max_connections: self.engine.provider_connections,
            streams_per_connection: self.engine.provider_streams,
            max_connection_age: Duration::from_secs(self.providers.max_connection_age),
            transactional_share: self.engine.transactional_share,
            ..ClientOptions::default()
        }
    }

    /// The engine's tuning: `[engine]`'s, with `[sending]`'s default
    /// frequency caps and quiet hours.
    pub fn engine_config(&self) -> EngineConfig {
        self.sending.apply(self.engine.engine_config())
    }

    /// How long a SIGTERM may take in all.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// Every app's credentials: `[apns]`/`[fcm]` as the app `default`, and
    /// each `[apps.<app_id>]`.
    pub fn apps(&self) -> BTreeMap<String, AppConfig> {
        let default = AppConfig {
            apns: self.apns.clone(),
            fcm: self.fcm.clone(),
        };
        let mut apps = self.apps.clone();
        apps.insert(DEFAULT_APP.to_owned(), default);
        apps
    }

    /// Refuses what parses but cannot be meant.
    fn check(&self) -> Result<(), String> {
        let counts = [
            (
                "[engine] max_attempts",
                "PUSHD_MAX_ATTEMPTS",
                self.engine.max_attempts as usize,
            ),
            (
                "[engine] provider_connections",
                "PUSHD_PROVIDER_CONNECTIONS",
                self.engine.provider_connections,
            ),
            (
                "[engine] provider_streams",
                "PUSHD_PROVIDER_STREAMS",
                self.engine.provider_streams,
            ),
            (
                "[providers] max_connection_age",
                "PUSHD_PROVIDER_MAX_CONNECTION_AGE",
                self.providers.max_connection_age.min(1) as usize,
            ),
            (
                "[webhooks] in_flight",
                "PUSHD_WEBHOOK_IN_FLIGHT",
                self.webhooks.in_flight,
            ),
            (
                "shutdown_timeout_secs",
                "PUSHD_SHUTDOWN_TIMEOUT_SECS",
                self.shutdown_timeout_secs.min(1) as usize,
            ),
            (
                "[templates] max_iterations",
                "PUSHD_TEMPLATE_MAX_ITERATIONS",
                self.templates.max_iterations.min(1) as usize,
            ),
            (
                "[templates] max_output_bytes",
                "PUSHD_TEMPLATE_MAX_OUTPUT_BYTES",
                self.templates.max_output_bytes,
            ),
            (
                "[templates] max_render_cpu_ms",
                "PUSHD_TEMPLATE_MAX_RENDER_CPU_MS",
                self.templates.max_render_cpu_ms.min(1) as usize,
            ),
            (
                "[store] max_journal_queue_bytes",
                "PUSHD_MAX_JOURNAL_QUEUE_BYTES",
                self.store.max_journal_queue_bytes,
            ),
            (
                "[store] max_undrained_records",
                "PUSHD_MAX_UNDRAINED_RECORDS",
                self.store.max_undrained_records,
            ),
            (
                "[http] body_timeout_secs",
                "PUSHD_HTTP_BODY_TIMEOUT_SECS",
                usize::try_from(self.http.body_timeout_secs).unwrap_or(usize::MAX),
            ),
            (
                "[http] max_connections",
                "PUSHD_HTTP_MAX_CONNECTIONS",
                self.http.max_connections.unwrap_or(1),
            ),
        ];
        if let Some((setting, variable, _)) = counts.iter().find(|(_, _, n)| *n == 0) {
            return Err(format!("{setting} ({variable}) must be at least 1, not 0"));
        }
        self.sending.check()?;
        let share = self.engine.transactional_share;
        if !(0.0..1.0).contains(&share) {
            return Err(format!(
                "[engine] transactional_share (PUSHD_TRANSACTIONAL_SHARE) must be at least 0 and \
                 less than 1, not {share}; 0.2 keeps a fifth of the provider streams for \
                 transactional sends"
            ));
        }
        let days = self.store.delivery_retention_days;
        if days > MAX_RETENTION_DAYS {
            return Err(format!(
                "[store] delivery_retention_days (PUSHD_DELIVERY_RETENTION_DAYS) must be at most \
                 {MAX_RETENTION_DAYS}, not {days}; 0 keeps deliveries for ever"
            ));
        }
        let keys = [
            ("api_key", "PUSHD_API_KEY", &self.api_key),
            ("sdk_key", "PUSHD_SDK_KEY", &self.sdk_key),
        ];
        for (setting, variable, key) in keys {
            // A blank key is no key: one is generated (src/keys.rs).
            let Some(key) = key.as_deref().filter(|k| !k.trim().is_empty()) else {
                continue;
            };
            let length = key.chars().count();
            if length < MIN_KEY_CHARS {
                return Err(format!(
                    "{setting} ({variable}) must be at least {MIN_KEY_CHARS} characters, not \
                     {length}; leave it unset and pushd generates one"
                ));
            }
        }
        if self.apps.contains_key(DEFAULT_APP) {
            return Err(format!(
                "[apps.{DEFAULT_APP}] is the top-level [apns] and [fcm]; configure the app \"{DEFAULT_APP}\" there"
            ));
        }
        let site_id = self.compat.customerio_site_id.as_deref();
        if site_id.is_some_and(|id| id.is_empty() || id.contains(':')) {
            return Err(
                "[compat] customerio_site_id (PUSHD_COMPAT_CUSTOMERIO_SITE_ID) must be a \
                 non-empty id without ':'"
                    .to_string(),
            );
        }
        let short = self
            .compat
            .ingest_write_keys
            .iter()
            .find(|k| k.chars().count() < 8);
        if let Some(key) = short {
            return Err(format!(
                "[compat] ingest_write_keys (PUSHD_COMPAT_INGEST_WRITE_KEYS) must each be at \
                 least 8 characters, not {}",
                key.chars().count()
            ));
        }
        match self.apps.keys().find(|id| id.is_empty() || id.len() > 256) {
            Some(id) => Err(format!("app id \"{id}\" must be 1 to 256 bytes")),
            None => Ok(()),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid {path}: {}", in_words(&source.to_string()))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The settings parse but contradict each other.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `listen` is not an address.
    #[error(
        "listen address {value:?} is not valid ({reason}); set {LISTEN_SETTING} to an address \
         like 127.0.0.1:8080"
    )]
    Listen {
        /// The value given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Nothing can listen on `listen`: in use, not allowed, not local, ...
    #[error(
        "cannot listen on {addr}: {source}; set {LISTEN_SETTING} to a free address like 127.0.0.1:8081"
    )]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The bind failure of `addr`, in words a user acts on.
    pub fn bind(addr: impl ToString, source: std::io::Error) -> Self {
        ConfigError::Bind {
            addr: addr.to_string(),
            source,
        }
    }
}

/// How to name the listen setting in an error: every place it can be set.
const LISTEN_SETTING: &str = "--listen or PUSHD_LISTEN (or listen in pushd.toml)";

impl Config {
    /// The addresses `listen` names (a host name may resolve to several),
    /// or an error that names the setting and shows a valid value.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let invalid = |reason: String| ConfigError::Listen {
            value: self.listen.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = self
            .listen
            .to_socket_addrs()
            .map_err(|e| invalid(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(invalid("it names no address".into()));
        }
        Ok(addrs)
    }
}

/// The settings given as flags or environment variables, and the file's
/// path: what `pushd serve`, `keys` and `restore` take (`--help` lists every
/// setting with its variable and default).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Path of pushd.toml [default: ./pushd.toml if it exists].
    pub config: Option<PathBuf>,
    /// What the command line and the environment gave, by setting.
    given: ArgMatches,
}

impl Args for Overrides {
    fn augment_args(command: Command) -> Command {
        let config = Arg::new("config")
            .long("config")
            .env("PUSHD_CONFIG")
            .value_name("CONFIG")
            .value_parser(value_parser!(PathBuf))
            .help("Path of pushd.toml [default: ./pushd.toml if it exists]");
        Config::flags(command.arg(config), "")
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for Overrides {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Overrides {
            config: matches.get_one::<PathBuf>("config").cloned(),
            given: matches.clone(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A TOML error with Rust's type names (`expected u32`) said as a user
/// would write the value (`expected a whole number`).
fn in_words(message: &str) -> String {
    const WORDS: [(&str, &str); 9] = [
        ("expected u8", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ];
    WORDS.iter().fold(message.to_string(), |m, (rust, words)| {
        m.replace(rust, words)
    })
}

impl Overrides {
    /// Reads the file (if any) and applies the overrides.
    pub fn load(self) -> Result<Config, ConfigError> {
        let default_path = Path::new("pushd.toml");
        let path = self
            .config
            .clone()
            .or_else(|| default_path.exists().then(|| default_path.to_path_buf()));
        let mut c = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })?
            }
            None => Config::default(),
        };
        c.take_given(&self.given, "");
        c.check().map_err(ConfigError::Invalid)?;
        Ok(c)
    }
}
