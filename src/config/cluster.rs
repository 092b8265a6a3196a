//! `[cluster]`: several pushd nodes sharing the customers over a NATS
//! JetStream cluster, each setting declared once (see `settings!` in
//! `setting.rs`), and the checks that make them a node's settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::setting::settings;

settings! {
    /// `[cluster]`: several pushd nodes sharing the customers over a NATS
    /// JetStream cluster. With no `servers` the daemon runs alone.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub struct ClusterSection {
        /// Run as a cluster node over these NATS servers (comma-separated
        /// nats:// URLs).
        #[setting(flag = "cluster", env = "PUSHD_CLUSTER", shown = "none: a single node")]
        pub servers: Vec<String>,
        /// This cluster node's name, unique in the cluster.
        #[setting(
            flag = "cluster-node",
            env = "PUSHD_CLUSTER_NODE",
            shown = "the advertised address"
        )]
        pub node: Option<String>,
        /// Address other nodes reach this node's API at.
        #[setting(
            flag = "cluster-advertise",
            env = "PUSHD_CLUSTER_ADVERTISE",
            shown = "the listen address"
        )]
        pub advertise: Option<String>,
        /// Customer partitions of the cluster, the same on every node.
        #[setting(flag = "cluster-partitions", env = "PUSHD_CLUSTER_PARTITIONS")]
        pub partitions: u16 = 64,
        /// JetStream replicas of the cluster's journal and buckets (leases,
        /// snapshots, templates).
        #[setting(flag = "cluster-replicas", env = "PUSHD_CLUSTER_REPLICAS")]
        pub replicas: usize = 3,
        /// Lease time of a partition in ms: a node silent this long loses it.
        #[setting(flag = "cluster-lease-ms", env = "PUSHD_CLUSTER_LEASE_MS")]
        pub lease_ms: u64 = 10_000,
        /// How long a call for another node's partition waits for it (or,
        /// while the partition moves, its next owner) in ms before a 503.
        #[setting(flag = "cluster-forward-timeout-ms", env = "PUSHD_CLUSTER_FORWARD_TIMEOUT_MS")]
        pub forward_timeout_ms: u64 = 2000,
        /// Seconds between uploads of a partition's snapshot.
        #[setting(flag = "cluster-snapshot-secs", env = "PUSHD_CLUSTER_SNAPSHOT_SECS")]
        pub snapshot_secs: u64 = 10,
        /// Prefix of the stream, buckets and subjects.
        #[setting(file_only)]
        pub prefix: String = "pushd".into(),
        /// File holding the cluster secret the nodes sign their calls to each
        /// other with (at least 32 bytes, the same on every node).
        #[setting(flag = "cluster-secret-file", env = "PUSHD_CLUSTER_SECRET_FILE")]
        pub secret_file: Option<PathBuf>,
        /// The cluster secret itself, from `PUSHD_CLUSTER_SECRET` only (a
        /// flag would show it in `ps`); it wins over `secret_file`.
        #[serde(skip)]
        #[setting(env_only = "PUSHD_CLUSTER_SECRET")]
        pub secret: Option<String>,
        /// NATS user of the cluster node, with a password.
        #[setting(flag = "cluster-user", env = "PUSHD_CLUSTER_USER")]
        pub user: Option<String>,
        /// File holding the NATS user's password.
        #[setting(flag = "cluster-password-file", env = "PUSHD_CLUSTER_PASSWORD_FILE")]
        pub password_file: Option<PathBuf>,
        /// The NATS password itself, from `PUSHD_CLUSTER_PASSWORD` only; it
        /// wins over `password_file`.
        #[serde(skip)]
        #[setting(env_only = "PUSHD_CLUSTER_PASSWORD")]
        pub password: Option<String>,
        /// File holding a NATS token.
        #[setting(flag = "cluster-token-file", env = "PUSHD_CLUSTER_TOKEN_FILE")]
        pub token_file: Option<PathBuf>,
        /// A NATS token itself, from `PUSHD_CLUSTER_TOKEN` only; it wins over
        /// `token_file`.
        #[serde(skip)]
        #[setting(env_only = "PUSHD_CLUSTER_TOKEN")]
        pub token: Option<String>,
        /// File holding a NATS user nkey seed (`SU...`), for servers that
        /// know the node by its public nkey.
        #[setting(flag = "cluster-nkey-seed-file", env = "PUSHD_CLUSTER_NKEY_SEED_FILE")]
        pub nkey_seed_file: Option<PathBuf>,
        /// The nkey seed itself, from `PUSHD_CLUSTER_NKEY_SEED` only; it wins
        /// over `nkey_seed_file`.
        #[serde(skip)]
        #[setting(env_only = "PUSHD_CLUSTER_NKEY_SEED")]
        pub nkey_seed: Option<String>,
        /// NATS .creds file (user JWT and nkey seed).
        #[setting(flag = "cluster-credentials-file", env = "PUSHD_CLUSTER_CREDENTIALS_FILE")]
        pub credentials_file: Option<PathBuf>,
        /// CA (PEM) the NATS servers' certificates must chain to.
        #[setting(
            flag = "cluster-tls-ca-file",
            env = "PUSHD_CLUSTER_TLS_CA_FILE",
            shown = "the system's roots"
        )]
        pub tls_ca_file: Option<PathBuf>,
        /// Client certificate (PEM) for NATS servers that verify one.
        #[setting(flag = "cluster-tls-cert-file", env = "PUSHD_CLUSTER_TLS_CERT_FILE")]
        pub tls_cert_file: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[setting(flag = "cluster-tls-key-file", env = "PUSHD_CLUSTER_TLS_KEY_FILE")]
        pub tls_key_file: Option<PathBuf>,
        /// Refuse NATS servers that do not speak TLS; tls:// URLs require it
        /// too.
        #[setting(flag = "cluster-tls-required", env = "PUSHD_CLUSTER_TLS_REQUIRED")]
        pub tls_required: bool = false,
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
        let nkey = secret_of(&self.nkey_seed, &self.nkey_seed_file)?;
        let creds = &self.credentials_file;
        let auth = match (&self.user, password, token, creds, nkey) {
            (None, None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None, None) => NatsAuth::UserPassword {
                user: user.clone(),
                password,
            },
            (None, None, Some(token), None, None) => NatsAuth::Token(token),
            (None, None, None, Some(path), None) => NatsAuth::CredentialsFile(path.clone()),
            (None, None, None, None, Some(seed)) => NatsAuth::Nkey(user_seed(seed)?),
            (Some(_), None, None, None, None) => {
                return invalid(
                    "[cluster] user (PUSHD_CLUSTER_USER) needs its password: \
                     PUSHD_CLUSTER_PASSWORD, or [cluster] password_file \
                     (PUSHD_CLUSTER_PASSWORD_FILE)",
                );
            }
            (None, Some(_), None, None, None) => {
                return invalid(
                    "a NATS password (PUSHD_CLUSTER_PASSWORD or [cluster] password_file) needs \
                     its [cluster] user (PUSHD_CLUSTER_USER)",
                );
            }
            _ => {
                return invalid(
                    "set one kind of NATS credentials: [cluster] user and password, a token \
                     (PUSHD_CLUSTER_TOKEN or token_file), an nkey seed (PUSHD_CLUSTER_NKEY_SEED \
                     or nkey_seed_file), or credentials_file",
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
/// `seed` if it is a NATS user nkey seed, else why not (without the seed).
fn user_seed(seed: String) -> Result<String, ConfigError> {
    let user = nkeys::KeyPair::from_seed(&seed)
        .is_ok_and(|pair| pair.key_pair_type() == nkeys::KeyPairType::User);
    match user {
        true => Ok(seed),
        false => Err(ConfigError::Invalid(
            "the NATS nkey seed (PUSHD_CLUSTER_NKEY_SEED or [cluster] nkey_seed_file) is not a \
             user seed: it starts with SU (nsc or `nk -gen user` makes one)"
                .to_string(),
        )),
    }
}

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
