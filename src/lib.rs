//! The pushd daemon: HTTP ingress, providers, the sled store, Liquid
//! templates and the simulators, around the engine of `pushd-actors`.

pub mod backup;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod http;
pub mod journal;
pub mod keys;
pub mod partition;
pub mod persistence;
pub mod providers;
pub mod readiness;
pub mod records;
pub mod segfile;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod topology;
pub mod webhooks;
