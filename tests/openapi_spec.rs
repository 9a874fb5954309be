//! The committed OpenAPI document (`openapi/openapi.json`) must match the code, and the API must
//! keep exactly the original service's paths.
//!
//! After an intended API change, regenerate the file with
//! `UPDATE_OPENAPI=1 cargo test --test openapi_spec`.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// The original service's operations. Two of its paths end with `/`.
/// The original service's paths, plus `/health` and the batch additions.
const ORIGINAL: [(&str, &str); 14] = [
    ("/workspaces/", "get"),
    ("/workspace/register", "post"),
    ("/workspace/delete/{id}", "delete"),
    ("/provider-keys/", "get"),
    ("/provider-key/add", "post"),
    ("/provider-key/delete/{key_id}", "delete"),
    ("/provider-key/update/{key_id}", "put"),
    ("/workers/scale/{workspace_id}", "post"),
    ("/workers/{workspace_id}", "get"),
    ("/message/publish", "post"),
    ("/message/{message_id}", "get"),
    ("/health", "get"),
    ("/message/publish/batch", "post"),
    ("/messages", "get"),
];

/// How a path of the original service appears in the spec: poem-openapi drops empty path
/// segments, so `/workspaces/` is declared (and documented) as `/workspaces`.
fn as_in_spec(path: &str) -> String {
    path.trim_end_matches('/').to_owned()
}

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

fn spec() -> Value {
    serde_json::from_str(&ai_rate_limiter::api::spec_json()).expect("the spec is JSON")
}

#[test]
fn committed_openapi_json_is_up_to_date() {
    let path = committed_path();
    let generated = spec();
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        let pretty = serde_json::to_string_pretty(&generated).unwrap();
        std::fs::write(&path, pretty + "\n").expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `UPDATE_OPENAPI=1 cargo test --test openapi_spec`",
            path.display()
        )
    });
    let committed: Value = serde_json::from_str(&committed).expect("openapi.json is JSON");
    assert!(
        committed == generated,
        "openapi/openapi.json is stale; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test openapi_spec` and commit it"
    );
}

#[test]
fn spec_has_exactly_the_original_paths_and_methods() {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let expected: BTreeSet<(String, String)> = ORIGINAL
        .iter()
        .map(|(p, m)| (as_in_spec(p), (*m).to_owned()))
        .collect();

    let spec = spec();
    let paths = spec["paths"].as_object().expect("the spec has paths");
    let actual: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();

    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "paths differ from the original service\nmissing: {missing:?}\nextra: {extra:?}"
    );

    // Every templated segment is declared as a path parameter.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for segment in path.split('/') {
                let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                    continue;
                };
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter '{name}' not declared"
                );
            }
        }
    }
}

/// Clients of the original service call the paths exactly as it declared them, trailing slash
/// included; those URLs must be served, not answered 404.
#[tokio::test]
async fn original_urls_with_a_trailing_slash_are_served() {
    let app = common::TestApp::spawn().await;
    let mut failures = Vec::new();
    for (path, method) in ORIGINAL {
        // Only the original list endpoints (`/messages` needs a workspace_id).
        if method != "get" || path.contains('{') || path == "/health" || path == "/messages" {
            continue;
        }
        for url in [path.to_owned(), as_in_spec(path)] {
            let (status, body) = app.get(&url).await;
            if status != 200 {
                failures.push(format!("GET {url} -> {status} {body}"));
            }
        }
    }
    app.stop().await;
    assert!(failures.is_empty(), "{failures:#?}");
}
