//! Liquid rendering of push templates, behind the engine's `Renderer` port.
//!
//! Title, body, deep link and the values of the push `data` are templates.
//! They see `customer.*` (the customer's attributes and `customer.id`)
//! and `event.*` (the `data` of the triggering call). A variable the customer
//! lacks is an error, not an empty string: that is the
//! `liquid_variable_missing` failure users see in the delivery log.

use std::sync::Arc;

use liquid::{Parser, Template};
use pushd_actors::model::{Content, Customer, MessageSpec};
use pushd_actors::ports::{RenderError, Renderer};
use quick_cache::sync::Cache;
use serde_json::Value;

/// Parsed templates kept: a message has a few fields, so this covers
/// thousands of messages; past it the least used are parsed again.
pub const TEMPLATE_CACHE_ENTRIES: usize = 10_000;

/// Renders with the Liquid standard library, caching parsed templates in a
/// bounded cache that evicts the least recently used: message uploads
/// (and their checks) cannot grow it without end.
pub struct LiquidRenderer {
    parser: Parser,
    cache: Cache<String, Arc<Template>>,
}

impl Default for LiquidRenderer {
    fn default() -> Self {
        LiquidRenderer::with_capacity(TEMPLATE_CACHE_ENTRIES)
    }
}

impl LiquidRenderer {
    /// A renderer keeping at most about `entries` parsed templates.
    pub fn with_capacity(entries: usize) -> Self {
        LiquidRenderer {
            parser: liquid::ParserBuilder::with_stdlib()
                .build()
                .expect("the standard library builds"),
            cache: Cache::new(entries),
        }
    }

    /// Parses `text`, or says why it does not parse, in words: where (line
    /// and column) and what was expected.
    pub fn check(&self, text: &str) -> Result<(), String> {
        self.parse(text).map(|_| ()).map_err(|e| {
            let words = match e {
                RenderError::Syntax(words) | RenderError::VariableMissing(words) => words,
            };
            let unclosed = [("{{", "}}"), ("{%", "%}")]
                .into_iter()
                .find(|(open, close)| text.matches(open).count() > text.matches(close).count());
            match unclosed {
                Some((open, close)) => format!("{words} (a {open} is not closed with {close})"),
                None => words,
            }
        })
    }

    fn parse(&self, text: &str) -> Result<Arc<Template>, RenderError> {
        if let Some(t) = self.cache.get(text) {
            return Ok(t);
        }
        let parsed = self
            .parser
            .parse(text)
            .map_err(|e| RenderError::Syntax(in_words(&e.to_string())))?;
        let parsed = Arc::new(parsed);
        self.cache.insert(text.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Renders one field (`title`, `body`, `deep_link`); an error names it.
    fn render_one(
        &self,
        field: &str,
        text: &str,
        globals: &liquid::Object,
    ) -> Result<String, RenderError> {
        // Plain text (no tag, no output) renders as itself.
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_owned());
        }
        let template = self.parse(text).map_err(|e| match e {
            RenderError::Syntax(words) => RenderError::Syntax(format!("{field}: {words}")),
            other => other,
        })?;
        // Into a buffer of about the template's size: liquid's own `render`
        // reserves 10 KB per call, which the returned string keeps (and a
        // delivery keeps its rendered content for as long as it lives).
        let mut out = Vec::with_capacity(text.len() + 32);
        template.render_to(&mut out, globals).map_err(|e| {
            let text = e.to_string();
            let words = format!("{field}: {}", in_words(&text));
            if text.contains("Unknown variable") || text.contains("Unknown index") {
                RenderError::VariableMissing(words)
            } else {
                RenderError::Syntax(words)
            }
        })?;
        String::from_utf8(out).map_err(|e| RenderError::Syntax(format!("{field}: {e}")))
    }
}

/// A Liquid error in words. liquid's errors carry their facts only in their
/// text (a source excerpt with `--> line:column`, or `key=value` context
/// lines), so this reads them from there.
fn in_words(text: &str) -> String {
    let context = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    if let Some(index) = context("requested index") {
        let variable = context("variable").unwrap_or("?");
        return format!("the variable {variable}.{index} is missing");
    }
    if let Some(variable) = context("requested variable") {
        return format!("the variable {variable} is missing");
    }
    if let Some(filter) = context("requested filter") {
        return format!("there is no filter named {filter:?}");
    }
    if let Some((_, at)) = text.split_once("-->") {
        let at = at.lines().next().unwrap_or("").trim();
        let (line, column) = at.split_once(':').unwrap_or((at, "?"));
        let what = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("= "))
            .unwrap_or("unexpected text");
        return format!("at line {line}, column {column}: {what}");
    }
    text.trim_start_matches("liquid:").trim().replace('\n', " ")
}

impl Renderer for LiquidRenderer {
    fn render(
        &self,
        message: &MessageSpec,
        customer: &Customer,
        data: &Value,
    ) -> Result<Content, RenderError> {
        // The globals built straight from the attributes, without cloning
        // them into another JSON value first.
        let value =
            |v: &Value| liquid::model::to_value(v).map_err(|e| RenderError::Syntax(e.to_string()));
        let mut person = liquid::Object::new();
        for (key, v) in customer.attributes.to_map() {
            person.insert(key.into(), value(&v)?);
        }
        person.insert(
            "id".into(),
            liquid::model::Value::scalar(customer.id.clone()),
        );
        let event = match data {
            Value::Object(_) => value(data)?,
            _ => liquid::model::Value::Object(liquid::Object::new()),
        };
        let mut globals = liquid::Object::new();
        globals.insert("customer".into(), liquid::model::Value::Object(person));
        globals.insert("event".into(), event);
        let mut options = message.push.clone();
        for (key, value) in options.data.iter_mut() {
            *value = self.render_one(&format!("push.data.{key}"), value, &globals)?;
        }
        Ok(Content {
            title: self.render_one("title", &message.title, &globals)?,
            body: self.render_one("body", &message.body, &globals)?,
            deep_link: match &message.deep_link {
                Some(link) => Some(self.render_one("deep_link", link, &globals)?),
                None => None,
            },
            collapse_id: message.collapse_id.clone(),
            options,
            rate_per_minute: message.rate_per_minute,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushd_actors::model::{Audience, DEFAULT_APP, PushOptions};
    use serde_json::json;

    fn spec(title: &str) -> MessageSpec {
        MessageSpec {
            id: "m".into(),
            name: "m".into(),
            campaign_id: None,
            title: title.into(),
            body: "{{ event.order | default: 'none' }}".into(),
            deep_link: Some("app://u/{{customer.id}}".into()),
            audience: Audience::AllDevices,
            collapse_id: None,
            conversion: None,
            app: DEFAULT_APP.into(),
            push: PushOptions::default(),
            rate_per_minute: None,
            created_at: 0,
        }
    }

    fn ada() -> Customer {
        Customer {
            id: "c1".into(),
            attributes: json!({"first_name": "Ada"})
                .as_object()
                .unwrap()
                .clone()
                .into(),
            unsubscribed: false,
            devices: vec![],
        }
    }

    #[test]
    fn renders_customer_and_event() {
        let r = LiquidRenderer::default();
        let c = r
            .render(
                &spec("Hi {{customer.first_name}}"),
                &ada(),
                &json!({"order": "A-17"}),
            )
            .unwrap();
        assert_eq!(c.title, "Hi Ada");
        assert_eq!(c.body, "A-17");
        assert_eq!(c.deep_link.as_deref(), Some("app://u/c1"));
    }

    #[test]
    fn renders_push_data_values() {
        let r = LiquidRenderer::default();
        let mut m = spec("t");
        m.push
            .data
            .insert("screen".into(), "orders/{{ event.order }}".into());
        m.push
            .data
            .insert("who".into(), "{{ customer.first_name }}".into());
        let c = r.render(&m, &ada(), &json!({"order": "A-17"})).unwrap();
        assert_eq!(c.options.data["screen"], "orders/A-17");
        assert_eq!(c.options.data["who"], "Ada");

        m.push
            .data
            .insert("plan".into(), "{{ customer.plan }}".into());
        let missing = r.render(&m, &ada(), &json!({"order": "A-17"}));
        assert!(
            matches!(missing, Err(RenderError::VariableMissing(_))),
            "{missing:?}"
        );
    }

    #[test]
    fn the_template_cache_is_bounded_and_keeps_rendering() {
        let r = LiquidRenderer::with_capacity(50);
        for i in 0..1000 {
            r.check(&format!("Hi {{{{ customer.first_name }}}} #{i}"))
                .unwrap();
        }
        let kept = r.cache.len();
        assert!((1..=50).contains(&kept), "{kept} templates kept");
        let order = json!({"order": "A-17"});
        let c = r.render(&spec("Hi {{customer.first_name}}"), &ada(), &order);
        assert_eq!(c.unwrap().title, "Hi Ada", "evicted templates parse again");
    }

    #[test]
    fn missing_variable_and_bad_syntax_are_told_apart() {
        let r = LiquidRenderer::default();
        let missing = r.render(&spec("{{customer.plan}}"), &ada(), &Value::Null);
        assert_eq!(
            missing,
            Err(RenderError::VariableMissing(
                "title: the variable customer.plan is missing".into()
            ))
        );
        let syntax = r.render(&spec("{{ customer.first_name "), &ada(), &Value::Null);
        assert!(matches!(syntax, Err(RenderError::Syntax(_))), "{syntax:?}");
        assert_eq!(
            r.check("Hi {{ customer.first_name"),
            Err("at line 1, column 7: expected Literal (a {{ is not closed with }})".into())
        );
        assert_eq!(
            r.check("a {{ x | shout }}"),
            Err("there is no filter named \"shout\"".into())
        );
        assert!(r.check("{% if %}").is_err());
        assert!(r.check("Hi {{customer.x}}").is_ok());
    }
}
