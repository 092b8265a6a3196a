//! Template limits (issue 21, item 2) through the real binary: templates
//! that explode with their customers' data fail `template_limit_exceeded`
//! naming the limit and the field, the daemon's memory stays bounded,
//! other customers' requests are answered while templates render, and a
//! message that goes past a limit whatever the customer is refused when
//! it is stored.

mod support;

use std::time::{Duration, Instant};

use pushd::sim::{Fake, FaultMix};
use serde_json::{Value, json};
use support::{Daemon, fakes, ios_token};

/// Nested loops as long as the customer's `n`: harmless for a small `n`,
/// and a sample render (where `n` is empty) passes it.
const LOOPS: &str =
    "{% for i in (1..customer.n) %}{% for j in (1..customer.n) %}{% endfor %}{% endfor %}done";

/// Makes customers `prefix-0..count` with `attributes` and one device each.
async fn customers(d: &Daemon, prefix: &str, count: usize, attributes: Value) {
    for i in 0..count {
        let token = ios_token(i);
        d.customer(
            &format!("{prefix}-{i}"),
            attributes.clone(),
            &[(&token, "ios")],
        )
        .await;
    }
}

/// Stores message `id` with `body`.
async fn message(d: &Daemon, id: &str, body: &str) {
    let spec = json!({"title": "Hi", "body": body});
    d.ok("PUT", &format!("/v1/messages/{id}"), spec).await;
}

/// Checks that delivery `id` failed on the limit `limit` in `field`.
async fn failed_on(d: &Daemon, id: &str, field: &str, limit: &str) {
    let v = d.settled(id).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["failure_reason"], "template_limit_exceeded", "{v}");
    let words = v["failure_message"].as_str().unwrap();
    assert!(
        words.starts_with(&format!("{field}: ")) && words.contains(limit),
        "{v}"
    );
}

/// The peak resident memory of process `pid` (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib / 1024
}

/// Nested 5,000 x 5,000 loops (the attack) held a customer's actor
/// thread for seconds; now each render stops at `max_iterations`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_loops_fail_template_limit_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(dir.path(), &fakes.env());
    customers(&d, "bomb", 200, json!({"n": 5000})).await;
    message(&d, "loops", LOOPS).await;
    let ids: Vec<String> = (0..200).map(|i| format!("bomb-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    // Each render stops at once: the send answers in about a second. Before,
    // each took tens of seconds, and the send hours.
    let sending = tokio::time::timeout(Duration::from_secs(60), d.send("loops", &ids));
    let deliveries = sending.await.expect("the send answers");
    assert_eq!(deliveries.len(), 200);
    for id in &deliveries {
        failed_on(&d, id, "body", "(max_iterations 10000)").await;
    }
    assert_eq!(fakes.apns.requests(), 0, "nothing was sent");
}

/// While slow templates render (limits raised so they render fully), an
/// unrelated customer's GET is answered: renders run off the actor
/// threads. Before, the GET queued behind the renders of the customers on
/// its actor thread, so it took about as long as the whole send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_answers_while_templates_render() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let mut env = fakes.env();
    env.extend([
        ("PUSHD_TEMPLATE_MAX_ITERATIONS", "1000000000".to_string()),
        ("PUSHD_TEMPLATE_MAX_RENDER_CPU_MS", "600000".to_string()),
    ]);
    let d = Daemon::start(dir.path(), &env);
    customers(&d, "slow", 40, json!({"n": 300})).await;
    d.customer("other", json!({"plan": "free"}), &[]).await;
    message(&d, "loops", LOOPS).await;

    let started = Instant::now();
    let send = {
        let (client, url) = (d.client.clone(), d.url("/v1/send/push"));
        let ids: Vec<String> = (0..40).map(|i| format!("slow-{i}")).collect();
        tokio::spawn(async move {
            let body = json!({"message_id": "loops", "customer_ids": ids});
            let resp = client
                .post(url)
                .bearer_auth(support::API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    // The other customer, again and again for as long as the send runs.
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while !send.is_finished() {
        let asked = Instant::now();
        let (status, v) = d.call("GET", "/v1/customers/other", None).await;
        assert_eq!((status, &v["attributes"]["plan"]), (200, &json!("free")));
        slowest = slowest.max(asked.elapsed());
        answered += 1;
    }
    let (status, sent, attack) = send.await.unwrap();
    assert_eq!(status, 202, "{sent}");
    println!("send of 40 slow renders: {attack:?}; {answered} GETs meanwhile, slowest {slowest:?}");
    assert!(answered >= 3, "{answered} GETs during the send");
    assert!(
        slowest * 5 < attack,
        "the slowest GET took {slowest:?} of the send's {attack:?}"
    );
    let first = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
    let v = d.settled(first).await;
    assert_eq!(v["status"], "sent", "the render completed: {v}");
    assert_eq!(v["content"]["body"], "done", "{v}");
}

/// A string doubled by `append` 28 times (the attack took the RSS
/// past 10 GB), unrolled, in a loop and by `capture`: each render stops at
/// `max_output_bytes`, and the daemon's peak RSS stays far below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubling_a_string_fails_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(dir.path(), &fakes.env());
    customers(&d, "seed", 4, json!({"seed": "xxxxxxxx", "times": 28})).await;
    let unrolled = format!(
        "{{% assign s = customer.seed %}}{}{{{{ s | size }}}}",
        "{% assign s = s | append: s %}".repeat(28)
    );
    let looped = "{% assign s = customer.seed %}{% for i in (1..customer.times) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}";
    let captured = "{% assign s = customer.seed %}{% for i in (1..customer.times) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}{{ s | size }}";
    let ids = ["seed-0", "seed-1", "seed-2", "seed-3"];
    for (name, body) in [
        ("unrolled", unrolled.as_str()),
        ("looped", looped),
        ("captured", captured),
    ] {
        message(&d, name, body).await;
        for id in d.send(name, &ids).await {
            failed_on(&d, &id, "body", "(max_output_bytes 16384)").await;
        }
    }
    let peak = peak_rss_mib(d.pid());
    println!("peak RSS after the doubling attacks: {peak} MiB");
    assert!(peak < 500, "peak RSS {peak} MiB");
    assert_eq!(fakes.apns.requests(), 0, "nothing was sent");
}

/// A message that goes past a limit whatever the customer is refused when
/// stored, naming the limit and the field; nothing is stored.
#[tokio::test]
async fn a_message_past_a_limit_on_a_sample_render_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let loops = "Hi {{ customer.first_name }} {% for i in (1..5000) %}{% for j in (1..5000) %}x{% endfor %}{% endfor %}";
    let doubled = format!(
        "{{% assign s = \"xxxxxxxx\" %}}{}{{{{ s }}}}",
        "{% assign s = s | append: s %}".repeat(28)
    );
    let refused = [
        (
            json!({"title": "Hi", "body": loops}),
            "body",
            "max_iterations 10000",
        ),
        (
            json!({"title": doubled, "body": "b"}),
            "title",
            "max_output_bytes 16384",
        ),
    ];
    for (spec, field, limit) in refused {
        let (status, v) = d.call("PUT", "/v1/messages/bomb", Some(spec)).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json!("template_limit_exceeded"))
        );
        let words = v["error"]["message"].as_str().unwrap();
        assert!(
            words.starts_with(&format!("{field}: ")) && words.contains(limit),
            "{v}"
        );
        let (status, _) = d.call("GET", "/v1/messages/bomb", None).await;
        assert_eq!(status, 404, "nothing stored");
    }
    // What only a customer's data can make explode is stored, as is a
    // template whose variables the sample lacks.
    let fine = json!({"title": "Hi {{ customer.first_name }}", "body": LOOPS});
    d.ok("PUT", "/v1/messages/fine", fine).await;
}
