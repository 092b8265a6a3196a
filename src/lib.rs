//! pushd: the push-notification delivery daemon (library part).

pub mod providers;
pub mod sim;
