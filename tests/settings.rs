//! Every setting's effective value as `pushd serve` takes it: its default,
//! then the file setting it, then its environment variable over the file,
//! then its flag over both. The configuration is parsed by the same
//! `Overrides` the `serve`, `keys` and `restore` commands flatten.
//!
//! The process's environment is set here, so this binary holds this one
//! test: no other thread reads the environment while it runs.

use clap::{Args, FromArgMatches};
use pushd::config::{Config, Overrides};

/// How a setting's values are written and how its value prints (`{:?}`).
#[derive(Clone, Copy)]
enum Kind {
    /// A whole number.
    Number,
    /// A string or a path.
    Text,
    /// `true` or `false`.
    Switch,
    /// A list: comma-separated in a variable or a flag.
    List,
    /// `required` or `off`.
    IdentityVerification,
}

/// One setting: where it is set and how to read it from the configuration.
struct Setting {
    /// `[section] key`, or `key` at the top level.
    key: &'static str,
    /// Its environment variable, if it has one.
    variable: Option<&'static str>,
    /// Its flag, if it has one.
    flag: Option<&'static str>,
    kind: Kind,
    /// Its default, as it prints: `None` for an optional one.
    default: &'static str,
    /// Reads it, as it prints.
    read: fn(&Config) -> String,
}

/// The values set in each layer: the file's, the variable's, the flag's.
fn values(kind: Kind) -> [&'static str; 3] {
    match kind {
        Kind::Number => ["101", "102", "103"],
        Kind::Text => ["file-value-00001", "env-value-000001", "flag-value-00001"],
        Kind::Switch => ["true", "false", "true"],
        Kind::List => ["file-value-00001", "env-value-000001", "flag-value-00001"],
        Kind::IdentityVerification => ["off", "required", "off"],
    }
}

impl Setting {
    /// The file setting it to `value`.
    fn file(&self, value: &str) -> String {
        let (section, key) = match self.key.split_once(' ') {
            Some((section, key)) => (format!("{section}\n"), key),
            None => (String::new(), self.key),
        };
        let value = match self.kind {
            Kind::Number | Kind::Switch => value.to_string(),
            Kind::Text | Kind::IdentityVerification => format!("{value:?}"),
            Kind::List => format!("[{value:?}]"),
        };
        format!("{section}{key} = {value}\n")
    }

    /// How it prints once set to `value`.
    fn printed(&self, value: &str) -> String {
        let printed = match self.kind {
            Kind::Number | Kind::Switch => value.to_string(),
            Kind::Text => format!("{value:?}"),
            Kind::List => format!("[{value:?}]"),
            Kind::IdentityVerification => match value {
                "off" => "Off".into(),
                _ => "Required".into(),
            },
        };
        match self.default {
            "None" => format!("Some({printed})"),
            _ => printed,
        }
    }
}

/// The configuration `pushd serve <args>` loads.
fn load(args: &[&str]) -> Config {
    let command = Overrides::augment_args(clap::Command::new("pushd"));
    let matches = command
        .try_get_matches_from(std::iter::once("pushd").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let overrides = Overrides::from_arg_matches(&matches).unwrap();
    overrides.load().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn set_variable(name: &str, value: &str) {
    // SAFETY: this binary's only test runs alone: no other thread reads
    // or writes the environment meanwhile.
    unsafe { std::env::set_var(name, value) }
}

fn remove_variable(name: &str) {
    // SAFETY: as in `set_variable`.
    unsafe { std::env::remove_var(name) }
}

/// `Some` of a name, or `None` for `_`.
macro_rules! name {
    (_) => {
        None
    };
    ($name:literal) => {
        Some($name)
    };
}

/// The settings' table: key, variable, flag (`_` for none), kind, default
/// as it prints (`None` for an optional one), how to read it.
macro_rules! settings {
    ($($key:literal, $variable:tt, $flag:tt, $kind:ident, $default:literal, |$c:ident| $read:expr;)*) => {
        vec![$(
            Setting {
                key: $key,
                variable: name!($variable),
                flag: name!($flag),
                kind: Kind::$kind,
                default: $default,
                read: |$c: &Config| format!("{:?}", $read),
            },
        )*]
    };
}

/// Every setting pushd has.
fn settings() -> Vec<Setting> {
    settings! {
        "listen", "PUSHD_LISTEN", "--listen", Text, "\"127.0.0.1:8080\"", |c| c.listen;
        "data_dir", "PUSHD_DATA_DIR", "--data-dir", Text, "\"./data\"", |c| c.data_dir;
        "api_key", "PUSHD_API_KEY", "--api-key", Text, "None", |c| c.api_key;
        "sdk_key", "PUSHD_SDK_KEY", "--sdk-key", Text, "None", |c| c.sdk_key;
        "[keys] identity_verification", "PUSHD_IDENTITY_VERIFICATION", "--identity-verification", IdentityVerification, "None", |c| c.keys.identity_verification;
        "max_body_bytes", "PUSHD_MAX_BODY_BYTES", "--max-body-bytes", Number, "1048576", |c| c.max_body_bytes;
        "shutdown_timeout_secs", "PUSHD_SHUTDOWN_TIMEOUT_SECS", "--shutdown-timeout-secs", Number, "30", |c| c.shutdown_timeout_secs;
        "store_cache_mb", "PUSHD_STORE_CACHE_MB", "--store-cache-mb", Number, "64", |c| c.store_cache_mb;
        "[store] delivery_retention_days", "PUSHD_DELIVERY_RETENTION_DAYS", "--delivery-retention-days", Number, "180", |c| c.store.delivery_retention_days;
        "[store] min_free_bytes", "PUSHD_MIN_FREE_BYTES", "--min-free-bytes", Number, "134217728", |c| c.store.min_free_bytes;
        "[store] max_journal_queue_bytes", "PUSHD_MAX_JOURNAL_QUEUE_BYTES", "--max-journal-queue-bytes", Number, "67108864", |c| c.store.max_journal_queue_bytes;
        "[store] max_undrained_records", "PUSHD_MAX_UNDRAINED_RECORDS", "--max-undrained-records", Number, "500000", |c| c.store.max_undrained_records;
        "[apns] endpoint", "PUSHD_APNS_ENDPOINT", "--apns-endpoint", Text, "None", |c| c.apns.endpoint;
        "[apns] sandbox_endpoint", "PUSHD_APNS_SANDBOX_ENDPOINT", "--apns-sandbox-endpoint", Text, "None", |c| c.apns.sandbox_endpoint;
        "[apns] key_file", "PUSHD_APNS_KEY_FILE", "--apns-key-file", Text, "None", |c| c.apns.key_file;
        "[apns] key_id", "PUSHD_APNS_KEY_ID", "--apns-key-id", Text, "None", |c| c.apns.key_id;
        "[apns] team_id", "PUSHD_APNS_TEAM_ID", "--apns-team-id", Text, "None", |c| c.apns.team_id;
        "[apns] topic", "PUSHD_APNS_TOPIC", "--apns-topic", Text, "None", |c| c.apns.topic;
        "[fcm] endpoint", "PUSHD_FCM_ENDPOINT", "--fcm-endpoint", Text, "None", |c| c.fcm.endpoint;
        "[fcm] service_account_file", "PUSHD_FCM_SERVICE_ACCOUNT_FILE", "--fcm-service-account-file", Text, "None", |c| c.fcm.service_account_file;
        "[engine] max_attempts", "PUSHD_MAX_ATTEMPTS", "--max-attempts", Number, "10", |c| c.engine.max_attempts;
        "[engine] backoff_base_ms", "PUSHD_BACKOFF_BASE_MS", "--backoff-base-ms", Number, "200", |c| c.engine.backoff_base_ms;
        "[engine] backoff_max_ms", "PUSHD_BACKOFF_MAX_MS", "--backoff-max-ms", Number, "60000", |c| c.engine.backoff_max_ms;
        "[engine] idle_timeout_secs", "PUSHD_IDLE_TIMEOUT_SECS", "--idle-timeout-secs", Number, "60", |c| c.engine.idle_timeout_secs;
        "[engine] shards", "PUSHD_SHARDS", "--shards", Number, "0", |c| c.engine.shards;
        "[engine] retry_after_max_secs", "PUSHD_RETRY_AFTER_MAX_SECS", "--retry-after-max-secs", Number, "900", |c| c.engine.retry_after_max_secs;
        "[engine] provider_connections", "PUSHD_PROVIDER_CONNECTIONS", "--provider-connections", Number, "2", |c| c.engine.provider_connections;
        "[engine] provider_streams", "PUSHD_PROVIDER_STREAMS", "--provider-streams", Number, "1000", |c| c.engine.provider_streams;
        "[providers] max_connection_age", "PUSHD_PROVIDER_MAX_CONNECTION_AGE", "--provider-max-connection-age", Number, "1800", |c| c.providers.max_connection_age;
        "[webhooks] timeout_ms", "PUSHD_WEBHOOK_TIMEOUT_MS", "--webhook-timeout-ms", Number, "4000", |c| c.webhooks.timeout_ms;
        "[webhooks] backoff_base_ms", "PUSHD_WEBHOOK_BACKOFF_BASE_MS", "--webhook-backoff-base-ms", Number, "1000", |c| c.webhooks.backoff_base_ms;
        "[webhooks] backoff_max_ms", "PUSHD_WEBHOOK_BACKOFF_MAX_MS", "--webhook-backoff-max-ms", Number, "900000", |c| c.webhooks.backoff_max_ms;
        "[webhooks] max_age_secs", "PUSHD_WEBHOOK_MAX_AGE_SECS", "--webhook-max-age-secs", Number, "86400", |c| c.webhooks.max_age_secs;
        "[webhooks] in_flight", "PUSHD_WEBHOOK_IN_FLIGHT", "--webhook-in-flight", Number, "16", |c| c.webhooks.in_flight;
        "[webhooks] allow_private_targets", "PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "--webhook-allow-private-targets", Switch, "false", |c| c.webhooks.allow_private_targets;
        "[templates] max_iterations", "PUSHD_TEMPLATE_MAX_ITERATIONS", "--template-max-iterations", Number, "10000", |c| c.templates.max_iterations;
        "[templates] max_output_bytes", "PUSHD_TEMPLATE_MAX_OUTPUT_BYTES", "--template-max-output-bytes", Number, "16384", |c| c.templates.max_output_bytes;
        "[templates] max_render_cpu_ms", "PUSHD_TEMPLATE_MAX_RENDER_CPU_MS", "--template-max-render-cpu-ms", Number, "100", |c| c.templates.max_render_cpu_ms;
        "[http] body_timeout_secs", "PUSHD_HTTP_BODY_TIMEOUT_SECS", "--http-body-timeout-secs", Number, "10", |c| c.http.body_timeout_secs;
        "[http] max_connections", "PUSHD_HTTP_MAX_CONNECTIONS", "--http-max-connections", Number, "None", |c| c.http.max_connections;
        "[events] retention_days", "PUSHD_EVENT_RETENTION_DAYS", "--event-retention-days", Number, "30", |c| c.events.retention_days;
        "[cluster] servers", "PUSHD_CLUSTER", "--cluster", List, "[]", |c| c.cluster.servers;
        "[cluster] node", "PUSHD_CLUSTER_NODE", "--cluster-node", Text, "None", |c| c.cluster.node;
        "[cluster] advertise", "PUSHD_CLUSTER_ADVERTISE", "--cluster-advertise", Text, "None", |c| c.cluster.advertise;
        "[cluster] partitions", "PUSHD_CLUSTER_PARTITIONS", "--cluster-partitions", Number, "64", |c| c.cluster.partitions;
        "[cluster] replicas", "PUSHD_CLUSTER_REPLICAS", "--cluster-replicas", Number, "3", |c| c.cluster.replicas;
        "[cluster] lease_ms", "PUSHD_CLUSTER_LEASE_MS", "--cluster-lease-ms", Number, "10000", |c| c.cluster.lease_ms;
        "[cluster] forward_timeout_ms", "PUSHD_CLUSTER_FORWARD_TIMEOUT_MS", "--cluster-forward-timeout-ms", Number, "2000", |c| c.cluster.forward_timeout_ms;
        "[cluster] snapshot_secs", "PUSHD_CLUSTER_SNAPSHOT_SECS", "--cluster-snapshot-secs", Number, "10", |c| c.cluster.snapshot_secs;
        "[cluster] prefix", _, _, Text, "\"pushd\"", |c| c.cluster.prefix;
        "[cluster] secret_file", "PUSHD_CLUSTER_SECRET_FILE", "--cluster-secret-file", Text, "None", |c| c.cluster.secret_file;
        "[cluster] user", "PUSHD_CLUSTER_USER", "--cluster-user", Text, "None", |c| c.cluster.user;
        "[cluster] password_file", "PUSHD_CLUSTER_PASSWORD_FILE", "--cluster-password-file", Text, "None", |c| c.cluster.password_file;
        "[cluster] token_file", "PUSHD_CLUSTER_TOKEN_FILE", "--cluster-token-file", Text, "None", |c| c.cluster.token_file;
        "[cluster] nkey_seed_file", "PUSHD_CLUSTER_NKEY_SEED_FILE", "--cluster-nkey-seed-file", Text, "None", |c| c.cluster.nkey_seed_file;
        "[cluster] credentials_file", "PUSHD_CLUSTER_CREDENTIALS_FILE", "--cluster-credentials-file", Text, "None", |c| c.cluster.credentials_file;
        "[cluster] tls_ca_file", "PUSHD_CLUSTER_TLS_CA_FILE", "--cluster-tls-ca-file", Text, "None", |c| c.cluster.tls_ca_file;
        "[cluster] tls_cert_file", "PUSHD_CLUSTER_TLS_CERT_FILE", "--cluster-tls-cert-file", Text, "None", |c| c.cluster.tls_cert_file;
        "[cluster] tls_key_file", "PUSHD_CLUSTER_TLS_KEY_FILE", "--cluster-tls-key-file", Text, "None", |c| c.cluster.tls_key_file;
        "[cluster] tls_required", "PUSHD_CLUSTER_TLS_REQUIRED", "--cluster-tls-required", Switch, "false", |c| c.cluster.tls_required;
        "[compat] customerio_site_id", "PUSHD_COMPAT_CUSTOMERIO_SITE_ID", "--compat-customerio-site-id", Text, "None", |c| c.compat.customerio_site_id;
        "[compat] ingest_write_keys", "PUSHD_COMPAT_INGEST_WRITE_KEYS", "--compat-ingest-write-keys", List, "[]", |c| c.compat.ingest_write_keys;
    }
}

/// Reads a secret only a variable gives.
type ReadSecret = fn(&Config) -> Option<String>;

/// The secrets only a variable gives: no flag (which `ps` would show),
/// nothing in the file.
fn secrets() -> [(&'static str, ReadSecret); 4] {
    [
        ("PUSHD_CLUSTER_SECRET", |c| c.cluster.secret.clone()),
        ("PUSHD_CLUSTER_PASSWORD", |c| c.cluster.password.clone()),
        ("PUSHD_CLUSTER_TOKEN", |c| c.cluster.token.clone()),
        ("PUSHD_CLUSTER_NKEY_SEED", |c| c.cluster.nkey_seed.clone()),
    ]
}

#[test]
fn every_setting_from_its_default_the_file_its_variable_and_its_flag() {
    let mine: Vec<_> = std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("PUSHD_"))
        .collect();
    for name in mine {
        remove_variable(&name);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushd.toml");
    let config = path.to_str().unwrap();
    std::fs::write(&path, "").unwrap();
    let defaults = load(&["--config", config]);
    for setting in settings() {
        let key = setting.key;
        let [file, variable, flag] = values(setting.kind);
        assert_eq!((setting.read)(&defaults), setting.default, "{key}: default");

        std::fs::write(&path, setting.file(file)).unwrap();
        let c = load(&["--config", config]);
        assert_eq!((setting.read)(&c), setting.printed(file), "{key}: file");

        if let Some(name) = setting.variable {
            set_variable(name, variable);
            let c = load(&["--config", config]);
            assert_eq!(
                (setting.read)(&c),
                setting.printed(variable),
                "{key}: {name}"
            );
        }
        if let Some(name) = setting.flag {
            let c = load(&["--config", config, name, flag]);
            assert_eq!((setting.read)(&c), setting.printed(flag), "{key}: {name}");
        }
        if let Some(name) = setting.variable {
            remove_variable(name);
        }
    }
    // A list given in a variable or a flag is comma-separated; empty items
    // are dropped.
    for (name, read) in [
        (
            "PUSHD_CLUSTER",
            (|c| c.cluster.servers.clone()) as fn(&Config) -> Vec<String>,
        ),
        ("PUSHD_COMPAT_INGEST_WRITE_KEYS", |c| {
            c.compat.ingest_write_keys.clone()
        }),
    ] {
        set_variable(name, "env-value-000001,,env-value-000002");
        let c = load(&["--config", config]);
        assert_eq!(read(&c), ["env-value-000001", "env-value-000002"], "{name}");
        remove_variable(name);
    }
    let c = load(&[
        "--cluster",
        "nats://a:4222",
        "--cluster",
        "nats://b:4222,nats://c:4222",
    ]);
    assert_eq!(
        c.cluster.servers,
        ["nats://a:4222", "nats://b:4222", "nats://c:4222"],
        "--cluster repeated adds servers"
    );
    // A file key the environment does not give: the file's value stays.
    std::fs::write(&path, "[cluster]\nsecret_file = \"s\"\n").unwrap();
    for (name, read) in secrets() {
        assert_eq!(read(&load(&["--config", config])), None, "{name}: default");
        set_variable(name, "env-secret-value");
        let c = load(&["--config", config]);
        assert_eq!(read(&c).as_deref(), Some("env-secret-value"), "{name}");
        remove_variable(name);
    }
    for secret in ["secret", "password", "token"] {
        std::fs::write(&path, format!("[cluster]\n{secret} = \"x\"\n")).unwrap();
        let command = Overrides::augment_args(clap::Command::new("pushd"));
        let matches = command.get_matches_from(["pushd", "--config", config]);
        let refused = Overrides::from_arg_matches(&matches).unwrap().load();
        assert!(
            refused.is_err(),
            "[cluster] {secret} in the file is refused"
        );
    }
}
