//! Every Prometheus series pushd exports, in one place: described and set to
//! zero at start, so dashboards and alerts on a fresh daemon find each one
//! before its first event. A new series is added here (a test checks that
//! every `pushd_*` name in the code is listed).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use pushd_actors::status::MessageStatus;

const PLATFORMS: [&str; 2] = ["ios", "android"];
/// Provider answers counted by `pushd_provider_requests_total` and device
/// outcomes by `pushd_device_sends_total` (the usual ones; rarer failure
/// reasons appear when they first happen).
const PROVIDER_RESULTS: [&str; 4] = ["accepted", "transient", "bounced", "credentials_not_found"];
const DEVICE_OUTCOMES: [&str; 4] = [
    "sent",
    "bounced",
    "credentials_not_found",
    "provider_rejected",
];

/// Every series name, for the test that keeps this list complete. Each one
/// is listed from the start; the per-webhook ones are [`WEBHOOK_SERIES`].
pub const SERIES: [&str; 40] = [
    "pushd_ready",
    "pushd_deliveries_created_total",
    "pushd_customers_imported_total",
    "pushd_customers_erased_total",
    "pushd_idempotent_replays_total",
    "pushd_scheduled_released_total",
    "pushd_frequency_capped_total",
    "pushd_quiet_hours_total",
    "pushd_paced_sends_waiting",
    "pushd_reports_total",
    "pushd_delivery_status_total",
    "pushd_device_sends_total",
    "pushd_provider_requests_total",
    "pushd_provider_attempts_total",
    "pushd_device_sends_lost_total",
    "pushd_provider_latency_seconds",
    "pushd_provider_connections_total",
    "pushd_provider_reconnects_total",
    "pushd_person_actors",
    "pushd_journal_sync_seconds",
    "pushd_journal_bytes_total",
    "pushd_journal_records_total",
    "pushd_journal_segments_total",
    "pushd_snapshot_drains_total",
    "pushd_snapshot_records_total",
    "pushd_snapshot_drain_seconds",
    "pushd_checkpoints_total",
    "pushd_checkpoint_seconds",
    "pushd_deliveries_expired_total",
    "pushd_events_total",
    "pushd_event_log_bytes_total",
    "pushd_event_log_erased_total",
    "pushd_http_connections",
    "pushd_http_connections_max",
    "pushd_http_connections_refused_total",
    "pushd_http_body_timeouts_total",
    "pushd_ingest_events_total",
    "pushd_ingest_unmapped_total",
    "pushd_ingest_duplicates_total",
    "pushd_ingest_reports_total",
];

/// Why an ingested event could not be mapped (`pushd_ingest_unmapped_total`).
const UNMAPPED_REASONS: [&str; 12] = [
    "anonymous",
    "unknown_customer",
    "unknown_delivery",
    "no_matching_delivery",
    "unknown_platform",
    "unknown_metric",
    "unknown_type",
    "no_event_name",
    "no_token",
    "invalid_timestamp",
    "rejected",
    "not_found",
];

/// The series labelled by webhook id: listed (at zero) from the webhook's
/// creation, or from the start for the webhooks the daemon starts with.
pub const WEBHOOK_SERIES: [&str; 4] = [
    "pushd_webhook_attempts_total",
    "pushd_webhook_dropped_total",
    "pushd_webhook_queue_depth",
    "pushd_webhook_oldest_undelivered_seconds",
];

/// The series of a cluster node (`pushd serve --cluster`), listed from its
/// start.
pub const CLUSTER_SERIES: [&str; 19] = [
    "pushd_cluster_partitions_served",
    "pushd_cluster_leases_held",
    "pushd_cluster_lease_renewal_age_seconds",
    "pushd_cluster_leases_lost_total",
    "pushd_cluster_takeovers_total",
    "pushd_cluster_takeover_seconds",
    "pushd_cluster_publish_seconds",
    "pushd_cluster_publish_retries_total",
    "pushd_cluster_fenced_total",
    "pushd_cluster_event_messages_total",
    "pushd_cluster_snapshots_uploaded_total",
    "pushd_cluster_forwarded_total",
    "pushd_cluster_relay_batches_total",
    "pushd_cluster_peer_calls_total",
    "pushd_cluster_forward_timeouts_total",
    "pushd_cluster_peer_timeouts_total",
    "pushd_cluster_lease_renewal_retries_total",
    "pushd_cluster_partial_reads_total",
    "pushd_cluster_node_calls_refused_total",
];

/// Describes a cluster node's series and makes them appear at zero.
pub fn register_cluster() {
    describe_gauge!(
        "pushd_cluster_partitions_served",
        "Partitions this node serves now."
    );
    describe_gauge!(
        "pushd_cluster_leases_held",
        "Partition leases this node holds (served, or being loaded)."
    );
    describe_gauge!(
        "pushd_cluster_lease_renewal_age_seconds",
        Unit::Seconds,
        "Time since this node's least recently renewed lease was renewed."
    );
    for gauge in [
        "pushd_cluster_partitions_served",
        "pushd_cluster_leases_held",
        "pushd_cluster_lease_renewal_age_seconds",
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
    describe_counter!(
        "pushd_cluster_leases_lost_total",
        "Partitions dropped because their lease was lost or not renewed in time."
    );
    describe_counter!(
        "pushd_cluster_takeovers_total",
        "Partitions taken over (snapshot loaded, journal replayed, sends resumed)."
    );
    describe_histogram!(
        "pushd_cluster_takeover_seconds",
        Unit::Seconds,
        "Time from winning a partition's lease to serving it."
    );
    describe_histogram!(
        "pushd_cluster_publish_seconds",
        Unit::Seconds,
        "Time of one journal group publish until JetStream acknowledged it."
    );
    describe_counter!(
        "pushd_cluster_publish_retries_total",
        "Journal publishes sent again after a failure."
    );
    describe_counter!(
        "pushd_cluster_fenced_total",
        "Journal publishes refused because another node wrote to the partition."
    );
    describe_counter!(
        "pushd_cluster_event_messages_total",
        "Messages of delivery events published to the events stream, each a drain's batch (pushd_events_total counts each event)."
    );
    describe_counter!(
        "pushd_cluster_snapshots_uploaded_total",
        "Partition snapshots uploaded for other nodes."
    );
    describe_counter!(
        "pushd_cluster_forwarded_total",
        "Requests forwarded to the node serving their partition."
    );
    describe_counter!(
        "pushd_cluster_relay_batches_total",
        "Batches of reports sent to the nodes serving their partitions (pushd_cluster_forwarded_total counts each report)."
    );
    describe_counter!(
        "pushd_cluster_node_calls_refused_total",
        "Node-to-node calls refused 401 node_credential_invalid: unsigned, or not signed with the cluster secret for this node within 60 s."
    );
    describe_counter!(
        "pushd_cluster_peer_calls_total",
        "Calls to other nodes (forwarded requests, gathered reads)."
    );
    describe_counter!(
        "pushd_cluster_forward_timeouts_total",
        "Calls for another node's partition answered 503 after forward_timeout_ms without an owner answering."
    );
    describe_counter!(
        "pushd_cluster_peer_timeouts_total",
        "Calls to other nodes that did not answer within their time."
    );
    describe_counter!(
        "pushd_cluster_lease_renewal_retries_total",
        "Lease renewals tried again after NATS did not answer."
    );
    describe_counter!(
        "pushd_cluster_partial_reads_total",
        "Merged reads answered with ?partial=true while a partition's share was missing."
    );
    for counter in [
        "pushd_cluster_leases_lost_total",
        "pushd_cluster_takeovers_total",
        "pushd_cluster_publish_retries_total",
        "pushd_cluster_fenced_total",
        "pushd_cluster_event_messages_total",
        "pushd_cluster_snapshots_uploaded_total",
        "pushd_cluster_forwarded_total",
        "pushd_cluster_relay_batches_total",
        "pushd_cluster_peer_calls_total",
        "pushd_cluster_forward_timeouts_total",
        "pushd_cluster_peer_timeouts_total",
        "pushd_cluster_lease_renewal_retries_total",
        "pushd_cluster_partial_reads_total",
    ] {
        metrics::counter!(counter).absolute(0);
    }
    let _ = metrics::histogram!("pushd_cluster_takeover_seconds");
    let _ = metrics::histogram!("pushd_cluster_publish_seconds");
}

/// Outcomes of `pushd_webhook_attempts_total`.
const WEBHOOK_OUTCOMES: [&str; 4] = ["success", "http_error", "timeout", "network"];

/// Makes the series of webhook `id` appear at zero.
pub fn register_webhook(id: &str) {
    for outcome in WEBHOOK_OUTCOMES {
        metrics::counter!("pushd_webhook_attempts_total", "webhook" => id.to_owned(), "outcome" => outcome)
            .absolute(0);
    }
    metrics::counter!("pushd_webhook_dropped_total", "webhook" => id.to_owned()).absolute(0);
    metrics::gauge!("pushd_webhook_queue_depth", "webhook" => id.to_owned()).set(0.0);
    metrics::gauge!("pushd_webhook_oldest_undelivered_seconds", "webhook" => id.to_owned())
        .set(0.0);
}

/// The bucket bounds of every `*_seconds` histogram: 100 µs (a journal
/// sync on a fast disk) to 30 s (a checkpoint or takeover in trouble).
const SECONDS_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder every series goes to. Timings are
/// histograms with buckets ([`SECONDS_BUCKETS`]), not summaries: a
/// summary's quantiles cannot be added up across nodes or over time, a
/// histogram's buckets can (`histogram_quantile` over a `sum by (le)`).
pub fn install_recorder()
-> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &SECONDS_BUCKETS,
        )?
        .install_recorder()
}

/// Describes every series and makes it appear at zero. Call once, after
/// the recorder is installed.
pub fn register() {
    gauge(
        "pushd_ready",
        "1 while writes are acknowledged (GET /readyz answers 200), else 0.",
    );
    counter(
        "pushd_deliveries_created_total",
        "Deliveries acknowledged by POST /v1/send/push.",
    );
    counter(
        "pushd_idempotent_replays_total",
        "Send calls answered with an Idempotency-Key's first answer instead of sending again.",
    );
    counter(
        "pushd_scheduled_released_total",
        "Scheduled deliveries released at (or, after a restart, past) their time to be rendered and sent.",
    );
    counter(
        "pushd_frequency_capped_total",
        "Deliveries not sent because their customer reached a frequency cap (undeliverable, frequency_capped).",
    );
    counter(
        "pushd_quiet_hours_total",
        "Sends that fell inside their customer's quiet hours, by action (hold until they end, or drop).",
    );
    gauge(
        "pushd_paced_sends_waiting",
        "Device sends of paced messages (rate_per_minute) waiting for their turn.",
    );

    counter(
        "pushd_customers_imported_total",
        "Customers imported by POST /v1/batch.",
    );
    counter(
        "pushd_customers_erased_total",
        "Customers erased by DELETE /v1/customers/{id}?erase=true.",
    );

    describe_counter!(
        "pushd_reports_total",
        "Device reports accepted (POST /push/events, Customer.io's and the ingestion's), by event."
    );
    for event in ["delivered", "opened", "converted"] {
        metrics::counter!("pushd_reports_total", "event" => event).absolute(0);
    }

    describe_counter!(
        "pushd_delivery_status_total",
        "Deliveries entering each message status."
    );
    for status in MessageStatus::ALL {
        metrics::counter!("pushd_delivery_status_total", "status" => status.as_str()).absolute(0);
    }

    describe_counter!(
        "pushd_device_sends_total",
        "Device sends ended, by platform and outcome."
    );
    describe_counter!(
        "pushd_provider_requests_total",
        "Calls to APNs and FCM, by platform and result."
    );
    describe_histogram!(
        "pushd_provider_latency_seconds",
        Unit::Seconds,
        "Time of one call to APNs or FCM."
    );
    for platform in PLATFORMS {
        for outcome in DEVICE_OUTCOMES {
            metrics::counter!("pushd_device_sends_total", "platform" => platform, "outcome" => outcome)
                .absolute(0);
        }
        for result in PROVIDER_RESULTS {
            metrics::counter!("pushd_provider_requests_total", "platform" => platform, "result" => result)
                .absolute(0);
        }
        // Registers the (empty) histogram so it is listed.
        let _ = metrics::histogram!("pushd_provider_latency_seconds", "platform" => platform);
    }

    counter(
        "pushd_provider_connections_total",
        "HTTP/2 connections opened to APNs and FCM.",
    );
    describe_counter!(
        "pushd_provider_reconnects_total",
        "Provider connections that stopped taking pushes, by reason: goaway (the provider's \
         GOAWAY), closed (reset or unanswered pings), age (max_connection_age)."
    );
    for platform in PLATFORMS {
        for reason in ["goaway", "closed", "age"] {
            metrics::counter!("pushd_provider_reconnects_total", "platform" => platform, "reason" => reason)
                .absolute(0);
        }
    }

    describe_counter!(
        "pushd_provider_attempts_total",
        "Provider calls started; retry=true for the second and later of a device send."
    );
    for retry in ["false", "true"] {
        metrics::counter!("pushd_provider_attempts_total", "retry" => retry).absolute(0);
    }
    counter(
        "pushd_device_sends_lost_total",
        "Device sends that ended without an outcome (a panic, an early stop): each failed its device internal_error.",
    );

    gauge(
        "pushd_person_actors",
        "Customers whose actor is in memory (active customers).",
    );

    seconds(
        "pushd_journal_sync_seconds",
        "Time of one journal group commit (one write and one fdatasync).",
    );
    bytes_counter("pushd_journal_bytes_total", "Bytes written to the journal.");
    counter(
        "pushd_journal_records_total",
        "Records made durable by the journal.",
    );
    counter(
        "pushd_journal_segments_total",
        "Journal segment files started.",
    );

    counter(
        "pushd_snapshot_drains_total",
        "Moves of the changes held in memory into the sled snapshot.",
    );
    counter(
        "pushd_snapshot_records_total",
        "Records written to the sled snapshot by drains.",
    );
    seconds(
        "pushd_snapshot_drain_seconds",
        "Time of one drain into the sled snapshot.",
    );
    counter(
        "pushd_checkpoints_total",
        "Checkpoints: the snapshot made durable and the journal trimmed.",
    );
    seconds(
        "pushd_checkpoint_seconds",
        "Time of one checkpoint (drain, flush, fsync of sled's files).",
    );
    counter(
        "pushd_deliveries_expired_total",
        "Deliveries removed from the delivery log past their retention.",
    );

    register_events();
    register_http();
    register_ingest();
}

/// The Segment/RudderStack ingestion (`/ingest/v1/`).
fn register_ingest() {
    describe_counter!(
        "pushd_ingest_events_total",
        "Events posted to /ingest/v1/, by type (page, screen, group and alias are taken and \
         ignored)."
    );
    for kind in [
        "track", "identify", "page", "screen", "group", "alias", "other",
    ] {
        metrics::counter!("pushd_ingest_events_total", "type" => kind).absolute(0);
    }
    describe_counter!(
        "pushd_ingest_unmapped_total",
        "Ingested events pushd could not map onto its model (answered 200), by reason."
    );
    for reason in UNMAPPED_REASONS {
        metrics::counter!("pushd_ingest_unmapped_total", "reason" => reason).absolute(0);
    }
    counter(
        "pushd_ingest_duplicates_total",
        "Ingested events skipped as a messageId already applied within 24 hours.",
    );
    describe_counter!(
        "pushd_ingest_reports_total",
        "Push reports ingested, by how they were matched to their delivery: exact (a delivery \
         id) or heuristic (customer and campaign within a window)."
    );
    for matched in ["exact", "heuristic"] {
        metrics::counter!("pushd_ingest_reports_total", "match" => matched).absolute(0);
    }
}

/// The HTTP server's limits ([`crate::http::Connections`] sets the
/// maximum when it starts).
fn register_http() {
    gauge(
        "pushd_http_connections",
        "HTTP connections open now, served or being refused.",
    );
    gauge(
        "pushd_http_connections_max",
        "HTTP connections served at once ([http] max_connections).",
    );
    counter(
        "pushd_http_connections_refused_total",
        "HTTP connections refused past max_connections: answered 503 too_many_connections, \
         or closed at once past the reserve.",
    );
    counter(
        "pushd_http_body_timeouts_total",
        "Requests answered 408 request_timeout: the body did not arrive within body_timeout_secs.",
    );
}

/// The delivery events, and the descriptions of the webhooks' series
/// (which [`register_webhook`] makes appear, per webhook).
fn register_events() {
    describe_counter!(
        "pushd_events_total",
        "Delivery events recorded for the feed and the webhooks, by event."
    );
    for status in pushd_actors::transition::EVENT_STATUSES {
        metrics::counter!("pushd_events_total", "event" => status.as_str()).absolute(0);
    }
    bytes_counter(
        "pushd_event_log_bytes_total",
        "Bytes written to the delivery event log.",
    );
    counter(
        "pushd_event_log_erased_total",
        "Events of erased customers overwritten with tombstones by compaction.",
    );
    describe_counter!(
        "pushd_webhook_attempts_total",
        "Webhook posts, by webhook and outcome (success, http_error, timeout, network)."
    );
    describe_counter!(
        "pushd_webhook_dropped_total",
        "Events a webhook gave up on after its retry window, by webhook."
    );
    describe_gauge!(
        "pushd_webhook_queue_depth",
        "Events a webhook has not yet posted or dropped, by webhook."
    );
    describe_gauge!(
        "pushd_webhook_oldest_undelivered_seconds",
        Unit::Seconds,
        "Age of the oldest event a webhook has not yet posted, by webhook (0 when none)."
    );
}

/// Describes the unlabelled counter `name` and lists it at zero.
fn counter(name: &'static str, help: &'static str) {
    describe_counter!(name, help);
    metrics::counter!(name).absolute(0);
}

/// Describes the unlabelled counter of bytes `name` and lists it at zero.
fn bytes_counter(name: &'static str, help: &'static str) {
    describe_counter!(name, Unit::Bytes, help);
    metrics::counter!(name).absolute(0);
}

/// Describes the unlabelled gauge `name` and lists it at zero.
fn gauge(name: &'static str, help: &'static str) {
    describe_gauge!(name, help);
    metrics::gauge!(name).increment(0.0);
}

/// Describes the unlabelled histogram of seconds `name` and lists it
/// (empty).
fn seconds(name: &'static str, help: &'static str) {
    describe_histogram!(name, Unit::Seconds, help);
    let _ = metrics::histogram!(name);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `pushd_*` series the code records, found in the sources.
    fn recorded(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                recorded(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("telemetry.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_call in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                    for (at, _) in text.match_indices(macro_call) {
                        let rest = &text[at + macro_call.len()..];
                        let name = &rest[..rest.find('"').unwrap()];
                        if name.starts_with("pushd_") {
                            found.push(name.to_string());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_series_in_the_code_is_listed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        recorded(&root.join("src"), &mut found);
        recorded(&root.join("actors/src"), &mut found);
        let listed = || {
            super::SERIES
                .iter()
                .chain(&super::WEBHOOK_SERIES)
                .chain(&super::CLUSTER_SERIES)
        };
        for name in &found {
            assert!(
                listed().any(|s| s == name),
                "{name} is recorded but not listed in src/telemetry.rs"
            );
        }
        for name in listed() {
            assert!(
                found.iter().any(|f| f == name),
                "{name} is listed in src/telemetry.rs but nothing records it"
            );
        }
    }

    /// A user reading `/metrics` finds each series explained in the docs.
    #[test]
    fn every_series_is_documented() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let text: String = std::fs::read_dir(&docs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let listed = super::SERIES
            .iter()
            .chain(&super::WEBHOOK_SERIES)
            .chain(&super::CLUSTER_SERIES);
        for name in listed {
            assert!(text.contains(name), "{name} is not in docs/");
        }
    }
}
