//! The globals of a sample render: every variable exists and is empty.
//!
//! A message is checked when it is stored by rendering it once over these,
//! so a template that goes past a limit whatever the customer is refused
//! then, not at its first send; a missing variable cannot stop the sample
//! before its loops.

use std::fmt;

use liquid_core::model::{DisplayCow, KStringCow, State};
use liquid_core::{ObjectView, Value, ValueView};

/// Any variable: empty (nil) itself, and holding every name as another.
#[derive(Debug)]
pub struct Anything;

static NIL: Value = Value::Nil;

impl ValueView for Anything {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }

    fn render(&self) -> DisplayCow<'_> {
        NIL.render()
    }

    fn source(&self) -> DisplayCow<'_> {
        NIL.source()
    }

    fn type_name(&self) -> &'static str {
        NIL.type_name()
    }

    fn query_state(&self, state: State) -> bool {
        NIL.query_state(state)
    }

    fn to_kstr(&self) -> KStringCow<'_> {
        NIL.to_kstr()
    }

    fn to_value(&self) -> Value {
        Value::Nil
    }

    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self)
    }

    fn is_nil(&self) -> bool {
        true
    }
}

impl ObjectView for Anything {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        0
    }

    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(std::iter::empty())
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(std::iter::empty())
    }

    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(std::iter::empty())
    }

    fn contains_key(&self, _: &str) -> bool {
        true
    }

    fn get<'s>(&'s self, _: &str) -> Option<&'s dyn ValueView> {
        Some(self)
    }
}
