//! Customer tokens: every scenario endpoint needs a valid one.

use lifecircle::identity::{Customer, Identity};
use lifecircle_tests::{Bundle, TestHost};
use serde_json::json;
use std::time::Duration;

const HELLO: Bundle = Bundle::new("reference/hello");

async fn echo_with(host: &TestHost, token: Option<&str>) -> lifecircle_tests::Reply {
    host.request(
        reqwest::Method::POST,
        "/v1/scenarios/hello/echo",
        token,
        Some(b"{}".to_vec()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_401_token_missing() {
    let host = TestHost::start(&[HELLO]).await;
    let reply = echo_with(&host, None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.code(), "token_missing");
    assert_eq!(reply.body["request_id"], reply.request_id.as_str());
    let listing = host
        .request(reqwest::Method::GET, "/v1/scenarios", None, None)
        .await;
    assert_eq!(listing.status, 401);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_401_token_expired() {
    let host = TestHost::start_with(&[HELLO], |config| config.auth.token_leeway_seconds = 0).await;
    let token = host
        .state
        .identity
        .mint(
            &Customer {
                id: "alice".into(),
                region: "cn".into(),
            },
            Duration::ZERO,
        )
        .expect("HS256");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = echo_with(&host, Some(&token)).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.code(), "token_expired");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_another_secret_is_401_token_invalid() {
    let host = TestHost::start(&[HELLO]).await;
    let forger = Identity::hs256(b"not-the-bank-secret-not-the-bank", &[0; 32], 0);
    let token = forger
        .mint(
            &Customer {
                id: "alice".into(),
                region: "cn".into(),
            },
            Duration::from_secs(60),
        )
        .expect("HS256");
    let reply = echo_with(&host, Some(&token)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.code(), "token_invalid");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_or_garbled_token_is_401_token_invalid() {
    let host = TestHost::start(&[HELLO]).await;
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwicmVnaW9uIjoiY24iLCJleHAiOjk5OTk5OTk5OTl9.";
    for token in [unsigned, "garbage", "a.b.c"] {
        let reply = echo_with(&host, Some(token)).await;
        assert_eq!(reply.status, 401, "{token}: {reply:?}");
        assert_eq!(reply.code(), "token_invalid", "{token}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_malformed_region_is_401() {
    let host = TestHost::start(&[HELLO]).await;
    let token = host.token("alice", "CN/FJ");
    let reply = host.call(&token, "hello", "echo", json!({})).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.code(), "token_invalid");
    host.stop().await;
}
