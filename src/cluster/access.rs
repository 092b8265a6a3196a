//! How a node reaches NATS: who it is to the servers (a user and password,
//! a token, an nkey seed or a `.creds` file) and how it checks them (TLS against a CA,
//! with a client certificate if the servers ask for one).

use std::path::PathBuf;

use async_nats::ConnectOptions;

use super::ClusterError;

/// Who a node is to NATS.
#[derive(Clone, Default)]
pub enum NatsAuth {
    /// No credentials: a server that wants some refuses the node.
    #[default]
    None,
    /// `[cluster] user` and its password.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A `.creds` file (a user JWT and its nkey seed).
    CredentialsFile(PathBuf),
    /// A user nkey seed: the server knows the node by its public key.
    Nkey(String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ..)"),
            NatsAuth::Token(_) => f.write_str("Token(..)"),
            NatsAuth::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
            NatsAuth::Nkey(_) => f.write_str("Nkey(..)"),
        }
    }
}

/// How a node connects to NATS, beyond the server URLs.
#[derive(Clone, Debug, Default)]
pub struct NatsAccess {
    /// Its credentials.
    pub auth: NatsAuth,
    /// The CA the servers' certificates must chain to [default: the
    /// system's roots].
    pub tls_ca_file: Option<PathBuf>,
    /// The client certificate and its key, for servers that verify them.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Refuse a server that does not speak TLS (as `tls://` URLs do).
    pub tls_required: bool,
}

impl NatsAccess {
    /// Connect options carrying these credentials and TLS settings.
    pub async fn options(&self) -> Result<ConnectOptions, ClusterError> {
        let mut options = ConnectOptions::new();
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::Nkey(seed) => options.nkey(seed.clone()),
            NatsAuth::CredentialsFile(path) => {
                options.credentials_file(path).await.map_err(|e| {
                    ClusterError::Settings(format!(
                        "[cluster] credentials_file (PUSHD_CLUSTER_CREDENTIALS_FILE) {}: {e}",
                        path.display()
                    ))
                })?
            }
        };
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.tls_required))
    }

    /// The settings an authorization failure is about, for its message.
    pub fn auth_settings(&self) -> &'static str {
        match self.auth {
            NatsAuth::None => {
                "no NATS credentials are set: set [cluster] user and password \
                 (PUSHD_CLUSTER_USER, PUSHD_CLUSTER_PASSWORD), token (PUSHD_CLUSTER_TOKEN), nkey \
                 seed (PUSHD_CLUSTER_NKEY_SEED) or credentials_file \
                 (PUSHD_CLUSTER_CREDENTIALS_FILE)"
            }
            NatsAuth::UserPassword { .. } => {
                "check [cluster] user and password (PUSHD_CLUSTER_USER, PUSHD_CLUSTER_PASSWORD \
                 or PUSHD_CLUSTER_PASSWORD_FILE)"
            }
            NatsAuth::Token(_) => {
                "check the NATS token (PUSHD_CLUSTER_TOKEN or PUSHD_CLUSTER_TOKEN_FILE)"
            }
            NatsAuth::CredentialsFile(_) => {
                "check [cluster] credentials_file (PUSHD_CLUSTER_CREDENTIALS_FILE)"
            }
            NatsAuth::Nkey(_) => {
                "check the nkey seed (PUSHD_CLUSTER_NKEY_SEED or PUSHD_CLUSTER_NKEY_SEED_FILE): \
                 the servers must list its public key"
            }
        }
    }
}
