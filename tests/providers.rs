//! The production APNs and FCM clients against the fake servers, over real
//! HTTP/2 sockets on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pushd::providers::{
    ApnsClient, ApnsConfig, AppConfig, ClientOptions, FcmClient, FcmConfig, Providers,
};
use pushd::sim::{
    ApnsTestKey, Behavior, Fake, FakeApns, FakeApnsConfig, FakeFcm, FakeFcmConfig, Fault, FaultMix,
};
use pushd_actors::model::{
    Content, DEFAULT_APP, Environment, InterruptionLevel, Lane, Platform, PushKind, PushOptions,
    PushPriority,
};
use pushd_actors::ports::{Accepted, Provider, ProviderError, Push, Slot};
use pushd_actors::status::FailureReason;
use tempfile::TempDir;

/// A valid-looking APNs device token (64 hex digits).
fn ios_token(n: u64) -> String {
    format!("{n:064x}")
}

fn push(platform: Platform, token: &str) -> Push {
    Push {
        delivery_id: format!("dlv-{token}").into(),
        token: token.into(),
        platform,
        app: DEFAULT_APP.into(),
        environment: Environment::Production,
        content: Arc::new(Content {
            title: "Hello".to_owned(),
            body: "Your order shipped".to_owned(),
            deep_link: Some("shop://orders/A-17".to_owned()),
            collapse_id: None,
            options: PushOptions::default(),
            rate_per_minute: None,
            lane: Default::default(),
        }),
    }
}

/// A fake APNs and a client configuration (key file in `dir`) for it.
struct Apns {
    fake: FakeApns,
    config: ApnsConfig,
    _dir: TempDir,
}

async fn apns_with(mix: FaultMix) -> Apns {
    let dir = TempDir::new().unwrap();
    let key = ApnsTestKey::generate();
    let path = dir.path().join("AuthKey.p8");
    key.write_p8(&path).unwrap();
    let mut fake_config = FakeApnsConfig::new(&key);
    fake_config.mix = mix;
    let fake = FakeApns::start(fake_config).await.unwrap();
    let config = fake.client_config(&path);
    Apns {
        fake,
        config,
        _dir: dir,
    }
}

async fn apns() -> Apns {
    apns_with(FaultMix::default()).await
}

/// A fake FCM and a client configuration (service account in `dir`) for it.
struct Fcm {
    fake: FakeFcm,
    config: FcmConfig,
    _dir: TempDir,
}

async fn fcm_with(fake_config: FakeFcmConfig) -> Fcm {
    let dir = TempDir::new().unwrap();
    let fake = FakeFcm::start(fake_config).await.unwrap();
    let path = dir.path().join("service-account.json");
    fake.write_service_account(&path).unwrap();
    let config = fake.client_config(&path);
    Fcm {
        fake,
        config,
        _dir: dir,
    }
}

async fn fcm() -> Fcm {
    fcm_with(FakeFcmConfig::default()).await
}

fn permanent(reason: FailureReason, detail: &str) -> ProviderError {
    ProviderError::Permanent {
        reason,
        detail: detail.to_owned(),
    }
}

fn bounced(detail: &str) -> ProviderError {
    ProviderError::Bounced {
        detail: detail.to_owned(),
    }
}

fn transient(detail: &str, retry_after: Option<Duration>) -> ProviderError {
    ProviderError::Transient {
        detail: detail.to_owned(),
        retry_after,
    }
}

#[tokio::test]
async fn apns_success_sends_headers_and_payload() {
    let apns = apns().await;
    let providers = Providers::from_config(&apns.config, &FcmConfig::default());
    let token = ios_token(1);

    let accepted = providers
        .send(push(Platform::Ios, &token), Slot::free())
        .await
        .unwrap();

    assert!(accepted.provider_id.is_some_and(|id| id.len() == 36));
    let received = apns.fake.pushes(&token);
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(
        got.delivery_id.as_deref(),
        Some(format!("dlv-{token}").as_str())
    );
    assert!(got.headers["authorization"].starts_with("bearer "));
    assert_eq!(got.headers["apns-topic"], "io.pushd.demo");
    assert_eq!(got.headers["apns-push-type"], "alert");
    assert_eq!(got.headers["apns-priority"], "10");
    assert!(got.headers["apns-expiration"].parse::<u64>().is_ok());
    assert!(!got.headers.contains_key("apns-collapse-id"));
    let payload = &got.payload;
    assert_eq!(payload["aps"]["alert"]["title"], "Hello");
    assert_eq!(payload["aps"]["alert"]["body"], "Your order shipped");
    assert_eq!(payload["aps"]["sound"], "default");
    assert_eq!(payload["deep_link"], "shop://orders/A-17");
    assert_eq!(payload["CIO-Delivery-ID"], format!("dlv-{token}"));
    assert_eq!(payload["CIO-Delivery-Token"], token);

    let mut collapsing = push(Platform::Ios, &token);
    Arc::make_mut(&mut collapsing.content).collapse_id = Some("order-A-17".to_owned());
    providers.send(collapsing, Slot::free()).await.unwrap();
    let got = &apns.fake.pushes(&token)[1];
    assert_eq!(got.headers["apns-collapse-id"], "order-A-17");
}

#[tokio::test]
async fn fcm_success_sends_message_with_data_keys() {
    let fcm = fcm().await;
    let providers = Providers::from_config(&ApnsConfig::default(), &fcm.config);

    let accepted = providers
        .send(push(Platform::Android, "fcm-tok-1"), Slot::free())
        .await
        .unwrap();

    let name = accepted.provider_id.unwrap();
    assert!(name.starts_with("projects/pushd-test/messages/"), "{name}");
    let received = fcm.fake.pushes("fcm-tok-1");
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert!(got.headers["authorization"].starts_with("Bearer ya29.fake-"));
    assert_eq!(got.delivery_id.as_deref(), Some("dlv-fcm-tok-1"));
    let message = &got.payload["message"];
    assert_eq!(message["token"], "fcm-tok-1");
    assert_eq!(message["notification"]["title"], "Hello");
    assert_eq!(message["notification"]["body"], "Your order shipped");
    assert_eq!(message["data"]["CIO-Delivery-ID"], "dlv-fcm-tok-1");
    assert_eq!(message["data"]["CIO-Delivery-Token"], "fcm-tok-1");
    assert_eq!(message["data"]["deep_link"], "shop://orders/A-17");
    assert_eq!(message["android"]["priority"], "HIGH");
    assert!(message["android"].get("ttl").is_none());
    assert!(message["android"].get("notification").is_none());
    assert!(message["android"].get("collapse_key").is_none());
    assert_eq!(fcm.fake.token_requests(), 1);
}

#[tokio::test]
async fn apns_errors_map_to_provider_errors() {
    let apns = apns().await;
    let client = ApnsClient::from_config(&apns.config).unwrap();
    let cases = [
        (Fault::Unregistered, bounced("410 Unregistered")),
        (Fault::BadDeviceToken, bounced("400 BadDeviceToken")),
        (
            Fault::TooManyRequests {
                retry_after_secs: 7,
            },
            transient("429 TooManyRequests", Some(Duration::from_secs(7))),
        ),
        (
            Fault::InternalError,
            transient("500 InternalServerError", None),
        ),
        (
            Fault::Unavailable,
            transient("503 ServiceUnavailable", None),
        ),
        (
            Fault::ExpiredCredentials,
            permanent(
                FailureReason::CredentialsNotFound,
                "403 ExpiredProviderToken",
            ),
        ),
    ];
    for (n, (fault, expected)) in cases.into_iter().enumerate() {
        let token = ios_token(100 + n as u64);
        apns.fake.script(&token, Behavior::Fail(fault));
        let got = client.send(&push(Platform::Ios, &token)).await;
        assert_eq!(got, Err(expected), "{fault:?}");
    }

    let token = ios_token(200);
    apns.fake.script(&token, Behavior::Fail(Fault::Reset));
    let got = client.send(&push(Platform::Ios, &token)).await;
    assert!(
        matches!(got, Err(ProviderError::Transient { .. })),
        "{got:?}"
    );
    // A reset after APNs took the push (which it may have pushed) is one
    // attempt: not sent again at once.
    assert_eq!(apns.fake.calls(&token), 1);
}

#[tokio::test]
async fn apns_request_validation_maps_to_provider_errors() {
    let apns = apns().await;

    let client = ApnsClient::from_config(&apns.config).unwrap();
    let got = client.send(&push(Platform::Ios, "not-a-hex-token")).await;
    assert_eq!(got, Err(bounced("400 BadDeviceToken")));

    let mut other_topic = apns.config.clone();
    other_topic.topic = Some("com.example.other".to_owned());
    let client = ApnsClient::from_config(&other_topic).unwrap();
    let got = client.send(&push(Platform::Ios, &ios_token(1))).await;
    assert_eq!(
        got,
        Err(permanent(
            FailureReason::ProviderRejected,
            "400 TopicDisallowed"
        ))
    );

    let dir = TempDir::new().unwrap();
    let wrong_key = dir.path().join("other.p8");
    ApnsTestKey::generate().write_p8(&wrong_key).unwrap();
    let mut wrong = apns.config.clone();
    wrong.key_file = Some(wrong_key.display().to_string());
    let client = ApnsClient::from_config(&wrong).unwrap();
    let got = client.send(&push(Platform::Ios, &ios_token(1))).await;
    assert_eq!(
        got,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "403 InvalidProviderToken"
        ))
    );
    assert_eq!(apns.fake.accepted(), 0);
}

#[tokio::test]
async fn apns_expired_provider_token_is_renewed_once() {
    let apns = apns().await;
    let client = ApnsClient::from_config(&apns.config).unwrap();

    let once = ios_token(1);
    apns.fake.script(
        &once,
        Behavior::FailTimes {
            n: 1,
            fault: Fault::ExpiredCredentials,
        },
    );
    assert!(client.send(&push(Platform::Ios, &once)).await.is_ok());
    assert_eq!(apns.fake.requests(), 2);

    let always = ios_token(2);
    apns.fake
        .script(&always, Behavior::Fail(Fault::ExpiredCredentials));
    let got = client.send(&push(Platform::Ios, &always)).await;
    assert_eq!(
        got,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "403 ExpiredProviderToken"
        ))
    );
    assert_eq!(apns.fake.requests(), 4, "one retry, not more");
}

#[tokio::test]
async fn fcm_errors_map_to_provider_errors() {
    let fcm = fcm().await;
    let client = FcmClient::from_config(&fcm.config).unwrap();
    let cases = [
        (Fault::Unregistered, bounced("404 UNREGISTERED")),
        (Fault::BadDeviceToken, bounced("400 INVALID_ARGUMENT")),
        (
            Fault::TooManyRequests {
                retry_after_secs: 3,
            },
            transient("429 QUOTA_EXCEEDED", Some(Duration::from_secs(3))),
        ),
        (Fault::InternalError, transient("500 INTERNAL", None)),
        (Fault::Unavailable, transient("503 UNAVAILABLE", None)),
        (
            Fault::ExpiredCredentials,
            permanent(
                FailureReason::CredentialsNotFound,
                "401 THIRD_PARTY_AUTH_ERROR",
            ),
        ),
    ];
    for (fault, expected) in cases {
        let token = format!("fcm-{fault:?}");
        fcm.fake.script(&token, Behavior::Fail(fault));
        let got = client.send(&push(Platform::Android, &token)).await;
        assert_eq!(got, Err(expected), "{fault:?}");
    }

    fcm.fake.script("fcm-reset", Behavior::Fail(Fault::Reset));
    let got = client.send(&push(Platform::Android, "fcm-reset")).await;
    assert!(
        matches!(got, Err(ProviderError::Transient { .. })),
        "{got:?}"
    );

    let got = client.send(&push(Platform::Android, "")).await;
    assert_eq!(got, Err(bounced("400 INVALID_ARGUMENT")));
}

#[tokio::test]
async fn fcm_wrong_project_is_a_credentials_failure() {
    let fcm = fcm_with(FakeFcmConfig {
        project_id: "someone-else".to_owned(),
        ..FakeFcmConfig::default()
    })
    .await;
    // The service account names the fake's project; point it at another one.
    let path = PathBuf::from(fcm.config.service_account_file.clone().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("someone-else", "pushd-test")).unwrap();
    let client = FcmClient::from_config(&fcm.config).unwrap();

    let got = client.send(&push(Platform::Android, "tok")).await;

    assert_eq!(
        got,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "403 SENDER_ID_MISMATCH"
        ))
    );
}

#[tokio::test]
async fn missing_or_bad_credentials_fail_without_a_request() {
    let apns = apns().await;
    let fcm = fcm().await;
    let apns_unset = ApnsConfig {
        endpoint: Some(apns.fake.endpoint()),
        ..ApnsConfig::default()
    };
    let fcm_unset = FcmConfig {
        endpoint: Some(fcm.fake.endpoint()),
        ..FcmConfig::default()
    };
    let providers = Providers::from_config(&apns_unset, &fcm_unset);

    let ios = providers
        .send(push(Platform::Ios, &ios_token(1)), Slot::free())
        .await;
    let android = providers
        .send(push(Platform::Android, "tok"), Slot::free())
        .await;

    assert_eq!(
        ios,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "no APNs key configured"
        ))
    );
    assert_eq!(
        android,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "no FCM service account configured"
        ))
    );

    let dir = TempDir::new().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not a key").unwrap();
    let bad_apns = ApnsConfig {
        key_file: Some(garbage.display().to_string()),
        ..apns.config.clone()
    };
    let bad_fcm = FcmConfig {
        service_account_file: Some(dir.path().join("absent.json").display().to_string()),
        ..fcm.config.clone()
    };
    let providers = Providers::from_config(&bad_apns, &bad_fcm);
    for platform in [Platform::Ios, Platform::Android] {
        let got = providers
            .send(push(platform, &ios_token(1)), Slot::free())
            .await;
        assert!(
            matches!(
                got,
                Err(ProviderError::Permanent {
                    reason: FailureReason::CredentialsNotFound,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    assert_eq!((apns.fake.requests(), apns.fake.connections()), (0, 0));
    assert_eq!((fcm.fake.requests(), fcm.fake.token_requests()), (0, 0));
    assert_eq!(fcm.fake.connections(), 0);
}

#[tokio::test]
async fn unreachable_provider_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let apns = apns().await;
    let config = ApnsConfig {
        endpoint: Some(endpoint),
        ..apns.config.clone()
    };
    let client = ApnsClient::from_config(&config).unwrap();

    let got = client.send(&push(Platform::Ios, &ios_token(1))).await;

    assert!(
        matches!(&got, Err(ProviderError::Transient { detail, retry_after: None }) if detail.starts_with("network")),
        "{got:?}"
    );
}

#[tokio::test]
async fn slow_answers_time_out_as_transient() {
    let apns = apns().await;
    let fcm = fcm().await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let providers = Providers::with_options(&apns.config, &fcm.config, &options);
    let token = ios_token(1);
    apns.fake
        .script(&token, Behavior::Delay(Duration::from_secs(3600)));
    fcm.fake
        .script("slow", Behavior::Delay(Duration::from_secs(3600)));

    let ios = providers
        .send(push(Platform::Ios, &token), Slot::free())
        .await;
    let android = providers
        .send(push(Platform::Android, "slow"), Slot::free())
        .await;

    for got in [ios, android] {
        assert!(
            matches!(&got, Err(ProviderError::Transient { detail, .. }) if detail.starts_with("timeout")),
            "{got:?}"
        );
    }
}

#[tokio::test]
async fn apns_jwt_is_cached_and_renewed() {
    let apns = apns().await;
    let cached = ApnsClient::from_config(&apns.config).unwrap();
    for n in 0..3 {
        cached
            .send(&push(Platform::Ios, &ios_token(n)))
            .await
            .unwrap();
    }
    assert_eq!(apns.fake.distinct_jwts(), 1);

    let options = ClientOptions {
        apns_token_ttl: Duration::ZERO,
        ..ClientOptions::default()
    };
    let renewing = ApnsClient::new(&apns.config, &options).unwrap();
    for n in 0..2 {
        renewing
            .send(&push(Platform::Ios, &ios_token(n)))
            .await
            .unwrap();
    }
    assert!(
        apns.fake.distinct_jwts() >= 3,
        "{}",
        apns.fake.distinct_jwts()
    );
}

#[tokio::test]
async fn fcm_access_token_is_cached_and_refreshed() {
    let fcm = fcm().await;
    let cached = FcmClient::from_config(&fcm.config).unwrap();
    for n in 0..3 {
        cached
            .send(&push(Platform::Android, &format!("t{n}")))
            .await
            .unwrap();
    }
    assert_eq!(fcm.fake.token_requests(), 1);

    // Tokens live 60 s; refreshing 120 s before expiry refreshes every send.
    let short = fcm_with(FakeFcmConfig {
        token_expires_in: 60,
        ..FakeFcmConfig::default()
    })
    .await;
    let options = ClientOptions {
        fcm_refresh_margin: Duration::from_secs(120),
        ..ClientOptions::default()
    };
    let client = FcmClient::new(&short.config, &options).unwrap();
    for n in 0..2 {
        client
            .send(&push(Platform::Android, &format!("t{n}")))
            .await
            .unwrap();
    }
    assert_eq!(short.fake.token_requests(), 2);
    assert_eq!(short.fake.distinct_access_tokens(), 2);
}

#[tokio::test]
async fn fcm_401_refreshes_the_token_once() {
    let fcm = fcm().await;
    let client = FcmClient::from_config(&fcm.config).unwrap();
    client.send(&push(Platform::Android, "t")).await.unwrap();

    fcm.fake.revoke_tokens();
    client.send(&push(Platform::Android, "t")).await.unwrap();

    assert_eq!(fcm.fake.token_requests(), 2);
    assert_eq!(fcm.fake.requests(), 3);
    assert_eq!(fcm.fake.pushes("t").len(), 2);
}

#[tokio::test]
async fn subscribers_receive_accepted_pushes() {
    let apns = apns().await;
    let fcm = fcm().await;
    let mut ios_rx = apns.fake.subscribe();
    let mut android_rx = fcm.fake.subscribe();
    let providers = Providers::from_config(&apns.config, &fcm.config);
    let token = ios_token(9);

    providers
        .send(push(Platform::Ios, &token), Slot::free())
        .await
        .unwrap();
    providers
        .send(push(Platform::Android, "a9"), Slot::free())
        .await
        .unwrap();

    let ios = ios_rx.recv().await.unwrap();
    assert_eq!(
        (ios.platform, ios.token.as_str()),
        (Platform::Ios, token.as_str())
    );
    assert_eq!(ios.delivery_id, Some(format!("dlv-{token}")));
    let android = android_rx.recv().await.unwrap();
    assert_eq!(android.platform, Platform::Android);
    assert_eq!(android.delivery_id.as_deref(), Some("dlv-a9"));
}

#[tokio::test]
async fn fault_mix_applies_to_unscripted_tokens() {
    let apns = apns_with(FaultMix {
        unregistered: 1.0,
        ..FaultMix::default()
    })
    .await;
    let fcm = fcm_with(FakeFcmConfig {
        mix: FaultMix {
            transient: 1.0,
            ..FaultMix::default()
        },
        ..FakeFcmConfig::default()
    })
    .await;
    let providers = Providers::from_config(&apns.config, &fcm.config);

    let ios = providers
        .send(push(Platform::Ios, &ios_token(1)), Slot::free())
        .await;
    let android = providers
        .send(push(Platform::Android, "a"), Slot::free())
        .await;

    assert_eq!(ios, Err(bounced("410 Unregistered")));
    assert_eq!(android, Err(transient("503 UNAVAILABLE", None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_burst_shares_few_connections() {
    let apns = apns().await;
    let fcm = fcm().await;
    let providers = Providers::from_config(&apns.config, &fcm.config);

    let sends = (0..1000u64).map(|n| {
        let (platform, token) = if n % 2 == 0 {
            (Platform::Ios, ios_token(n))
        } else {
            (Platform::Android, format!("android-{n}"))
        };
        tokio::spawn(providers.send(push(platform, &token), Slot::free()))
    });
    let results: Vec<Result<Accepted, ProviderError>> =
        futures_util::future::try_join_all(sends).await.unwrap();

    assert!(results.iter().all(Result::is_ok));
    assert_eq!((apns.fake.accepted(), fcm.fake.accepted()), (500, 500));
    assert!(apns.fake.connections() <= 4, "{}", apns.fake.connections());
    assert!(fcm.fake.connections() <= 4, "{}", fcm.fake.connections());
    assert_eq!(fcm.fake.token_requests(), 1);
}

/// A burst wider than one connection's streams opens more connections, up
/// to the limit; below the limit it never opens one more than it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_opens_another_up_to_the_limit() {
    for (max_connections, expected) in [(1, 1), (3, 3)] {
        let apns = apns_with(FaultMix {
            latency: Duration::from_millis(200),
            ..FaultMix::default()
        })
        .await;
        let options = ClientOptions {
            streams_per_connection: 5,
            max_connections,
            ..ClientOptions::default()
        };
        let providers = Providers::with_options(&apns.config, &FcmConfig::default(), &options);
        let sends = (0..30u64).map(|n| {
            tokio::spawn(providers.send(push(Platform::Ios, &ios_token(n)), Slot::free()))
        });
        let results = futures_util::future::try_join_all(sends).await.unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(apns.fake.accepted(), 30);
        assert_eq!(apns.fake.connections(), expected, "max {max_connections}");
    }
}

/// `push` in `lane`.
fn in_lane(mut push: Push, lane: Lane) -> Push {
    Arc::make_mut(&mut push.content).lane = lane;
    push
}

/// While a campaign holds every stream it may take (its pushes unanswered
/// at the provider), transactional pushes still find the kept share free
/// and go out; one more campaign push waits. With no share kept, a
/// transactional push waits like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_filling_its_streams_leaves_the_kept_share_to_transactional_pushes() {
    use futures_util::FutureExt as _;
    for share in [0.4, 0.0] {
        let apns = apns().await;
        // 5 streams; a share of 0.4 keeps 2 of them.
        let options = ClientOptions {
            streams_per_connection: 5,
            max_connections: 1,
            transactional_share: share,
            ..ClientOptions::default()
        };
        let providers = Arc::new(Providers::with_options(
            &apns.config,
            &FcmConfig::default(),
            &options,
        ));
        let campaign = |n: u64| in_lane(push(Platform::Ios, &ios_token(n)), Lane::Campaign);
        let transactional =
            |n: u64| in_lane(push(Platform::Ios, &ios_token(n)), Lane::Transactional);
        let campaign_streams = if share > 0.0 { 3 } else { 5 };
        for n in 0..campaign_streams {
            apns.fake
                .script(&ios_token(n), Behavior::Delay(Duration::from_secs(3600)));
            let push = campaign(n);
            let slot = providers
                .reserve(&push)
                .now_or_never()
                .expect("a free stream");
            tokio::spawn(providers.send(push, slot));
        }
        let next = campaign(99);
        assert!(
            providers.reserve(&next).now_or_never().is_none(),
            "share {share}: a campaign push past its streams waits"
        );
        let urgent = transactional(100);
        match providers.reserve(&urgent).now_or_never() {
            Some(slot) => {
                assert!(share > 0.0, "no share kept, yet a stream was free");
                let second = transactional(101);
                let other = providers.reserve(&second).now_or_never().expect("two kept");
                let third = transactional(102);
                assert!(
                    providers.reserve(&third).now_or_never().is_none(),
                    "every stream is taken"
                );
                let (a, b) =
                    tokio::join!(providers.send(urgent, slot), providers.send(second, other));
                assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
                assert_eq!(apns.fake.pushes(&ios_token(100)).len(), 1);
                assert_eq!(apns.fake.pushes(&ios_token(101)).len(), 1);
                // The campaign's pushes are still unanswered: the share
                // did not wait for them.
                assert_eq!(apns.fake.accepted(), 2);
            }
            None => assert_eq!(share, 0.0, "a kept stream was not free"),
        }
    }
}

/// A connection that goes away after every request (GOAWAY): each next
/// push, which that connection would not process, goes out at once on a
/// fresh one, in one call, none lost, none doubled.
#[tokio::test]
async fn a_push_after_a_goaway_goes_out_on_a_fresh_connection() {
    let apns = apns_with(FaultMix {
        goaway_every: Some(1),
        latency: Duration::from_millis(5),
        ..FaultMix::default()
    })
    .await;
    let providers = Providers::from_config(&apns.config, &FcmConfig::default());
    for n in 0..10 {
        let token = ios_token(n);
        let sent = providers.send(push(Platform::Ios, &token), Slot::free());
        assert!(sent.await.is_ok(), "{token}");
        assert_eq!(apns.fake.calls(&token), 1, "{token}");
        assert_eq!(apns.fake.pushes(&token).len(), 1, "{token}");
    }
    assert!(apns.fake.connections() > 1);
}

/// A connection older than `max_connection_age` takes no new push: the
/// next one opens a fresh connection; younger ones are reused.
#[tokio::test]
async fn a_connection_past_its_age_is_replaced() {
    for (max_connection_age, expected) in [(Duration::ZERO, 3), (Duration::from_secs(3600), 1)] {
        let apns = apns().await;
        let options = ClientOptions {
            max_connection_age,
            ..ClientOptions::default()
        };
        let providers = Providers::with_options(&apns.config, &FcmConfig::default(), &options);
        for n in 0..3 {
            let sent = providers.send(push(Platform::Ios, &ios_token(n)), Slot::free());
            assert!(sent.await.is_ok());
        }
        assert_eq!(apns.fake.connections(), expected, "{max_connection_age:?}");
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every alert option set.
fn alert_options() -> PushOptions {
    PushOptions {
        priority: Some(PushPriority::Normal),
        ttl_seconds: Some(600),
        sound: Some("ping.caf".to_owned()),
        badge: Some(3),
        category: Some("ORDER".to_owned()),
        thread_id: Some("orders".to_owned()),
        interruption_level: Some(InterruptionLevel::TimeSensitive),
        relevance_score: Some(0.75),
        image_url: Some("https://cdn.example.com/a.png".to_owned()),
        android_channel_id: Some("orders".to_owned()),
        data: BTreeMap::from([("screen".to_owned(), "orders/A-17".to_owned())]),
        ..PushOptions::default()
    }
}

/// A silent push with data and a TTL of `ttl`.
fn background_options(ttl: u32) -> PushOptions {
    PushOptions {
        kind: PushKind::Background,
        ttl_seconds: Some(ttl),
        data: BTreeMap::from([("sync".to_owned(), "inbox".to_owned())]),
        ..PushOptions::default()
    }
}

fn with_options(platform: Platform, token: &str, options: PushOptions) -> Push {
    let mut p = push(platform, token);
    Arc::make_mut(&mut p.content).options = options;
    p
}

#[tokio::test]
async fn apns_alert_options_become_headers_and_payload() {
    let apns = apns().await;
    let client = ApnsClient::from_config(&apns.config).unwrap();
    let token = ios_token(1);

    let before = unix_now();
    let sent = with_options(Platform::Ios, &token, alert_options());
    client.send(&sent).await.unwrap();
    let after = unix_now();

    let got = &apns.fake.pushes(&token)[0];
    assert_eq!(got.headers["apns-push-type"], "alert");
    assert_eq!(got.headers["apns-priority"], "5");
    let expiration: u64 = got.headers["apns-expiration"].parse().unwrap();
    assert!(
        (before + 600..=after + 600).contains(&expiration),
        "{expiration} not now + 600"
    );
    let aps = &got.payload["aps"];
    assert_eq!(aps["alert"]["title"], "Hello");
    assert_eq!(aps["sound"], "ping.caf");
    assert_eq!(aps["badge"], 3);
    assert_eq!(aps["category"], "ORDER");
    assert_eq!(aps["thread-id"], "orders");
    assert_eq!(aps["interruption-level"], "time-sensitive");
    assert_eq!(aps["relevance-score"], 0.75);
    assert_eq!(aps["mutable-content"], 1);
    assert!(aps.get("content-available").is_none());
    assert_eq!(got.payload["image_url"], "https://cdn.example.com/a.png");
    assert_eq!(got.payload["screen"], "orders/A-17");
    assert_eq!(got.payload["CIO-Delivery-Token"], token);
    assert_eq!(got.environment, Environment::Production);
}

#[tokio::test]
async fn apns_background_push_is_silent_at_normal_priority() {
    let apns = apns().await;
    let client = ApnsClient::from_config(&apns.config).unwrap();
    let token = ios_token(2);

    let mut silent = with_options(Platform::Ios, &token, background_options(0));
    Arc::make_mut(&mut silent.content).title = String::new();
    Arc::make_mut(&mut silent.content).body = String::new();
    client.send(&silent).await.unwrap();

    let got = &apns.fake.pushes(&token)[0];
    assert_eq!(got.headers["apns-push-type"], "background");
    assert_eq!(got.headers["apns-priority"], "5");
    assert_eq!(got.headers["apns-expiration"], "0", "TTL 0: now or never");
    assert_eq!(
        got.payload["aps"],
        serde_json::json!({"content-available": 1})
    );
    assert_eq!(got.payload["sync"], "inbox");
    assert_eq!(got.payload["CIO-Delivery-ID"], format!("dlv-{token}"));
}

#[tokio::test]
async fn fcm_alert_options_become_message_fields() {
    let fcm = fcm().await;
    let client = FcmClient::from_config(&fcm.config).unwrap();

    client
        .send(&with_options(Platform::Android, "a1", alert_options()))
        .await
        .unwrap();

    let message = &fcm.fake.pushes("a1")[0].payload["message"];
    assert_eq!(message["notification"]["title"], "Hello");
    assert_eq!(
        message["notification"]["image"],
        "https://cdn.example.com/a.png"
    );
    let android = &message["android"];
    assert_eq!(android["priority"], "NORMAL");
    assert_eq!(android["ttl"], "600s");
    assert_eq!(android["notification"]["channel_id"], "orders");
    assert_eq!(android["notification"]["sound"], "ping.caf");
    assert_eq!(android["notification"]["notification_count"], 3);
    assert_eq!(message["data"]["screen"], "orders/A-17");
    assert_eq!(message["data"]["CIO-Delivery-ID"], "dlv-a1");
}

#[tokio::test]
async fn fcm_background_push_is_data_only() {
    let fcm = fcm().await;
    let client = FcmClient::from_config(&fcm.config).unwrap();

    client
        .send(&with_options(
            Platform::Android,
            "a2",
            background_options(3600),
        ))
        .await
        .unwrap();

    let message = &fcm.fake.pushes("a2")[0].payload["message"];
    assert!(message.get("notification").is_none(), "{message}");
    assert!(message["android"].get("notification").is_none());
    assert_eq!(message["android"]["priority"], "NORMAL");
    assert_eq!(message["android"]["ttl"], "3600s");
    assert_eq!(message["data"]["sync"], "inbox");
    assert_eq!(message["data"]["CIO-Delivery-Token"], "a2");
}

#[tokio::test]
async fn sandbox_tokens_go_to_the_sandbox_endpoint() {
    let apns = apns().await;
    let client = ApnsClient::from_config(&apns.config).unwrap();
    let (dev, store) = (ios_token(1), ios_token(2));
    apns.fake.issue_sandbox_token(&dev);

    let mut to_sandbox = push(Platform::Ios, &dev);
    to_sandbox.environment = Environment::Sandbox;
    client.send(&to_sandbox).await.unwrap();
    client.send(&push(Platform::Ios, &store)).await.unwrap();

    assert_eq!(apns.fake.pushes(&dev)[0].environment, Environment::Sandbox);
    assert_eq!(
        apns.fake.pushes(&store)[0].environment,
        Environment::Production
    );
    // What the sandbox endpoint saves the token from: production refuses it.
    let got = client.send(&push(Platform::Ios, &dev)).await;
    assert_eq!(got, Err(bounced("400 BadDeviceToken")));
}

#[tokio::test]
async fn oversized_payloads_fail_before_any_request() {
    let apns = apns().await;
    let fcm = fcm().await;
    let providers = Providers::from_config(&apns.config, &fcm.config);
    let body_of = |platform, token: &str, len| {
        let mut p = push(platform, token);
        Arc::make_mut(&mut p.content).body = "x".repeat(len);
        p
    };

    let ios = providers
        .send(body_of(Platform::Ios, &ios_token(1), 4100), Slot::free())
        .await;
    let android = providers
        .send(body_of(Platform::Android, "a", 3990), Slot::free())
        .await;

    assert!(
        matches!(&ios, Err(ProviderError::Permanent { reason: FailureReason::PayloadTooLarge, detail })
            if detail.ends_with("APNs accepts at most 4096")),
        "{ios:?}"
    );
    assert!(
        matches!(&android, Err(ProviderError::Permanent { reason: FailureReason::PayloadTooLarge, detail })
            if detail.ends_with("FCM accepts at most 4000")),
        "{android:?}"
    );
    assert_eq!((apns.fake.requests(), fcm.fake.requests()), (0, 0));

    let ios = providers
        .send(body_of(Platform::Ios, &ios_token(1), 3500), Slot::free())
        .await;
    let android = providers
        .send(body_of(Platform::Android, "a", 3500), Slot::free())
        .await;
    assert!(ios.is_ok() && android.is_ok(), "{ios:?} {android:?}");
}

#[tokio::test]
async fn a_refused_payload_is_not_a_bounce() {
    let apns = apns().await;
    let fcm = fcm().await;
    let providers = Providers::from_config(&apns.config, &fcm.config);
    let token = ios_token(1);
    apns.fake
        .script(&token, Behavior::Fail(Fault::MessageTooBig));
    fcm.fake.script("a", Behavior::Fail(Fault::MessageTooBig));

    let ios = providers
        .send(push(Platform::Ios, &token), Slot::free())
        .await;
    let android = providers
        .send(push(Platform::Android, "a"), Slot::free())
        .await;

    assert_eq!(
        ios,
        Err(permanent(
            FailureReason::PayloadTooLarge,
            "413 PayloadTooLarge"
        ))
    );
    assert_eq!(
        android,
        Err(permanent(
            FailureReason::ProviderRejected,
            "400 INVALID_ARGUMENT: Android message is too big"
        ))
    );
}

#[tokio::test]
async fn each_app_sends_with_its_own_credentials() {
    let main = apns().await;
    let dir = TempDir::new().unwrap();
    let key = ApnsTestKey::generate();
    let key_file = dir.path().join("shop.p8");
    key.write_p8(&key_file).unwrap();
    let shop = FakeApns::start(FakeApnsConfig {
        topic: "com.example.shop".to_owned(),
        ..FakeApnsConfig::new(&key)
    })
    .await
    .unwrap();
    let apps = BTreeMap::from([
        (
            DEFAULT_APP.to_owned(),
            AppConfig {
                apns: main.config.clone(),
                fcm: FcmConfig::default(),
            },
        ),
        (
            "shop".to_owned(),
            AppConfig {
                apns: shop.client_config(&key_file),
                fcm: FcmConfig::default(),
            },
        ),
    ]);
    let providers = Providers::for_apps(&apps, &ClientOptions::default());
    let for_app = |app: &str, platform, token: &str| Push {
        app: app.into(),
        ..push(platform, token)
    };

    let (a, b) = (ios_token(1), ios_token(2));
    providers
        .send(for_app(DEFAULT_APP, Platform::Ios, &a), Slot::free())
        .await
        .unwrap();
    providers
        .send(for_app("shop", Platform::Ios, &b), Slot::free())
        .await
        .unwrap();
    let android = providers
        .send(for_app("shop", Platform::Android, "t"), Slot::free())
        .await;
    let unknown = providers
        .send(for_app("nope", Platform::Ios, &a), Slot::free())
        .await;

    assert_eq!(
        main.fake.pushes(&a)[0].headers["apns-topic"],
        "io.pushd.demo"
    );
    assert_eq!(shop.pushes(&b)[0].headers["apns-topic"], "com.example.shop");
    assert_eq!((main.fake.requests(), shop.requests()), (1, 1));
    assert_eq!(
        android,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "app \"shop\": no FCM service account configured"
        ))
    );
    assert_eq!(
        unknown,
        Err(permanent(
            FailureReason::CredentialsNotFound,
            "no credentials configured for app \"nope\""
        ))
    );
}
