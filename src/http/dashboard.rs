//! The web dashboard: campaign overview and delivery log pages.
//!
//! The page is three static files (`index.html`, `app.js`, `style.css`) built into the
//! binary with `include_str!`, so the daemon needs no CDN, no build step and no files on
//! disk to serve it. The static files need no key; the page asks for the API key once and
//! sends it as `Authorization: Bearer <key>` on every `/v1/` call it makes.
//!
//! Routes: `GET /` (the page) and `GET /assets/{file}` (`app.js`, `style.css`).

use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Content-Security-Policy for the page: everything from this origin, nothing inline,
/// nothing from the network beyond the daemon itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// One static asset: its body and content type.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

fn asset(file: &str) -> Option<Asset> {
    match file {
        "app.js" => Some(Asset {
            body: APP_JS,
            content_type: "text/javascript; charset=utf-8",
        }),
        "style.css" => Some(Asset {
            body: STYLE_CSS,
            content_type: "text/css; charset=utf-8",
        }),
        _ => None,
    }
}

/// Mount the dashboard's routes: `/` and `/assets/{file}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::endpoint(
        "/",
        [
            (Method::GET, web::to(index)),
            (Method::HEAD, web::to(index)),
        ],
    ))
    .service(super::endpoint(
        "/assets/{file}",
        [
            (Method::GET, web::to(assets)),
            (Method::HEAD, web::to(assets)),
        ],
    ));
}

async fn index() -> HttpResponse {
    respond(INDEX_HTML, "text/html; charset=utf-8")
}

async fn assets(req: HttpRequest) -> HttpResponse {
    let file = req.match_info().get("file").unwrap_or("");
    match asset(file) {
        Some(a) => respond(a.body, a.content_type),
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": {"code": "not_found", "message": format!("no dashboard asset named {file:?}")}
        })),
    }
}

fn respond(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // The assets change with the binary; make the browser revalidate so an upgraded
        // daemon never runs an old app.js against a new API.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, body::to_bytes, http::StatusCode, test};

    async fn get(path: &str) -> (StatusCode, String, String) {
        let app = test::init_service(App::new().configure(routes)).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(res.into_body()).await.unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[actix_web::test]
    async fn serves_index_with_html_type() {
        let (status, ct, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "text/html; charset=utf-8");
        assert!(body.contains("/assets/app.js"));
        assert!(body.contains("/assets/style.css"));
    }

    #[actix_web::test]
    async fn serves_assets_with_their_types() {
        let (status, ct, body) = get("/assets/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "text/javascript; charset=utf-8");
        assert!(body.contains("Authorization"));

        let (status, ct, _) = get("/assets/style.css").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, "text/css; charset=utf-8");
    }

    #[actix_web::test]
    async fn unknown_asset_is_404_json() {
        for path in [
            "/assets/nope.js",
            "/assets/..%2Fdashboard.rs",
            "/assets/index.html",
        ] {
            let (status, ct, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(ct.starts_with("application/json"), "{path}: {ct}");
            assert!(body.contains("\"not_found\""), "{path}: {body}");
        }
    }

    #[actix_web::test]
    async fn no_external_urls_in_assets() {
        // The SVG namespace is a name, not a fetch; anything else would be a run-time
        // dependency on the network.
        for body in [INDEX_HTML, APP_JS, STYLE_CSS] {
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://") && !body.contains("https://"));
        }
    }
}
