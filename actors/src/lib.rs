//! pushd's engine: the delivery status machines and the actors that drive
//! them — one [`PersonActor`](person::PersonActor) per customer supervising
//! one [`DeviceSendActor`](device_send::DeviceSendActor) per device send.
//!
//! The engine knows nothing of HTTP, sled or a provider's wire format: it
//! talks to the world through the traits of [`ports`], and the
//! [`Registry`](registry::Registry) is its front door.

pub mod caps;
pub mod delivery_id;
pub mod device_send;
pub mod engine;
pub mod group_commit;
pub mod held;
pub mod idempotency;
pub mod model;
pub mod pacing;
pub mod person;
pub mod plan;
pub mod ports;
pub mod quiet;
pub mod recovery;
pub mod registry;
pub mod rules;
pub mod schedule;
pub mod status;
pub mod tally;
pub mod thread_name;
pub mod transition;
pub mod turn;
