//! The dashboard (SPEC §14): `GET /` serves one self-contained page, its script at
//! `/dashboard.js` and its style at `/dashboard.css`, all embedded in the binary (no CDN, no
//! fonts, no build step). The page is a public shell holding no data and no secret: it asks
//! for the admin token (kept in the browser's `sessionStorage`) and reads the JSON API with
//! it, so these three paths are the only ones besides `/healthz` open without a token.
//!
//! The Content-Security-Policy allows scripts, styles and requests from this origin only, so
//! the page can neither run injected script nor reach another host; the script builds the
//! DOM with `textContent`, never with HTML made from data.
//!
//! [`routes`] also registers the read-only endpoints the page needs beside the existing API:
//! the minute-by-minute timeline, the day's alert transitions and the token status
//! ([`super::timeline`]).

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("index.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// Everything from this origin, nothing inline, nothing elsewhere. `data:` images are the
/// captcha pictures the API hands out as base64.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's own files, served without a token (they hold no data).
const PUBLIC_PATHS: [&str; 3] = ["/", "/dashboard.js", "/dashboard.css"];

/// Whether a request may reach the page's files without a token.
pub fn is_public(method: &actix_web::http::Method, path: &str) -> bool {
    method == actix_web::http::Method::GET && PUBLIC_PATHS.contains(&path)
}

/// The page, its files, and the endpoints added for it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/dashboard.js", web::get().to(script))
        .route("/dashboard.css", web::get().to(style))
        .route(
            "/api/v1/automation/performance/timeline",
            web::get().to(super::timeline::timeline),
        )
        .route(
            "/api/v1/automation/performance/alerts/history",
            web::get().to(super::timeline::alert_history),
        )
        .route(
            "/api/v1/automation/tokens/status",
            web::get().to(super::timeline::token_status),
        );
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The files change with the binary; a stale script against a new API helps nobody.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The dashboard page (a shell: all data comes from the API, with the admin token).
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    security(()),
    responses((status = 200, description = "The dashboard page (text/html)")),
)]
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page must work on a closed network: nothing it ships may point elsewhere.
    #[test]
    fn the_page_references_no_other_host() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("dashboard.js", DASHBOARD_JS),
            ("dashboard.css", DASHBOARD_CSS),
        ] {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(needle), "{name} contains {needle}");
            }
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
        assert!(
            !DASHBOARD_JS.contains("innerHTML"),
            "no HTML built from data"
        );
    }
}
