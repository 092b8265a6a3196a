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
    /// Whether the value is optional (`Option<_>`, `None` by default).
    optional: bool,
    /// Its default, as it prints.
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
        match self.optional {
            true => format!("Some({printed})"),
            false => printed,
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

macro_rules! setting {
    ($key:literal, $variable:expr, $flag:expr, $kind:ident, $default:literal, |$c:ident| $read:expr) => {
        setting!(@ $key, $variable, $flag, $kind, false, $default, |$c| $read)
    };
    ($key:literal, $variable:expr, $flag:expr, $kind:ident?, |$c:ident| $read:expr) => {
        setting!(@ $key, $variable, $flag, $kind, true, "None", |$c| $read)
    };
    (@ $key:literal, $variable:expr, $flag:expr, $kind:ident, $optional:expr, $default:literal, |$c:ident| $read:expr) => {
        Setting {
            key: $key,
            variable: $variable,
            flag: $flag,
            kind: Kind::$kind,
            optional: $optional,
            default: $default,
            read: |$c: &Config| format!("{:?}", $read),
        }
    };
}

/// Every setting pushd has.
fn settings() -> Vec<Setting> {
    let both = |variable, flag| (Some(variable), Some(flag));
    let (l, d) = both("PUSHD_LISTEN", "--listen");
    let (ak, sk) = (Some("PUSHD_API_KEY"), Some("PUSHD_SDK_KEY"));
    vec![
        setting!("listen", l, d, Text, "\"127.0.0.1:8080\"", |c| c.listen),
        setting!(
            "data_dir",
            Some("PUSHD_DATA_DIR"),
            Some("--data-dir"),
            Text,
            "\"./data\"",
            |c| c.data_dir
        ),
        setting!("api_key", ak, Some("--api-key"), Text?, |c| c.api_key),
        setting!("sdk_key", sk, Some("--sdk-key"), Text?, |c| c.sdk_key),
        setting!(
            "[keys] identity_verification",
            Some("PUSHD_IDENTITY_VERIFICATION"),
            Some("--identity-verification"),
            IdentityVerification?,
            |c| c.keys.identity_verification
        ),
        setting!(
            "max_body_bytes",
            Some("PUSHD_MAX_BODY_BYTES"),
            Some("--max-body-bytes"),
            Number,
            "1048576",
            |c| c.max_body_bytes
        ),
        setting!(
            "shutdown_timeout_secs",
            Some("PUSHD_SHUTDOWN_TIMEOUT_SECS"),
            Some("--shutdown-timeout-secs"),
            Number,
            "30",
            |c| c.shutdown_timeout_secs
        ),
        setting!(
            "store_cache_mb",
            Some("PUSHD_STORE_CACHE_MB"),
            Some("--store-cache-mb"),
            Number,
            "64",
            |c| c.store_cache_mb
        ),
        setting!(
            "[store] delivery_retention_days",
            Some("PUSHD_DELIVERY_RETENTION_DAYS"),
            Some("--delivery-retention-days"),
            Number,
            "180",
            |c| c.store.delivery_retention_days
        ),
        setting!(
            "[store] min_free_bytes",
            Some("PUSHD_MIN_FREE_BYTES"),
            Some("--min-free-bytes"),
            Number,
            "134217728",
            |c| c.store.min_free_bytes
        ),
        setting!(
            "[store] max_journal_queue_bytes",
            Some("PUSHD_MAX_JOURNAL_QUEUE_BYTES"),
            Some("--max-journal-queue-bytes"),
            Number,
            "67108864",
            |c| c.store.max_journal_queue_bytes
        ),
        setting!(
            "[store] max_undrained_records",
            Some("PUSHD_MAX_UNDRAINED_RECORDS"),
            Some("--max-undrained-records"),
            Number,
            "500000",
            |c| c.store.max_undrained_records
        ),
        setting!(
            "[apns] endpoint",
            Some("PUSHD_APNS_ENDPOINT"),
            Some("--apns-endpoint"),
            Text?,
            |c| c.apns.endpoint
        ),
        setting!(
            "[apns] sandbox_endpoint",
            Some("PUSHD_APNS_SANDBOX_ENDPOINT"),
            Some("--apns-sandbox-endpoint"),
            Text?,
            |c| c.apns.sandbox_endpoint
        ),
        setting!(
            "[apns] key_file",
            Some("PUSHD_APNS_KEY_FILE"),
            Some("--apns-key-file"),
            Text?,
            |c| c.apns.key_file
        ),
        setting!(
            "[apns] key_id",
            Some("PUSHD_APNS_KEY_ID"),
            Some("--apns-key-id"),
            Text?,
            |c| c.apns.key_id
        ),
        setting!(
            "[apns] team_id",
            Some("PUSHD_APNS_TEAM_ID"),
            Some("--apns-team-id"),
            Text?,
            |c| c.apns.team_id
        ),
        setting!(
            "[apns] topic",
            Some("PUSHD_APNS_TOPIC"),
            Some("--apns-topic"),
            Text?,
            |c| c.apns.topic
        ),
        setting!(
            "[fcm] endpoint",
            Some("PUSHD_FCM_ENDPOINT"),
            Some("--fcm-endpoint"),
            Text?,
            |c| c.fcm.endpoint
        ),
        setting!(
            "[fcm] service_account_file",
            Some("PUSHD_FCM_SERVICE_ACCOUNT_FILE"),
            Some("--fcm-service-account-file"),
            Text?,
            |c| c.fcm.service_account_file
        ),
        setting!(
            "[engine] max_attempts",
            Some("PUSHD_MAX_ATTEMPTS"),
            Some("--max-attempts"),
            Number,
            "10",
            |c| c.engine.max_attempts
        ),
        setting!(
            "[engine] backoff_base_ms",
            Some("PUSHD_BACKOFF_BASE_MS"),
            Some("--backoff-base-ms"),
            Number,
            "200",
            |c| c.engine.backoff_base_ms
        ),
        setting!(
            "[engine] backoff_max_ms",
            Some("PUSHD_BACKOFF_MAX_MS"),
            Some("--backoff-max-ms"),
            Number,
            "60000",
            |c| c.engine.backoff_max_ms
        ),
        setting!(
            "[engine] idle_timeout_secs",
            Some("PUSHD_IDLE_TIMEOUT_SECS"),
            Some("--idle-timeout-secs"),
            Number,
            "60",
            |c| c.engine.idle_timeout_secs
        ),
        setting!(
            "[engine] shards",
            Some("PUSHD_SHARDS"),
            Some("--shards"),
            Number,
            "0",
            |c| c.engine.shards
        ),
        setting!(
            "[engine] retry_after_max_secs",
            Some("PUSHD_RETRY_AFTER_MAX_SECS"),
            Some("--retry-after-max-secs"),
            Number,
            "900",
            |c| c.engine.retry_after_max_secs
        ),
        setting!(
            "[engine] provider_connections",
            Some("PUSHD_PROVIDER_CONNECTIONS"),
            Some("--provider-connections"),
            Number,
            "2",
            |c| c.engine.provider_connections
        ),
        setting!(
            "[engine] provider_streams",
            Some("PUSHD_PROVIDER_STREAMS"),
            Some("--provider-streams"),
            Number,
            "1000",
            |c| c.engine.provider_streams
        ),
        setting!(
            "[providers] max_connection_age",
            Some("PUSHD_PROVIDER_MAX_CONNECTION_AGE"),
            Some("--provider-max-connection-age"),
            Number,
            "1800",
            |c| c.providers.max_connection_age
        ),
        setting!(
            "[webhooks] timeout_ms",
            Some("PUSHD_WEBHOOK_TIMEOUT_MS"),
            Some("--webhook-timeout-ms"),
            Number,
            "4000",
            |c| c.webhooks.timeout_ms
        ),
        setting!(
            "[webhooks] backoff_base_ms",
            Some("PUSHD_WEBHOOK_BACKOFF_BASE_MS"),
            Some("--webhook-backoff-base-ms"),
            Number,
            "1000",
            |c| c.webhooks.backoff_base_ms
        ),
        setting!(
            "[webhooks] backoff_max_ms",
            Some("PUSHD_WEBHOOK_BACKOFF_MAX_MS"),
            Some("--webhook-backoff-max-ms"),
            Number,
            "900000",
            |c| c.webhooks.backoff_max_ms
        ),
        setting!(
            "[webhooks] max_age_secs",
            Some("PUSHD_WEBHOOK_MAX_AGE_SECS"),
            Some("--webhook-max-age-secs"),
            Number,
            "86400",
            |c| c.webhooks.max_age_secs
        ),
        setting!(
            "[webhooks] in_flight",
            Some("PUSHD_WEBHOOK_IN_FLIGHT"),
            Some("--webhook-in-flight"),
            Number,
            "16",
            |c| c.webhooks.in_flight
        ),
        setting!(
            "[webhooks] allow_private_targets",
            Some("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS"),
            Some("--webhook-allow-private-targets"),
            Switch,
            "false",
            |c| c.webhooks.allow_private_targets
        ),
        setting!(
            "[templates] max_iterations",
            Some("PUSHD_TEMPLATE_MAX_ITERATIONS"),
            Some("--template-max-iterations"),
            Number,
            "10000",
            |c| c.templates.max_iterations
        ),
        setting!(
            "[templates] max_output_bytes",
            Some("PUSHD_TEMPLATE_MAX_OUTPUT_BYTES"),
            Some("--template-max-output-bytes"),
            Number,
            "16384",
            |c| c.templates.max_output_bytes
        ),
        setting!(
            "[templates] max_render_cpu_ms",
            Some("PUSHD_TEMPLATE_MAX_RENDER_CPU_MS"),
            Some("--template-max-render-cpu-ms"),
            Number,
            "100",
            |c| c.templates.max_render_cpu_ms
        ),
        setting!(
            "[http] body_timeout_secs",
            Some("PUSHD_HTTP_BODY_TIMEOUT_SECS"),
            Some("--http-body-timeout-secs"),
            Number,
            "10",
            |c| c.http.body_timeout_secs
        ),
        setting!(
            "[http] max_connections",
            Some("PUSHD_HTTP_MAX_CONNECTIONS"),
            Some("--http-max-connections"),
            Number?,
            |c| c.http.max_connections
        ),
        setting!(
            "[events] retention_days",
            Some("PUSHD_EVENT_RETENTION_DAYS"),
            Some("--event-retention-days"),
            Number,
            "30",
            |c| c.events.retention_days
        ),
        setting!(
            "[cluster] servers",
            Some("PUSHD_CLUSTER"),
            Some("--cluster"),
            List,
            "[]",
            |c| c.cluster.servers
        ),
        setting!(
            "[cluster] node",
            Some("PUSHD_CLUSTER_NODE"),
            Some("--cluster-node"),
            Text?,
            |c| c.cluster.node
        ),
        setting!(
            "[cluster] advertise",
            Some("PUSHD_CLUSTER_ADVERTISE"),
            Some("--cluster-advertise"),
            Text?,
            |c| c.cluster.advertise
        ),
        setting!(
            "[cluster] partitions",
            Some("PUSHD_CLUSTER_PARTITIONS"),
            Some("--cluster-partitions"),
            Number,
            "64",
            |c| c.cluster.partitions
        ),
        setting!(
            "[cluster] replicas",
            Some("PUSHD_CLUSTER_REPLICAS"),
            Some("--cluster-replicas"),
            Number,
            "3",
            |c| c.cluster.replicas
        ),
        setting!(
            "[cluster] lease_ms",
            Some("PUSHD_CLUSTER_LEASE_MS"),
            Some("--cluster-lease-ms"),
            Number,
            "10000",
            |c| c.cluster.lease_ms
        ),
        setting!(
            "[cluster] forward_timeout_ms",
            Some("PUSHD_CLUSTER_FORWARD_TIMEOUT_MS"),
            Some("--cluster-forward-timeout-ms"),
            Number,
            "2000",
            |c| c.cluster.forward_timeout_ms
        ),
        setting!(
            "[cluster] snapshot_secs",
            Some("PUSHD_CLUSTER_SNAPSHOT_SECS"),
            Some("--cluster-snapshot-secs"),
            Number,
            "10",
            |c| c.cluster.snapshot_secs
        ),
        setting!("[cluster] prefix", None, None, Text, "\"pushd\"", |c| c
            .cluster
            .prefix),
        setting!(
            "[cluster] secret_file",
            Some("PUSHD_CLUSTER_SECRET_FILE"),
            Some("--cluster-secret-file"),
            Text?,
            |c| c.cluster.secret_file
        ),
        setting!(
            "[cluster] user",
            Some("PUSHD_CLUSTER_USER"),
            Some("--cluster-user"),
            Text?,
            |c| c.cluster.user
        ),
        setting!(
            "[cluster] password_file",
            Some("PUSHD_CLUSTER_PASSWORD_FILE"),
            Some("--cluster-password-file"),
            Text?,
            |c| c.cluster.password_file
        ),
        setting!(
            "[cluster] token_file",
            Some("PUSHD_CLUSTER_TOKEN_FILE"),
            Some("--cluster-token-file"),
            Text?,
            |c| c.cluster.token_file
        ),
        setting!(
            "[cluster] credentials_file",
            Some("PUSHD_CLUSTER_CREDENTIALS_FILE"),
            Some("--cluster-credentials-file"),
            Text?,
            |c| c.cluster.credentials_file
        ),
        setting!(
            "[cluster] tls_ca_file",
            Some("PUSHD_CLUSTER_TLS_CA_FILE"),
            Some("--cluster-tls-ca-file"),
            Text?,
            |c| c.cluster.tls_ca_file
        ),
        setting!(
            "[cluster] tls_cert_file",
            Some("PUSHD_CLUSTER_TLS_CERT_FILE"),
            Some("--cluster-tls-cert-file"),
            Text?,
            |c| c.cluster.tls_cert_file
        ),
        setting!(
            "[cluster] tls_key_file",
            Some("PUSHD_CLUSTER_TLS_KEY_FILE"),
            Some("--cluster-tls-key-file"),
            Text?,
            |c| c.cluster.tls_key_file
        ),
        setting!(
            "[cluster] tls_required",
            Some("PUSHD_CLUSTER_TLS_REQUIRED"),
            Some("--cluster-tls-required"),
            Switch,
            "false",
            |c| c.cluster.tls_required
        ),
        setting!(
            "[compat] customerio_site_id",
            Some("PUSHD_COMPAT_CUSTOMERIO_SITE_ID"),
            Some("--compat-customerio-site-id"),
            Text?,
            |c| c.compat.customerio_site_id
        ),
        setting!(
            "[compat] ingest_write_keys",
            Some("PUSHD_COMPAT_INGEST_WRITE_KEYS"),
            Some("--compat-ingest-write-keys"),
            List,
            "[]",
            |c| c.compat.ingest_write_keys
        ),
    ]
}

/// The secrets only a variable gives: no flag (which `ps` would show),
/// nothing in the file.
fn secrets() -> [(&'static str, fn(&Config) -> Option<String>); 3] {
    [
        ("PUSHD_CLUSTER_SECRET", |c| c.cluster.secret.clone()),
        ("PUSHD_CLUSTER_PASSWORD", |c| c.cluster.password.clone()),
        ("PUSHD_CLUSTER_TOKEN", |c| c.cluster.token.clone()),
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
