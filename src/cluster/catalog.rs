//! Message templates shared by every node: a JetStream key-value bucket,
//! replicated like the journal. A put is acknowledged once JetStream stored
//! it; reads ask the bucket's stream leader, so a template written through
//! one node is there for a send through any other at once.
//!
//! A template's value has no version byte: it is its version-5 record
//! ([`records::v5::MessageSpec`]), which is the version-1 record
//! ([`records::v1::MessageSpec`], as pushd first wrote it) with the lane
//! after it. A value without the lane is version 1's (a `campaign`
//! message), and an older node reads the version-1 record at the front and
//! leaves the rest, so nodes of mixed versions share the bucket. A record
//! that changes more than by fields added at its end must come with a new
//! bucket key layout, which older nodes do not read.

use async_nats::jetstream::kv;
use futures_util::future::BoxFuture;
use pushd_actors::model::MessageSpec;

use super::{ClusterError, key_of, last_message, nats};
use crate::records::{self, Frozen, Thaw as _};
use crate::topology::{Error, SharedTemplates};

/// Decodes the template stored under `key`.
pub fn decode(key: &str, bytes: &[u8]) -> Result<MessageSpec, ClusterError> {
    let thawed = || -> Result<MessageSpec, records::RecordError> {
        let (spec, rest) = postcard::take_from_bytes::<records::v1::MessageSpec>(bytes)?;
        let mut spec: MessageSpec = spec.thaw()?;
        if !rest.is_empty() {
            spec.lane = postcard::from_bytes::<records::v5::Lane>(rest)?.thaw()?;
        }
        Ok(spec)
    };
    thawed().map_err(|e| nats(format!("template {key} does not decode: {e}")))
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
        let Some(message) = last_message(&self.kv.stream, &subject).await? else {
            return Ok(None);
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

/// The templates the HTTP layer reads and writes through any node.
impl SharedTemplates for Templates {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<MessageSpec>, Error>> {
        Box::pin(async move { Templates::get(self, id).await.map_err(unavailable) })
    }

    fn all(&self) -> BoxFuture<'_, Result<Vec<MessageSpec>, Error>> {
        Box::pin(async move { Templates::all(self).await.map_err(unavailable) })
    }

    fn put<'a>(&'a self, spec: &'a MessageSpec) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { Templates::put(self, spec).await.map_err(unavailable) })
    }
}

/// A failed bucket call, as the HTTP layer answers it.
fn unavailable(e: ClusterError) -> Error {
    Error::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use pushd_actors::model::Lane;

    use super::*;

    fn spec(lane: Lane) -> MessageSpec {
        let body = serde_json::json!({
            "id": "reset", "name": "Reset", "campaign_id": null, "title": "t",
            "body": "b", "deep_link": null, "audience": "all_devices",
            "conversion": null, "lane": lane,
        });
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn templates_older_nodes_wrote_read_as_campaign_and_they_read_ours() {
        let transactional = spec(Lane::Transactional);
        let ours = postcard::to_allocvec(&Frozen(&transactional)).unwrap();
        assert_eq!(decode("k", &ours).unwrap(), transactional);
        // An older node reads the version-1 record at the front.
        let seen: MessageSpec = postcard::from_bytes::<records::v1::MessageSpec>(&ours)
            .unwrap()
            .thaw()
            .unwrap();
        assert_eq!(seen, spec(Lane::Campaign));
        // What it writes has no lane.
        let theirs = &ours[..ours.len() - 1];
        assert_eq!(decode("k", theirs).unwrap(), spec(Lane::Campaign));
        let e = decode("k", &[theirs, &[7]].concat()).unwrap_err();
        assert!(e.to_string().contains("template k does not decode"), "{e}");
    }
}
