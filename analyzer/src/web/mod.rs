//! The fleet dashboard: the single-page app built from `analyzer/web/` (Vite, Preact, uPlot)
//! and embedded in the binary at compile time (see `analyzer/build.rs`), served at `/`.
//!
//! The app is a client of the public `/api/v1` like any other: it holds the API key in the
//! browser session and sends it as a Bearer header. Routing is in the URL fragment
//! (`/#/overview?...`, `/#key=fpk_...` to sign in), so the server only ever serves `/` and the
//! hashed files under `/assets/`, and a key in a shared link never reaches the server or its
//! logs.
//!
//! Built without Node.js, the binary has no assets and `/` explains how to build them.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Content security policy of every dashboard response: only this origin's scripts, styles
/// and connections (charts set inline style attributes, hence `'unsafe-inline'` for styles).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Shown at `/` by a binary built without the dashboard.
const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fleetpulse: dashboard not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:4rem auto;padding:0 1rem;color:#1c2430}
code,pre{background:#eef1f5;border-radius:4px;padding:.1rem .3rem}pre{padding:.8rem}</style></head>
<body><h1>The Fleetpulse dashboard is not built into this binary</h1>
<p>This <code>fleetpulse-analyzer</code> was compiled without the web dashboard (Node.js was not
used). The API works: see <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p>
<p>To build the dashboard into the binary (Node.js 20.19 or later and npm):</p>
<pre>cd analyzer/web &amp;&amp; npm ci &amp;&amp; npm run build
cd ../.. &amp;&amp; cargo build --bin fleetpulse-analyzer</pre>
<p>or run <code>bash scripts/run.sh</code>, which does both.</p></body></html>"#;

/// `/`, `/index.html` and `/assets/*`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*path}", get(asset))
}

/// Whether the binary carries the built dashboard.
pub fn is_built() -> bool {
    find("index.html").is_some()
}

fn find(path: &str) -> Option<&'static [u8]> {
    assets::ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| *b)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn with_headers(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn index() -> Response {
    let body = find("index.html").unwrap_or(NOT_BUILT.as_bytes());
    // The page names the hashed assets of this build: never cache it.
    with_headers(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        "no-cache",
    )
}

async fn asset(Path(path): Path<String>) -> Response {
    let key = format!("assets/{path}");
    match find(&key) {
        // File names carry a content hash (Vite): cache them for good.
        Some(body) => with_headers(
            ([(header::CONTENT_TYPE, content_type(&key))], body).into_response(),
            "public, max-age=31536000, immutable",
        ),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("assets/index-abc.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("x"), "application/octet-stream");
    }

    #[test]
    fn assets_table_is_consistent() {
        // Either nothing was built, or index.html is there and names only embedded assets.
        match find("index.html") {
            None => assert!(assets::ASSETS.is_empty()),
            Some(index) => {
                let html = String::from_utf8_lossy(index);
                for (start, _) in html.match_indices("/assets/") {
                    let rest = &html[start + 1..];
                    let end = rest.find('"').unwrap_or(rest.len());
                    assert!(
                        find(&rest[..end]).is_some(),
                        "{} not embedded",
                        &rest[..end]
                    );
                }
            }
        }
    }
}
