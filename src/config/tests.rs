//! The configuration as `pushd serve` loads it: defaults, the file, then
//! the flags (given here as a user types them).

use super::*;

/// The configuration `pushd serve <args>` loads (with the environment's
/// `PUSHD_*` variables, as the daemon's).
fn load(args: &[&str]) -> Result<Config, ConfigError> {
    let command = Overrides::augment_args(Command::new("pushd"));
    let matches = command
        .try_get_matches_from(std::iter::once("pushd").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    Overrides::from_arg_matches(&matches).unwrap().load()
}

/// A `pushd.toml` holding `text`, in a directory kept as long as it is.
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl File {
    fn new(text: &str) -> File {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushd.toml");
        std::fs::write(&path, text).unwrap();
        File { _dir: dir, path }
    }

    /// The configuration loaded from this file and `flags`.
    fn load(&self, flags: &[&str]) -> Result<Config, ConfigError> {
        let path = self.path.to_str().unwrap();
        let args: Vec<&str> = ["--config", path]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        load(&args)
    }

    fn rewrite(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }
}

#[test]
fn file_then_overrides() {
    let file = File::new(
        "listen = \"127.0.0.1:9\"\n[apns]\ntopic = \"com.example\"\n[engine]\nmax_attempts = 3\n",
    );
    let c = file.load(&["--listen", "127.0.0.1:10"]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:10");
    assert_eq!(c.apns.topic.as_deref(), Some("com.example"));
    assert_eq!(c.engine.max_attempts, 3);
    assert_eq!(c.data_dir, PathBuf::from("./data"));

    file.rewrite("lissen = 1\n");
    assert!(matches!(file.load(&[]), Err(ConfigError::Parse { .. })));

    // A value of the wrong type is named in words, with its line.
    file.rewrite("[engine]\nmax_attempts = \"ten\"\n");
    let said = file.load(&[]).unwrap_err().to_string();
    assert!(said.contains("expected a whole number"), "{said}");
    assert!(
        said.contains("max_attempts") && !said.contains("u32"),
        "{said}"
    );
}

#[test]
fn webhook_and_event_settings_from_file_and_overrides() {
    let file =
        File::new("[webhooks]\ntimeout_ms = 250\nin_flight = 3\n[events]\nretention_days = 7\n");
    let c = file
        .load(&[
            "--webhook-max-age-secs",
            "60",
            "--event-retention-days",
            "3",
        ])
        .unwrap();
    let s = c.webhooks.settings();
    assert_eq!(s.timeout, Duration::from_millis(250));
    assert_eq!(s.max_age, Duration::from_secs(60));
    assert_eq!(s.in_flight, 3);
    assert_eq!(s.backoff_base, Duration::from_secs(1), "the default");
    assert!(
        !s.allow_private_targets,
        "private targets refused by default"
    );
    let allowed = load(&["--webhook-allow-private-targets", "true"]).unwrap();
    assert!(allowed.webhooks.settings().allow_private_targets);
    assert_eq!(
        c.events.options().retention,
        Duration::from_secs(3 * 24 * 3600)
    );
}

#[test]
fn template_limits_from_file_and_overrides() {
    let file = File::new("[templates]\nmax_iterations = 500\n");
    let limits = file
        .load(&["--template-max-render-cpu-ms", "40"])
        .unwrap()
        .templates
        .limits();
    assert_eq!(limits.max_iterations, 500);
    assert_eq!(limits.max_output_bytes, 16 * 1024, "the default");
    assert_eq!(limits.max_render_cpu, Duration::from_millis(40));
    let e = file
        .load(&["--template-max-output-bytes", "0"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[templates] max_output_bytes (PUSHD_TEMPLATE_MAX_OUTPUT_BYTES)"),
        "{e}"
    );
}

#[test]
fn compat_settings_from_file_and_overrides() {
    assert_eq!(Config::default().compat, CompatSection::default());
    let file = File::new(
        "[compat]\ncustomerio_site_id = \"site-1\"\ningest_write_keys = [\"wk-file-0001\"]\n",
    );
    let c = file.load(&[]).unwrap();
    assert_eq!(c.compat.customerio_site_id.as_deref(), Some("site-1"));
    assert_eq!(c.compat.ingest_write_keys, ["wk-file-0001"]);
    let c = file
        .load(&["--compat-ingest-write-keys", "wk-env-0001,,wk-env-0002"])
        .unwrap();
    assert_eq!(c.compat.ingest_write_keys, ["wk-env-0001", "wk-env-0002"]);
    for (flags, variable) in [
        (
            ["--compat-customerio-site-id", "a:b"],
            "PUSHD_COMPAT_CUSTOMERIO_SITE_ID",
        ),
        (
            ["--compat-ingest-write-keys", "short"],
            "PUSHD_COMPAT_INGEST_WRITE_KEYS",
        ),
    ] {
        let Err(ConfigError::Invalid(why)) = load(&flags) else {
            panic!("{variable} is refused")
        };
        assert!(why.contains(variable), "{why}");
    }
}

#[test]
fn http_settings_from_file_and_overrides() {
    let c = Config::default();
    assert_eq!(c.http.body_timeout(), Duration::from_secs(10));
    assert_eq!(
        c.http.max_connections, None,
        "sized from the open files limit"
    );
    let file = File::new("[http]\nbody_timeout_secs = 3\nmax_connections = 500\n");
    let c = file.load(&["--http-max-connections", "200"]).unwrap();
    assert_eq!(c.http.body_timeout(), Duration::from_secs(3));
    assert_eq!(c.http.connection_limit(1024).max, 200);
    for (flag, variable) in [
        ("--http-body-timeout-secs", "PUSHD_HTTP_BODY_TIMEOUT_SECS"),
        ("--http-max-connections", "PUSHD_HTTP_MAX_CONNECTIONS"),
    ] {
        let Err(ConfigError::Invalid(why)) = load(&[flag, "0"]) else {
            panic!("{variable} = 0 is refused")
        };
        assert!(why.contains(variable), "{why}");
    }
}

#[test]
fn a_zero_count_is_refused_naming_its_setting() {
    for (flag, setting, variable) in [
        ("--max-attempts", "max_attempts", "PUSHD_MAX_ATTEMPTS"),
        (
            "--provider-connections",
            "provider_connections",
            "PUSHD_PROVIDER_CONNECTIONS",
        ),
        (
            "--provider-streams",
            "provider_streams",
            "PUSHD_PROVIDER_STREAMS",
        ),
        (
            "--provider-max-connection-age",
            "[providers] max_connection_age",
            "PUSHD_PROVIDER_MAX_CONNECTION_AGE",
        ),
        (
            "--webhook-in-flight",
            "in_flight",
            "PUSHD_WEBHOOK_IN_FLIGHT",
        ),
    ] {
        let Err(ConfigError::Invalid(why)) = load(&[flag, "0"]) else {
            panic!("{setting} = 0 is refused")
        };
        assert!(why.contains(setting) && why.contains(variable), "{why}");
    }
}

#[test]
fn delivery_retention_from_file_and_overrides() {
    assert_eq!(Config::default().store.delivery_retention_days, 180);
    let file = File::new("store_cache_mb = 32\n[store]\ndelivery_retention_days = 30\n");
    let c = file.load(&[]).unwrap();
    assert_eq!(
        (c.store_cache_mb, c.store.delivery_retention_days),
        (32, 30)
    );
    let c = file.load(&["--delivery-retention-days", "0"]).unwrap();
    assert_eq!(c.store.delivery_retention_days, 0, "0 keeps them for ever");

    let too_long = (MAX_RETENTION_DAYS + 1).to_string();
    let Err(ConfigError::Invalid(why)) = load(&["--delivery-retention-days", &too_long]) else {
        panic!("a retention past 100 years is refused")
    };
    assert!(
        why.contains("delivery_retention_days") && why.contains("PUSHD_DELIVERY_RETENTION_DAYS"),
        "{why}"
    );
    file.rewrite("[store]\ndelivery_retention = 30\n");
    assert!(matches!(file.load(&[]), Err(ConfigError::Parse { .. })));
}

#[test]
fn apps_sections_beside_the_default_app() {
    let file = File::new(
        "[apns]\ntopic = \"com.example.main\"\n\
        [apps.shop.apns]\ntopic = \"com.example.shop\"\nsandbox_endpoint = \"http://127.0.0.1:9\"\n\
        [apps.shop.fcm]\nservice_account_file = \"shop.json\"\n",
    );
    let apps = file
        .load(&["--apns-sandbox-endpoint", "http://127.0.0.1:10"])
        .unwrap()
        .apps();
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
        file.rewrite(bad);
        assert!(file.load(&[]).is_err(), "{bad}");
    }
}

#[test]
fn cluster_secret_and_nats_credentials_are_checked_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let cluster = |flags: &[&str]| load(flags).unwrap().cluster;
    let e = cluster(&[]).node_credential().unwrap_err();
    assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
    let short = file("short.secret", "abc\n");
    let e = cluster(&["--cluster-secret-file", &short])
        .node_credential()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("secret_file (PUSHD_CLUSTER_SECRET_FILE)") && e.contains("not 3"),
        "{e}"
    );
    let good = file("good.secret", &format!("{}\n", "ab".repeat(32)));
    assert!(
        cluster(&["--cluster-secret-file", &good])
            .node_credential()
            .is_ok()
    );

    let settings = |flags: &[&str]| cluster(flags).settings("127.0.0.1:1").map(|s| s.access);
    let e = settings(&["--cluster-user", "pushd"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("PUSHD_CLUSTER_PASSWORD"), "{e}");
    let (password, token) = (file("nats.password", "pw\n"), file("nats.token", "t\n"));
    let two_kinds = [
        "--cluster-user",
        "pushd",
        "--cluster-password-file",
        &password,
        "--cluster-token-file",
        &token,
    ];
    let e = settings(&two_kinds).unwrap_err().to_string();
    assert!(e.contains("one kind of NATS credentials"), "{e}");
    let cert = file("cert.pem", "");
    let e = settings(&["--cluster-tls-cert-file", &cert])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tls_key_file (PUSHD_CLUSTER_TLS_KEY_FILE)"),
        "{e}"
    );
    let missing = dir.path().join("missing.pem");
    let e = settings(&["--cluster-tls-ca-file", missing.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls_ca_file (PUSHD_CLUSTER_TLS_CA_FILE)"), "{e}");
    let access = settings(&[
        "--cluster-user",
        "pushd",
        "--cluster-password-file",
        &password,
        "--cluster-tls-required",
        "true",
    ])
    .unwrap();
    assert!(matches!(
        access.auth,
        crate::cluster::access::NatsAuth::UserPassword { ref password, .. } if password == "pw"
    ));
    assert!(access.tls_required);
}

#[test]
fn cluster_settings_from_file_and_flags() {
    let file = File::new("[cluster]\nnode = \"n1\"\npartitions = 16\n");
    let c = file
        .load(&[
            "--cluster",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "--cluster-lease-ms",
            "2000",
        ])
        .unwrap();
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

    file.rewrite("[cluster]\npartitions = 0\n");
    let c = file.load(&[]).unwrap();
    let e = c.cluster.settings("127.0.0.1:1").unwrap_err().to_string();
    assert!(e.contains("partitions must be 1 to 1024, not 0"), "{e}");

    file.rewrite("[cluster]\nforward_timeout_ms = 750\n");
    let s = file
        .load(&[])
        .unwrap()
        .cluster
        .settings("127.0.0.1:1")
        .unwrap();
    assert_eq!(s.forward_timeout, Duration::from_millis(750));
    let c = file.load(&["--cluster-forward-timeout-ms", "0"]).unwrap();
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

/// The settings tables of docs/operations.md (every key) and
/// docs/cluster.md (`[cluster]`'s): each row's key, variable and default.
fn documented_settings() -> Vec<(String, String, String)> {
    let tables = [
        ("", include_str!("../../docs/operations.md")),
        ("[cluster] ", include_str!("../../docs/cluster.md")),
    ];
    let mut rows = Vec::new();
    for (section, text) in tables {
        for line in text.lines().filter(|line| line.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, key, variable, default, ..] = cells[..] else {
                continue;
            };
            let Some(key) = key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
                continue;
            };
            rows.push((
                format!("{section}{key}"),
                variable.to_owned(),
                default.to_owned(),
            ));
        }
    }
    rows
}

/// The docs' tables say what the declarations say: a documented setting's
/// variable is the one its flag reads, and a default the docs give as a
/// value is the one `--help` shows. Every variable is documented.
#[test]
fn the_docs_tables_match_the_settings() {
    let docs = [
        include_str!("../../docs/operations.md"),
        include_str!("../../docs/cluster.md"),
        include_str!("../../docs/webhooks.md"),
    ]
    .concat();
    let documented = documented_settings();
    let command = Overrides::augment_args(Command::new("pushd"));
    let mut checked = 0;
    for arg in command.get_arguments() {
        let Some(variable) = arg.get_env().and_then(|v| v.to_str()) else {
            continue;
        };
        assert!(docs.contains(variable), "{variable} is not in docs/");
        let id = arg.get_id().as_str();
        let key = match id.split_once('.') {
            Some((section, key)) => format!("[{section}] {key}"),
            None => id.to_owned(),
        };
        let Some((_, documented_variable, documented_default)) =
            documented.iter().find(|(k, _, _)| *k == key)
        else {
            continue;
        };
        assert!(
            documented_variable.starts_with(&format!("`{variable}`")),
            "{key}: the docs say {documented_variable}, the setting reads {variable}"
        );
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let shown = help
            .rsplit_once("[default: ")
            .and_then(|(_, default)| default.strip_suffix(']'));
        let value = documented_default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .or_else(|| {
                let plain = documented_default.as_str();
                let is_value = plain.parse::<u64>().is_ok() || ["true", "false"].contains(&plain);
                is_value.then_some(plain)
            });
        if let Some(value) = value {
            assert_eq!(
                shown,
                Some(value),
                "{key}: the docs' default against --help"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 50,
        "{checked} settings found in the docs' tables"
    );
}

#[test]
fn the_transactional_share_is_a_fraction_below_one() {
    assert_eq!(Config::default().client_options().transactional_share, 0.2);
    let file = File::new("[engine]\ntransactional_share = 0.5\n");
    assert_eq!(
        file.load(&[]).unwrap().client_options().transactional_share,
        0.5
    );
    assert_eq!(
        load(&["--transactional-share", "0"])
            .unwrap()
            .client_options()
            .transactional_share,
        0.0,
        "0 keeps no stream"
    );
    for refused in ["1", "-0.1", "NaN"] {
        let flag = format!("--transactional-share={refused}");
        let Err(ConfigError::Invalid(why)) = load(&[&flag]) else {
            panic!("a share of {refused} is refused")
        };
        assert_eq!(
            why,
            format!(
                "[engine] transactional_share (PUSHD_TRANSACTIONAL_SHARE) must be at least 0 and \
                 less than 1, not {refused}; 0.2 keeps a fifth of the provider streams for \
                 transactional sends"
            )
        );
    }
}
