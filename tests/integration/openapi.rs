//! `GET /openapi.json` on the real server: an OpenAPI 3.1 document that
//! lists every route of the router with its methods, and the bearer scheme
//! on every `/v1` route (the output routes also take a signed link).

use crate::support::Server;
use serde_json::Value;

/// Every route of the router and its methods (the router's one
/// `/v1/videos/{id}/{output}` route is documented as its three outputs).
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/videos", &["get", "post"]),
    ("/v1/videos/{id}", &["get", "delete"]),
    ("/v1/videos/{id}/retry", &["post"]),
    ("/v1/videos/{id}/complete", &["post"]),
    ("/v1/videos/{id}/events", &["get"]),
    ("/v1/videos/{id}/video.mp4", &["get", "head"]),
    ("/v1/videos/{id}/frames.zip", &["get", "head"]),
    ("/v1/videos/{id}/poster.jpg", &["get"]),
    ("/v1/events", &["get"]),
    ("/v1/uploads", &["options", "post"]),
    ("/v1/uploads/{id}", &["delete", "head", "patch"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/", &["get"]),
];

const OUTPUTS: &[&str] = &[
    "/v1/videos/{id}/video.mp4",
    "/v1/videos/{id}/frames.zip",
    "/v1/videos/{id}/poster.jpg",
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Names of the schemes in an operation's `security`, one set per
/// alternative.
fn alternatives(op: &Value) -> Vec<Vec<String>> {
    op["security"]
        .as_array()
        .map(|alts| {
            alts.iter()
                .map(|alt| {
                    alt.as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    // No token: the document is public.
    let r = server.request("GET", "/openapi.json", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{r:?}"
    );
    let doc = r.json();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "{version}");
    assert!(doc["info"]["title"].is_string(), "{}", doc["info"]);

    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()));
        let documented: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| item.get(*m).is_some())
            .collect();
        let mut wanted = methods.to_vec();
        wanted.sort_unstable();
        let mut got = documented.clone();
        got.sort_unstable();
        assert_eq!(got, wanted, "methods of {path}");
        for method in &documented {
            let op = &item[*method];
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            let alts = alternatives(op);
            // tus discovery is public, like everything outside /v1.
            if !path.starts_with("/v1/") || *method == "options" {
                assert!(alts.is_empty(), "{method} {path} is public: {alts:?}");
                continue;
            }
            // Every /v1 operation names the bearer scheme on its own...
            assert!(
                alts.iter().any(|a| a == &["bearer"]),
                "{method} {path} does not take the bearer scheme: {alts:?}"
            );
            // ...and only an output route may be reached without it (by a
            // signed link: `exp` and `sig` together); WebSockets may carry
            // the same token as `?access_token=`.
            for alt in &alts {
                let fine = alt == &["bearer"]
                    || (OUTPUTS.contains(path) && alt == &["signed_url_exp", "signed_url_sig"])
                    || (path.ends_with("events") && alt == &["access_token"]);
                assert!(fine, "{method} {path}: unexpected security {alt:?}");
            }
            if OUTPUTS.contains(path) {
                assert!(
                    alts.iter()
                        .any(|a| a == &["signed_url_exp", "signed_url_sig"]),
                    "{method} {path} does not take a signed link: {alts:?}"
                );
                let responses = op["responses"].as_object().expect("responses");
                for status in ["200", "206", "304", "416"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "Range" && p["in"] == "header"),
                    "{method} {path}: no Range header"
                );
            }
        }
    }
    // The router has no route the document leaves out, and vice versa.
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut routes: Vec<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
    routes.sort_unstable();
    assert_eq!(listed, routes);

    // Operation ids are unique (GET and HEAD share a handler).
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| {
            METHODS
                .iter()
                .filter_map(|m| item[*m]["operationId"].as_str())
        })
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate operationId: {ids:?}");

    // The schemes the operations name exist.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http", "{schemes}");
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT", "{schemes}");
    for (scheme, name) in [
        ("signed_url_exp", "exp"),
        ("signed_url_sig", "sig"),
        ("access_token", "access_token"),
    ] {
        assert_eq!(schemes[scheme]["type"], "apiKey", "{schemes}");
        assert_eq!(schemes[scheme]["in"], "query", "{schemes}");
        assert_eq!(schemes[scheme]["name"], name, "{schemes}");
    }

    // The upload's query options and bodies.
    let upload = &paths["/v1/videos"]["post"];
    let names: Vec<&str> = upload["parameters"]
        .as_array()
        .expect("upload parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    for option in [
        "outputs",
        "frames_every",
        "frames_format",
        "frames_accuracy",
        "filename",
    ] {
        assert!(names.contains(&option), "upload option {option}: {names:?}");
    }
    let bodies = upload["requestBody"]["content"]
        .as_object()
        .expect("upload bodies");
    for content_type in ["multipart/form-data", "video/*", "application/octet-stream"] {
        assert!(
            bodies.contains_key(content_type),
            "{content_type}: {bodies:?}"
        );
    }
    assert_eq!(
        upload["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Video"
    );

    // The list's query.
    let list = &paths["/v1/videos"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .expect("list parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for option in ["state", "limit", "cursor"] {
        assert!(names.contains(&option), "list option {option}: {names:?}");
    }

    // The video resource has the fields of API.md; errors are problem+json.
    let schemas = &doc["components"]["schemas"];
    let video = schemas["Video"]["properties"]
        .as_object()
        .expect("Video schema");
    for field in [
        "id",
        "filename",
        "state",
        "stage",
        "progress",
        "attempts",
        "created_at",
        "updated_at",
        "options",
        "source",
        "outputs",
        "error",
    ] {
        assert!(video.contains_key(field), "Video.{field}");
    }
    let list_schema = schemas["VideoList"]["properties"]
        .as_object()
        .expect("VideoList schema");
    assert!(list_schema.contains_key("videos") && list_schema.contains_key("next_cursor"));
    let not_found = &paths["/v1/videos/{id}"]["get"]["responses"]["404"]["content"];
    assert_eq!(
        not_found["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
        "{not_found}"
    );
    server.stop();
}
