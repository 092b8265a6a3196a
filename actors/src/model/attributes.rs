//! [`Attributes`]: a customer's or a device's free-form attributes, kept
//! as compact JSON text.

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Free-form attributes: a JSON object, held as its compact JSON text.
///
/// A map costs a tree node of about 650 bytes however few its keys, once
/// per customer and once per device of every customer whose actor is
/// awake: the load bench's heap profile put a quarter of an in-flight
/// delivery's memory there. The text costs its length, and nothing when
/// empty. It is read as a map only where a template renders it or the API
/// shows it. In the journal and snapshots it is the same JSON text as
/// before, so stored data reads back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes(Option<Box<str>>);

impl Attributes {
    /// The attributes of `map`.
    pub fn new(map: &Map<String, Value>) -> Attributes {
        match map.is_empty() {
            true => Attributes(None),
            false => {
                let text = serde_json::to_string(map).expect("a map of JSON values serializes");
                Attributes(Some(text.into()))
            }
        }
    }

    /// The attributes as a map.
    pub fn to_map(&self) -> Map<String, Value> {
        let Some(text) = &self.0 else {
            return Map::new();
        };
        // The text is a JSON object: made by `new` or checked when read.
        serde_json::from_str(text).expect("attributes hold a JSON object")
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The JSON text (`{}` when empty).
    pub fn json_text(&self) -> &str {
        self.0.as_deref().unwrap_or("{}")
    }

    /// Attributes from stored JSON text, checked to be an object.
    pub fn from_json_text(text: String) -> Result<Attributes, String> {
        let object =
            text.trim_start().starts_with('{') && serde_json::from_str::<IgnoredAny>(&text).is_ok();
        match object {
            false => Err(format!(
                "stored attributes are not a JSON object: {text:.60}"
            )),
            true if text == "{}" => Ok(Attributes(None)),
            true => Ok(Attributes(Some(text.into()))),
        }
    }
}

impl From<Map<String, Value>> for Attributes {
    fn from(map: Map<String, Value>) -> Attributes {
        Attributes::new(&map)
    }
}

impl Serialize for Attributes {
    /// An object in human-readable formats (the API's JSON), its JSON text
    /// in compact binary ones (the journal, snapshots).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match s.is_human_readable() {
            true => self.to_map().serialize(s),
            false => s.serialize_str(self.json_text()),
        }
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attributes, D::Error> {
        match d.is_human_readable() {
            true => Map::deserialize(d).map(|m| Attributes::new(&m)),
            false => Attributes::from_json_text(String::deserialize(d)?).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn round_trips_through_json_and_postcard() {
        for v in [json!({}), json!({"plan": "pro", "n": 3, "tags": ["a"]})] {
            let a = Attributes::new(&map(v.clone()));
            assert_eq!(a.is_empty(), v == json!({}));
            assert_eq!(Value::from(a.to_map()), v);
            assert_eq!(serde_json::to_value(&a).unwrap(), v);
            let back: Attributes = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(back, a);
            let bytes = postcard::to_allocvec(&a).unwrap();
            assert_eq!(postcard::from_bytes::<Attributes>(&bytes).unwrap(), a);
        }
    }

    #[test]
    fn reads_what_the_earlier_text_encoding_stored() {
        // Earlier snapshots held `serde_json::to_string(&map)`.
        let text = serde_json::to_string(&map(json!({"b": 1, "a": "x"}))).unwrap();
        let bytes = postcard::to_allocvec(&text).unwrap();
        let a: Attributes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a.to_map()["a"], "x");
        assert_eq!(a, Attributes::new(&map(json!({"a": "x", "b": 1}))));
    }

    #[test]
    fn stored_text_that_is_not_an_object_is_refused() {
        for bad in ["[1]", "\"x\"", "{\"a\":", "12"] {
            let bytes = postcard::to_allocvec(&bad.to_string()).unwrap();
            assert!(postcard::from_bytes::<Attributes>(&bytes).is_err(), "{bad}");
        }
    }
}
