//! Request input through actix-web's own `Json`, `Query` and `Path`
//! extractors, configured so every rejection is the contract's error body:
//! `invalid_json` for malformed JSON, `invalid_field` naming the field or
//! parameter for a wrong type, a missing field or an unknown value,
//! `body_too_large` past the limit.

use actix_web::web;
use serde::de::{Deserialize, DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::{ApiError, field_error};

/// A JSON body of type `T` whose type errors name the field, e.g.
/// `attributes must be an object, not string "x"` (a query string's
/// counterpart is [`Params`]).
///
/// It captures the body's JSON text first (a syntax error keeps its own
/// kind, `invalid_json`) and reads `T` straight from it. Only when that
/// fails does it build a JSON value and read `T` again with
/// `serde_path_to_error`, so the error names the field's path: the common,
/// valid body is parsed into `T` once, with no intermediate value.
pub struct Fields<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Fields<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        // serde would also read a struct from an array of its fields in
        // order: only an object is a body, which the slow path says.
        if raw.get().starts_with('{')
            && let Ok(body) = serde_json::from_str(raw.get())
        {
            return Ok(Fields(body));
        }
        let value: Value = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        with_path(value).map(Fields)
    }
}

/// The largest time [`float_seconds`] reads, in absolute value: 31 million
/// years of seconds, far past any clock, and exact as a float.
pub const MAX_SECONDS: i64 = 999_999_999_999_999;

/// Reads an optional time in Unix seconds given as a whole number or, as
/// Customer.io's SDKs may send it, a float (`1700000000.25`): the fraction
/// is dropped. A number beyond [`MAX_SECONDS`] either way is refused.
pub fn float_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let seconds = match n.as_i64() {
        Some(whole) => Some(whole),
        None => n
            .as_f64()
            .map(f64::floor)
            .filter(|f| f.abs() <= MAX_SECONDS as f64)
            .map(|f| f as i64),
    };
    match seconds.filter(|s| s.unsigned_abs() <= MAX_SECONDS.unsigned_abs()) {
        Some(s) => Ok(Some(s)),
        None => Err(D::Error::custom(format!(
            "invalid value: {n}, expected Unix seconds from -{MAX_SECONDS} to {MAX_SECONDS}"
        ))),
    }
}

/// A query string of type `T` whose type errors name the parameter (the
/// query's deserializer is not JSON's, so this always goes through a value).
pub struct Params<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Params<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        with_path(Value::deserialize(d)?).map(Params)
    }
}

/// Reads `T` from `value`, an error naming the field's path.
fn with_path<T: DeserializeOwned, E: serde::de::Error>(value: Value) -> Result<T, E> {
    if !value.is_object() {
        return Err(E::custom(format!(
            "the body must be a JSON object, not {}",
            json_kind(&value)
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match path.as_str() {
            // A missing or unknown top-level field names itself.
            "." => E::custom(inner),
            path => E::custom(field_error(path, &inner)),
        }
    })
}

/// What kind of JSON value `v` is, in words.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON body of type `T` (see [`Fields`]).
pub type JsonBody<T> = web::Json<Fields<T>>;

/// A query string of type `T` (see [`Params`]).
pub type QueryOf<T> = web::Query<Params<T>>;

/// Configures the extractors: the body limit and the contract's errors.
pub fn extractors(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body_bytes)
            // curl's default form content type still carries JSON here.
            .content_type_required(false)
            .error_handler(|e, _| ApiError::from(e).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::from(e).into()))
    .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::from(e).into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only the errors matter here")]
    struct Body {
        attributes: serde_json::Map<String, Value>,
        #[serde(default)]
        device: Option<Device>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code, reason = "only the errors matter here")]
    struct Device {
        platform: pushd_actors::model::Platform,
        last_used: Option<i64>,
    }

    fn error(json: &str) -> String {
        match serde_json::from_str::<Fields<Body>>(json) {
            Ok(_) => panic!("{json} parsed"),
            Err(e) => {
                assert!(e.is_data() || e.is_syntax() || e.is_eof(), "{e}");
                format!("{}{e}", if e.is_data() { "data: " } else { "syntax: " })
            }
        }
    }

    #[derive(serde::Deserialize, Debug)]
    struct Timed {
        #[serde(default, deserialize_with = "float_seconds")]
        at: Option<i64>,
    }

    #[test]
    fn times_may_be_floats_within_bounds() {
        let at = |json: &str| serde_json::from_str::<Timed>(json).map(|t| t.at);
        assert_eq!(at(r#"{"at": 1700000000}"#).unwrap(), Some(1_700_000_000));
        assert_eq!(at(r#"{"at": 1700000000.75}"#).unwrap(), Some(1_700_000_000));
        assert_eq!(at(r#"{"at": -1.5}"#).unwrap(), Some(-2));
        assert_eq!(at(r#"{"at": null}"#).unwrap(), None);
        assert_eq!(at(r#"{}"#).unwrap(), None);
        for bad in [
            r#"{"at": 1e300}"#,
            r#"{"at": -9223372036854775808}"#,
            r#"{"at": "now"}"#,
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_errors_name_the_field_syntax_errors_stay_syntax() {
        let e = error(r#"{"attributes": "x"}"#);
        assert!(
            e.starts_with("data: attributes must be an object, not string \"x\""),
            "{e}"
        );
        let e = error(r#"{"attributes": {}, "device": {"platform": "windows"}}"#);
        assert!(
            e.starts_with("data: device.platform: unknown variant `windows`"),
            "{e}"
        );
        let e = error(r#"{"attributes": {}, "device": {"platform": "ios", "last_used": "now"}}"#);
        assert!(
            e.starts_with("data: device.last_used must be a whole number"),
            "{e}"
        );
        let e = error(r#"{"attributes": {}, "lissen": 1}"#);
        assert!(e.starts_with("data: unknown field `lissen`"), "{e}");
        let e = error(r#"{}"#);
        assert!(e.starts_with("data: missing field `attributes`"), "{e}");
        let e = error(r#"[]"#);
        assert!(
            e.starts_with("data: the body must be a JSON object, not an array"),
            "{e}"
        );
        let e = error(r#"{"attributes": "#);
        assert!(e.starts_with("syntax: "), "{e}");
    }
}
