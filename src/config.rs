//! Configuration: `pushd.toml`, overridden by `PUSHD_*` environment
//! variables and command-line flags, with a default for every key.
//!
//! Precedence, lowest first: defaults, the TOML file (`--config` /
//! `PUSHD_CONFIG`, `./pushd.toml` if present), then each flag or its
//! environment variable. `pushd serve --help` lists every key.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pushd_actors::engine::EngineConfig;
use pushd_actors::model::DEFAULT_APP;
use pushd_actors::ports::Clock;
use serde::Deserialize;

use crate::providers::{ApnsConfig, AppConfig, ClientOptions, FcmConfig};
use crate::store::Retention;

mod sending;
pub use sending::{QuietHoursSetting, SendingSection};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Where sled keeps state.
    pub data_dir: PathBuf,
    /// Management API key; generated on first start if absent.
    pub api_key: Option<String>,
    /// Device/SDK key; generated on first start if absent.
    pub sdk_key: Option<String>,
    /// What the SDK key may do.
    pub keys: KeysSection,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds a SIGTERM may take: draining HTTP, then the last checkpoint.
    pub shutdown_timeout_secs: u64,
    /// sled page cache, MiB (a top-level key, from before `[store]`).
    pub store_cache_mb: u64,
    /// The snapshot: how long deliveries are kept.
    pub store: StoreSection,
    /// APNs credentials of the app `default`.
    pub apns: ApnsConfig,
    /// FCM credentials of the app `default`.
    pub fcm: FcmConfig,
    /// `[apps.<app_id>]`: the other apps' credentials, by app id.
    pub apps: BTreeMap<String, AppConfig>,
    /// Sends and actors.
    pub engine: EngineSection,
    /// How webhooks post and retry.
    pub webhooks: WebhooksSection,
    /// The delivery event log.
    pub events: EventsSection,
    /// What a template's render may spend.
    pub templates: TemplatesSection,
    /// The HTTP server's limits.
    pub http: HttpSection,
    /// The provider connections.
    pub providers: ProvidersSection,
    /// Cluster mode: several nodes over NATS JetStream.
    pub cluster: ClusterSection,
    /// What the migration endpoints (`/api/v1/`, `/ingest/v1/`) accept.
    pub compat: CompatSection,
    /// The frequency caps and quiet hours sends keep by default.
    pub sending: SendingSection,
}

/// `[compat]`: the endpoints a team migrating from Customer.io, Segment or
/// RudderStack points its existing clients at (docs/migrating.md).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompatSection {
    /// The site id Customer.io's clients send as the HTTP Basic user
    /// (`site_id:api_key`); unset, Basic credentials are refused.
    pub customerio_site_id: Option<String>,
    /// The write keys Segment's and RudderStack's clients send as the HTTP
    /// Basic user to `/ingest/v1/`; empty, only the API key is taken there.
    pub ingest_write_keys: Vec<String>,
}

/// `[cluster]`: several pushd nodes sharing the customers over a NATS
/// JetStream cluster. With no `servers` the daemon runs alone.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// NATS server URLs (`nats://host:port`); empty for a single node.
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster [default: the advertised
    /// address].
    pub node: Option<String>,
    /// The address other nodes reach this node's API at [default: the
    /// listen address].
    pub advertise: Option<String>,
    /// Customer partitions; every node must agree.
    pub partitions: u16,
    /// JetStream replicas of the journal, leases, snapshots and templates.
    pub replicas: usize,
    /// A node's lease of a partition lapses after this long unrenewed, ms.
    pub lease_ms: u64,
    /// How long a call another node's partition must answer waits for that
    /// node (or, while the partition moves, its next owner) before it is
    /// answered 503 `partition_unavailable`, ms.
    pub forward_timeout_ms: u64,
    /// How often a partition's snapshot is uploaded, seconds.
    pub snapshot_secs: u64,
    /// Prefix of the stream, buckets and subjects.
    pub prefix: String,
    /// File holding the cluster secret (at least 32 bytes, the same on
    /// every node) that signs the nodes' calls to each other.
    pub secret_file: Option<PathBuf>,
    /// The cluster secret itself, from `PUSHD_CLUSTER_SECRET` only (a
    /// flag would show it in `ps`); it wins over `secret_file`.
    #[serde(skip)]
    pub secret: Option<String>,
    /// The NATS user, with a password.
    pub user: Option<String>,
    /// File holding the NATS user's password.
    pub password_file: Option<PathBuf>,
    /// The NATS password itself, from `PUSHD_CLUSTER_PASSWORD` only; it
    /// wins over `password_file`.
    #[serde(skip)]
    pub password: Option<String>,
    /// File holding a NATS token.
    pub token_file: Option<PathBuf>,
    /// A NATS token itself, from `PUSHD_CLUSTER_TOKEN` only; it wins over
    /// `token_file`.
    #[serde(skip)]
    pub token: Option<String>,
    /// A NATS `.creds` file (user JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// The CA (PEM) the NATS servers' certificates must chain to.
    pub tls_ca_file: Option<PathBuf>,
    /// The node's client certificate (PEM), for servers that verify one.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Refuse NATS servers that do not speak TLS (`tls://` URLs do too).
    pub tls_required: bool,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            servers: Vec::new(),
            node: None,
            advertise: None,
            partitions: 64,
            replicas: 3,
            lease_ms: 10_000,
            forward_timeout_ms: 2000,
            snapshot_secs: 10,
            prefix: "pushd".into(),
            secret_file: None,
            secret: None,
            user: None,
            password_file: None,
            password: None,
            token_file: None,
            token: None,
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

impl ClusterSection {
    /// Whether the daemon runs as a cluster node.
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    /// The node credential of the cluster secret (`PUSHD_CLUSTER_SECRET`,
    /// else `secret_file`): a cluster node cannot start without one.
    pub fn node_credential(&self) -> Result<crate::cluster::trust::NodeCredential, ConfigError> {
        use crate::cluster::trust::{MIN_SECRET_BYTES, NodeCredential};
        let secret = secret_of(&self.secret, &self.secret_file)?.ok_or_else(|| {
            ConfigError::Invalid(
                "a cluster node needs the cluster secret, the same on every node, to sign its \
                 calls to the others: make one with `openssl rand -hex 32 > cluster.secret` \
                 (readable by pushd only) and set [cluster] secret_file \
                 (PUSHD_CLUSTER_SECRET_FILE) to its path, or set PUSHD_CLUSTER_SECRET"
                    .into(),
            )
        })?;
        let setting = match self.secret {
            Some(_) => "PUSHD_CLUSTER_SECRET",
            None => "[cluster] secret_file (PUSHD_CLUSTER_SECRET_FILE)",
        };
        NodeCredential::new(secret.as_bytes()).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "the cluster secret ({setting}) must be at least {MIN_SECRET_BYTES} bytes, not \
                 {}; make one with `openssl rand -hex 32`",
                secret.len()
            ))
        })
    }

    /// The node's NATS credentials and TLS settings, checked: one kind of
    /// credentials at most, a user with its password, a certificate with
    /// its key, and every file named there.
    fn nats_access(&self) -> Result<crate::cluster::access::NatsAccess, ConfigError> {
        use crate::cluster::access::{NatsAccess, NatsAuth};
        let invalid = |words: &str| Err(ConfigError::Invalid(words.to_string()));
        let files = [
            (
                "credentials_file",
                "CREDENTIALS_FILE",
                &self.credentials_file,
            ),
            ("tls_ca_file", "TLS_CA_FILE", &self.tls_ca_file),
            ("tls_cert_file", "TLS_CERT_FILE", &self.tls_cert_file),
            ("tls_key_file", "TLS_KEY_FILE", &self.tls_key_file),
        ];
        for (setting, variable, path) in files {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                return Err(ConfigError::Invalid(format!(
                    "[cluster] {setting} (PUSHD_CLUSTER_{variable}) {} is not a readable file",
                    path.display()
                )));
            }
        }
        let password = secret_of(&self.password, &self.password_file)?;
        let token = secret_of(&self.token, &self.token_file)?;
        let auth = match (&self.user, password, token, &self.credentials_file) {
            (None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None) => NatsAuth::UserPassword {
                user: user.clone(),
                password,
            },
            (None, None, Some(token), None) => NatsAuth::Token(token),
            (None, None, None, Some(path)) => NatsAuth::CredentialsFile(path.clone()),
            (Some(_), None, None, None) => {
                return invalid(
                    "[cluster] user (PUSHD_CLUSTER_USER) needs its password: \
                     PUSHD_CLUSTER_PASSWORD, or [cluster] password_file \
                     (PUSHD_CLUSTER_PASSWORD_FILE)",
                );
            }
            (None, Some(_), None, None) => {
                return invalid(
                    "a NATS password (PUSHD_CLUSTER_PASSWORD or [cluster] password_file) needs \
                     its [cluster] user (PUSHD_CLUSTER_USER)",
                );
            }
            _ => {
                return invalid(
                    "set one kind of NATS credentials: [cluster] user and password, a token \
                     (PUSHD_CLUSTER_TOKEN or token_file), or credentials_file",
                );
            }
        };
        let client_certificate = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return invalid(
                    "[cluster] tls_cert_file (PUSHD_CLUSTER_TLS_CERT_FILE) and tls_key_file \
                     (PUSHD_CLUSTER_TLS_KEY_FILE) go together: the client certificate and its key",
                );
            }
        };
        Ok(NatsAccess {
            auth,
            tls_ca_file: self.tls_ca_file.clone(),
            client_certificate,
            tls_required: self.tls_required,
        })
    }

    /// The cluster's settings for a node listening on `listen`.
    pub fn settings(&self, listen: &str) -> Result<crate::cluster::Settings, ConfigError> {
        let max = crate::partition::MAX_PARTITIONS;
        if !(1..=max).contains(&self.partitions) {
            return Err(ConfigError::Invalid(format!(
                "[cluster] partitions must be 1 to {max}, not {}",
                self.partitions
            )));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(ConfigError::Invalid(format!(
                "[cluster] replicas must be 1 to 5, not {}",
                self.replicas
            )));
        }
        if self.lease_ms < 500 {
            return Err(ConfigError::Invalid(format!(
                "[cluster] lease_ms must be at least 500, not {}",
                self.lease_ms
            )));
        }
        if !(100..=60_000).contains(&self.forward_timeout_ms) {
            return Err(ConfigError::Invalid(format!(
                "[cluster] forward_timeout_ms (PUSHD_CLUSTER_FORWARD_TIMEOUT_MS) must be 100 to \
                 60000, not {}",
                self.forward_timeout_ms
            )));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(ConfigError::Invalid(format!(
                "[cluster] prefix must be letters, digits, - or _, not {:?}",
                self.prefix
            )));
        }
        let advertise = self.advertise.clone().unwrap_or_else(|| listen.to_string());
        Ok(crate::cluster::Settings {
            servers: self.servers.clone(),
            node: self.node.clone().unwrap_or_else(|| advertise.clone()),
            advertise,
            partitions: self.partitions,
            replicas: self.replicas,
            lease: Duration::from_millis(self.lease_ms),
            forward_timeout: Duration::from_millis(self.forward_timeout_ms),
            snapshot_every: Duration::from_secs(self.snapshot_secs.max(1)),
            prefix: self.prefix.clone(),
            access: self.nats_access()?,
        })
    }
}

/// A secret given itself (from the environment) or in a file (trimmed).
fn secret_of(
    given: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (given, file) {
        (Some(secret), _) => Ok(Some(secret.trim().to_string())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim().to_string()))
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            }),
        (None, None) => Ok(None),
    }
}

/// `[webhooks]`: how webhooks post and retry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    /// A post not answered within this fails, ms.
    pub timeout_ms: u64,
    /// The first retry's wait, ms (doubling per retry, with jitter).
    pub backoff_base_ms: u64,
    /// Longest wait between two tries, ms.
    pub backoff_max_ms: u64,
    /// An event still failing this long after it was recorded is dropped,
    /// seconds.
    pub max_age_secs: u64,
    /// Posts under way at once per webhook.
    pub in_flight: usize,
    /// Whether webhooks may post to loopback, link-local, private, CGNAT,
    /// multicast, unspecified and broadcast addresses: for tests and
    /// private networks only.
    pub allow_private_targets: bool,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        let d = crate::webhooks::Settings::default();
        WebhooksSection {
            timeout_ms: d.timeout.as_millis() as u64,
            backoff_base_ms: d.backoff_base.as_millis() as u64,
            backoff_max_ms: d.backoff_max.as_millis() as u64,
            max_age_secs: d.max_age.as_secs(),
            in_flight: d.in_flight,
            allow_private_targets: d.allow_private_targets,
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

/// `[events]`: the delivery event log behind the webhooks and the feed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSection {
    /// Events older than this are deleted, days.
    pub retention_days: u64,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection { retention_days: 30 }
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

/// `[templates]`: the budget of a message's render; past it the delivery
/// fails `template_limit_exceeded`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesSection {
    /// Loop iterations per field, nested loops' included.
    pub max_iterations: u64,
    /// Bytes of a field's output, and of any value made on the way.
    pub max_output_bytes: usize,
    /// CPU time of a push's render, ms.
    pub max_render_cpu_ms: u64,
}

impl Default for TemplatesSection {
    fn default() -> Self {
        let d = crate::template::Limits::default();
        TemplatesSection {
            max_iterations: d.max_iterations,
            max_output_bytes: d.max_output_bytes,
            max_render_cpu_ms: d.max_render_cpu.as_millis() as u64,
        }
    }
}

/// `[http]`: what the API's HTTP server allows a client.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// A request body not read whole this many seconds after its read
    /// began is answered 408 and its connection closed.
    pub body_timeout_secs: u64,
    /// Connections served at once [default: sized from the open files
    /// limit].
    pub max_connections: Option<usize>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            body_timeout_secs: 10,
            max_connections: None,
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

/// `[keys]`: what the public SDK key may do.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysSection {
    /// Identity verification [default: `required` for a new data
    /// directory, `off` for one an earlier release made].
    pub identity_verification: Option<IdentityVerification>,
}

/// `[store]`: the snapshot.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Deliveries created more than this many days ago leave the delivery
    /// log; 0 keeps them for ever.
    pub delivery_retention_days: u64,
    /// Below this many free bytes on the data directory's disk, pushd is
    /// not ready (`/readyz` answers 503).
    pub min_free_bytes: u64,
    /// Past this many bytes of changes waiting for the journal's disk,
    /// writes answer `503 overloaded`.
    pub max_journal_queue_bytes: usize,
    /// Past this many records changed and not yet drained to the snapshot,
    /// writes answer `503 overloaded`.
    pub max_undrained_records: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            delivery_retention_days: 180,
            min_free_bytes: 128 << 20,
            max_journal_queue_bytes: 64 << 20,
            max_undrained_records: 500_000,
        }
    }
}

impl StoreSection {
    /// The delivery retention, on `clock`'s time.
    pub fn retention(&self, clock: Arc<dyn Clock>) -> Retention {
        Retention::days(self.delivery_retention_days, clock)
    }
}

/// `[engine]`: retries and actor lifetimes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Provider calls per device, first included.
    pub max_attempts: u32,
    /// First retry delay ceiling, ms (doubles per attempt, with jitter).
    pub backoff_base_ms: u64,
    /// Largest retry delay, ms.
    pub backoff_max_ms: u64,
    /// Idle time after which a customer's actor stops, seconds.
    pub idle_timeout_secs: u64,
    /// Actor threads; 0 means one per two cores (at least one).
    pub shards: usize,
    /// Longest provider `Retry-After` honoured, seconds.
    pub retry_after_max_secs: u64,
    /// HTTP/2 connections per provider endpoint, opened as the open ones
    /// fill up.
    pub provider_connections: usize,
    /// Pushes in flight on one provider connection.
    pub provider_streams: usize,
}

/// `[providers]`: how pushd keeps its connections to APNs and FCM.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersSection {
    /// A provider connection this old takes no new push, seconds: the next
    /// one opens a fresh connection before the provider closes the old one.
    pub max_connection_age: u64,
}

impl Default for ProvidersSection {
    fn default() -> Self {
        ProvidersSection {
            max_connection_age: ClientOptions::default().max_connection_age.as_secs(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: "./data".into(),
            api_key: None,
            sdk_key: None,
            keys: KeysSection::default(),
            max_body_bytes: 1 << 20,
            shutdown_timeout_secs: 30,
            store_cache_mb: 64,
            store: StoreSection::default(),
            apns: ApnsConfig::default(),
            fcm: FcmConfig::default(),
            apps: BTreeMap::new(),
            engine: EngineSection::default(),
            webhooks: WebhooksSection::default(),
            events: EventsSection::default(),
            templates: TemplatesSection::default(),
            http: HttpSection::default(),
            providers: ProvidersSection::default(),
            cluster: ClusterSection::default(),
            compat: CompatSection::default(),
            sending: SendingSection::default(),
        }
    }
}

impl Config {
    /// The provider clients' tuning: `[engine]`'s connection counts and
    /// `[providers]`' connection age.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            max_connections: self.engine.provider_connections,
            streams_per_connection: self.engine.provider_streams,
            max_connection_age: Duration::from_secs(self.providers.max_connection_age),
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

impl Default for EngineSection {
    fn default() -> Self {
        let d = EngineConfig::default();
        EngineSection {
            max_attempts: d.max_attempts,
            backoff_base_ms: d.backoff_base.as_millis() as u64,
            backoff_max_ms: d.backoff_max.as_millis() as u64,
            idle_timeout_secs: d.idle_timeout.as_secs(),
            shards: 0,
            retry_after_max_secs: d.retry_after_max.as_secs(),
            provider_connections: ClientOptions::default().max_connections,
            provider_streams: ClientOptions::default().streams_per_connection,
        }
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

/// Every key as a flag with its environment variable (`pushd serve --help`).
#[derive(Args, Clone, Debug, Default)]
pub struct Overrides {
    /// Path of pushd.toml [default: ./pushd.toml if it exists]
    #[arg(long, env = "PUSHD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "PUSHD_LISTEN")]
    pub listen: Option<String>,
    /// Directory of the sled store [default: ./data]
    #[arg(long, env = "PUSHD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Management API key, from the environment only (a flag would show it
    /// in `ps`) [default: generated on first start, kept in the data dir]
    #[arg(long, env = "PUSHD_API_KEY", hide_env_values = true, hide = true)]
    pub api_key: Option<String>,
    /// Device/SDK key, from the environment only (a flag would show it in
    /// `ps`) [default: generated on first start, kept in the data dir]
    #[arg(long, env = "PUSHD_SDK_KEY", hide_env_values = true, hide = true)]
    pub sdk_key: Option<String>,
    /// Whether SDK-key calls about a customer need its Pushd-Customer-Auth proof
    /// [default: required for a new data directory, off for one an earlier release made]
    #[arg(long, env = "PUSHD_IDENTITY_VERIFICATION", value_enum)]
    pub identity_verification: Option<IdentityVerification>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, env = "PUSHD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds a SIGTERM may take before pushd exits anyway, status 1 [default: 30]
    #[arg(long, env = "PUSHD_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// sled page cache in MiB [default: 64]
    #[arg(long, env = "PUSHD_STORE_CACHE_MB")]
    pub store_cache_mb: Option<u64>,
    /// Days a delivery stays in the delivery log after its creation, 0 for ever [default: 180]
    #[arg(long, env = "PUSHD_DELIVERY_RETENTION_DAYS")]
    pub delivery_retention_days: Option<u64>,
    /// Free bytes on the data directory's disk below which /readyz answers 503 [default: 134217728]
    #[arg(long, env = "PUSHD_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Bytes of changes waiting for the journal's disk past which writes answer 503 overloaded [default: 67108864]
    #[arg(long, env = "PUSHD_MAX_JOURNAL_QUEUE_BYTES")]
    pub max_journal_queue_bytes: Option<usize>,
    /// Records changed and not yet drained to the snapshot past which writes answer 503 overloaded [default: 500000]
    #[arg(long, env = "PUSHD_MAX_UNDRAINED_RECORDS")]
    pub max_undrained_records: Option<usize>,
    /// APNs base URL; http:// speaks h2c [default: https://api.push.apple.com]
    #[arg(long, env = "PUSHD_APNS_ENDPOINT")]
    pub apns_endpoint: Option<String>,
    /// APNs base URL for sandbox (development build) tokens [default: https://api.sandbox.push.apple.com]
    #[arg(long, env = "PUSHD_APNS_SANDBOX_ENDPOINT")]
    pub apns_sandbox_endpoint: Option<String>,
    /// APNs .p8 token-signing key; without it iOS sends fail credentials_not_found
    #[arg(long, env = "PUSHD_APNS_KEY_FILE")]
    pub apns_key_file: Option<String>,
    /// APNs key id (JWT kid)
    #[arg(long, env = "PUSHD_APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// Apple team id (JWT iss)
    #[arg(long, env = "PUSHD_APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
    /// App bundle id sent as apns-topic
    #[arg(long, env = "PUSHD_APNS_TOPIC")]
    pub apns_topic: Option<String>,
    /// FCM base URL [default: https://fcm.googleapis.com]
    #[arg(long, env = "PUSHD_FCM_ENDPOINT")]
    pub fcm_endpoint: Option<String>,
    /// FCM service-account JSON; without it Android sends fail credentials_not_found
    #[arg(long, env = "PUSHD_FCM_SERVICE_ACCOUNT_FILE")]
    pub fcm_service_account_file: Option<String>,
    /// Provider calls per device send, first included [default: 10]
    #[arg(long, env = "PUSHD_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// First retry delay ceiling in ms, doubling per attempt [default: 200]
    #[arg(long, env = "PUSHD_BACKOFF_BASE_MS")]
    pub backoff_base_ms: Option<u64>,
    /// Largest retry delay in ms [default: 60000]
    #[arg(long, env = "PUSHD_BACKOFF_MAX_MS")]
    pub backoff_max_ms: Option<u64>,
    /// Seconds of idleness after which a customer's actor stops [default: 60]
    #[arg(long, env = "PUSHD_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Actor threads, 0 for one per two cores [default: 0]
    #[arg(long, env = "PUSHD_SHARDS")]
    pub shards: Option<usize>,
    /// Longest provider Retry-After honoured, in seconds [default: 900]
    #[arg(long, env = "PUSHD_RETRY_AFTER_MAX_SECS")]
    pub retry_after_max_secs: Option<u64>,
    /// HTTP/2 connections per provider endpoint, opened as the open ones fill [default: 2]
    #[arg(long, env = "PUSHD_PROVIDER_CONNECTIONS")]
    pub provider_connections: Option<usize>,
    /// Pushes in flight on one provider connection [default: 1000]
    #[arg(long, env = "PUSHD_PROVIDER_STREAMS")]
    pub provider_streams: Option<usize>,
    /// Seconds after which a provider connection takes no new push and a fresh one opens [default: 1800]
    #[arg(long, env = "PUSHD_PROVIDER_MAX_CONNECTION_AGE")]
    pub provider_max_connection_age: Option<u64>,
    /// A webhook post not answered within this many ms fails and is retried [default: 4000]
    #[arg(long, env = "PUSHD_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
    /// First webhook retry wait in ms, doubling per retry [default: 1000]
    #[arg(long, env = "PUSHD_WEBHOOK_BACKOFF_BASE_MS")]
    pub webhook_backoff_base_ms: Option<u64>,
    /// Longest wait between two webhook tries in ms [default: 900000]
    #[arg(long, env = "PUSHD_WEBHOOK_BACKOFF_MAX_MS")]
    pub webhook_backoff_max_ms: Option<u64>,
    /// Seconds after which an event a webhook keeps failing is dropped [default: 86400]
    #[arg(long, env = "PUSHD_WEBHOOK_MAX_AGE_SECS")]
    pub webhook_max_age_secs: Option<u64>,
    /// Posts under way at once per webhook [default: 16]
    #[arg(long, env = "PUSHD_WEBHOOK_IN_FLIGHT")]
    pub webhook_in_flight: Option<usize>,
    /// Let webhooks post to loopback, private, link-local and other
    /// non-public addresses: for tests and private networks [default: false]
    #[arg(long, env = "PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS")]
    pub webhook_allow_private_targets: Option<bool>,
    /// Loop iterations a template's field may run, nested loops' included [default: 10000]
    #[arg(long, env = "PUSHD_TEMPLATE_MAX_ITERATIONS")]
    pub template_max_iterations: Option<u64>,
    /// Bytes of a template field's output, and of any value made on the way [default: 16384]
    #[arg(long, env = "PUSHD_TEMPLATE_MAX_OUTPUT_BYTES")]
    pub template_max_output_bytes: Option<usize>,
    /// CPU time in ms a push's render may take [default: 100]
    #[arg(long, env = "PUSHD_TEMPLATE_MAX_RENDER_CPU_MS")]
    pub template_max_render_cpu_ms: Option<u64>,
    /// Seconds a request body may take to arrive whole; a slower one gets 408 [default: 10]
    #[arg(long, env = "PUSHD_HTTP_BODY_TIMEOUT_SECS")]
    pub http_body_timeout_secs: Option<u64>,
    /// Connections served at once; more are refused with 503 [default: sized from the open files limit]
    #[arg(long, env = "PUSHD_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Days delivery events are kept for the feed and the webhooks [default: 30]
    #[arg(long, env = "PUSHD_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<u64>,
    /// Run as a cluster node over these NATS servers (comma-separated nats:// URLs)
    #[arg(long, env = "PUSHD_CLUSTER", value_delimiter = ',')]
    pub cluster: Option<Vec<String>>,
    /// This cluster node's name [default: the advertised address]
    #[arg(long, env = "PUSHD_CLUSTER_NODE")]
    pub cluster_node: Option<String>,
    /// Address other nodes reach this node's API at [default: the listen address]
    #[arg(long, env = "PUSHD_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,
    /// Customer partitions of the cluster, the same on every node [default: 64]
    #[arg(long, env = "PUSHD_CLUSTER_PARTITIONS")]
    pub cluster_partitions: Option<u16>,
    /// JetStream replicas of the cluster's journal and buckets [default: 3]
    #[arg(long, env = "PUSHD_CLUSTER_REPLICAS")]
    pub cluster_replicas: Option<usize>,
    /// Lease time of a partition in ms: a node silent this long loses it [default: 10000]
    #[arg(long, env = "PUSHD_CLUSTER_LEASE_MS")]
    pub cluster_lease_ms: Option<u64>,
    /// How long a call for another node's partition waits for it in ms before a 503 [default: 2000]
    #[arg(long, env = "PUSHD_CLUSTER_FORWARD_TIMEOUT_MS")]
    pub cluster_forward_timeout_ms: Option<u64>,
    /// Seconds between uploads of a partition's snapshot [default: 10]
    #[arg(long, env = "PUSHD_CLUSTER_SNAPSHOT_SECS")]
    pub cluster_snapshot_secs: Option<u64>,
    /// File holding the cluster secret the nodes sign their calls to each other with (at least 32 bytes)
    #[arg(long, env = "PUSHD_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster secret, from the environment (`PUSHD_CLUSTER_SECRET`)
    /// only: no flag, which would show it in `ps`.
    #[arg(skip = std::env::var("PUSHD_CLUSTER_SECRET").ok())]
    pub cluster_secret: Option<String>,
    /// NATS user of the cluster node, with a password
    #[arg(long, env = "PUSHD_CLUSTER_USER")]
    pub cluster_user: Option<String>,
    /// File holding the NATS user's password
    #[arg(long, env = "PUSHD_CLUSTER_PASSWORD_FILE")]
    pub cluster_password_file: Option<PathBuf>,
    /// The NATS password, from the environment (`PUSHD_CLUSTER_PASSWORD`)
    /// only.
    #[arg(skip = std::env::var("PUSHD_CLUSTER_PASSWORD").ok())]
    pub cluster_password: Option<String>,
    /// File holding a NATS token
    #[arg(long, env = "PUSHD_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// A NATS token, from the environment (`PUSHD_CLUSTER_TOKEN`) only.
    #[arg(skip = std::env::var("PUSHD_CLUSTER_TOKEN").ok())]
    pub cluster_token: Option<String>,
    /// NATS .creds file (user JWT and nkey seed)
    #[arg(long, env = "PUSHD_CLUSTER_CREDENTIALS_FILE")]
    pub cluster_credentials_file: Option<PathBuf>,
    /// CA (PEM) the NATS servers' certificates must chain to [default: the system's roots]
    #[arg(long, env = "PUSHD_CLUSTER_TLS_CA_FILE")]
    pub cluster_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify one
    #[arg(long, env = "PUSHD_CLUSTER_TLS_CERT_FILE")]
    pub cluster_tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, env = "PUSHD_CLUSTER_TLS_KEY_FILE")]
    pub cluster_tls_key_file: Option<PathBuf>,
    /// Refuse NATS servers that do not speak TLS [default: false; tls:// URLs require it]
    #[arg(long, env = "PUSHD_CLUSTER_TLS_REQUIRED")]
    pub cluster_tls_required: Option<bool>,
    /// Site id Customer.io's clients send as the HTTP Basic user (site_id:api_key) [default: none, Basic refused]
    #[arg(long, env = "PUSHD_COMPAT_CUSTOMERIO_SITE_ID")]
    pub compat_customerio_site_id: Option<String>,
    /// Write keys Segment's and RudderStack's clients may send to /ingest/v1/ (comma-separated) [default: none]
    #[arg(
        long,
        env = "PUSHD_COMPAT_INGEST_WRITE_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub compat_ingest_write_keys: Option<Vec<String>>,
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
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
        self.apply(&mut c);
        c.check().map_err(ConfigError::Invalid)?;
        Ok(c)
    }

    fn apply(self, c: &mut Config) {
        set(&mut c.listen, self.listen);
        set(&mut c.data_dir, self.data_dir);
        set(&mut c.api_key, self.api_key.map(Some));
        set(&mut c.sdk_key, self.sdk_key.map(Some));
        set(
            &mut c.keys.identity_verification,
            self.identity_verification.map(Some),
        );
        set(&mut c.max_body_bytes, self.max_body_bytes);
        set(&mut c.shutdown_timeout_secs, self.shutdown_timeout_secs);
        set(&mut c.store_cache_mb, self.store_cache_mb);
        set(
            &mut c.store.delivery_retention_days,
            self.delivery_retention_days,
        );
        set(&mut c.store.min_free_bytes, self.min_free_bytes);
        set(
            &mut c.store.max_journal_queue_bytes,
            self.max_journal_queue_bytes,
        );
        set(
            &mut c.store.max_undrained_records,
            self.max_undrained_records,
        );
        set(&mut c.apns.endpoint, self.apns_endpoint.map(Some));
        set(
            &mut c.apns.sandbox_endpoint,
            self.apns_sandbox_endpoint.map(Some),
        );
        set(&mut c.apns.key_file, self.apns_key_file.map(Some));
        set(&mut c.apns.key_id, self.apns_key_id.map(Some));
        set(&mut c.apns.team_id, self.apns_team_id.map(Some));
        set(&mut c.apns.topic, self.apns_topic.map(Some));
        set(&mut c.fcm.endpoint, self.fcm_endpoint.map(Some));
        set(
            &mut c.fcm.service_account_file,
            self.fcm_service_account_file.map(Some),
        );
        set(&mut c.engine.max_attempts, self.max_attempts);
        set(&mut c.engine.backoff_base_ms, self.backoff_base_ms);
        set(&mut c.engine.backoff_max_ms, self.backoff_max_ms);
        set(&mut c.engine.idle_timeout_secs, self.idle_timeout_secs);
        set(&mut c.engine.shards, self.shards);
        set(
            &mut c.engine.retry_after_max_secs,
            self.retry_after_max_secs,
        );
        set(
            &mut c.engine.provider_connections,
            self.provider_connections,
        );
        set(&mut c.engine.provider_streams, self.provider_streams);
        set(
            &mut c.providers.max_connection_age,
            self.provider_max_connection_age,
        );
        let w = &mut c.webhooks;
        set(&mut w.timeout_ms, self.webhook_timeout_ms);
        set(&mut w.backoff_base_ms, self.webhook_backoff_base_ms);
        set(&mut w.backoff_max_ms, self.webhook_backoff_max_ms);
        set(&mut w.max_age_secs, self.webhook_max_age_secs);
        set(&mut w.in_flight, self.webhook_in_flight);
        set(
            &mut w.allow_private_targets,
            self.webhook_allow_private_targets,
        );
        set(&mut c.events.retention_days, self.event_retention_days);
        let t = &mut c.templates;
        set(&mut t.max_iterations, self.template_max_iterations);
        set(&mut t.max_output_bytes, self.template_max_output_bytes);
        set(&mut t.max_render_cpu_ms, self.template_max_render_cpu_ms);
        set(&mut c.http.body_timeout_secs, self.http_body_timeout_secs);
        set(
            &mut c.http.max_connections,
            self.http_max_connections.map(Some),
        );
        let k = &mut c.cluster;
        set(
            &mut k.servers,
            self.cluster
                .map(|s| s.into_iter().filter(|u| !u.is_empty()).collect()),
        );
        set(&mut k.node, self.cluster_node.map(Some));
        set(&mut k.advertise, self.cluster_advertise.map(Some));
        set(&mut k.partitions, self.cluster_partitions);
        set(&mut k.replicas, self.cluster_replicas);
        set(&mut k.lease_ms, self.cluster_lease_ms);
        set(&mut k.forward_timeout_ms, self.cluster_forward_timeout_ms);
        set(&mut k.snapshot_secs, self.cluster_snapshot_secs);
        set(&mut k.secret_file, self.cluster_secret_file.map(Some));
        set(&mut k.secret, self.cluster_secret.map(Some));
        set(&mut k.user, self.cluster_user.map(Some));
        set(&mut k.password_file, self.cluster_password_file.map(Some));
        set(&mut k.password, self.cluster_password.map(Some));
        set(&mut k.token_file, self.cluster_token_file.map(Some));
        set(&mut k.token, self.cluster_token.map(Some));
        set(
            &mut k.credentials_file,
            self.cluster_credentials_file.map(Some),
        );
        set(&mut k.tls_ca_file, self.cluster_tls_ca_file.map(Some));
        set(&mut k.tls_cert_file, self.cluster_tls_cert_file.map(Some));
        set(&mut k.tls_key_file, self.cluster_tls_key_file.map(Some));
        set(&mut k.tls_required, self.cluster_tls_required);
        let compat = &mut c.compat;
        set(
            &mut compat.customerio_site_id,
            self.compat_customerio_site_id.map(Some),
        );
        set(
            &mut compat.ingest_write_keys,
            self.compat_ingest_write_keys
                .map(|keys| keys.into_iter().filter(|k| !k.is_empty()).collect()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9\"\n[apns]\ntopic = \"com.example\"\n[engine]\nmax_attempts = 3\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:10".into()),
            ..Default::default()
        };
        let c = o.load().unwrap();
        assert_eq!(c.listen, "127.0.0.1:10");
        assert_eq!(c.apns.topic.as_deref(), Some("com.example"));
        assert_eq!(c.engine.max_attempts, 3);
        assert_eq!(c.data_dir, PathBuf::from("./data"));

        std::fs::write(&path, "lissen = 1\n").unwrap();
        let bad = Overrides {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert!(matches!(bad.load(), Err(ConfigError::Parse { .. })));

        // A value of the wrong type is named in words, with its line.
        std::fs::write(&path, "[engine]\nmax_attempts = \"ten\"\n").unwrap();
        let wrong = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let said = wrong.load().unwrap_err().to_string();
        assert!(said.contains("expected a whole number"), "{said}");
        assert!(
            said.contains("max_attempts") && !said.contains("u32"),
            "{said}"
        );
    }

    #[test]
    fn webhook_and_event_settings_from_file_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(
            &path,
            "[webhooks]\ntimeout_ms = 250\nin_flight = 3\n[events]\nretention_days = 7\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path),
            webhook_max_age_secs: Some(60),
            event_retention_days: Some(3),
            ..Default::default()
        };
        let c = o.load().unwrap();
        let s = c.webhooks.settings();
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.max_age, Duration::from_secs(60));
        assert_eq!(s.in_flight, 3);
        assert_eq!(s.backoff_base, Duration::from_secs(1), "the default");
        assert!(
            !s.allow_private_targets,
            "private targets refused by default"
        );
        let o = Overrides {
            webhook_allow_private_targets: Some(true),
            ..Default::default()
        };
        assert!(o.load().unwrap().webhooks.settings().allow_private_targets);
        assert_eq!(
            c.events.options().retention,
            Duration::from_secs(3 * 24 * 3600)
        );
    }

    #[test]
    fn template_limits_from_file_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(
            &path,
            "[templates]
max_iterations = 500
",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path.clone()),
            template_max_render_cpu_ms: Some(40),
            ..Default::default()
        };
        let limits = o.load().unwrap().templates.limits();
        assert_eq!(limits.max_iterations, 500);
        assert_eq!(limits.max_output_bytes, 16 * 1024, "the default");
        assert_eq!(limits.max_render_cpu, Duration::from_millis(40));
        let zero = Overrides {
            config: Some(path),
            template_max_output_bytes: Some(0),
            ..Default::default()
        };
        let e = zero.load().unwrap_err().to_string();
        assert!(
            e.contains("[templates] max_output_bytes (PUSHD_TEMPLATE_MAX_OUTPUT_BYTES)"),
            "{e}"
        );
    }

    #[test]
    fn compat_settings_from_file_and_overrides() {
        assert_eq!(Config::default().compat, CompatSection::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(
            &path,
            "[compat]\ncustomerio_site_id = \"site-1\"\ningest_write_keys = [\"wk-file-0001\"]\n",
        )
        .unwrap();
        let c = Overrides {
            config: Some(path.clone()),
            ..Default::default()
        }
        .load()
        .unwrap();
        assert_eq!(c.compat.customerio_site_id.as_deref(), Some("site-1"));
        assert_eq!(c.compat.ingest_write_keys, ["wk-file-0001"]);
        let c = Overrides {
            config: Some(path),
            compat_ingest_write_keys: Some(vec![
                "wk-env-0001".into(),
                "".into(),
                "wk-env-0002".into(),
            ]),
            ..Default::default()
        }
        .load()
        .unwrap();
        assert_eq!(c.compat.ingest_write_keys, ["wk-env-0001", "wk-env-0002"]);
        for (o, variable) in [
            (
                Overrides {
                    compat_customerio_site_id: Some("a:b".into()),
                    ..Default::default()
                },
                "PUSHD_COMPAT_CUSTOMERIO_SITE_ID",
            ),
            (
                Overrides {
                    compat_ingest_write_keys: Some(vec!["short".into()]),
                    ..Default::default()
                },
                "PUSHD_COMPAT_INGEST_WRITE_KEYS",
            ),
        ] {
            let Err(ConfigError::Invalid(why)) = o.load() else {
                panic!("{variable} is refused")
            };
            assert!(why.contains(variable), "{why}");
        }
    }

    #[test]
    fn http_settings_from_file_and_overrides() {
        let c = Config::default();
        assert_eq!(c.http.body_timeout(), Duration::from_secs(10));
        assert_eq!(c.http.max_connections, None, "sized from the fd limit");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(
            &path,
            "[http]\nbody_timeout_secs = 3\nmax_connections = 500\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path.clone()),
            http_max_connections: Some(200),
            ..Default::default()
        };
        let c = o.load().unwrap();
        assert_eq!(c.http.body_timeout(), Duration::from_secs(3));
        assert_eq!(c.http.connection_limit(1024).max, 200);
        for (o, variable) in [
            (
                Overrides {
                    http_body_timeout_secs: Some(0),
                    ..Default::default()
                },
                "PUSHD_HTTP_BODY_TIMEOUT_SECS",
            ),
            (
                Overrides {
                    http_max_connections: Some(0),
                    ..Default::default()
                },
                "PUSHD_HTTP_MAX_CONNECTIONS",
            ),
        ] {
            let Err(ConfigError::Invalid(why)) = o.load() else {
                panic!("{variable} = 0 is refused")
            };
            assert!(why.contains(variable), "{why}");
        }
    }

    #[test]
    fn a_zero_count_is_refused_naming_its_setting() {
        for (field, variable) in [
            ("max_attempts", "PUSHD_MAX_ATTEMPTS"),
            ("provider_connections", "PUSHD_PROVIDER_CONNECTIONS"),
            ("provider_streams", "PUSHD_PROVIDER_STREAMS"),
            (
                "[providers] max_connection_age",
                "PUSHD_PROVIDER_MAX_CONNECTION_AGE",
            ),
        ] {
            let mut o = Overrides::default();
            match field {
                "max_attempts" => o.max_attempts = Some(0),
                "provider_connections" => o.provider_connections = Some(0),
                "provider_streams" => o.provider_streams = Some(0),
                _ => o.provider_max_connection_age = Some(0),
            }
            let Err(ConfigError::Invalid(why)) = o.load() else {
                panic!("{field} = 0 is refused")
            };
            assert!(why.contains(field) && why.contains(variable), "{why}");
        }
        let o = Overrides {
            webhook_in_flight: Some(0),
            ..Default::default()
        };
        assert!(matches!(o.load(), Err(ConfigError::Invalid(why)) if why.contains("in_flight")));
    }

    #[test]
    fn delivery_retention_from_file_and_overrides() {
        assert_eq!(Config::default().store.delivery_retention_days, 180);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(
            &path,
            "store_cache_mb = 32\n[store]\ndelivery_retention_days = 30\n",
        )
        .unwrap();
        let load = |o: Overrides| o.load();
        let c = load(Overrides {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (c.store_cache_mb, c.store.delivery_retention_days),
            (32, 30)
        );
        let c = load(Overrides {
            config: Some(path.clone()),
            delivery_retention_days: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.store.delivery_retention_days, 0, "0 keeps them for ever");

        let Err(ConfigError::Invalid(why)) = load(Overrides {
            delivery_retention_days: Some(MAX_RETENTION_DAYS + 1),
            ..Default::default()
        }) else {
            panic!("a retention past 100 years is refused")
        };
        assert!(
            why.contains("delivery_retention_days")
                && why.contains("PUSHD_DELIVERY_RETENTION_DAYS"),
            "{why}"
        );
        std::fs::write(&path, "[store]\ndelivery_retention = 30\n").unwrap();
        let typo = load(Overrides {
            config: Some(path),
            ..Default::default()
        });
        assert!(matches!(typo, Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn apps_sections_beside_the_default_app() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        let text = "[apns]\ntopic = \"com.example.main\"\n\
            [apps.shop.apns]\ntopic = \"com.example.shop\"\nsandbox_endpoint = \"http://127.0.0.1:9\"\n\
            [apps.shop.fcm]\nservice_account_file = \"shop.json\"\n";
        std::fs::write(&path, text).unwrap();
        let o = Overrides {
            config: Some(path.clone()),
            apns_sandbox_endpoint: Some("http://127.0.0.1:10".into()),
            ..Default::default()
        };
        let apps = o.load().unwrap().apps();
        assert_eq!(apps.keys().collect::<Vec<_>>(), ["default", "shop"]);
        let (main, shop) = (&apps["default"], &apps["shop"]);
        assert_eq!(main.apns.topic.as_deref(), Some("com.example.main"));
        assert_eq!(
            main.apns.sandbox_endpoint.as_deref(),
            Some("http://127.0.0.1:10")
        );
        assert_eq!(shop.apns.topic.as_deref(), Some("com.example.shop"));
        assert_eq!(
            shop.apns.sandbox_endpoint.as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(shop.fcm.service_account_file.as_deref(), Some("shop.json"));

        for bad in [
            "[apps.default.apns]\ntopic = \"x\"\n",
            "[apps.shop.apns]\ntopik = \"x\"\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let o = Overrides {
                config: Some(path.clone()),
                ..Default::default()
            };
            assert!(o.load().is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_secret_and_nats_credentials_are_checked_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let cluster = |o: Overrides| o.load().unwrap().cluster;
        let e = cluster(Overrides::default()).node_credential().unwrap_err();
        assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
        let short = Overrides {
            cluster_secret_file: Some(file("short.secret", "abc\n")),
            ..Default::default()
        };
        let e = cluster(short).node_credential().unwrap_err().to_string();
        assert!(
            e.contains("secret_file (PUSHD_CLUSTER_SECRET_FILE)") && e.contains("not 3"),
            "{e}"
        );
        let good = Overrides {
            cluster_secret_file: Some(file("good.secret", &format!("{}\n", "ab".repeat(32)))),
            ..Default::default()
        };
        assert!(cluster(good).node_credential().is_ok());

        let settings = |o: Overrides| cluster(o).settings("127.0.0.1:1").map(|s| s.access);
        let user_only = Overrides {
            cluster_user: Some("pushd".into()),
            ..Default::default()
        };
        let e = settings(user_only).unwrap_err().to_string();
        assert!(e.contains("PUSHD_CLUSTER_PASSWORD"), "{e}");
        let two_kinds = Overrides {
            cluster_user: Some("pushd".into()),
            cluster_password: Some("pw".into()),
            cluster_token: Some("token".into()),
            ..Default::default()
        };
        let e = settings(two_kinds).unwrap_err().to_string();
        assert!(e.contains("one kind of NATS credentials"), "{e}");
        let cert_only = Overrides {
            cluster_tls_cert_file: Some(file("cert.pem", "")),
            ..Default::default()
        };
        let e = settings(cert_only).unwrap_err().to_string();
        assert!(
            e.contains("tls_key_file (PUSHD_CLUSTER_TLS_KEY_FILE)"),
            "{e}"
        );
        let no_ca = Overrides {
            cluster_tls_ca_file: Some(dir.path().join("missing.pem")),
            ..Default::default()
        };
        let e = settings(no_ca).unwrap_err().to_string();
        assert!(e.contains("tls_ca_file (PUSHD_CLUSTER_TLS_CA_FILE)"), "{e}");
        let from_file = Overrides {
            cluster_user: Some("pushd".into()),
            cluster_password_file: Some(file("nats.password", "pw\n")),
            cluster_tls_required: Some(true),
            ..Default::default()
        };
        let access = settings(from_file).unwrap();
        assert!(matches!(
            access.auth,
            crate::cluster::access::NatsAuth::UserPassword { ref password, .. } if password == "pw"
        ));
        assert!(access.tls_required);
    }

    #[test]
    fn cluster_settings_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(&path, "[cluster]\nnode = \"n1\"\npartitions = 16\n").unwrap();
        let o = Overrides {
            config: Some(path.clone()),
            cluster: Some(vec![
                "nats://127.0.0.1:4222".into(),
                "nats://127.0.0.1:4223".into(),
            ]),
            cluster_lease_ms: Some(2000),
            ..Default::default()
        };
        let c = o.load().unwrap();
        assert!(c.cluster.enabled());
        let s = c.cluster.settings("127.0.0.1:8081").unwrap();
        assert_eq!(s.servers.len(), 2);
        assert_eq!(
            (s.node.as_str(), s.advertise.as_str()),
            ("n1", "127.0.0.1:8081")
        );
        assert_eq!((s.partitions, s.replicas), (16, 3));
        assert_eq!(s.lease, Duration::from_millis(2000));
        assert_eq!(
            s.forward_timeout,
            Duration::from_millis(2000),
            "the default"
        );
        assert!(
            !Config::default().cluster.enabled(),
            "a single node by default"
        );

        std::fs::write(&path, "[cluster]\npartitions = 0\n").unwrap();
        let c = Overrides {
            config: Some(path.clone()),
            ..Default::default()
        }
        .load()
        .unwrap();
        let e = c.cluster.settings("127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("partitions must be 1 to 1024, not 0"), "{e}");

        std::fs::write(&path, "[cluster]\nforward_timeout_ms = 750\n").unwrap();
        let file = || Overrides {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s = file()
            .load()
            .unwrap()
            .cluster
            .settings("127.0.0.1:1")
            .unwrap();
        assert_eq!(s.forward_timeout, Duration::from_millis(750));
        let c = Overrides {
            cluster_forward_timeout_ms: Some(0),
            ..file()
        }
        .load()
        .unwrap();
        let e = c.cluster.settings("127.0.0.1:1").unwrap_err().to_string();
        assert!(
            e.contains("forward_timeout_ms")
                && e.contains("PUSHD_CLUSTER_FORWARD_TIMEOUT_MS")
                && e.contains("not 0"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_listen_value_names_the_setting_and_shows_an_example() {
        let c = Config {
            listen: "localhost:80x0".into(),
            ..Config::default()
        };
        let e = c.listen_addrs().unwrap_err().to_string();
        assert!(e.contains("\"localhost:80x0\""), "{e}");
        assert!(e.contains("PUSHD_LISTEN") && e.contains("--listen"), "{e}");
        assert!(e.contains("127.0.0.1:8080"), "{e}");
        let ok = Config::default().listen_addrs().unwrap();
        assert_eq!(ok, vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
    }
}
