//! Simulation: fake APNs and FCM servers speaking real HTTP/2 on loopback,
//! test-only credentials for them, and a webhook receiver. Used by tests,
//! benches and `demo`.

pub mod clock;
mod fake;
pub mod fake_apns;
pub mod fake_fcm;
pub mod fleet;
mod providers;
mod receiver;

pub use clock::SimClock;
pub use fake::{Behavior, Fake, Fault, FaultMix, ReceivedPush, Recorder};
pub use fake_apns::{ApnsTestKey, FakeApns, FakeApnsConfig};
pub use fake_fcm::{FakeFcm, FakeFcmConfig, TEST_RSA_PRIVATE_KEY_PEM, TEST_RSA_PUBLIC_KEY_PEM};
pub use providers::FakeProviders;
pub use receiver::{Answer, Post, WebhookReceiver};
