//! The API key and the SDK key: configured, or generated once and kept in
//! `<data_dir>/keys.toml` (mode 0600) so a user who missed the first start's
//! output reads them again with `pushd keys`. The identity secret, which an
//! app backend signs its customer ids with, is derived from the API key.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::{Config, IdentityVerification};
use crate::http::Keys;

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "keys.toml";

/// Who made a call that either key may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The app's backend (or an operator): the API key.
    Backend,
    /// The app on a device: the SDK key.
    App,
}

/// Where a key in effect comes from, for the start-up banner and `pushd keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Set by the configuration (`pushd.toml`, a flag or its variable).
    Configured,
    /// Read from `keys.toml` (generated on an earlier start).
    Kept(PathBuf),
    /// Generated on this start and written to `keys.toml`.
    Generated(PathBuf),
}

/// The keys in effect and where each comes from.
#[derive(Clone, Debug)]
pub struct ResolvedKeys {
    /// The keys.
    pub keys: Keys,
    /// Where the API key comes from.
    pub api_source: Source,
    /// Where the SDK key comes from.
    pub sdk_source: Source,
}

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// `keys.toml` could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `keys.toml` is not what pushd writes.
    #[error("{path} is not a valid keys file ({source}); fix it or delete it to generate new keys")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The two keys are equal, so an app's SDK key would open the whole API.
    #[error(
        "api_key and sdk_key are the same; the SDK key ships inside apps and must differ from the \
         API key (set PUSHD_API_KEY / --api-key and PUSHD_SDK_KEY / --sdk-key to different values)"
    )]
    SameKeys,
    /// `pushd keys` found neither configured nor kept keys.
    #[error(
        "no keys yet: {0} does not exist and PUSHD_API_KEY / PUSHD_SDK_KEY are not set; \
         `pushd serve` generates and keeps them on its first start"
    )]
    NoneYet(PathBuf),
}

/// The generated keys as kept on disk.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdk_key: Option<String>,
}

/// The path of the keys file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

fn read(path: &Path) -> Result<Option<KeysFile>, KeysError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|source| KeysError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeysError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the file whole or not at all: a temporary file (created 0600 by
/// `tempfile`) in the same directory, synced, then renamed over the old one.
fn write(path: &Path, file: &KeysFile) -> Result<(), KeysError> {
    let io = |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = toml::to_string(file).expect("two strings serialize");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(
        format!("# pushd's generated keys; `pushd keys` prints them.\n{text}").as_bytes(),
    )
    .map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// 32 random bytes in hex.
fn generate() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the identity secret is derived from the API key with.
const IDENTITY_LABEL: &[u8] = b"pushd identity verification";

/// The identity secret of `api_key`: HMAC-SHA256 keyed by the API key over
/// the label `pushd identity verification`, in lowercase hex. An app
/// backend signs customer ids with it (see [`identity_proof`]); it opens
/// nothing else, and changes when the API key does.
pub fn identity_secret(api_key: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, api_key.as_bytes());
    hex(ring::hmac::sign(&key, IDENTITY_LABEL).as_ref())
}

/// The `Pushd-Customer-Auth` proof for `customer_id`: HMAC-SHA256 keyed by
/// the identity secret's text over the customer id's UTF-8 bytes, in
/// lowercase hex, as an app backend computes it.
pub fn identity_proof(secret: &str, customer_id: &str) -> String {
    hex(ring::hmac::sign(&identity_key(secret), customer_id.as_bytes()).as_ref())
}

/// The HMAC key proofs are made and checked with: the identity secret's
/// text, as its bytes.
pub fn identity_key(secret: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())
}

fn configured(key: &Option<String>) -> Option<String> {
    key.clone().filter(|k| !k.trim().is_empty())
}

/// The keys for `serve`: each configured one (if not blank), else the one
/// kept in `keys.toml`, else a new one, written there before it is used.
pub fn resolve(config: &Config) -> Result<ResolvedKeys, KeysError> {
    let path = path(&config.data_dir);
    let mut file = read(&path)?.unwrap_or_default();
    let mut changed = false;
    let mut pick = |configured: Option<String>, kept: &mut Option<String>| match configured {
        Some(k) => (k, Source::Configured),
        None => match kept.clone().filter(|k| !k.trim().is_empty()) {
            Some(k) => (k, Source::Kept(path.clone())),
            None => {
                let k = generate();
                *kept = Some(k.clone());
                changed = true;
                (k, Source::Generated(path.clone()))
            }
        },
    };
    let (api, api_source) = pick(configured(&config.api_key), &mut file.api_key);
    let (sdk, sdk_source) = pick(configured(&config.sdk_key), &mut file.sdk_key);
    if api == sdk {
        return Err(KeysError::SameKeys);
    }
    if changed {
        write(&path, &file)?;
    }
    Ok(ResolvedKeys {
        keys: Keys { api, sdk },
        api_source,
        sdk_source,
    })
}

/// The keys in effect without generating any, for `pushd keys`.
pub fn current(config: &Config) -> Result<ResolvedKeys, KeysError> {
    let path = path(&config.data_dir);
    let file = read(&path)?;
    let kept = |k: Option<&String>| {
        k.filter(|k| !k.trim().is_empty())
            .map(|k| (k.clone(), Source::Kept(path.clone())))
    };
    let api = configured(&config.api_key)
        .map(|k| (k, Source::Configured))
        .or_else(|| kept(file.as_ref().and_then(|f| f.api_key.as_ref())));
    let sdk = configured(&config.sdk_key)
        .map(|k| (k, Source::Configured))
        .or_else(|| kept(file.as_ref().and_then(|f| f.sdk_key.as_ref())));
    match (api, sdk) {
        (Some((api, api_source)), Some((sdk, sdk_source))) => Ok(ResolvedKeys {
            keys: Keys { api, sdk },
            api_source,
            sdk_source,
        }),
        _ => Err(KeysError::NoneYet(path)),
    }
}

/// `text` as one single-quoted shell word: `'` becomes `'\''`, and nothing
/// inside (`$(...)`, backquotes, `;`) is run when the line is evaluated.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl ResolvedKeys {
    /// `pushd keys`'s output: shell lines that export both keys and the
    /// identity secret, with comments saying where they come from
    /// (`eval "$(pushd keys)"`). Each value is single-quoted, so evaluating
    /// the output only assigns.
    pub fn export_lines(&self) -> String {
        let line = |var: &str, key: &str, source: &Source| {
            let from = match source {
                Source::Configured => "set by the configuration".to_string(),
                // A control character (a newline) in the path would end
                // the comment and start a command.
                Source::Kept(p) | Source::Generated(p) => {
                    let path = p.display().to_string();
                    let path: String = path
                        .chars()
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect();
                    format!("kept in {path}")
                }
            };
            format!("# {var}: {from}\nexport {var}={}\n", shell_quoted(key))
        };
        line("PUSHD_API_KEY", &self.keys.api, &self.api_source)
            + &line("PUSHD_SDK_KEY", &self.keys.sdk, &self.sdk_source)
            + &format!(
                "# PUSHD_IDENTITY_SECRET: derived from the API key; your backend signs \
                 customer ids with it (Pushd-Customer-Auth)\nexport PUSHD_IDENTITY_SECRET={}\n",
                shell_quoted(&identity_secret(&self.keys.api))
            )
    }

    /// Where the API key is kept, in words for the start-up banner.
    pub fn whereabouts(&self) -> String {
        match &self.api_source {
            Source::Configured => {
                "keys: set by the configuration (api_key / PUSHD_API_KEY, sdk_key / PUSHD_SDK_KEY)"
                    .to_string()
            }
            Source::Kept(p) | Source::Generated(p) => format!(
                "keys: kept in {} (print them again with `pushd keys`)",
                p.display()
            ),
        }
    }
}

/// The identity verification in effect: the configured one, else the
/// data directory's default (`required` unless an earlier release made
/// it), said in a log line.
pub fn identity_verification(config: &Config, new_data_dir: bool) -> IdentityVerification {
    let default = match new_data_dir {
        true => IdentityVerification::Required,
        false => IdentityVerification::Off,
    };
    let mode = config.keys.identity_verification.unwrap_or(default);
    match mode {
        IdentityVerification::Required => tracing::info!(
            "identity verification required: SDK-key events name their customer with its \
             Pushd-Customer-Auth proof"
        ),
        IdentityVerification::Off => tracing::warn!(
            "identity verification is off: the SDK key can send events for any customer id; set \
             [keys] identity_verification = \"required\" (PUSHD_IDENTITY_VERIFICATION) once your \
             apps send Pushd-Customer-Auth"
        ),
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.join("data"),
            ..Config::default()
        }
    }

    #[test]
    fn generated_once_then_kept_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        assert!(matches!(current(&c), Err(KeysError::NoneYet(_))));
        let first = resolve(&c).unwrap();
        assert!(matches!(first.api_source, Source::Generated(_)));
        let file = path(&c.data_dir);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "keys.toml is private");
        let again = resolve(&c).unwrap();
        assert_eq!(again.keys.api, first.keys.api);
        assert_eq!(again.keys.sdk, first.keys.sdk);
        assert_eq!(again.api_source, Source::Kept(file.clone()));
        let shown = current(&c).unwrap().export_lines();
        assert!(shown.contains(&format!("export PUSHD_API_KEY='{}'\n", first.keys.api)));
        assert!(shown.contains(&format!("export PUSHD_SDK_KEY='{}'\n", first.keys.sdk)));
        assert_eq!(first.keys.api.len(), 64, "32 random bytes in hex");
        let secret = identity_secret(&first.keys.api);
        assert!(shown.contains(&format!("export PUSHD_IDENTITY_SECRET='{secret}'\n")));
        assert!(shown.contains(&file.display().to_string()));
    }

    #[test]
    fn the_printed_lines_only_comment_and_assign_whatever_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            data_dir: dir.path().join("data\ntouch ran"),
            ..Config::default()
        };
        resolve(&c).unwrap();
        let shown = current(&c).unwrap().export_lines();
        assert_eq!(shown.lines().count(), 6, "{shown}");
        for line in shown.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("export PUSHD_"),
                "{line}"
            );
        }
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_identity_proof_is_hmac_sha256_of_the_id_under_the_secret() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            identity_proof("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let secret = identity_secret("api-key-0123456789");
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, identity_secret("api-key-0123456780"));
        assert_ne!(identity_proof(&secret, "c1"), identity_proof(&secret, "c2"));
    }

    #[test]
    fn configured_keys_win_and_equal_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.api_key = Some("same".into());
        c.sdk_key = Some("same".into());
        let err = resolve(&c).unwrap_err();
        assert!(matches!(err, KeysError::SameKeys));
        assert!(err.to_string().contains("api_key and sdk_key"));
        assert!(!path(&c.data_dir).exists(), "nothing written");
        c.sdk_key = Some("other".into());
        let r = resolve(&c).unwrap();
        assert_eq!(
            (r.keys.api.as_str(), r.keys.sdk.as_str()),
            ("same", "other")
        );
        assert_eq!(r.api_source, Source::Configured);
    }
}
