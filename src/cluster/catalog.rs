//! Message templates shared by every node: a JetStream key-value bucket,
//! replicated like the journal. A put is acknowledged once JetStream stored
//! it; reads ask the bucket's stream leader, so a template written through
//! one node is there for a send through any other at once.
//!
//! A template's value is its version-1 record ([`records::v1::MessageSpec`])
//! without a version byte, as every pushd so far wrote it, so nodes of
//! mixed versions share the bucket. A new record version must come with a
//! new bucket key layout, which older nodes do not read.

use async_nats::jetstream::kv;
use pushd_actors::model::MessageSpec;

use super::{ClusterError, key_of, nats};
use crate::records::{self, Frozen, Thaw as _};

/// Decodes the template stored under `key`.
fn decode(key: &str, bytes: &[u8]) -> Result<MessageSpec, ClusterError> {
    postcard::from_bytes::<records::v1::MessageSpec>(bytes)
        .map_err(records::RecordError::from)
        .and_then(|r| r.thaw())
        .map_err(|e| nats(format!("template {key} does not decode: {e}")))
}

/// The templates a scheduled delivery renders when released.
impl pushd_actors::ports::Catalog for Templates {
    fn message(
        &self,
        id: &str,
    ) -> pushd_actors::ports::BoxFuture<Result<Option<MessageSpec>, pushd_actors::ports::StoreError>>
    {
        let (kv, key) = (self.kv.clone(), key_of(id));
        Box::pin(async move {
            let templates = Templates { kv };
            (templates.read(&key).await).map_err(|e| pushd_actors::ports::StoreError(e.to_string()))
        })
    }
}

/// The templates bucket.
pub struct Templates {
    kv: kv::Store,
}

impl Templates {
    /// Templates in `kv`.
    pub fn new(kv: kv::Store) -> Templates {
        Templates { kv }
    }

    /// The template `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<MessageSpec>, ClusterError> {
        self.read(&key_of(id)).await
    }

    async fn read(&self, key: &str) -> Result<Option<MessageSpec>, ClusterError> {
        let subject = format!("{}{key}", self.kv.prefix);
        let message = match self
            .kv
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) => m,
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(nats(e)),
        };
        if message.payload.is_empty() {
            return Ok(None);
        }
        decode(key, &message.payload).map(Some)
    }

    /// Every template.
    pub async fn all(&self) -> Result<Vec<MessageSpec>, ClusterError> {
        let mut out = Vec::new();
        for (key, value) in super::scan(&self.kv).await? {
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Creates or replaces a template; answers once stored.
    pub async fn put(&self, spec: &MessageSpec) -> Result<(), ClusterError> {
        let bytes = postcard::to_allocvec(&Frozen(spec)).map_err(nats)?;
        self.kv
            .put(key_of(&spec.id), bytes.into())
            .await
            .map_err(nats)?;
        Ok(())
    }
}
