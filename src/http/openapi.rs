//! `GET /openapi.json`: the API's OpenAPI 3 description. The source is
//! `docs/openapi.yaml`, built into the binary and converted to JSON once, on
//! the first request, so the served description is always the one in the
//! repository at build time.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::Method;
use actix_web::web;
use serde_json::Value;

/// The description as written.
const SOURCE: &str = include_str!("../../docs/openapi.yaml");

/// The description as JSON. A YAML error is a build defect that the unit
/// test below catches, so it cannot reach a running daemon.
static DESCRIPTION: LazyLock<Value> =
    LazyLock::new(|| serde_norway::from_str(SOURCE).expect("docs/openapi.yaml is valid YAML"));

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(&*DESCRIPTION)
}

/// Registers the route (no key: the description holds no data).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::endpoint(
        "/openapi.json",
        [(Method::GET, web::to(openapi))],
    ));
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn the_description_parses_and_every_reference_resolves() {
        let spec = &*DESCRIPTION;
        assert_eq!(spec["openapi"], "3.0.3");
        let paths = spec["paths"].as_object().expect("paths");
        assert!(paths.contains_key("/v1/send/push"), "{paths:?}");
        let mut refs = Vec::new();
        collect_refs(spec, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(spec.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    /// Routes served that the description leaves out on purpose: the
    /// dashboard's page and assets (HTML for a browser, not API), and the
    /// call nodes of a cluster make to each other (not for clients).
    const NOT_API: [&str; 5] = [
        "/",
        "/assets/{file}",
        "/v1/cluster/tallies",
        "/v1/cluster/reports",
        "/v1/cluster/partitions/{partition}/store",
    ];

    #[test]
    fn the_description_lists_every_route_served_with_its_methods() {
        let _app = actix_web::App::new().configure(crate::http::routes);
        let served: BTreeMap<String, BTreeSet<String>> = crate::http::served::routes()
            .into_iter()
            .filter(|(path, _)| !NOT_API.contains(&path.as_str()))
            .collect();
        assert!(served.contains_key("/v1/send/push"), "{served:?}");
        let methods = ["get", "put", "post", "delete", "patch", "head"];
        let described: BTreeMap<String, BTreeSet<String>> = DESCRIPTION["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .map(|(path, item)| {
                let item = item.as_object().expect("a path item");
                let verbs = item.keys().filter(|k| methods.contains(&k.as_str()));
                (path.clone(), verbs.map(|m| m.to_uppercase()).collect())
            })
            .collect();
        assert_eq!(
            served, described,
            "served (left) against docs/openapi.yaml (right)"
        );
    }

    fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
