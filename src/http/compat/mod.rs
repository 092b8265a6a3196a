//! The endpoints a team migrating to pushd points its existing clients at,
//! so the app need not change first (docs/migrating.md):
//!
//! - `customerio`: Customer.io's Track API v1 under `/api/v1/`, as its
//!   clients call it (HTTP Basic `site_id:key`, see `super::auth`);
//! - `ingest`: Segment's and RudderStack's tracking API under
//!   `/ingest/v1/`, each event mapped by `mapping` onto pushd's own
//!   operations.
//!
//! Every call goes through the same engine operations and rules as pushd's
//! own API; this module only translates.

mod basic_auth;
mod customerio;
mod ingest;
mod mapping;
mod memory;

use actix_web::web;

pub use memory::{Compat, HeuristicReport};

/// Registers the Customer.io and ingestion routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(customerio::routes).configure(ingest::routes);
}
