//! The live dashboard's static files, compiled into the binary (no build step, nothing fetched
//! from the internet: station gateways are often offline).
//!
//! `router()` serves `GET /` (index.html), `GET /app.js` and `GET /style.css`. The page itself
//! reads `GET /api/status`, `GET /api/events` (server-sent `status` events) and
//! `GET /api/history?hours=24`, which the daemon's API router provides; merge the two routers.
//!
//! Caching: every response carries a strong `ETag` (a hash of the embedded file) and
//! `Cache-Control: no-cache`, so a browser revalidates on each load and gets `304 Not Modified`
//! until a new binary ships different files.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The dashboard page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The dashboard script (vanilla JavaScript).
pub const APP_JS: &str = include_str!("assets/app.js");
/// The dashboard style sheet.
pub const STYLE_CSS: &str = include_str!("assets/style.css");

const HTML_TYPE: &str = "text/html; charset=utf-8";
const JS_TYPE: &str = "text/javascript; charset=utf-8";
const CSS_TYPE: &str = "text/css; charset=utf-8";
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file with its content type and entity tag.
#[derive(Debug, Clone, Copy)]
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: u64,
}

const INDEX: Asset = Asset::new(INDEX_HTML, HTML_TYPE);
const APP: Asset = Asset::new(APP_JS, JS_TYPE);
const STYLE: Asset = Asset::new(STYLE_CSS, CSS_TYPE);

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: fnv1a_64(body.as_bytes()),
        }
    }

    fn etag_value(&self) -> String {
        format!("\"{:016x}\"", self.etag)
    }

    /// Answers a GET: `304` when the client already holds this version, else the file.
    fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag_value();
        let cached = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag.as_str()));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Ok(value) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, value);
        }
        if cached {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (StatusCode::OK, headers, self.body).into_response()
    }
}

/// 64-bit FNV-1a hash, used as the entity tag of an embedded file.
const fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

async fn index(headers: HeaderMap) -> Response {
    INDEX.respond(&headers)
}

async fn app_js(headers: HeaderMap) -> Response {
    APP.respond(&headers)
}

async fn style_css(headers: HeaderMap) -> Response {
    STYLE.respond(&headers)
}

/// The dashboard's routes: `GET /`, `GET /index.html`, `GET /app.js`, `GET /style.css`.
/// Stateless, so it merges into a router of any state type.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_between_files_and_are_quoted() {
        assert_ne!(INDEX.etag, APP.etag);
        assert_ne!(APP.etag, STYLE.etag);
        let tag = INDEX.etag_value();
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18);
    }

    #[test]
    fn fnv1a_matches_the_published_test_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (reference test vectors of the FNV authors).
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn matching_if_none_match_gives_not_modified_without_body() {
        let mut request = HeaderMap::new();
        let etag = APP.etag_value();
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {etag}")).unwrap(),
        );
        let response = APP.respond(&request);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());

        let fresh = APP.respond(&HeaderMap::new());
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(
            fresh.headers().get(header::ETAG).unwrap().to_str().unwrap(),
            etag
        );
    }
}
