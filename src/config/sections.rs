//! The file's sections other than `[cluster]`, each setting declared once
//! (see `settings!` in `setting.rs`), and what each section makes of its
//! settings.

use std::sync::Arc;
use std::time::Duration;

use pushd_actors::engine::EngineConfig;
use pushd_actors::ports::Clock;
use serde::{Deserialize, Serialize};

use super::IdentityVerification;
use super::setting::settings;
use crate::providers::{
    APNS_DEFAULT_ENDPOINT, APNS_SANDBOX_ENDPOINT, ClientOptions, FCM_DEFAULT_ENDPOINT,
};
use crate::store::Retention;

settings! {
    /// `[keys]`: what the public SDK key may do.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct KeysSection {
        /// Whether SDK-key calls about a customer need its
        /// Pushd-Customer-Auth proof.
        #[setting(
            flag = "identity-verification",
            env = "PUSHD_IDENTITY_VERIFICATION",
            shown = "required for a new data directory, off for one an earlier release made"
        )]
        pub identity_verification: Option<IdentityVerification>,
    }

    /// `[store]`: the snapshot.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct StoreSection {
        /// Days a delivery stays in the delivery log after its creation, 0
        /// for ever.
        #[setting(flag = "delivery-retention-days", env = "PUSHD_DELIVERY_RETENTION_DAYS")]
        pub delivery_retention_days: u64 = 180,
        /// Free bytes on the data directory's disk below which /readyz
        /// answers 503.
        #[setting(flag = "min-free-bytes", env = "PUSHD_MIN_FREE_BYTES")]
        pub min_free_bytes: u64 = 128 << 20,
        /// Bytes of changes waiting for the journal's disk past which writes
        /// answer 503 overloaded.
        #[setting(flag = "max-journal-queue-bytes", env = "PUSHD_MAX_JOURNAL_QUEUE_BYTES")]
        pub max_journal_queue_bytes: usize = 64 << 20,
        /// Records changed and not yet drained to the snapshot past which
        /// writes answer 503 overloaded.
        #[setting(flag = "max-undrained-records", env = "PUSHD_MAX_UNDRAINED_RECORDS")]
        pub max_undrained_records: usize = 500_000,
    }

    /// `[apns]`, and `[apps.<app_id>.apns]`: an app's APNs credentials.
    #[derive(Clone, Debug, Deserialize, Serialize)]
    pub struct ApnsConfig {
        /// APNs base URL; http:// speaks h2c (HTTP/2 with prior knowledge).
        #[setting(flag = "apns-endpoint", env = "PUSHD_APNS_ENDPOINT", shown = APNS_DEFAULT_ENDPOINT)]
        pub endpoint: Option<String>,
        /// APNs base URL for sandbox (development build) tokens.
        #[setting(
            flag = "apns-sandbox-endpoint",
            env = "PUSHD_APNS_SANDBOX_ENDPOINT",
            shown = APNS_SANDBOX_ENDPOINT
        )]
        pub sandbox_endpoint: Option<String>,
        /// APNs .p8 token-signing key (PKCS#8 PEM, EC P-256); without it
        /// iOS sends fail credentials_not_found.
        #[setting(flag = "apns-key-file", env = "PUSHD_APNS_KEY_FILE")]
        pub key_file: Option<String>,
        /// APNs key id (JWT kid).
        #[setting(flag = "apns-key-id", env = "PUSHD_APNS_KEY_ID")]
        pub key_id: Option<String>,
        /// Apple team id (JWT iss).
        #[setting(flag = "apns-team-id", env = "PUSHD_APNS_TEAM_ID")]
        pub team_id: Option<String>,
        /// App bundle id sent as apns-topic.
        #[setting(flag = "apns-topic", env = "PUSHD_APNS_TOPIC")]
        pub topic: Option<String>,
    }

    /// `[fcm]`, and `[apps.<app_id>.fcm]`: an app's Firebase service
    /// account.
    #[derive(Clone, Debug, Deserialize, Serialize)]
    pub struct FcmConfig {
        /// FCM base URL; http:// speaks h2c.
        #[setting(flag = "fcm-endpoint", env = "PUSHD_FCM_ENDPOINT", shown = FCM_DEFAULT_ENDPOINT)]
        pub endpoint: Option<String>,
        /// FCM service-account JSON; without it Android sends fail
        /// credentials_not_found.
        #[setting(flag = "fcm-service-account-file", env = "PUSHD_FCM_SERVICE_ACCOUNT_FILE")]
        pub service_account_file: Option<String>,
    }

    /// `[engine]`: retries and actor lifetimes.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct EngineSection {
        /// Provider calls per device send, first included.
        #[setting(flag = "max-attempts", env = "PUSHD_MAX_ATTEMPTS")]
        pub max_attempts: u32 = EngineConfig::default().max_attempts,
        /// First retry delay ceiling in ms, doubling per attempt (with
        /// jitter).
        #[setting(flag = "backoff-base-ms", env = "PUSHD_BACKOFF_BASE_MS")]
        pub backoff_base_ms: u64 = EngineConfig::default().backoff_base.as_millis() as u64,
        /// Largest retry delay in ms.
        #[setting(flag = "backoff-max-ms", env = "PUSHD_BACKOFF_MAX_MS")]
        pub backoff_max_ms: u64 = EngineConfig::default().backoff_max.as_millis() as u64,
        /// Seconds of idleness after which a customer's actor stops.
        #[setting(flag = "idle-timeout-secs", env = "PUSHD_IDLE_TIMEOUT_SECS")]
        pub idle_timeout_secs: u64 = EngineConfig::default().idle_timeout.as_secs(),
        /// Actor threads, 0 for one per two cores.
        #[setting(flag = "shards", env = "PUSHD_SHARDS")]
        pub shards: usize = 0,
        /// Longest provider Retry-After honoured, in seconds.
        #[setting(flag = "retry-after-max-secs", env = "PUSHD_RETRY_AFTER_MAX_SECS")]
        pub retry_after_max_secs: u64 = EngineConfig::default().retry_after_max.as_secs(),
        /// HTTP/2 connections per provider endpoint, opened as the open ones
        /// fill.
        #[setting(flag = "provider-connections", env = "PUSHD_PROVIDER_CONNECTIONS")]
        pub provider_connections: usize = ClientOptions::default().max_connections,
        /// Pushes in flight on one provider connection.
        #[setting(flag = "provider-streams", env = "PUSHD_PROVIDER_STREAMS")]
        pub provider_streams: usize = ClientOptions::default().streams_per_connection,
        /// The share of each provider endpoint's streams campaign sends
        /// never take, kept for transactional ones (0 to less than 1).
        #[setting(flag = "transactional-share", env = "PUSHD_TRANSACTIONAL_SHARE")]
        pub transactional_share: f64 = ClientOptions::default().transactional_share,
    }

    /// `[providers]`: how pushd keeps its connections to APNs and FCM.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct ProvidersSection {
        /// Seconds after which a provider connection takes no new push and a
        /// fresh one opens (before the provider closes the old one).
        #[setting(flag = "provider-max-connection-age", env = "PUSHD_PROVIDER_MAX_CONNECTION_AGE")]
        pub max_connection_age: u64 = ClientOptions::default().max_connection_age.as_secs(),
    }

    /// `[webhooks]`: how webhooks post and retry.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct WebhooksSection {
        /// A webhook post not answered within this many ms fails and is
        /// retried.
        #[setting(flag = "webhook-timeout-ms", env = "PUSHD_WEBHOOK_TIMEOUT_MS")]
        pub timeout_ms: u64 = webhooks_default().timeout.as_millis() as u64,
        /// First webhook retry wait in ms, doubling per retry (with jitter).
        #[setting(flag = "webhook-backoff-base-ms", env = "PUSHD_WEBHOOK_BACKOFF_BASE_MS")]
        pub backoff_base_ms: u64 = webhooks_default().backoff_base.as_millis() as u64,
        /// Longest wait between two webhook tries in ms.
        #[setting(flag = "webhook-backoff-max-ms", env = "PUSHD_WEBHOOK_BACKOFF_MAX_MS")]
        pub backoff_max_ms: u64 = webhooks_default().backoff_max.as_millis() as u64,
        /// Seconds after which an event a webhook keeps failing (counted from
        /// when it was recorded) is dropped.
        #[setting(flag = "webhook-max-age-secs", env = "PUSHD_WEBHOOK_MAX_AGE_SECS")]
        pub max_age_secs: u64 = webhooks_default().max_age.as_secs(),
        /// Posts under way at once per webhook.
        #[setting(flag = "webhook-in-flight", env = "PUSHD_WEBHOOK_IN_FLIGHT")]
        pub in_flight: usize = webhooks_default().in_flight,
        /// Let webhooks post to loopback, private, link-local and other
        /// non-public addresses: for tests and private networks.
        #[setting(
            flag = "webhook-allow-private-targets",
            env = "PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS"
        )]
        pub allow_private_targets: bool = webhooks_default().allow_private_targets,
    }

    /// `[templates]`: the budget of a message's render; past it the
    /// delivery fails `template_limit_exceeded`.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct TemplatesSection {
        /// Loop iterations a template's field may run, nested loops'
        /// included.
        #[setting(flag = "template-max-iterations", env = "PUSHD_TEMPLATE_MAX_ITERATIONS")]
        pub max_iterations: u64 = limits_default().max_iterations,
        /// Bytes of a template field's output, and of any value made on the
        /// way.
        #[setting(flag = "template-max-output-bytes", env = "PUSHD_TEMPLATE_MAX_OUTPUT_BYTES")]
        pub max_output_bytes: usize = limits_default().max_output_bytes,
        /// CPU time in ms a push's render may take.
        #[setting(flag = "template-max-render-cpu-ms", env = "PUSHD_TEMPLATE_MAX_RENDER_CPU_MS")]
        pub max_render_cpu_ms: u64 = limits_default().max_render_cpu.as_millis() as u64,
    }

    /// `[http]`: what the API's HTTP server allows a client.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct HttpSection {
        /// Seconds a request body may take to arrive whole; a slower one
        /// gets 408 and its connection closes.
        #[setting(flag = "http-body-timeout-secs", env = "PUSHD_HTTP_BODY_TIMEOUT_SECS")]
        pub body_timeout_secs: u64 = 10,
        /// Connections served at once; more are refused with 503.
        #[setting(
            flag = "http-max-connections",
            env = "PUSHD_HTTP_MAX_CONNECTIONS",
            shown = "sized from the open files limit"
        )]
        pub max_connections: Option<usize>,
    }

    /// `[events]`: the delivery event log behind the webhooks and the feed.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct EventsSection {
        /// Days delivery events are kept for the feed and the webhooks.
        #[setting(flag = "event-retention-days", env = "PUSHD_EVENT_RETENTION_DAYS")]
        pub retention_days: u64 = 30,
    }

    /// `[compat]`: the endpoints a team migrating from Customer.io, Segment
    /// or RudderStack points its existing clients at (docs/migrating.md).
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct CompatSection {
        /// Site id Customer.io's clients send as the HTTP Basic user
        /// (site_id:api_key).
        #[setting(
            flag = "compat-customerio-site-id",
            env = "PUSHD_COMPAT_CUSTOMERIO_SITE_ID",
            shown = "none, Basic refused"
        )]
        pub customerio_site_id: Option<String>,
        /// Write keys Segment's and RudderStack's clients may send to
        /// /ingest/v1/ (comma-separated).
        #[setting(
            flag = "compat-ingest-write-keys",
            env = "PUSHD_COMPAT_INGEST_WRITE_KEYS",
            shown = "none: only the API key is taken there",
            hide_env_values = true
        )]
        pub ingest_write_keys: Vec<String>,
    }
}

/// The webhooks' defaults, which `[webhooks]`' are.
fn webhooks_default() -> crate::webhooks::Settings {
    crate::webhooks::Settings::default()
}

/// The renderer's default limits, which `[templates]`' are.
fn limits_default() -> crate::template::Limits {
    crate::template::Limits::default()
}

impl StoreSection {
    /// The delivery retention, on `clock`'s time.
    pub fn retention(&self, clock: Arc<dyn Clock>) -> Retention {
        Retention::days(self.delivery_retention_days, clock)
    }
}

impl EngineSection {
    /// The engine's tuning.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_attempts: self.max_attempts,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            retry_after_max: Duration::from_secs(self.retry_after_max_secs),
            frequency_caps: Vec::new(),
            quiet_hours: None,
            release_spread_seconds: pushd_actors::engine::RELEASE_SPREAD_SECONDS,
        }
    }

    /// Actor threads to run. By default one per two cores: a request
    /// spends most of its CPU outside its actor (HTTP, the journal's sync,
    /// the snapshot and event threads), and on 2 cores the load bench
    /// measured one actor thread at 0.47-0.48 report_ratio and ~6 KB per
    /// in-flight delivery against 0.31 and ~6.9 KB with two (fewer threads
    /// handing work to each other and holding memory).
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }
}

impl WebhooksSection {
    /// The webhooks' settings.
    pub fn settings(&self) -> crate::webhooks::Settings {
        crate::webhooks::Settings {
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            backoff_base: Duration::from_millis(self.backoff_base_ms.max(1)),
            backoff_max: Duration::from_millis(self.backoff_max_ms.max(self.backoff_base_ms)),
            max_age: Duration::from_secs(self.max_age_secs),
            in_flight: self.in_flight,
            allow_private_targets: self.allow_private_targets,
        }
    }
}

impl EventsSection {
    /// The event log's options.
    pub fn options(&self) -> crate::events::Options {
        crate::events::Options {
            retention: Duration::from_secs(self.retention_days.max(1) * 24 * 3600),
            ..crate::events::Options::default()
        }
    }
}

impl TemplatesSection {
    /// The renderer's limits.
    pub fn limits(&self) -> crate::template::Limits {
        crate::template::Limits {
            max_iterations: self.max_iterations,
            max_output_bytes: self.max_output_bytes,
            max_render_cpu: Duration::from_millis(self.max_render_cpu_ms),
        }
    }
}

impl HttpSection {
    /// The body deadline.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    /// The connection limit, `max_connections` or one sized from
    /// `open_files` (the process's open files limit).
    pub fn connection_limit(&self, open_files: u64) -> crate::http::ConnectionLimit {
        crate::http::ConnectionLimit::new(self.max_connections, open_files)
    }
}
