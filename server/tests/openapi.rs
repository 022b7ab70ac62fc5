//! The hand-written OpenAPI document (`server/openapi.json`): it is a
//! well-formed OpenAPI 3.0 document, it documents exactly the server's routes
//! (checked against an explicit list and by probing a running server), and
//! `GET /openapi.json` serves it unchanged.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestServer;
use partseal_server::error::{koo, mss};
use partseal_server::openapi::DOCUMENT;
use serde_json::Value;

/// Every route of the server, as (method, path template) with the parameter
/// names the document uses. Keep in step with the routers in `server/src`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/koodrive/ose/v1/files/create"),
    ("post", "/koodrive/ose/v1/files/multipart/uploadUrl"),
    ("post", "/koodrive/ose/v1/files/complete"),
    ("post", "/koodrive/ose/v1/files/{fileId}/detail"),
    ("post", "/koodrive/ose/v1/files/multipart/abort"),
    ("post", "/koodrive/ose/v1/files/multipart/list"),
    ("post", "/v1/{project_id}/files"),
    ("post", "/v1/{project_id}/large-files"),
    ("post", "/v1/{project_id}/files/{file_id}/complete"),
    ("delete", "/v1/{project_id}/files/{file_id}"),
    ("get", "/v1/{project_id}/files/{file_id}"),
    ("put", "/upload/{api}/{file_id}/{part}"),
    ("get", "/download/{api}/{file_id}"),
    ("head", "/download/{api}/{file_id}"),
    ("get", "/openapi.json"),
    ("get", "/ui"),
    ("get", "/ui/"),
    ("get", "/ui/{asset}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The keys of a path item that are operations.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is not valid JSON")
}

/// (method, template) -> operation object.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        let item = item.as_object().expect("a path item is an object");
        for (key, op) in item {
            if METHODS.contains(&key.as_str()) {
                out.insert((key.clone(), path.clone()), op.clone());
            } else {
                assert!(
                    ["parameters", "summary", "description", "servers", "$ref"]
                        .contains(&key.as_str()),
                    "{path}: unexpected key {key:?} in a path item"
                );
            }
        }
    }
    out
}

/// Follows a local `$ref` (if any) to the object it names.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let ptr = r.strip_prefix('#').expect("local $ref");
                v = doc
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
            }
            None => return v,
        }
    }
    panic!("$ref chain too long")
}

/// Every `$ref` in `v`, with where it was found.
fn collect_refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push((at.to_owned(), x.as_str().unwrap_or("<not a string>").into()));
                } else {
                    collect_refs(x, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The `{name}`s of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

/// The parameters of an operation (path-item and operation level, resolved).
fn params<'a>(doc: &'a Value, path: &str, op: &'a Value) -> Vec<&'a Value> {
    let item_params = doc["paths"][path]["parameters"].as_array();
    let op_params = op["parameters"].as_array();
    item_params
        .into_iter()
        .chain(op_params)
        .flatten()
        .map(|p| resolve(doc, p))
        .collect()
}

#[test]
fn document_is_well_formed_openapi_3_0() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.0."), "openapi is {version}");
    assert!(doc["info"]["title"].is_string(), "info.title");
    assert!(doc["info"]["version"].is_string(), "info.version");
    assert!(doc["paths"].is_object(), "paths");

    // Every $ref is local and resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, "#", &mut refs);
    assert!(!refs.is_empty());
    for (at, r) in &refs {
        let ptr = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: $ref {r} is not local"));
        assert!(
            doc.pointer(ptr).is_some(),
            "{at}: $ref {r} does not resolve"
        );
    }
    // Every component is used somewhere.
    let used: BTreeSet<&str> = refs.iter().map(|(_, r)| r.as_str()).collect();
    for kind in ["schemas", "parameters", "responses", "headers"] {
        for name in doc["components"][kind].as_object().unwrap().keys() {
            let r = format!("#/components/{kind}/{name}");
            assert!(used.contains(r.as_str()), "{r} is never used");
        }
    }

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut op_ids = BTreeSet::new();
    for ((method, path), op) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        assert!(path.starts_with('/'), "{at}: path must start with /");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: operationId"));
        assert!(
            op_ids.insert(id.to_owned()),
            "{at}: operationId {id} used twice"
        );

        // Responses: present, with status codes or "default", each described.
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        assert!(!responses.is_empty(), "{at}: empty responses");
        // A redirect (`GET /ui`) succeeds with its 3xx.
        assert!(
            responses
                .keys()
                .any(|k| k.starts_with('2') || k.starts_with('3')),
            "{at}: no success response"
        );
        for (status, r) in responses {
            assert!(
                status == "default"
                    || (status.len() == 3 && status.parse::<u16>().is_ok_and(|s| s >= 100)),
                "{at}: bad status key {status}"
            );
            let r = resolve(&doc, r);
            assert!(
                r["description"].is_string(),
                "{at} {status}: no description"
            );
            if let Some(content) = r.get("content") {
                for (ct, media) in content.as_object().unwrap() {
                    assert!(media["schema"].is_object(), "{at} {status} {ct}: no schema");
                }
            }
        }

        // Path parameters are exactly the template's, all required.
        let ps = params(&doc, &path, &op);
        let mut in_path = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for p in &ps {
            let name = p["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: unnamed parameter"));
            let loc = p["in"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: {name} has no `in`"));
            assert!(
                ["path", "query", "header", "cookie"].contains(&loc),
                "{at}: {name} in {loc}"
            );
            assert!(
                seen.insert((loc.to_owned(), name.to_ascii_lowercase())),
                "{at}: parameter {name} in {loc} twice"
            );
            assert!(p["schema"].is_object(), "{at}: {name} has no schema");
            if loc == "path" {
                assert_eq!(p["required"], true, "{at}: path parameter {name}");
                in_path.insert(name.to_owned());
            }
            if loc == "header" {
                // OpenAPI ignores these as header parameters.
                assert!(
                    !["accept", "content-type", "authorization"]
                        .contains(&name.to_ascii_lowercase().as_str()),
                    "{at}: header {name} must be described another way"
                );
            }
        }
        assert_eq!(in_path, template_params(&path), "{at}: path parameters");

        // Security requirements name defined schemes.
        if let Some(reqs) = op.get("security") {
            for req in reqs.as_array().unwrap() {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{at}: unknown scheme {name}");
                }
            }
        }

        // A request body has content with a schema.
        if let Some(body) = op.get("requestBody") {
            let body = resolve(&doc, body);
            let content = body["content"].as_object().expect("requestBody content");
            assert!(!content.is_empty(), "{at}: empty requestBody content");
            for (ct, media) in content {
                assert!(media["schema"].is_object(), "{at} body {ct}: no schema");
            }
        }
    }

    // Schemas: `required` names declared properties; types are OpenAPI 3.0's.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        check_schema(&format!("#/components/schemas/{name}"), schema);
    }
}

fn check_schema(at: &str, s: &Value) {
    let Some(m) = s.as_object() else {
        panic!("{at}: a schema is an object")
    };
    if let Some(t) = m.get("type") {
        let t = t
            .as_str()
            .unwrap_or_else(|| panic!("{at}: type is one string in 3.0"));
        assert!(
            ["string", "integer", "number", "boolean", "array", "object"].contains(&t),
            "{at}: type {t}"
        );
        if t == "array" {
            assert!(m.contains_key("items"), "{at}: array without items");
        }
    }
    if let (Some(req), Some(props)) = (m.get("required"), m.get("properties")) {
        for r in req.as_array().unwrap() {
            let r = r.as_str().unwrap();
            assert!(
                props.get(r).is_some(),
                "{at}: required {r} is not a property"
            );
        }
    }
    if let Some(props) = m.get("properties") {
        for (k, v) in props.as_object().unwrap() {
            check_schema(&format!("{at}/properties/{k}"), v);
        }
    }
    if let Some(items) = m.get("items") {
        check_schema(&format!("{at}/items"), items);
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(list) = m.get(key) {
            for (i, v) in list.as_array().unwrap().iter().enumerate() {
                check_schema(&format!("{at}/{key}/{i}"), v);
            }
        }
    }
    if let Some(e) = m.get("enum") {
        assert!(!e.as_array().unwrap().is_empty(), "{at}: empty enum");
    }
}

#[test]
fn document_lists_exactly_the_routes() {
    let doc = doc();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(missing.is_empty(), "routes not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[test]
fn document_lists_every_error_code() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let koo_codes: BTreeSet<i64> = schemas["KooError"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let expected: BTreeSet<i64> = [
        koo::AUTH_FAILED,
        koo::DATE_INVALID,
        koo::BAD_PARAM,
        koo::NO_SPACE,
        koo::NO_TASK,
        koo::INTEGRITY,
        koo::NO_PERMISSION,
        koo::BROKEN_LINK,
        koo::MISSING_PARTS,
        koo::CONFLICT,
        koo::BAD_PART,
        koo::BUSY,
        koo::INTERNAL,
    ]
    .into();
    assert_eq!(koo_codes, expected);
    let text = schemas["KooError"]["description"].as_str().unwrap();
    for c in &expected {
        assert!(
            text.contains(&c.to_string()),
            "KooError does not describe {c}"
        );
    }

    let mss_codes: BTreeSet<&str> = schemas["MssError"]["properties"]["error_code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // mss::BAD_JSON is defined but never answered (bad JSON is INVALID_PARAM).
    let expected: BTreeSet<&str> = [
        mss::UNAUTHORIZED,
        mss::INVALID_PARAM,
        mss::INTERNAL,
        mss::NOT_FOUND,
        mss::MD5_MISMATCH,
        mss::MISSING_PARTS,
        mss::CONFLICT,
        mss::NO_SPACE,
        mss::BUSY,
    ]
    .into();
    assert_eq!(mss_codes, expected);
    let text = schemas["MssError"]["description"].as_str().unwrap();
    for c in &expected {
        assert!(text.contains(c), "MssError does not describe {c}");
    }
}

#[test]
fn large_file_size_bounds_are_the_enforced_ones() {
    let doc = doc();
    let field =
        &doc["components"]["schemas"]["MssCreateLargeFileRequest"]["properties"]["file_size"];
    assert_eq!(
        field["maximum"].as_u64(),
        Some(partseal_server::metastudio::MAX_LARGE_FILE_SIZE),
        "{field}"
    );
    let text = field["description"].as_str().unwrap();
    let default_max =
        <partseal_server::config::Args as clap::Parser>::parse_from(["x"]).max_file_size;
    for bound in [
        partseal_server::metastudio::MAX_LARGE_FILE_SIZE,
        default_max,
    ] {
        assert!(text.contains(&bound.to_string()), "{bound} not in {text:?}");
    }
}

/// A value for a path parameter that the route accepts.
fn dummy(doc: &Value, param: &Value) -> String {
    let schema = resolve(doc, &param["schema"]);
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first
            .as_str()
            .map_or_else(|| first.to_string(), str::to_owned);
    }
    match schema["type"].as_str() {
        Some("integer") => "1".into(),
        _ => "0123456789abcdef0123456789abcdef".into(),
    }
}

/// Sends an unauthenticated request to every documented operation: the
/// route must exist (not 404 or 405) and answer a documented status with its
/// documented required headers and content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let s = TestServer::start().await;
    // Redirects are answers of their own here (`GET /ui`), not followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let doc = doc();
    for ((method, template), op) in operations(&doc) {
        let mut path = template.clone();
        for p in params(&doc, &template, &op) {
            if p["in"] == "path" {
                let name = p["name"].as_str().unwrap();
                path = path.replace(&format!("{{{name}}}"), &dummy(&doc, p));
            }
        }
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = http.request(m, format!("{}{path}", s.url));
        if let Some(body) = op.get("requestBody") {
            let content = resolve(&doc, body)["content"].as_object().unwrap();
            if content.contains_key("application/json") {
                req = req.header("content-type", "application/json").body("{}");
            } else {
                req = req
                    .header("content-type", "application/octet-stream")
                    .body("x");
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let at = format!("{} {path}", method.to_uppercase());
        assert!(
            status != 404 && status != 405,
            "{at}: answered {status}, the route does not exist"
        );
        let documented = op["responses"]
            .get(status.to_string())
            .or_else(|| op["responses"].get("default"))
            .unwrap_or_else(|| panic!("{at}: status {status} is not documented"));
        let documented = resolve(&doc, documented);
        if let Some(headers) = documented.get("headers").and_then(Value::as_object) {
            for (name, h) in headers {
                if resolve(&doc, h)["required"] == true {
                    assert!(
                        resp.headers().contains_key(name.as_str()),
                        "{at} {status}: header {name} is missing"
                    );
                }
            }
        }
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.bytes().await.unwrap();
        if documented
            .get("content")
            .is_some_and(|c| c.get("application/json").is_some())
        {
            assert!(
                ct.as_deref()
                    .is_some_and(|c| c.starts_with("application/json")),
                "{at} {status}: content type {ct:?}"
            );
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{at} {status}: body is not JSON: {e}"));
            assert!(v.is_object(), "{at} {status}: {v}");
        }
    }
}

/// Paths and methods the document does not list are not routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undocumented_paths_and_methods_are_not_routed() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("GET", "/"),
        ("POST", "/koodrive/ose/v1/files"),
        ("POST", "/koodrive/ose/v1/files/recycle"),
        ("POST", "/koodrive/ose/v1/files/create/extra"),
        ("POST", "/koodrive/ose/v2/files/create"),
        (
            "POST",
            "/v1/p/files/0123456789abcdef0123456789abcdef/complete/x",
        ),
        ("POST", "/v2/p/files"),
        ("PUT", "/upload/koodrive/0123456789abcdef0123456789abcdef"),
        ("GET", "/openapi.yaml"),
        ("GET", "/openapi"),
    ] {
        let resp = s.request(method, path).await;
        assert_eq!(resp.status().as_u16(), 404, "{method} {path}");
    }
    // On a documented path, the methods it does not document are refused.
    let doc = doc();
    let ops = operations(&doc);
    for (path, _) in doc["paths"].as_object().unwrap() {
        let dummy_path = path
            .replace("{api}", "koodrive")
            .replace("{part}", "1")
            .replace("{fileId}", "0123456789abcdef0123456789abcdef")
            .replace("{file_id}", "0123456789abcdef0123456789abcdef")
            .replace("{project_id}", "p");
        for method in ["get", "put", "post", "delete", "patch"] {
            if ops.contains_key(&(method.to_owned(), path.clone())) {
                continue;
            }
            let resp = s.request(&method.to_uppercase(), &dummy_path).await;
            assert_eq!(
                resp.status().as_u16(),
                405,
                "{} {dummy_path} is not documented",
                method.to_uppercase()
            );
        }
    }
}

/// The router's own 404 and 405 under an API's paths come in that API's
/// error shape (405 with its `Allow`); paths outside the APIs are left as
/// they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_requests_get_the_api_error_shape() {
    let s = TestServer::start().await;
    let koo = |code: i64| ("code", Value::from(code));
    let mss = |code: &str| ("error_code", Value::from(code));
    for (method, path, status, (field, code)) in [
        (
            "GET",
            "/koodrive/ose/v1/files/create",
            405,
            koo(koo::BAD_PARAM),
        ),
        (
            "POST",
            "/koodrive/ose/v1/files/create/",
            404,
            koo(koo::BAD_PARAM),
        ),
        ("PUT", "/upload/koodrive/a/1/", 404, koo(koo::BAD_PARAM)),
        ("POST", "/upload/koodrive/a/1", 405, koo(koo::BAD_PARAM)),
        ("GET", "/v1/p/files", 405, mss(mss::INVALID_PARAM)),
        ("POST", "/v1/p/files/x/y", 404, mss(mss::NOT_FOUND)),
        (
            "POST",
            "/upload/metastudio/a/1",
            405,
            mss(mss::INVALID_PARAM),
        ),
        (
            "GET",
            "/download/metastudio/a/b/c",
            404,
            mss(mss::NOT_FOUND),
        ),
    ] {
        let resp = s.request(method, path).await;
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        if status == 405 {
            assert!(resp.headers().contains_key("allow"), "{method} {path}");
        }
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v[field], code, "{method} {path}: {v}");
    }
    let resp = s.request("GET", "/nothing").await;
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_is_the_file() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .get(format!("{}/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(ct, "application/json");
    let body = resp.text().await.unwrap();
    assert_eq!(body, DOCUMENT);
    let on_disk =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert_eq!(body, on_disk);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, doc());
}
