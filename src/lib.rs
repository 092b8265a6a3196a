//! The pushd daemon: HTTP ingress, providers, the sled store, Liquid
//! templates and the simulators, around the engine of `pushd-actors`.

pub mod template;
