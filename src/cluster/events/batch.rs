//! How events are laid out in the events stream's messages.
//!
//! A message holds a batch: the events of consecutive journal records of
//! one partition, each event's JSON on a line (format 2, named by
//! [`FORMAT_HEADER`]). A message without the header is format 1, written
//! by pushd before batches: one event. A message of a newer format is
//! refused, not misread.
//!
//! When a customer is erased, a batch holding their events and others' is
//! rewritten without theirs: the rest goes to the rewrites stream under
//! the batch's sequence, with [`KEPT_HEADER`] naming each kept event's
//! index in the batch, and the batch is deleted. A reader finding the
//! batch gone reads the rewrite in its place, so every other event keeps
//! its cursor.

use async_nats::HeaderMap;
use bytes::Bytes;

/// Header naming a message's format; absent, format 1.
pub const FORMAT_HEADER: &str = "Pushd-Events-Format";
/// The format this pushd writes.
pub const FORMAT: u32 = 2;
/// Header of a rewrite: the index in the batch of each event it keeps,
/// comma-separated.
pub const KEPT_HEADER: &str = "Pushd-Kept";

/// Why a message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Written by a newer pushd.
    #[error(
        "an events message of format {0}, newer than this pushd reads ({FORMAT}): upgrade this node"
    )]
    Newer(u32),
    /// The headers do not match the body.
    #[error("an events message is malformed: {0}")]
    Malformed(String),
}

/// A batch's body: `events`' JSON, one per line (JSON holds no raw line
/// break).
pub fn body(events: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum());
    for (n, e) in events.iter().enumerate() {
        if n > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(e);
    }
    out.into()
}

/// The events of a message (a batch or a rewrite) with their index in the
/// batch, in order.
pub fn events(headers: &HeaderMap, payload: &Bytes) -> Result<Vec<(usize, Bytes)>, BatchError> {
    let format = match headers.get(FORMAT_HEADER) {
        None => 1,
        Some(v) => v
            .as_str()
            .parse()
            .map_err(|_| BatchError::Malformed(format!("{FORMAT_HEADER}: {v}")))?,
    };
    if format > FORMAT {
        return Err(BatchError::Newer(format));
    }
    if format == 1 {
        return Ok(vec![(0, payload.clone())]);
    }
    let lines: Vec<Bytes> = lines(payload);
    let indexes: Vec<usize> = match headers.get(KEPT_HEADER) {
        None => (0..lines.len()).collect(),
        Some(kept) => (kept.as_str().split(','))
            .filter(|k| !k.is_empty())
            .map(|k| k.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| BatchError::Malformed(format!("{KEPT_HEADER}: {kept}")))?,
    };
    if indexes.len() != lines.len() {
        return Err(BatchError::Malformed(format!(
            "{} events, {} indexes",
            lines.len(),
            indexes.len()
        )));
    }
    Ok(indexes.into_iter().zip(lines).collect())
}

/// The lines of a body, each a slice of it.
fn lines(payload: &Bytes) -> Vec<Bytes> {
    if payload.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in payload.iter().enumerate() {
        if *b == b'\n' {
            out.push(payload.slice(start..i));
            start = i + 1;
        }
    }
    out.push(payload.slice(start..));
    out
}

/// The headers and body of a rewrite keeping `kept` (index, JSON).
pub fn rewrite(kept: &[(usize, Bytes)]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(FORMAT_HEADER, FORMAT.to_string().as_str());
    let indexes: Vec<String> = kept.iter().map(|(i, _)| i.to_string()).collect();
    headers.insert(KEPT_HEADER, indexes.join(",").as_str());
    let bodies: Vec<Bytes> = kept.iter().map(|(_, e)| e.clone()).collect();
    (headers, body(&bodies))
}

/// Whether an event's JSON names one of `customers`.
pub fn of_any(event: &[u8], customers: &[String]) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        customer_id: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Head>(event)
        .is_ok_and(|h| customers.iter().any(|c| *c == h.customer_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: &[&str]) -> (HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(FORMAT_HEADER, FORMAT.to_string().as_str());
        let events: Vec<Bytes> = events.iter().map(|e| Bytes::from(e.to_string())).collect();
        (headers, body(&events))
    }

    #[test]
    fn a_batch_reads_back_its_events_in_order() {
        let (headers, payload) = batch(&[r#"{"a":1}"#, r#"{"b":"x"}"#, "{}"]);
        let read = events(&headers, &payload).unwrap();
        let read: Vec<(usize, &[u8])> = read.iter().map(|(i, e)| (*i, &e[..])).collect();
        assert_eq!(
            read,
            [(0, &b"{\"a\":1}"[..]), (1, b"{\"b\":\"x\"}"), (2, b"{}")]
        );
        assert!(events(&headers, &Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn a_message_without_a_format_is_one_event() {
        let payload = Bytes::from_static(b"{\"customer_id\":\"c1\"}");
        let read = events(&HeaderMap::new(), &payload).unwrap();
        assert_eq!(read, [(0, payload)]);
    }

    #[test]
    fn a_newer_format_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(FORMAT_HEADER, "3");
        let refused = events(&headers, &Bytes::from_static(b"{}"));
        assert!(matches!(refused, Err(BatchError::Newer(3))), "{refused:?}");
    }

    #[test]
    fn a_rewrite_keeps_the_indexes_of_its_events() {
        let kept = [
            (1, Bytes::from_static(b"{\"x\":1}")),
            (4, Bytes::from_static(b"{}")),
        ];
        let (headers, payload) = rewrite(&kept);
        assert_eq!(events(&headers, &payload).unwrap(), kept);
        let (headers, payload) = rewrite(&kept[..1]);
        let mut wrong = headers.clone();
        wrong.insert(KEPT_HEADER, "1,2");
        assert!(events(&wrong, &payload).is_err());
    }

    #[test]
    fn events_are_told_by_their_customer() {
        let e = br#"{"customer_id":"c\"1","event":"sent"}"#;
        assert!(of_any(e, &["c\"1".to_string()]));
        assert!(!of_any(e, &["c1".to_string()]));
        assert!(!of_any(b"not json", &["c1".to_string()]));
    }
}
