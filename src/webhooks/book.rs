//! The webhooks' own durable file, `<data_dir>/webhooks.json`: every
//! webhook's definition and delivery progress (its cursor in the event log,
//! its counters). It is replaced whole — written beside, synced, renamed —
//! before a change of a definition is answered, and with progress at most
//! a few times a second.
//!
//! Why not the journal: webhooks are not the engine's state (no actor reads
//! them, no delivery depends on them), they change a few times a day, and
//! progress changes with every post, which would cost a journal record and
//! a snapshot write each. A small file keeps the engine, the journal and
//! the store free of them, and a definition answered is still durable.
//! Progress saved late only means posts again after a crash: the cursor
//! never runs ahead of what was delivered or dropped.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::Path;

use pushd_actors::status::{MessageStatus, Timestamp};
use serde::{Deserialize, Serialize};

/// What a webhook is: where events go, signed with what, which ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// The receiver's URL (http or https).
    pub url: String,
    /// The HMAC key of `Pushd-Signature`.
    pub secret: String,
    /// The event kinds posted.
    pub events: Vec<MessageStatus>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last replaced.
    pub updated_at: Timestamp,
}

/// How far a webhook got, and what happened on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Every event before this event-log offset was posted, dropped, or is
    /// of a kind the webhook does not take.
    pub cursor: u64,
    /// Events posted and answered 2xx.
    pub delivered: u64,
    /// Posts that failed (non-2xx, time-out, network), retried or not.
    pub failed_attempts: u64,
    /// Events given up on after the retry window.
    pub dropped: u64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<Timestamp>,
    /// When a post last succeeded.
    pub last_success_at: Option<Timestamp>,
}

/// One webhook as saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Its definition.
    #[serde(flatten)]
    pub definition: Definition,
    /// Its progress.
    pub progress: Progress,
}

/// The file's shape.
#[derive(Default, Serialize, Deserialize)]
struct File {
    webhooks: BTreeMap<String, Saved>,
}

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "webhooks.json";

/// The file in `data_dir`.
pub fn path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(FILE_NAME)
}

/// Every saved webhook, by id (none if there is no file yet).
pub fn load(path: &Path) -> io::Result<BTreeMap<String, Saved>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<File>(&bytes)
            .map(|f| f.webhooks)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not parse: {e}", path.display()),
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Replaces the file with `webhooks`, whole or not at all; it is created
/// 0600 (it holds the secrets).
pub fn save(path: &Path, webhooks: BTreeMap<String, Saved>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let text = encode(webhooks)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&text)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The file's contents for `webhooks`.
pub fn encode(webhooks: BTreeMap<String, Saved>) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(&File { webhooks }).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn saved_whole_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        assert!(load(&path).unwrap().is_empty());
        let hook = Saved {
            definition: Definition {
                url: "http://127.0.0.1:9/hook".into(),
                secret: "s3cret".into(),
                events: vec![MessageStatus::Sent, MessageStatus::Bounced],
                created_at: 1,
                updated_at: 2,
            },
            progress: Progress {
                cursor: 420,
                delivered: 3,
                ..Progress::default()
            },
        };
        save(&path, BTreeMap::from([("h1".to_string(), hook.clone())])).unwrap();
        assert_eq!(load(&path).unwrap()["h1"], hook);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).is_err());
    }
}
