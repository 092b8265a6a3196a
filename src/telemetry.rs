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

/// Every series name, for the test that keeps this list complete.
pub const SERIES: [&str; 10] = [
    "pushd_deliveries_created_total",
    "pushd_reports_total",
    "pushd_delivery_status_total",
    "pushd_device_sends_total",
    "pushd_provider_requests_total",
    "pushd_provider_attempts_total",
    "pushd_provider_latency_seconds",
    "pushd_person_actors",
    "pushd_store_flushes_total",
    "pushd_store_flush_seconds",
];

/// Describes every series and makes it appear at zero. Call once, after
/// the recorder is installed.
pub fn register() {
    describe_counter!(
        "pushd_deliveries_created_total",
        "Deliveries acknowledged by POST /v1/send/push."
    );
    metrics::counter!("pushd_deliveries_created_total").absolute(0);

    describe_counter!(
        "pushd_reports_total",
        "Device reports accepted by POST /push/events, by event."
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

    describe_counter!(
        "pushd_provider_attempts_total",
        "Provider calls started; retry=true for the second and later of a device send."
    );
    for retry in ["false", "true"] {
        metrics::counter!("pushd_provider_attempts_total", "retry" => retry).absolute(0);
    }

    describe_gauge!(
        "pushd_person_actors",
        "Customers whose actor is in memory (active customers)."
    );
    metrics::gauge!("pushd_person_actors").increment(0.0);

    describe_counter!(
        "pushd_store_flushes_total",
        "Group-commit flushes of the store."
    );
    metrics::counter!("pushd_store_flushes_total").absolute(0);
    describe_histogram!(
        "pushd_store_flush_seconds",
        Unit::Seconds,
        "Time of one group-commit flush."
    );
    let _ = metrics::histogram!("pushd_store_flush_seconds");
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
            } else if path.extension().is_some_and(|e| e == "rs") {
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
        assert!(found.len() >= super::SERIES.len(), "{found:?}");
        for name in found {
            assert!(
                super::SERIES.contains(&name.as_str()),
                "{name} is recorded but not listed in src/telemetry.rs"
            );
        }
    }
}
