//! The `push` object of `PUT /v1/messages/{message_id}`: parsed with the offending
//! field named in every error, and checked for values and combinations a
//! provider would refuse, so a bad message is refused when it is uploaded
//! rather than failing every send.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use pushd_actors::model::{InterruptionLevel, PushKind, PushOptions, PushPriority};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// Longest `ttl_seconds`: 28 days, FCM's ceiling.
pub const MAX_TTL_SECONDS: u32 = 28 * 24 * 3600;
/// Longest `sound`, `category`, `thread_id`, `android_channel_id` and data key.
const MAX_NAME_BYTES: usize = 256;
/// Longest `image_url`.
const MAX_URL_BYTES: usize = 2048;
/// Data keys the payload's own keys use, or that FCM refuses.
const RESERVED_KEYS: [&str; 9] = [
    "aps",
    "CIO-Delivery-ID",
    "CIO-Delivery-Token",
    "deep_link",
    "image_url",
    "from",
    "notification",
    "message_type",
    "collapse_key",
];
/// Prefixes of data keys FCM keeps for itself.
const RESERVED_PREFIXES: [&str; 2] = ["google", "gcm"];

/// The `push` object as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    #[serde(default)]
    kind: PushKind,
    priority: Option<PushPriority>,
    ttl_seconds: Option<u32>,
    sound: Option<String>,
    badge: Option<u32>,
    category: Option<String>,
    thread_id: Option<String>,
    interruption_level: Option<InterruptionLevel>,
    relevance_score: Option<f64>,
    image_url: Option<String>,
    android_channel_id: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// 400 `invalid_field` about `push.<field>`.
fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_field(format!("push.{field}: {why}"))
}

/// Parses and checks `push`; `check_template` says why a data value is not
/// a valid Liquid template.
pub fn parse(
    value: Value,
    check_template: impl Fn(&str) -> Result<(), String>,
) -> Result<PushOptions, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid_field("push must be an object"));
    }
    // In an object every error has a path: the field (or data key) it is about.
    let body: PushBody = serde_path_to_error::deserialize(value)
        .map_err(|e| invalid(&e.path().to_string(), e.inner()))?;
    let names = [
        ("sound", &body.sound),
        ("category", &body.category),
        ("thread_id", &body.thread_id),
        ("android_channel_id", &body.android_channel_id),
    ];
    for (field, name) in names {
        if name
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > MAX_NAME_BYTES)
        {
            return Err(invalid(
                field,
                format!("must be 1 to {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    if body.ttl_seconds.is_some_and(|t| t > MAX_TTL_SECONDS) {
        return Err(invalid(
            "ttl_seconds",
            format!("must be at most {MAX_TTL_SECONDS} (28 days)"),
        ));
    }
    if body
        .relevance_score
        .is_some_and(|s| !(0.0..=1.0).contains(&s))
    {
        return Err(invalid("relevance_score", "must be between 0 and 1"));
    }
    if let Some(url) = &body.image_url {
        check_image_url(url)?;
    }
    for (key, template) in &body.data {
        check_data_key(key)?;
        check_template(template).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_template",
                format!("push.data.{key} is not a valid Liquid template: {e}"),
            )
        })?;
    }
    if body.kind == PushKind::Background {
        check_background(&body)?;
    }
    Ok(PushOptions {
        kind: body.kind,
        priority: body.priority,
        ttl_seconds: body.ttl_seconds,
        sound: body.sound,
        badge: body.badge,
        category: body.category,
        thread_id: body.thread_id,
        interruption_level: body.interruption_level,
        relevance_score: body.relevance_score,
        image_url: body.image_url,
        android_channel_id: body.android_channel_id,
        data: body.data,
    })
}

/// A background push shows nothing and APNs sends it only at normal
/// priority: the options of an alert make no sense on it.
fn check_background(body: &PushBody) -> Result<(), ApiError> {
    if body.priority == Some(PushPriority::High) {
        return Err(invalid(
            "priority",
            "a background push is sent at normal priority (APNs refuses high); leave priority out",
        ));
    }
    let alert_only = [
        ("sound", body.sound.is_some()),
        ("badge", body.badge.is_some()),
        ("category", body.category.is_some()),
        ("thread_id", body.thread_id.is_some()),
        ("interruption_level", body.interruption_level.is_some()),
        ("relevance_score", body.relevance_score.is_some()),
        ("image_url", body.image_url.is_some()),
        ("android_channel_id", body.android_channel_id.is_some()),
    ];
    match alert_only.into_iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(invalid(
            field,
            "a background push shows nothing; this option applies to kind \"alert\" only",
        )),
        None => Ok(()),
    }
}

/// An absolute `https://` URL: iOS loads nothing else by default.
fn check_image_url(url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(
            "image_url",
            format!("must be at most {MAX_URL_BYTES} bytes"),
        ));
    }
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => Ok(()),
        _ => Err(invalid("image_url", "must be an absolute https:// URL")),
    }
}

/// A data key that neither the payload's own keys nor FCM's reserved words
/// clash with.
fn check_data_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "data",
            format!("keys must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    let lower = key.to_ascii_lowercase();
    if RESERVED_KEYS.contains(&key) || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Err(invalid(
            &format!("data.{key}"),
            "is reserved by pushd or the push provider; choose another key",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value) -> Result<PushOptions, String> {
        parse(v, |t| match t.contains("{{") && !t.contains("}}") {
            true => Err("unclosed".into()),
            false => Ok(()),
        })
        .map_err(|e| e.message)
    }

    #[test]
    fn every_option_is_kept() {
        let o = parsed(
            json!({"priority": "normal", "ttl_seconds": 60, "sound": "ping.caf",
            "badge": 3, "category": "ORDER", "thread_id": "orders",
            "interruption_level": "time-sensitive", "relevance_score": 0.5,
            "image_url": "https://cdn.example.com/a.png", "android_channel_id": "orders",
            "data": {"screen": "orders/{{event.order}}"}}),
        )
        .unwrap();
        assert_eq!(o.kind, PushKind::Alert);
        assert_eq!(o.priority, Some(PushPriority::Normal));
        assert_eq!(o.interruption_level, Some(InterruptionLevel::TimeSensitive));
        assert_eq!(o.data["screen"], "orders/{{event.order}}");
        assert_eq!(parsed(json!({})).unwrap(), PushOptions::default());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"priority": "urgent"}),
                "push.priority: unknown variant",
            ),
            (
                json!({"ttl_seconds": -1}),
                "push.ttl_seconds: invalid value",
            ),
            (
                json!({"ttl_seconds": 2_419_201}),
                "push.ttl_seconds: must be at most",
            ),
            (json!({"badge": "3"}), "push.badge: invalid type"),
            (json!({"relevance_score": 1.5}), "push.relevance_score:"),
            (
                json!({"interruption_level": "loud"}),
                "push.interruption_level:",
            ),
            (
                json!({"image_url": "http://x.example/a.png"}),
                "push.image_url:",
            ),
            (json!({"image_url": "not a url"}), "push.image_url:"),
            (json!({"sound": ""}), "push.sound:"),
            (json!({"data": {"n": 1}}), "push.data.n: invalid type"),
            (
                json!({"data": {"CIO-Delivery-ID": "x"}}),
                "push.data.CIO-Delivery-ID:",
            ),
            (
                json!({"data": {"google.c.a": "x"}}),
                "push.data.google.c.a:",
            ),
            (
                json!({"data": {"k": "{{ oops"}}),
                "push.data.k is not a valid",
            ),
            (json!({"colour": "red"}), "push.colour: unknown field"),
            (json!([]), "push must be an object"),
            (
                json!({"kind": "background", "priority": "high"}),
                "push.priority: a background push",
            ),
            (
                json!({"kind": "background", "badge": 1}),
                "push.badge: a background push shows nothing",
            ),
        ];
        for (body, expected) in cases {
            let got = parsed(body.clone()).unwrap_err();
            assert!(got.starts_with(expected), "{body}: {got}");
        }
        let quiet = parsed(json!({"kind": "background", "ttl_seconds": 0,
            "data": {"sync": "inbox"}}))
        .unwrap();
        assert_eq!(quiet.kind, PushKind::Background);
    }
}
