//! Bad requests get a clear JSON error with a stable code, never a 500 or a panic.

use lifecircle_tests::{Bundle, TestHost};
use serde_json::json;

const HELLO: Bundle = Bundle::new("reference/hello");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_plugin_is_404_plugin_not_found() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "cn");
    let reply = host.call(&token, "no-such-plugin", "echo", json!({})).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), "plugin_not_found");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_action_is_404_scenario_action_unknown() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "cn");
    let reply = host
        .call(&token, "hello", "no-such-action", json!({}))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), "scenario_action_unknown");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_is_400_with_our_json_error() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "cn");
    for body in [&b"{not json"[..], b"[1, 2", &[0xff, 0xfe]] {
        let reply = host
            .request(
                reqwest::Method::POST,
                "/v1/scenarios/hello/echo",
                Some(&token),
                Some(body.to_vec()),
            )
            .await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(reply.code(), "body_invalid_json");
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(reply.body["request_id"], reply.request_id.as_str());
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_body_reaches_the_plugin_as_null() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "cn");
    let reply = host
        .request(
            reqwest::Method::POST,
            "/v1/scenarios/hello/echo",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, json!({"echo": null}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_request_limit_is_413() {
    let host =
        TestHost::start_with(&[HELLO], |config| config.limits.request_bytes_max = 1024).await;
    let token = host.token("alice", "cn");
    let reply = host
        .call(&token, "hello", "echo", json!({"text": "x".repeat(2000)}))
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.code(), "request_too_large");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_action_or_idempotency_key_is_400() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "cn");
    let reply = host.call(&token, "hello", &"a".repeat(65), json!({})).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.code(), "request_invalid");
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/scenarios/hello/echo", host.base))
        .bearer_auth(&token)
        .header("idempotency-key", "x".repeat(200))
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let host = TestHost::start(&[HELLO]).await;
    let reply = host
        .request(reqwest::Method::GET, "/nowhere", None, None)
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), "route_not_found");
    let reply = host
        .request(reqwest::Method::DELETE, "/v1/scenarios", None, None)
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.code(), "method_not_allowed");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_query_string_is_400_with_our_json_error() {
    let host = TestHost::start(&[HELLO]).await;
    let admin = host.state.admin_token.clone();
    let token = host.token("alice", "cn");
    for (path, credential) in [
        ("/admin/v1/payments?limit=many", admin.as_str()),
        ("/admin/v1/jobs?limit=-1", admin.as_str()),
        ("/admin/v1/invocations?limit=x", admin.as_str()),
        ("/v1/points/history?limit=ten", token.as_str()),
    ] {
        let reply = host
            .request(reqwest::Method::GET, path, Some(credential), None)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "request_invalid"),
            "{path}: {reply:?}"
        );
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("limit")),
            "the message names the bad parameter: {reply:?}"
        );
    }
    host.stop().await;
}

/// What a client reads in an error body, pinned: code, message and the fields present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_match_their_golden_form() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "cn");
    let mut seen = String::new();
    let cases = [
        host.request(
            reqwest::Method::POST,
            "/v1/scenarios/hello/echo",
            None,
            Some(b"{}".to_vec()),
        )
        .await,
        host.call(&token, "nope", "echo", json!({})).await,
        host.request(
            reqwest::Method::POST,
            "/v1/scenarios/hello/echo",
            Some(&token),
            Some(b"{".to_vec()),
        )
        .await,
        host.call(&token, "hello", "count-then-fail", json!(null))
            .await,
        host.call(&token, "hello", "count-then-panic", json!(null))
            .await,
    ];
    for reply in cases {
        let mut body = reply.body.clone();
        assert_eq!(body["request_id"], reply.request_id.as_str());
        body["request_id"] = json!("<request id>");
        seen.push_str(&format!("{} {}\n", reply.status, body));
    }
    let golden = lifecircle_tests::repo_root().join("tests/golden/error-bodies.txt");
    if std::env::var_os("LIFECIRCLE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &seen).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file exists");
    assert_eq!(
        seen, expected,
        "error bodies changed; if on purpose, rerun with LIFECIRCLE_UPDATE_GOLDEN=1"
    );
    host.stop().await;
}
