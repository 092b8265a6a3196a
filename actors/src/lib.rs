//! pushd's engine: the delivery status machines and the actors that drive
//! them — one [`PersonActor`](person::PersonActor) per customer supervising
//! one [`DeviceSendActor`](device_send::DeviceSendActor) per device send.
//!
//! The engine knows nothing of HTTP, sled or a provider's wire format: it
//! talks to the world through the traits of [`ports`].

pub mod model;
pub mod ports;
pub mod status;
pub mod tally;
