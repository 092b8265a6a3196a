//! Liquid rendering of push templates, behind the engine's `Renderer` port.
//!
//! Title, body, deep link and the values of the push `data` are templates.
//! They see `customer.*` (the customer's attributes and `customer.id`)
//! and `event.*` (the `data` of the triggering call). A variable the customer
//! lacks is an error, not an empty string: that is the
//! `liquid_variable_missing` failure users see in the delivery log.

use std::sync::Arc;

use dashmap::DashMap;
use liquid::{Parser, Template};
use pushd_actors::model::{Content, Customer, MessageSpec};
use pushd_actors::ports::{RenderError, Renderer};
use serde_json::{Value, json};

/// Renders with the Liquid standard library, caching parsed templates.
pub struct LiquidRenderer {
    parser: Parser,
    cache: DashMap<String, Arc<Template>>,
}

impl Default for LiquidRenderer {
    fn default() -> Self {
        LiquidRenderer {
            parser: liquid::ParserBuilder::with_stdlib()
                .build()
                .expect("the standard library builds"),
            cache: DashMap::new(),
        }
    }
}

impl LiquidRenderer {
    /// Parses `text`, or says why it does not parse.
    pub fn check(&self, text: &str) -> Result<(), String> {
        self.parse(text).map(|_| ()).map_err(|e| e.to_string())
    }

    fn parse(&self, text: &str) -> Result<Arc<Template>, RenderError> {
        if let Some(t) = self.cache.get(text) {
            return Ok(t.clone());
        }
        let parsed = self
            .parser
            .parse(text)
            .map_err(|e| RenderError::Syntax(e.to_string()))?;
        let parsed = Arc::new(parsed);
        // Templates are few (one per message field), so the cache stays small.
        self.cache.insert(text.to_string(), parsed.clone());
        Ok(parsed)
    }

    fn render_one(&self, text: &str, globals: &liquid::Object) -> Result<String, RenderError> {
        let template = self.parse(text)?;
        template.render(globals).map_err(|e| {
            let text = e.to_string();
            if text.contains("Unknown variable") || text.contains("Unknown index") {
                RenderError::VariableMissing(text)
            } else {
                RenderError::Syntax(text)
            }
        })
    }
}

impl Renderer for LiquidRenderer {
    fn render(
        &self,
        message: &MessageSpec,
        customer: &Customer,
        data: &Value,
    ) -> Result<Content, RenderError> {
        let mut attributes = customer.attributes.clone();
        attributes.insert("id".into(), Value::String(customer.id.clone()));
        let event = if data.is_object() {
            data.clone()
        } else {
            json!({})
        };
        let globals = liquid::model::to_object(&json!({"customer": attributes, "event": event}))
            .map_err(|e| RenderError::Syntax(e.to_string()))?;
        let mut options = message.push.clone();
        for value in options.data.values_mut() {
            *value = self.render_one(value, &globals)?;
        }
        Ok(Content {
            title: self.render_one(&message.title, &globals)?,
            body: self.render_one(&message.body, &globals)?,
            deep_link: match &message.deep_link {
                Some(link) => Some(self.render_one(link, &globals)?),
                None => None,
            },
            collapse_id: message.collapse_id.clone(),
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushd_actors::model::{Audience, DEFAULT_APP, PushOptions};

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
        }
    }

    fn ada() -> Customer {
        Customer {
            id: "c1".into(),
            attributes: json!({"first_name": "Ada"}).as_object().unwrap().clone(),
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
    fn missing_variable_and_bad_syntax_are_told_apart() {
        let r = LiquidRenderer::default();
        let missing = r.render(&spec("{{customer.plan}}"), &ada(), &Value::Null);
        assert!(
            matches!(missing, Err(RenderError::VariableMissing(_))),
            "{missing:?}"
        );
        let syntax = r.render(&spec("{{ customer.first_name "), &ada(), &Value::Null);
        assert!(matches!(syntax, Err(RenderError::Syntax(_))), "{syntax:?}");
        assert!(r.check("{% if %}").is_err());
        assert!(r.check("Hi {{customer.x}}").is_ok());
    }
}
