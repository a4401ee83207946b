//! The OpenAPI document at `/openapi.json`: OpenAPI 3.1, every operation in it is served, and
//! its list of operations is the one the golden file records.

use lifecircle_tests::TestHost;
use reqwest::Method;
use serde_json::Value;

/// Every operation of the document as `METHOD /path`, sorted.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations.sort();
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_the_host_serves() {
    let host = TestHost::start(&[]).await;
    let (status, text) = host.get_text("/openapi.json").await;
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    for scheme in ["customer_token", "admin_token", "partner_key"] {
        assert_eq!(
            document["components"]["securitySchemes"][scheme]["scheme"], "bearer",
            "{scheme}"
        );
    }
    let operations = operations(&document);

    // Operation ids are unique (clients generate one function per id).
    let mut ids: Vec<&str> = operations
        .iter()
        .filter_map(|(method, path)| {
            document["paths"][path][method.to_lowercase()]["operationId"].as_str()
        })
        .collect();
    assert_eq!(ids.len(), operations.len(), "an operation has no id");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), operations.len(), "operation ids repeat");

    // Every `{parameter}` of a path is declared as a path parameter of each of its operations.
    for (method, path) in &operations {
        let operation = &document["paths"][path][method.to_lowercase()];
        let declared: Vec<&str> = operation["parameters"]
            .as_array()
            .map(|parameters| {
                parameters
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for name in path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
        {
            assert!(
                declared.contains(&name),
                "{method} {path} does not declare {name}"
            );
        }
        assert!(
            operation["responses"]["200"]["description"].is_string(),
            "{method} {path} describes no answer"
        );
    }

    // Every documented operation is routed: without credentials it may be refused, but never
    // with "no such endpoint" or "wrong method".
    for (method, path) in &operations {
        let concrete = path
            .replace("{plugin}", "hello")
            .replace("{action}", "echo")
            .replace("{region}", "cn")
            .replace("{version}", "0.1.0")
            .replace("{customer}", "c1")
            .replace("{partner}", "p1");
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let reply = host.request(method.clone(), &concrete, None, None).await;
        assert!(
            !["route_not_found", "method_not_allowed"].contains(&reply.code()),
            "{method} {concrete}: {} {:?}",
            reply.status,
            reply.body
        );
    }

    // The list is the golden one: a route added or removed changes it on purpose.
    let seen: String = operations
        .iter()
        .map(|(method, path)| format!("{method} {path}\n"))
        .collect();
    let golden = lifecircle_tests::repo_root().join("tests/golden/openapi-operations.txt");
    if std::env::var_os("LIFECIRCLE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &seen).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file exists");
    assert_eq!(
        seen, expected,
        "the API's operations changed; if on purpose, rerun with LIFECIRCLE_UPDATE_GOLDEN=1"
    );
    host.stop().await;
}
