//! Where webhooks are kept ([`Book`]). A single node keeps them in its own
//! durable file, `<data_dir>/webhooks.json` ([`FileBook`]): every
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

/// What a webhook's worker reports live (queue depth, oldest undelivered
/// event, posts in flight): not in the file, but a book shared by several
/// nodes keeps it beside progress, so any node answers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Live {
    /// Events after the cursor not yet posted or dropped.
    pub queue_depth: u64,
    /// When the oldest of them was recorded (Unix ms).
    pub oldest_ms: Option<i64>,
    /// Posts under way or waiting to retry.
    pub in_flight: usize,
}

/// One webhook as saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Its definition.
    #[serde(flatten)]
    pub definition: Definition,
    /// Its progress.
    pub progress: Progress,
    /// Its live figures, where the book keeps them.
    #[serde(skip)]
    pub live: Live,
}

/// What a save is for: a book that keeps each webhook apart writes only
/// what changed; one that is a single file writes every webhook.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// Webhook `id` was created or its definition replaced.
    Defined(&'a str),
    /// Webhook `id` was deleted.
    Removed(&'a str),
    /// The progress of the webhooks whose workers run here moved.
    Progressed,
}

/// Where webhooks' definitions and progress are kept.
pub trait Book: Send + Sync + 'static {
    /// Every saved webhook, by id.
    fn load(&self) -> io::Result<BTreeMap<String, Saved>>;

    /// Saves `change`; `all` is every webhook this node knows, as of now,
    /// and `running` the ids whose workers run here (whose progress this
    /// node writes).
    fn save(
        &self,
        all: &BTreeMap<String, Saved>,
        running: &[String],
        change: Change<'_>,
    ) -> io::Result<()>;

    /// True for a book other nodes change too: it is read again before
    /// each answer, and a webhook's worker runs only on the node placed
    /// to run it.
    fn shared(&self) -> bool {
        false
    }

    /// Where it is, in words (for errors).
    fn place(&self) -> String;
}

/// A single node's webhooks file.
pub struct FileBook {
    path: std::path::PathBuf,
}

impl FileBook {
    /// The file of `data_dir`.
    pub fn new(data_dir: &Path) -> FileBook {
        FileBook {
            path: path(data_dir),
        }
    }
}

impl Book for FileBook {
    fn load(&self) -> io::Result<BTreeMap<String, Saved>> {
        load(&self.path)
    }

    fn save(
        &self,
        all: &BTreeMap<String, Saved>,
        _running: &[String],
        _change: Change<'_>,
    ) -> io::Result<()> {
        save(&self.path, all.clone())
    }

    fn place(&self) -> String {
        self.path.display().to_string()
    }
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
        Ok(bytes) => decode(&bytes).map_err(|e| {
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

/// The webhooks a file's contents hold.
pub fn decode(bytes: &[u8]) -> serde_json::Result<BTreeMap<String, Saved>> {
    serde_json::from_slice::<File>(bytes).map(|f| f.webhooks)
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
            live: Live::default(),
        };
        save(&path, BTreeMap::from([("h1".to_string(), hook.clone())])).unwrap();
        assert_eq!(load(&path).unwrap()["h1"], hook);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).is_err());
    }
}
