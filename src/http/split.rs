//! Cluster mode: the part of a request whose customers other nodes serve.
//! A send (or a bulk import) keeps the customers of partitions this node
//! runs ([`by_owner`]) and hands each other node its customers in one
//! forwarded call; their answers are put back in the order of the request.

use std::collections::{BTreeMap, HashMap, VecDeque};

use actix_web::http::StatusCode;
use futures_util::future::join_all;
use serde::Deserialize;

use super::send::{Problem, SendBody, SendReply};
use super::{ApiError, AppState};

/// Why one customer of a send got no delivery.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The status it would have alone.
    pub status: StatusCode,
    /// The error code.
    pub code: String,
    /// The error message.
    pub message: String,
    /// The customer's partition was moving (no node served it, or the one
    /// asked no longer did): nothing was done, so the customer may be sent
    /// to again at once. Not so for a node that did not answer, which may
    /// have made the delivery.
    pub moving: bool,
}

impl Refusal {
    /// What another node answered `status` with `error` for a customer.
    fn answered(status: StatusCode, error: Problem) -> Refusal {
        Refusal {
            status,
            moving: error.code == "partition_unavailable",
            code: error.code,
            message: error.message,
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal {
            status: e.status,
            moving: e.code == "partition_unavailable",
            code: e.code.to_string(),
            message: e.message,
        }
    }
}

/// One customer's outcome: its delivery id, or why not.
pub type Outcome = Result<String, Refusal>;

/// Items of a request, each with its place in the request.
pub type Indexed<T> = Vec<(usize, T)>;

/// The items of a request (each about the customer `customer` names), by
/// who answers them: this node (with each item's place in the request),
/// or other nodes, by address. A request another node forwarded here is
/// answered here whole: its sender found this node the owner of all of it.
pub fn by_owner<T>(
    state: &AppState,
    forwarded: bool,
    items: impl IntoIterator<Item = T>,
    customer: impl Fn(&T) -> &str,
) -> (Indexed<T>, BTreeMap<String, Indexed<T>>) {
    let partitioning = state.partitions.partitioning();
    let mut here = Vec::new();
    let mut elsewhere: BTreeMap<String, Indexed<T>> = BTreeMap::new();
    for (n, item) in items.into_iter().enumerate() {
        let tag = partitioning.of_customer(customer(&item));
        let owner = match forwarded || state.partitions.get(tag).is_some() {
            false => state.topology.owner_elsewhere(tag),
            true => None,
        };
        match owner {
            Some(address) => elsewhere.entry(address).or_default().push((n, item)),
            None => here.push((n, item)),
        }
    }
    (here, elsewhere)
}

/// Sends `send` (a send's body without its customers) to the customers of
/// `groups` (by the address of the node serving them: index in the request
/// and customer id) through those nodes, for the backend whose API key
/// asked; a keyed call's customers under the delivery ids `ids` (by index
/// in the request).
pub async fn send_elsewhere(
    state: &AppState,
    send: &SendBody,
    groups: BTreeMap<String, Vec<(usize, String)>>,
    ids: Option<&[String]>,
) -> Vec<(usize, String, Outcome)> {
    let Some(peers) = state.topology.peers() else {
        return Vec::new();
    };
    let calls = groups.into_iter().map(|(address, customers)| async move {
        let part = send.part(
            customers.iter().map(|(_, id)| id.clone()).collect(),
            ids.map(|ids| customers.iter().map(|(n, _)| ids[*n].clone()).collect()),
        );
        let answer = peers
            .forward_part(
                peers.forward_timeout(),
                &address,
                "/v1/send/push",
                part.to_bytes(),
            )
            .await;
        let mut by_customer: HashMap<String, VecDeque<Outcome>> = HashMap::new();
        let mut refusal = None;
        match answer {
            Ok(a) => match serde_json::from_slice::<SendReply>(&a.body) {
                Ok(reply) => {
                    for d in reply.deliveries {
                        let queue = by_customer.entry(d.customer_id).or_default();
                        queue.push_back(Ok(d.delivery_id));
                    }
                    for f in reply.failed {
                        let queue = by_customer.entry(f.customer_id).or_default();
                        queue.push_back(Err(Refusal::answered(a.status, f.error)));
                    }
                    if by_customer.is_empty() {
                        let error = reply.error.unwrap_or_else(|| Problem {
                            code: "unavailable".into(),
                            message: "the node serving these customers refused the send".into(),
                        });
                        refusal = Some(Refusal::answered(a.status, error));
                    }
                }
                // Not a send's answer: an error body, or garbled.
                Err(_) => {
                    let body = String::from_utf8_lossy(&a.body);
                    let why = format!("it answered {}: {body}", a.status);
                    refusal = Some(match serde_json::from_slice::<ErrorBody>(&a.body) {
                        Ok(e) => Refusal::answered(a.status, e.error),
                        Err(_) => unreachable(&address, &why),
                    });
                }
            },
            Err(e) => refusal = Some(unreachable(&address, &e.reason)),
        }
        customers
            .into_iter()
            .map(|(i, customer)| {
                let outcome = by_customer
                    .get_mut(&customer)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or_else(|| {
                        Err(refusal.clone().unwrap_or_else(|| {
                            unreachable(&address, "its answer left this customer out")
                        }))
                    });
                (i, customer, outcome)
            })
            .collect::<Vec<_>>()
    });
    join_all(calls).await.into_iter().flatten().collect()
}

/// The API's error body: `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: Problem,
}

/// The refusal of customers whose node could not be reached: nothing was
/// acknowledged for them (a delivery may have been made; a retry sends
/// again).
fn unreachable(address: &str, why: &str) -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        moving: false,
        code: "partition_unavailable".into(),
        message: format!(
            "node {address} serving this customer did not answer ({why}); retry in a moment"
        ),
    }
}
