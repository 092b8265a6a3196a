//! In-memory doubles of the engine's ports, with signals tests can await.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushd_actors::engine::EngineConfig;
use pushd_actors::model::{Content, Customer, Delivery, MessageSpec};
use pushd_actors::ports::{
    Accepted, BoxFuture, Change, ManualClock, Provider, ProviderError, Push, RenderError, Renderer,
    Store, StoreError,
};
use pushd_actors::registry::Registry;
use pushd_actors::status::Timestamp;
use serde_json::Value;
use tokio::sync::Notify;

/// Waits for `cond`, woken by `notify`; panics after 10 s so a bug fails
/// the test instead of hanging it.
pub async fn wait_for(notify: &Notify, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let woken = notify.notified();
            if cond() {
                return;
            }
            woken.await;
        }
    })
    .await
    .expect("condition not reached in 10 s");
}

/// A store in memory; `commit` is durable at once.
#[derive(Default)]
pub struct MemStore {
    pub customers: Mutex<HashMap<String, Customer>>,
    pub deliveries: Mutex<HashMap<String, Delivery>>,
    pub commits: Notify,
}

impl MemStore {
    pub fn delivery_now(&self, id: &str) -> Delivery {
        self.deliveries.lock().unwrap()[id].clone()
    }
}

impl Store for MemStore {
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        Ok(self.customers.lock().unwrap().get(id).cloned())
    }

    fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.deliveries.lock().unwrap().get(id).cloned())
    }

    fn unsettled_deliveries(&self, customer_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let all = self.deliveries.lock().unwrap();
        Ok(all
            .values()
            .filter(|d| d.customer_id == customer_id && !d.state.settled())
            .cloned()
            .collect())
    }

    fn deliveries_between(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        let all = self.deliveries.lock().unwrap();
        let mut found: Vec<Delivery> = all
            .values()
            .filter(|d| d.customer_id == customer_id && (from..=to).contains(&d.created_at))
            .cloned()
            .collect();
        found.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(found)
    }

    fn commit(&self, changes: Vec<Change>) -> BoxFuture<Result<(), StoreError>> {
        let applied = self.record(changes);
        Box::pin(async move { applied })
    }

    fn record(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        for change in changes {
            match change {
                Change::Customer(c) => {
                    self.customers.lock().unwrap().insert(c.id.clone(), c);
                }
                Change::CustomerDeleted(id) => {
                    self.customers.lock().unwrap().remove(&id);
                }
                Change::Delivery { after, .. } => {
                    self.deliveries
                        .lock()
                        .unwrap()
                        .insert(after.id.clone(), *after);
                }
            }
        }
        self.commits.notify_waiters();
        Ok(())
    }
}

/// What a scripted provider answers for a token.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    Transient,
    Bounce,
    /// Never answers: the send hangs (a crash stand-in).
    Hang,
}

/// A provider that answers from a per-token script (then `Ok`).
#[derive(Default)]
pub struct ScriptedProvider {
    pub scripts: Mutex<HashMap<String, VecDeque<Answer>>>,
    pub calls: Mutex<Vec<Push>>,
    pub called: Notify,
}

impl ScriptedProvider {
    pub fn script(&self, token: &str, answers: impl IntoIterator<Item = Answer>) {
        self.scripts
            .lock()
            .unwrap()
            .insert(token.to_string(), answers.into_iter().collect());
    }

    pub fn calls_to(&self, token: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.token == token)
            .count()
    }
}

impl Provider for ScriptedProvider {
    fn send(&self, push: Push) -> BoxFuture<Result<Accepted, ProviderError>> {
        let answer = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&push.token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok);
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(push);
            calls.len()
        };
        self.called.notify_waiters();
        let result = match answer {
            Answer::Ok => Ok(Accepted {
                provider_id: Some(format!("id-{n}")),
            }),
            Answer::Transient => Err(ProviderError::Transient {
                detail: "503 ServiceUnavailable".into(),
                retry_after: None,
            }),
            Answer::Bounce => Err(ProviderError::Bounced {
                detail: "410 Unregistered".into(),
            }),
            Answer::Hang => return Box::pin(std::future::pending()),
        };
        Box::pin(async move { result })
    }
}

/// Replaces `{{customer.KEY}}`; a missing key is an error, like Liquid.
pub struct PlainRenderer;

impl PlainRenderer {
    fn fill(text: &str, customer: &Customer) -> Result<String, RenderError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{customer.") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| RenderError::Syntax(text.into()))?;
            let key = &rest[start + 11..start + end];
            match customer.attributes.get(key) {
                Some(Value::String(s)) => out.push_str(s),
                Some(v) => out.push_str(&v.to_string()),
                None => return Err(RenderError::VariableMissing(key.into())),
            }
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl Renderer for PlainRenderer {
    fn render(&self, m: &MessageSpec, c: &Customer, _: &Value) -> Result<Content, RenderError> {
        Ok(Content {
            title: Self::fill(&m.title, c)?,
            body: Self::fill(&m.body, c)?,
            deep_link: None,
            collapse_id: m.collapse_id.clone(),
            options: m.push.clone(),
        })
    }
}

/// An engine over the doubles.
pub struct Harness {
    pub store: Arc<MemStore>,
    pub provider: Arc<ScriptedProvider>,
    pub clock: Arc<ManualClock>,
    pub registry: Registry,
}

pub fn config() -> EngineConfig {
    EngineConfig {
        max_attempts: 10,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::on(
            Arc::new(MemStore::default()),
            Arc::new(ScriptedProvider::default()),
        )
    }

    /// An engine on an existing store: a restart after a crash.
    pub fn on(store: Arc<MemStore>, provider: Arc<ScriptedProvider>) -> Self {
        let clock = Arc::new(ManualClock::new(1_764_100_000_000));
        let registry = Registry::new(
            provider.clone(),
            store.clone(),
            Arc::new(PlainRenderer),
            clock.clone(),
            config(),
            2,
        );
        Harness {
            store,
            provider,
            clock,
            registry,
        }
    }
}
