//! Cluster mode: the part of a request whose customers other nodes serve.
//! A send (or a bulk import) keeps the customers of partitions this node
//! runs ([`by_owner`]) and hands each other node its customers in one
//! forwarded call; their answers are put back in the order of the request.

use std::collections::{BTreeMap, HashMap, VecDeque};

use actix_web::http::StatusCode;
use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::{Map, Value, json};

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

/// Sends `message_id` with `data` to the customers of `groups` (by the
/// address of the node serving them: index in the request and customer
/// id) through those nodes, for the backend whose API key asked; a keyed
/// call's customers under the delivery ids `ids` (by index in the request).
pub async fn send_elsewhere(
    state: &AppState,
    message_id: &str,
    data: &Value,
    fields: &Map<String, Value>,
    groups: BTreeMap<String, Vec<(usize, String)>>,
    ids: Option<&[String]>,
) -> Vec<(usize, String, Outcome)> {
    let Some(peers) = state.topology.peers() else {
        return Vec::new();
    };
    let calls = groups.into_iter().map(|(address, customers)| async move {
        let customer_ids: Vec<&str> = customers.iter().map(|(_, id)| id.as_str()).collect();
        let mut body =
            json!({"message_id": message_id, "customer_ids": customer_ids, "data": data});
        for (name, value) in fields {
            body[name] = value.clone();
        }
        if let Some(ids) = ids {
            let given: Vec<&str> = customers.iter().map(|(n, _)| ids[*n].as_str()).collect();
            body["delivery_ids"] = json!(given);
        }
        let body = Bytes::from(serde_json::to_vec(&body).expect("encodes"));
        let answer = peers
            .forward_part(peers.forward_timeout(), &address, "/v1/send/push", body)
            .await;
        let mut by_customer: HashMap<String, VecDeque<Outcome>> = HashMap::new();
        let mut refusal = None;
        match answer {
            Ok(a) => match serde_json::from_slice::<Value>(&a.body) {
                Ok(body) => {
                    for d in body["deliveries"].as_array().into_iter().flatten() {
                        let (Some(c), Some(id)) =
                            (d["customer_id"].as_str(), d["delivery_id"].as_str())
                        else {
                            continue;
                        };
                        let queue = by_customer.entry(c.to_string()).or_default();
                        queue.push_back(Ok(id.to_string()));
                    }
                    for f in body["failed"].as_array().into_iter().flatten() {
                        let Some(c) = f["customer_id"].as_str() else {
                            continue;
                        };
                        let queue = by_customer.entry(c.to_string()).or_default();
                        let code = f["error"]["code"].as_str().unwrap_or("unavailable");
                        queue.push_back(Err(Refusal {
                            status: a.status,
                            moving: code == "partition_unavailable",
                            code: code.into(),
                            message: f["error"]["message"].as_str().unwrap_or_default().into(),
                        }));
                    }
                    if by_customer.is_empty() {
                        let code = body["error"]["code"].as_str().unwrap_or("unavailable");
                        refusal = Some(Refusal {
                            status: a.status,
                            moving: code == "partition_unavailable",
                            code: code.into(),
                            message: body["error"]["message"]
                                .as_str()
                                .unwrap_or("the node serving these customers refused the send")
                                .into(),
                        });
                    }
                }
                Err(e) => refusal = Some(unreachable(&address, &e.to_string())),
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
