//! `/openapi.json`, built from [`ROUTES`], the one list of what the router
//! serves (a test checks the router answers each and nothing else is listed).

use serde_json::{json, Map, Value};

/// One route: method, path (OpenAPI `{param}` form), scope, summary, query
/// parameters.
pub type Route = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    ("get", "/v1/stats", "read", "Live records per collection and the daily series of the last 30 days (cached)", &[]),
    ("get", "/v1/stats/actors/{did}", "read", "Live records of one account per collection, its handle, followers, follows, posts and the likes and reposts its posts received", &[]),
    ("get", "/v1/stats/posts", "read", "Likes, reposts, replies (replies_visible, replies_all) and quotes of up to 25 posts, as the AppView counts them", &["uris"]),
    ("get", "/v1/stats/analytics/{name}", "read", "events-per-collection, creates-and-users, by-hour, earliest-posters, longest-spans (whole history, cached), hashtags, languages (over the window)", &["window", "limit"]),
    ("get", "/v1/search/posts", "read", "Posts containing every term of q, newest first, with an opaque cursor", &["q", "author", "lang", "tag", "since", "until", "limit", "cursor"]),
    ("get", "/v1/search/actors", "read", "Accounts whose handle or display name contains q", &["q", "limit"]),
    ("get", "/v1/repos/{did}", "read", "The live records of an account, in key order", &["limit"]),
    ("post", "/v1/admin/repos/{did}/cleanup", "admin", "Tombstone every row of an account now (a cleanup job)", &[]),
    ("get", "/v1/admin/jobs/{id}", "admin", "A cleanup job's state", &[]),
    ("get", "/v1/admin/keys", "admin", "Every API key (id, name, scopes, revoked; never the key)", &[]),
    ("post", "/v1/admin/keys", "admin", "Create a key: {\"name\", \"scopes\"}; the key is shown once", &[]),
    ("delete", "/v1/admin/keys/{id}", "admin", "Revoke a key", &[]),
    ("post", "/v1/sql", "admin", "Run a read-only query {\"query\"} (readonly=1, time and row limits)", &[]),
    ("get", "/openapi.json", "none", "This document", &[]),
];

/// The OpenAPI 3.0 document.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for (method, path, scope, summary, query) in ROUTES {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(
            query
                .iter()
                .map(|name| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}})),
        );
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "JSON"},
                "400": {"description": "{\"error\",\"message\"}: a parameter is wrong"},
            },
        });
        if *scope != "none" {
            op["security"] = json!([{ "apiKey": [scope] }]);
            op["responses"]["401"] = json!({"description": "no or unknown key"});
            op["responses"]["403"] = json!({"description": "key without the scope"});
        }
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "skyhouse search API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}
