//! `?from=&to=`: the creation-time range of the deliveries a read covers
//! (metrics, time series, the delivery log). Each end is Unix seconds (a
//! whole number) or an RFC 3339 time (`2026-12-05T10:00:00Z`, any offset;
//! a fraction of a second is dropped); `from` is included, `to` is not.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest};
use pushd_actors::status::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::body::MAX_SECONDS;
use super::error::ApiError;
use crate::store::CreatedRange;

/// The range `from` and `to` (query values, if given) name; 400
/// `invalid_field` naming the parameter for a malformed value, and for a
/// `from` not before `to`.
pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<CreatedRange, ApiError> {
    let range = CreatedRange {
        from: from.map(|v| seconds("from", v)).transpose()?,
        to: to.map(|v| seconds("to", v)).transpose()?,
    };
    if let (Some(from), Some(to)) = (range.from, range.to)
        && from >= to
    {
        return Err(ApiError::invalid_field(format!(
            "from must be before to (from {from}, to {to}, Unix seconds): the range holds the \
             deliveries created from from up to, not including, to"
        )));
    }
    Ok(range)
}

/// The Unix seconds of query parameter `name`'s `value`.
fn seconds(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    let whole = value
        .parse::<i64>()
        .ok()
        .filter(|s| s.unsigned_abs() <= MAX_SECONDS.unsigned_abs());
    let rfc3339 = || {
        OffsetDateTime::parse(value, &Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    };
    whole.or_else(rfc3339).ok_or_else(|| {
        ApiError::invalid_field(format!(
            "{name} must be Unix seconds (from -{MAX_SECONDS} to {MAX_SECONDS}) or an RFC 3339 \
             time such as 2026-12-05T10:00:00Z, not {value:?}"
        ))
    })
}

impl FromRequest for CreatedRange {
    type Error = ApiError;
    type Future = Ready<Result<CreatedRange, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        ready(parse(value("from"), value("to")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_unix_seconds_or_rfc3339() {
        let r = parse(Some("1764928800"), Some("2026-12-05T12:00:00+01:00")).unwrap();
        assert_eq!((r.from, r.to), (Some(1_764_928_800), Some(1_796_468_400)));
        let r = parse(None, Some("2026-12-05T10:00:00.9Z")).unwrap();
        assert_eq!((r.from, r.to), (None, Some(1_796_464_800)));
        assert!(parse(None, None).unwrap().is_all());
    }

    #[test]
    fn a_bad_end_or_an_empty_range_is_refused_naming_the_parameter() {
        for (from, to, named) in [
            (Some("yesterday"), None, "from must be Unix seconds"),
            (None, Some("1e9"), "to must be Unix seconds"),
            (None, Some("2026-12-05"), "to must be Unix seconds"),
            (Some("9999999999999999"), None, "from must be Unix seconds"),
            (Some("200"), Some("200"), "from must be before to"),
            (
                Some("2026-12-05T10:00:00Z"),
                Some("100"),
                "from must be before to",
            ),
        ] {
            let e = parse(from, to).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "invalid_field"));
            assert!(e.message.starts_with(named), "{}", e.message);
        }
    }
}
