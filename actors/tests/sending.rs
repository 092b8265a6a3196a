//! Paced messages and keyed (idempotent) send calls, over in-memory ports
//! and a manual clock.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pushd_actors::delivery_id::DeliveryId;
use pushd_actors::engine::{EngineError, PartitionTag};
use pushd_actors::idempotency::{Claim, SendAnswer, SendTicket, SentTo, WINDOW_MS};
use pushd_actors::model::{Audience, DEFAULT_APP, MessageSpec, PushOptions};
use pushd_actors::person::SendMessage;
use pushd_actors::status::MessageStatus;
use serde_json::Value;
use support::{Harness, MemStore, wait_for};

fn message(rate_per_minute: Option<u32>) -> Arc<MessageSpec> {
    Arc::new(MessageSpec {
        id: "news".into(),
        name: "News".into(),
        campaign_id: None,
        title: "Hi".into(),
        body: "News".into(),
        deep_link: None,
        audience: Audience::AllDevices,
        collapse_id: None,
        conversion: None,
        app: DEFAULT_APP.into(),
        push: PushOptions::default(),
        rate_per_minute,
        lane: Default::default(),
        created_at: 0,
    })
}

/// Customer `id` with one iOS device, token `t-<id>`.
async fn customer(h: &Harness, id: &str) {
    h.ios_customer(id, Default::default(), false).await;
}

async fn send(h: &Harness, id: &str, rate: Option<u32>, delivery_id: Option<String>) -> String {
    let msg = SendMessage {
        message: message(rate),
        data: Value::Null,
        delivery_id,
        time: None,
        rules: Default::default(),
    };
    h.registry.request(id, msg).await.unwrap()
}

/// The tokens the provider was called for, in order.
fn called(h: &Harness) -> Vec<String> {
    let calls = h.provider.calls.lock().unwrap();
    calls.iter().map(|p| p.token.to_string()).collect()
}

async fn calls_reach(h: &Harness, n: usize) {
    wait_for(&h.provider.called, || called(h).len() >= n).await;
}

/// Waits until `n` sleepers wait on the clock (idle checks and paced turns).
async fn sleepers_reach(h: &Harness, n: usize) {
    wait_for(&h.clock.slept, || h.clock.sleepers() >= n).await;
}

#[actix::test]
async fn paced_sends_start_a_turn_apart_in_order_across_send_calls() {
    let h = Harness::new();
    for c in ["c1", "c2", "c3"] {
        customer(&h, c).await;
    }
    // Two a minute: a turn every 30 s, the first at once.
    send(&h, "c1", Some(2), None).await;
    calls_reach(&h, 1).await;
    // Each customer's actor sleeps for its idle check; c2 and c3 sleep for
    // their turns too.
    send(&h, "c2", Some(2), None).await;
    sleepers_reach(&h, 4).await;
    let last = send(&h, "c3", Some(2), None).await;
    sleepers_reach(&h, 5).await;
    assert_eq!(called(&h), ["t-c1"], "the others wait for their turns");

    h.clock.advance(Duration::from_secs(30));
    calls_reach(&h, 2).await;
    assert_eq!(called(&h), ["t-c1", "t-c2"]);
    let waiting = h.store.delivery_now(&last);
    assert_eq!(waiting.status(), MessageStatus::Attempted);
    h.clock.advance(Duration::from_secs(30));
    calls_reach(&h, 3).await;
    assert_eq!(called(&h), ["t-c1", "t-c2", "t-c3"]);
    wait_for(&h.store.commits, || {
        h.store.delivery_now(&last).status() == MessageStatus::Sent
    })
    .await;
}

#[actix::test]
async fn an_unpaced_message_is_not_held_by_a_paced_one() {
    let h = Harness::new();
    for c in ["c1", "c2", "c3"] {
        customer(&h, c).await;
    }
    send(&h, "c1", Some(1), None).await;
    calls_reach(&h, 1).await;
    send(&h, "c2", Some(1), None).await;
    sleepers_reach(&h, 4).await;
    send(&h, "c3", None, None).await;
    calls_reach(&h, 2).await;
    assert_eq!(called(&h), ["t-c1", "t-c3"]);
}

#[actix::test]
async fn a_paced_send_waiting_for_its_turn_survives_a_restart() {
    let first = Harness::new();
    for c in ["c1", "c2", "c3"] {
        customer(&first, c).await;
    }
    let sent = send(&first, "c1", Some(2), None).await;
    wait_for(&first.store.commits, || {
        first.store.delivery_now(&sent).status() == MessageStatus::Sent
    })
    .await;
    let second_id = send(&first, "c2", Some(2), None).await;
    let third_id = send(&first, "c3", Some(2), None).await;
    sleepers_reach(&first, 5).await;
    let store = Arc::new(MemStore::from_snapshot(first.store.snapshot()));
    let journal = Arc::new(first.journal.crash());
    drop(first);

    // Both waiting sends resume, paced afresh: one at once, one 30 s later
    // (each resumed actor sleeps for its idle check too).
    let h = Harness::on(store, journal, Default::default());
    calls_reach(&h, 1).await;
    sleepers_reach(&h, 3).await;
    assert_eq!(called(&h).len(), 1);
    h.clock.advance(Duration::from_secs(30));
    calls_reach(&h, 2).await;
    let mut tokens = called(&h);
    tokens.sort();
    assert_eq!(tokens, ["t-c2", "t-c3"]);
    for id in [second_id, third_id] {
        wait_for(&h.store.commits, || {
            h.store.delivery_now(&id).status() == MessageStatus::Sent
        })
        .await;
    }
}

/// Claims `key` for a body digesting to `fingerprint`.
async fn claim(h: &Harness, key: &str, fingerprint: &str) -> Result<Claim, EngineError> {
    h.registry.idempotent_sends().claim(key, fingerprint).await
}

async fn ticket(h: &Harness, key: &str, fingerprint: &str) -> SendTicket {
    match claim(h, key, fingerprint).await.unwrap() {
        Claim::Send(ticket) => ticket,
        Claim::Replay(answer) => panic!("replayed {answer:?}"),
    }
}

/// Sends to `customers` under the ticket's ids, as the send endpoint does.
async fn keyed_send(h: &Harness, ticket: &SendTicket, customers: &[&str]) -> SendAnswer {
    let mut answer = SendAnswer::default();
    for (n, c) in customers.iter().enumerate() {
        let delivery_id = send(h, c, None, Some(ticket.delivery_id(n))).await;
        answer.deliveries.push(SentTo {
            customer_id: c.to_string(),
            delivery_id,
        });
    }
    answer
}

#[actix::test]
async fn a_key_replays_its_answer_and_refuses_another_body() {
    let h = Harness::new();
    customer(&h, "c1").await;
    let t = ticket(&h, "k1", "body-a").await;
    let answer = keyed_send(&h, &t, &["c1"]).await;
    t.record(&answer).await.unwrap();
    match claim(&h, "k1", "body-a").await.unwrap() {
        Claim::Replay(again) => assert_eq!(again, answer),
        Claim::Send(t) => panic!("sent again: {t:?}"),
    }
    let other = claim(&h, "k1", "body-b").await;
    assert_eq!(
        other.unwrap_err(),
        EngineError::IdempotencyConflict("k1".into())
    );
    wait_for(&h.store.commits, || {
        h.store
            .delivery_now(&answer.deliveries[0].delivery_id)
            .status()
            == MessageStatus::Sent
    })
    .await;
    assert_eq!(called(&h), ["t-c1"], "sent once");
}

#[actix::test]
async fn a_second_call_with_the_key_waits_for_the_first_then_replays() {
    let h = Harness::new();
    customer(&h, "c1").await;
    let first = ticket(&h, "k1", "body").await;
    let registry = h.registry.clone();
    let second = tokio::spawn(async move {
        let claimed = registry.idempotent_sends().claim("k1", "body").await;
        match claimed.unwrap() {
            Claim::Replay(answer) => answer,
            Claim::Send(t) => panic!("a second send: {t:?}"),
        }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "the key is held");
    let answer = keyed_send(&h, &first, &["c1"]).await;
    first.record(&answer).await.unwrap();
    assert_eq!(second.await.unwrap(), answer);
}

#[actix::test]
async fn a_call_cut_short_is_finished_by_its_retry_under_the_same_ids() {
    let first = Harness::new();
    for c in ["c1", "c2"] {
        customer(&first, c).await;
    }
    let t = ticket(&first, "k1", "body").await;
    let made = send(&first, "c1", None, Some(t.delivery_id(0))).await;
    wait_for(&first.store.commits, || {
        first.store.delivery_now(&made).status() == MessageStatus::Sent
    })
    .await;
    // The daemon dies before c2's delivery and before the answer.
    let store = Arc::new(MemStore::from_snapshot(first.store.snapshot()));
    let journal = Arc::new(first.journal.crash());
    drop(t);
    drop(first);

    let h = Harness::on(store, journal, Default::default());
    let t = ticket(&h, "k1", "body").await;
    let answer = keyed_send(&h, &t, &["c1", "c2"]).await;
    assert_eq!(
        answer.deliveries[0].delivery_id, made,
        "c1's delivery stands"
    );
    t.record(&answer).await.unwrap();
    let c2 = &answer.deliveries[1].delivery_id;
    wait_for(&h.store.commits, || {
        h.store.delivery_now(c2).status() == MessageStatus::Sent
    })
    .await;
    assert_eq!(called(&h), ["t-c2"], "c1 is not sent again");
    let deliveries = h.store.snapshot().deliveries;
    assert_eq!(deliveries.len(), 2, "one delivery per customer");
}

#[actix::test]
async fn an_answer_without_deliveries_is_not_kept() {
    let h = Harness::new();
    let t = ticket(&h, "k1", "body").await;
    let id = t.delivery_id(0);
    t.record(&SendAnswer::default()).await.unwrap();
    let again = ticket(&h, "k1", "body").await;
    assert_eq!(
        again.delivery_id(0),
        id,
        "the retry goes on under the same ids"
    );
}

#[actix::test]
async fn partitioned_ids_carry_their_customers_partition_and_hold_on_every_try() {
    let h = Harness::new();
    let t = ticket(&h, "k1", "body").await;
    let ids: Vec<String> = (0..3)
        .map(|n| t.partitioned_delivery_id(n, PartitionTag(7 + n as u16)))
        .collect();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            DeliveryId::parse(id).map(DeliveryId::partition),
            Some(PartitionTag(7 + n as u16))
        );
    }
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "one id per customer: {ids:?}");
    drop(t);
    let again = ticket(&h, "k1", "body").await;
    assert_eq!(again.partitioned_delivery_id(1, PartitionTag(8)), ids[1]);
}

#[actix::test]
async fn a_key_expires_after_a_day_and_its_record_is_dropped() {
    let h = Harness::new();
    customer(&h, "c1").await;
    let t = ticket(&h, "k0", "body").await;
    let k0 = keyed_send(&h, &t, &["c1"]).await;
    t.record(&k0).await.unwrap();
    let t = ticket(&h, "k1", "body").await;
    let first = keyed_send(&h, &t, &["c1"]).await;
    t.record(&first).await.unwrap();
    h.clock
        .advance(Duration::from_millis(WINDOW_MS as u64 - 1000));
    assert!(matches!(
        claim(&h, "k1", "other").await,
        Err(EngineError::IdempotencyConflict(_))
    ));
    h.clock.advance(Duration::from_secs(1));
    // A day later the key is free: another body sends afresh.
    let t = ticket(&h, "k1", "other").await;
    let second = keyed_send(&h, &t, &["c1"]).await;
    assert_ne!(second, first);
    t.record(&second).await.unwrap();
    // An hour after the last sweep, another key's first call swept records
    // older than a day: k0's went, k1's second record and k2's remain.
    h.clock.advance(Duration::from_secs(3600));
    drop(ticket(&h, "k2", "body").await);
    let mut kept: Vec<_> = h.store.snapshot().sends.into_values().collect();
    kept.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].answer.as_ref(), Some(&second));
    assert_eq!(kept[1].key, "k2");
}
