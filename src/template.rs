//! Liquid rendering of push templates, behind the engine's `Renderer` port.
//!
//! Title, body, deep link and the values of the push `data` are templates.
//! They see `customer.*` (the customer's attributes and `customer.id`)
//! and `event.*` (the `data` of the triggering call). A variable the customer
//! lacks is an error, not an empty string: that is the
//! `liquid_variable_missing` failure users see in the delivery log. A
//! render has a budget ([`Limits`]): past it, the delivery fails
//! `template_limit_exceeded`.

mod limits;
mod sample;

use std::sync::Arc;
use std::time::Duration;

use liquid::{Parser, Template};
use pushd_actors::model::{Content, Customer, MessageSpec};
use pushd_actors::ports::{RenderError, Renderer};
use quick_cache::sync::Cache;
use serde_json::Value;

pub use limits::Limits;
use limits::{Bounded, Started};

/// Parsed templates kept: a message has a few fields, so this covers
/// thousands of messages; past it the least used are parsed again.
pub const TEMPLATE_CACHE_ENTRIES: usize = 10_000;

/// The CPU time a render may take on an actor's thread before it is made
/// again off it: small enough that the customers queued behind it do not
/// notice, large enough for every ordinary template (a few microseconds).
pub const INLINE_CPU: Duration = Duration::from_millis(1);

/// Renders with the Liquid standard library, caching parsed templates in a
/// bounded cache that evicts the least recently used: message uploads
/// (and their checks) cannot grow it without end.
pub struct LiquidRenderer {
    parser: Parser,
    cache: Cache<String, Arc<Template>>,
    limits: Limits,
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
            parser: limits::stdlib()
                .build()
                .expect("the standard library builds"),
            cache: Cache::new(entries),
            limits: Limits::default(),
        }
    }

    /// This renderer, rendering within `limits`.
    pub fn with_limits(self, limits: Limits) -> Self {
        LiquidRenderer { limits, ..self }
    }

    /// Parses `text`, or says why it does not parse, in words: where (line
    /// and column) and what was expected.
    pub fn check(&self, text: &str) -> Result<(), String> {
        self.parse(text).map(|_| ()).map_err(|e| {
            let words = e.words().to_owned();
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

    /// Renders one field (`title`, `body`, `deep_link`) within `limits`,
    /// the CPU time counted from `since`; an error names the field.
    fn render_one(
        &self,
        limits: &Limits,
        field: &str,
        text: &str,
        globals: &dyn liquid::ObjectView,
        since: &Started,
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
        let mut out = Bounded(Vec::with_capacity(text.len() + 32));
        let (rendered, exceeded) =
            limits::bounded(limits, since, || template.render_to(&mut out, globals));
        if let Some(words) = exceeded {
            return Err(RenderError::LimitExceeded(format!("{field}: {words}")));
        }
        rendered.map_err(|e| {
            let text = e.to_string();
            let words = format!("{field}: {}", in_words(&text));
            if text.contains("Unknown variable") || text.contains("Unknown index") {
                RenderError::VariableMissing(words)
            } else {
                RenderError::Syntax(words)
            }
        })?;
        String::from_utf8(out.0).map_err(|e| RenderError::Syntax(format!("{field}: {e}")))
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
        self.render_within(&self.limits, message, customer, data)
    }

    /// Within [`INLINE_CPU`] of CPU time: a render past any limit then
    /// (most likely the CPU time) is made again off the actor's thread,
    /// where the full limits say which it really went past.
    fn render_inline(
        &self,
        message: &MessageSpec,
        customer: &Customer,
        data: &Value,
    ) -> Option<Result<Content, RenderError>> {
        let quick = Limits {
            max_render_cpu: self.limits.max_render_cpu.min(INLINE_CPU),
            ..self.limits.clone()
        };
        match self.render_within(&quick, message, customer, data) {
            Err(RenderError::LimitExceeded(_))
                if quick.max_render_cpu < self.limits.max_render_cpu =>
            {
                None
            }
            rendered => Some(rendered),
        }
    }
}

impl LiquidRenderer {
    /// Renders `message` for `customer` and the send's `data` within
    /// `limits`.
    fn render_within(
        &self,
        limits: &Limits,
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
        self.render_over(limits, message, &globals)
    }
    /// Renders a stored message's fields once over empty variables (any
    /// customer, any event): the words of the limit it goes past, if it
    /// does. Other errors are left to the send, where the customer's and
    /// the event's values are known.
    pub fn sample(&self, message: &MessageSpec) -> Result<(), String> {
        match self.render_over(&self.limits, message, &sample::Anything) {
            Err(RenderError::LimitExceeded(words)) => Err(words),
            _ => Ok(()),
        }
    }

    /// Renders every field of `message` over `globals`, within `limits`.
    fn render_over(
        &self,
        limits: &Limits,
        message: &MessageSpec,
        globals: &dyn liquid::ObjectView,
    ) -> Result<Content, RenderError> {
        let since = Started::now();
        let render =
            |field: &str, text: &str| self.render_one(limits, field, text, globals, &since);
        let mut options = message.push.clone();
        for (key, value) in options.data.iter_mut() {
            *value = render(&format!("push.data.{key}"), value)?;
        }
        Ok(Content {
            title: render("title", &message.title)?,
            body: render("body", &message.body)?,
            deep_link: match &message.deep_link {
                Some(link) => Some(render("deep_link", link)?),
                None => None,
            },
            collapse_id: message.collapse_id.clone(),
            options,
            rate_per_minute: message.rate_per_minute,
            lane: message.lane,
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
            lane: Default::default(),
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

    /// An ordinary template renders on the caller's thread; one that needs
    /// more than [`INLINE_CPU`] is left to a render off it, which says
    /// which limit it really went past.
    #[test]
    fn only_quick_renders_are_made_inline() {
        let r = LiquidRenderer::default().with_limits(Limits {
            max_render_cpu: Duration::from_secs(10),
            ..Limits::default()
        });
        let order = json!({"order": "A-17"});
        let quick = r.render_inline(&spec("Hi {{customer.first_name}}"), &ada(), &order);
        assert_eq!(quick.unwrap().unwrap().title, "Hi Ada");
        let missing = r.render_inline(&spec("{{customer.plan}}"), &ada(), &order);
        assert!(matches!(
            missing,
            Some(Err(RenderError::VariableMissing(_)))
        ));
        // 40 x 40 iterations with three filters each: within every limit,
        // but not within a millisecond.
        let slow = "{% for i in (1..40) %}{% for j in (1..40) %}{% assign n = i | times: j | append: 'x' | size %}{% endfor %}{% endfor %}{{ n }}";
        assert!(r.render_inline(&spec(slow), &ada(), &order).is_none());
        let whole = r.render(&spec(slow), &ada(), &order);
        assert!(whole.is_ok(), "{whole:?}");
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

    /// The body `body` renders to for Ada, under `limits`.
    fn body(limits: Limits, body: &str) -> Result<String, RenderError> {
        let r = LiquidRenderer::default().with_limits(limits);
        let mut m = spec("t");
        m.body = body.into();
        r.render(&m, &ada(), &json!({})).map(|c| c.body)
    }

    fn exceeded(result: Result<String, RenderError>, words: &str) {
        match result {
            Err(RenderError::LimitExceeded(w)) => assert!(w.contains(words), "{w}"),
            other => panic!("expected {words}, got {other:?}"),
        }
    }

    #[test]
    fn loops_stop_at_the_iteration_budget_before_they_run() {
        let nested = "{% for i in (1..5000) %}{% for j in (1..5000) %}x{% endfor %}{% endfor %}";
        exceeded(
            body(Limits::default(), nested),
            "body: its loops run more than 10000 iterations (max_iterations 10000)",
        );
        // A range is not built past the budget.
        let huge = "{% for i in (1..1000000000) %}{% endfor %}";
        exceeded(body(Limits::default(), huge), "max_iterations 10000");
        let rows = "{% tablerow i in (1..20000) %}{% endtablerow %}";
        exceeded(body(Limits::default(), rows), "max_iterations");
        // A range counts whole: liquid makes it before limit takes some.
        let limited = "{% for i in (1..1000000000) limit: 3 %}{{ i }}{% endfor %}";
        exceeded(body(Limits::default(), limited), "max_iterations");
        // An array counts what limit and offset leave; within the budget
        // loops run as before.
        let items = "{% assign a = \"a,b,c,d\" | split: \",\" %}{% for x in a offset: 1 limit: 2 %}{{ x }}{% endfor %}{% for i in (1..3) %}{{ i }}{% endfor %}";
        assert_eq!(body(Limits::default(), items).unwrap(), "bc123");
        let rows = "{% tablerow i in (1..2) cols: 2 %}{{ i }}{% endtablerow %}";
        assert!(
            body(Limits::default(), rows)
                .unwrap()
                .contains("<td class=\"col2\">2</td>")
        );
    }

    #[test]
    fn growing_values_stop_at_the_byte_limit() {
        let doubled = format!(
            "{{% assign s = \"xxxxxxxx\" %}}{}{{{{ s | size }}}}",
            "{% assign s = s | append: s %}".repeat(28)
        );
        exceeded(
            body(Limits::default(), &doubled),
            "body: it makes more than 16384 bytes of text (max_output_bytes 16384)",
        );
        let looped = "{% assign s = \"xxxxxxxx\" %}{% for i in (1..28) %}{% assign s = s | append: s %}{% endfor %}";
        exceeded(body(Limits::default(), looped), "max_output_bytes 16384");
        let captured = "{% assign s = \"xxxxxxxx\" %}{% for i in (1..28) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}";
        exceeded(body(Limits::default(), captured), "max_output_bytes");
        let arrays = "{% assign a = \"x,y\" | split: \",\" %}{% for i in (1..28) %}{% assign a = a | concat: a %}{% endfor %}";
        exceeded(body(Limits::default(), arrays), "max_output_bytes");
        // A product is refused before it is made.
        let product = "{% assign s = \"xxxxxxxxxxxxxxxx\" %}{% for i in (1..10) %}{% assign s = s | append: s %}{% endfor %}{{ s | replace: \"x\", s }}";
        exceeded(body(Limits::default(), product), "max_output_bytes");
        let printed = "{% for i in (1..5000) %}xxxxxxxx{% endfor %}";
        exceeded(body(Limits::default(), printed), "max_output_bytes");
        // Output, capture and ifchanged within the limit render as before.
        let small = "{% capture c %}{{ customer.first_name | append: '!' }}{% endcapture %}{{ c }}{% for i in (1..6) %}{% ifchanged %}{{ i | divided_by: 3 }}{% endifchanged %}{% endfor %}";
        assert_eq!(body(Limits::default(), small).unwrap(), "Ada!012");
    }

    #[test]
    fn a_render_stops_at_its_cpu_time() {
        let limits = Limits {
            max_iterations: u64::MAX,
            max_output_bytes: usize::MAX,
            max_render_cpu: Duration::from_millis(50),
        };
        let slow = "{% for i in (1..100000) %}{% for j in (1..100000) %}{{ j | plus: i }}{% endfor %}{% endfor %}";
        exceeded(
            body(limits, slow),
            "body: it takes more than 50 ms of CPU time (max_render_cpu_ms 50)",
        );
    }

    #[test]
    fn values_no_larger_than_their_input_pass() {
        let r = LiquidRenderer::default();
        let mut m = spec("t");
        m.body = "{{ customer.tags | sort | first }} {{ customer.tags | size }}".into();
        let mut c = ada();
        let tags: Vec<String> = (0..3000).map(|i| format!("tag-{i:05}")).collect();
        c.attributes = json!({ "tags": tags }).as_object().unwrap().clone().into();
        assert_eq!(r.render(&m, &c, &json!({})).unwrap().body, "tag-00000 3000");
    }

    #[test]
    fn a_sample_render_refuses_only_what_exceeds_a_limit_whatever_the_data() {
        let r = LiquidRenderer::default();
        let mut m = spec("Hi {{ customer.first_name }}");
        m.body = "{{ customer.plan }} {% for i in (1..5000) %}{% for j in (1..5000) %}{% endfor %}{% endfor %}".into();
        let refused = r.sample(&m).unwrap_err();
        assert!(
            refused.starts_with("body: ") && refused.contains("max_iterations 10000"),
            "{refused}"
        );
        // Missing variables, bad input and loops over data pass.
        m.body = "{{ customer.n | plus: 1 }} {% for i in (1..customer.n) %}{% for j in (1..customer.n) %}{% endfor %}{% endfor %}".into();
        assert_eq!(r.sample(&m), Ok(()));
        m.push.data.insert(
            "x".into(),
            "{% assign s = 'xx' %}{% for i in (1..20) %}{% assign s = s | append: s %}{% endfor %}"
                .into(),
        );
        let refused = r.sample(&m).unwrap_err();
        assert!(
            refused.starts_with("push.data.x: ") && refused.contains("max_output_bytes 16384"),
            "{refused}"
        );
    }
}
