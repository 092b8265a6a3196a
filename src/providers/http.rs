//! What both provider clients share: their endpoints' connections, the
//! general HTTP client (FCM's token endpoint), and the mapping of transport
//! failures and `Retry-After`.

use std::time::Duration;

use http::HeaderMap;
use http::header::RETRY_AFTER;
use pushd_actors::model::Platform;
use pushd_actors::ports::ProviderError;
use pushd_actors::status::FailureReason;

use super::h2::{Endpoint, H2Error, Limits};
use super::{ClientOptions, CredentialsError};

/// How long connecting may take (within the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled general client for `url`'s host: HTTP/2 with prior knowledge
/// (h2c) for `http://`, TLS with ALPN `h2` for `https://`.
pub(crate) fn client_for(url: &str, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_while_idle(true);
    let builder = if url.starts_with("http://") {
        builder.http2_prior_knowledge()
    } else {
        builder.https_only(true)
    };
    builder.build()
}

/// The connections to `platform`'s provider endpoint at `url`, as
/// `options` size them.
pub(crate) fn endpoint(
    url: &str,
    platform: Platform,
    options: &ClientOptions,
) -> Result<Endpoint, CredentialsError> {
    let limits = Limits {
        streams_per_connection: options.streams_per_connection,
        max_connections: options.max_connections,
        timeout: options.request_timeout,
        max_age: options.max_connection_age,
        transactional_share: options.transactional_share,
        platform: platform.as_str(),
    };
    Endpoint::new(url, limits).map_err(CredentialsError::Endpoint)
}

/// How many times a push the provider never processed is sent again at
/// once, on a fresh connection, before it counts as a failed attempt (a
/// provider that sends GOAWAY to every new connection).
pub(crate) const UNPROCESSED_RESENDS: u32 = 4;

/// Whether `e` says the provider never processed the request, and it may be
/// sent again at once (`resent` times so far) without costing an attempt.
pub(crate) fn resend(e: &H2Error, resent: &mut u32) -> bool {
    if !matches!(e, H2Error::Unprocessed(_)) || *resent >= UNPROCESSED_RESENDS {
        return false;
    }
    *resent += 1;
    tracing::debug!(error = %e, "push not processed by the provider; sending it again");
    true
}

/// A push that got no answer on the wire: always worth retrying.
pub(crate) fn transport_error(e: H2Error) -> ProviderError {
    let kind = match e {
        H2Error::Timeout(_) => "timeout",
        _ => "network",
    };
    ProviderError::Transient {
        detail: format!("{kind}: {e}"),
        retry_after: None,
    }
}

/// A request that could not be built (a token the URI cannot hold, say):
/// the push is refused, and the token is not to blame.
pub(crate) fn invalid_request(detail: String) -> ProviderError {
    ProviderError::Permanent {
        reason: FailureReason::ProviderRejected,
        detail,
    }
}

/// A request to the token endpoint that got no response: worth retrying.
pub(crate) fn network_error(e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() { "timeout" } else { "network" };
    ProviderError::Transient {
        detail: format!("{kind}: {e}"),
        retry_after: None,
    }
}

/// The `Retry-After` header, in seconds.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Refuses a payload of `size` bytes when `provider` accepts at most `max`:
/// a payload error is the message's fault, never the token's, and sending
/// it would only be refused.
pub(crate) fn check_size(provider: &str, size: usize, max: usize) -> Result<(), ProviderError> {
    if size <= max {
        return Ok(());
    }
    Err(ProviderError::Permanent {
        reason: FailureReason::PayloadTooLarge,
        detail: format!("payload is {size} bytes; {provider} accepts at most {max}"),
    })
}
