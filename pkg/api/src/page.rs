//! The query page: `GET /` is a small web page (HTML, CSS and JavaScript
//! built into the binary with `include_str!`: no CDN, no build step) where a
//! user with an admin key lists the tables and their columns, runs read-only
//! SQL through `POST /v1/sql` and sees the answer as a table and, for a time
//! column with numeric columns, as a chart. The query lives in the URL's
//! fragment (`/#q=…`): a link shares it, and the server never sees it (nor
//! logs it). The key stays in the browser's session storage (local storage
//! when the user ticks "remember") and goes only into `Authorization`.
//!
//! These routes are not part of the JSON API, so `/openapi.json` does not
//! list them.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
const INDEX_HTML: &str = include_str!("../page/index.html");
/// Its style sheet.
const QUERY_CSS: &str = include_str!("../page/query.css");
/// Its script.
const QUERY_JS: &str = include_str!("../page/query.js");

/// Where the page may load from and talk to: this server only. Inline
/// script and style are refused (the page has none), so a value shown in a
/// result can never run as code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The paths the page is served at, for the router.
pub const INDEX: &str = "/";
/// The style sheet's path.
pub const CSS: &str = "/page/query.css";
/// The script's path.
pub const JS: &str = "/page/query.js";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary: revalidate each time.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /page/query.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", QUERY_CSS)
}

/// `GET /page/query.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", QUERY_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_assets_and_holds_no_inline_code() {
        assert!(INDEX_HTML.contains(&format!("src=\"{JS}\"")));
        assert!(INDEX_HTML.contains(&format!("href=\"{CSS}\"")));
        // The CSP refuses inline script and style: the page must not need them.
        assert!(!INDEX_HTML.contains("<style"), "inline style");
        assert!(!INDEX_HTML.contains(" style=\""), "inline style attribute");
        assert_eq!(INDEX_HTML.matches("<script").count(), 1, "one script, ours");
        let handler = INDEX_HTML.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        // Nothing from elsewhere (the SVG namespace is a name, not a load).
        for text in [INDEX_HTML, QUERY_CSS, QUERY_JS] {
            for from in [
                "src=\"http",
                "href=\"http",
                "url(",
                "@import",
                "fetch(\"http",
            ] {
                assert!(!text.contains(from), "{from}");
            }
        }
    }
}
