//! `outbound` end to end on each backend, with `hello`'s `fetch` against a real local HTTP
//! server: allowed hosts answer, any other host is refused before a connection, a slow
//! server hits the timeout, an oversized answer is refused, redirects are not followed, the
//! wait extends the plugin's deadline, the grant is per region, and an allowed name does not
//! lead to a private address.

use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};
use lifecircle::Config;
use lifecircle_tests::{Bundle, TestHost, on_each_backend};
use serde_json::json;

const HELLO: Bundle = Bundle::new("reference/hello");
const HOSTILE: Bundle = Bundle::new("hostile/hostile-outbound");

/// A partner system on 127.0.0.1: its base URL.
async fn partner() -> String {
    let app = Router::new()
        .route("/bill", get(|| async { axum::Json(json!({"due": 4250})) }))
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "late"
            }),
        )
        .route(
            "/takes-300ms",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "worth the wait"
            }),
        )
        .route("/big", get(|| async { "x".repeat(100_000) }))
        .route(
            "/headers",
            get(|headers: axum::http::HeaderMap| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                format!("host={} x-trace={}", header("host"), header("x-trace"))
            }),
        )
        .route(
            "/moved",
            get(|| async { Redirect::temporary("http://example.com/elsewhere") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn limits(config: &mut Config) {
    config.outbound.timeout_ms = 350;
    config.outbound.response_bytes_max = 64 << 10;
    // Shorter than the partner's 300 ms: only the outbound wait extending it lets that call
    // finish.
    config.limits.deadline_ms = 200;
}

on_each_backend! {
    async fn a_plugin_reaches_allowed_hosts_only_within_its_limits() {
        let base = partner().await;
        let host = TestHost::start_with(&[HELLO], limits).await;
        let token = host.token("alice", "cn");
        let fetch = |url: String, extra: serde_json::Value| {
            let mut body = json!({"url": url});
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            let (host, token) = (&host, &token);
            async move { host.call(token, "hello", "fetch", body).await }
        };

        let bill = fetch(format!("{base}/bill"), json!({})).await;
        assert_eq!(bill.status, 200, "{bill:?}");
        assert_eq!(bill.body, json!({"status": 200, "body": "{\"due\":4250}"}));
        let echoed = fetch(format!("{base}/echo"), json!({"method": "POST", "body": "{\"n\":1}"})).await;
        assert_eq!(echoed.body["body"], "{\"n\":1}", "{echoed:?}");

        // Waiting 300 ms on the partner does not count against the 200 ms deadline.
        let patient = fetch(format!("{base}/takes-300ms"), json!({})).await;
        assert_eq!(patient.status, 200, "{patient:?}");
        assert_eq!(patient.body["body"], "worth the wait");

        for (url, code) in [
            ("http://example.com/".to_owned(), "outbound_host_not_allowed"),
            ("http://127.0.0.2/".to_owned(), "outbound_host_not_allowed"),
            ("ftp://127.0.0.1/".to_owned(), "outbound_invalid_request"),
            (format!("{base}/slow"), "outbound_timeout"),
            (format!("{base}/big"), "outbound_response_too_large"),
        ] {
            let reply = fetch(url.clone(), json!({})).await;
            assert_eq!(reply.status, 422, "{url}: {reply:?}");
            assert_eq!(reply.body["scenario_code"], code, "{url}: {reply:?}");
        }
        // A redirect is answered, not followed (it could lead off the allow-list).
        let moved = fetch(format!("{base}/moved"), json!({})).await;
        assert_eq!(moved.body["status"], 307, "{moved:?}");
        host.stop().await;
    }

    async fn outbound_hosts_are_granted_per_region() {
        let base = partner().await;
        let host = TestHost::start_with(&[HELLO], limits).await;
        let version = host
            .state
            .registry
            .deployment("hello", "cn")
            .expect("hello runs in cn")
            .plugin
            .version
            .clone();
        let admin = host.state.admin_token.clone();
        let put = |hosts: serde_json::Value| {
            let body = json!({"version": version, "outbound_hosts": hosts}).to_string();
            let (host, admin) = (&host, &admin);
            async move {
                host.request(
                    reqwest::Method::PUT,
                    "/admin/v1/regions/cn-fj/plugins/hello",
                    Some(admin),
                    Some(body.into_bytes()),
                )
                .await
            }
        };
        for region in ["cn-fj"] {
            let created = host
                .request(
                    reqwest::Method::PUT,
                    &format!("/admin/v1/regions/{region}"),
                    Some(&admin),
                    Some(json!({"display_name": "Fujian"}).to_string().into_bytes()),
                )
                .await;
            assert!(created.status < 300, "{created:?}");
        }
        // Only hosts the manifest asks for can be granted.
        let refused = put(json!(["evil.example"])).await;
        assert_eq!(refused.status, 400, "{refused:?}");
        assert_eq!(refused.code(), "enablement_invalid");
        assert!(refused.body["message"].as_str().is_some_and(|m| m.contains("127.0.0.1")), "{refused:?}");

        // Fujian grants nothing; the rest of cn keeps development's grant.
        let granted_nothing = put(json!([])).await;
        assert_eq!(granted_nothing.status, 200, "{granted_nothing:?}");
        let fujian = host.token("alice", "cn-fj-xm");
        let elsewhere = host.token("bob", "cn-gd");
        let url = json!({"url": format!("{base}/bill")});
        let reply = host.call(&fujian, "hello", "fetch", url.clone()).await;
        assert_eq!(reply.body["scenario_code"], "outbound_host_not_allowed", "{reply:?}");
        let reply = host.call(&elsewhere, "hello", "fetch", url.clone()).await;
        assert_eq!(reply.status, 200, "{reply:?}");

        let granted = put(json!(["127.0.0.1"])).await;
        assert_eq!(granted.status, 200, "{granted:?}");
        let reply = host.call(&fujian, "hello", "fetch", url).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        host.stop().await;
    }

    async fn a_name_leading_to_a_private_address_is_refused_unless_the_host_allows_it() {
        let base = partner().await;
        // hello asks for both `127.0.0.1` and `localhost`, and development grants both.
        let by_name = base.replace("127.0.0.1", "localhost");
        for allow_private_addresses in [false, true] {
            let host = TestHost::start_with(&[HELLO], |config| {
                config.outbound.allow_private_addresses = allow_private_addresses;
            })
            .await;
            let token = host.token("alice", "cn");
            let fetch = |url: String| {
                let (host, token) = (&host, &token);
                async move { host.call(token, "hello", "fetch", json!({"url": url})).await }
            };
            // A rule naming the address is the admin's explicit choice: reached either way.
            let by_address = fetch(format!("{base}/bill")).await;
            assert_eq!(by_address.status, 200, "{by_address:?}");
            let reply = fetch(format!("{by_name}/bill")).await;
            if allow_private_addresses {
                assert_eq!(reply.status, 200, "{reply:?}");
                assert_eq!(reply.body["body"], "{\"due\":4250}", "{reply:?}");
            } else {
                assert_eq!(reply.status, 422, "{reply:?}");
                assert_eq!(reply.body["scenario_code"], "outbound_connection_failed", "{reply:?}");
                assert!(
                    reply.body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("localhost resolves to") && m.contains("no public address")),
                    "{reply:?}"
                );
            }
            host.stop().await;
        }
    }

    async fn a_flood_of_requests_is_stopped_by_count_and_by_total_wait() {
        let base = partner().await;
        let host = TestHost::start_with(&[HOSTILE], |config| {
            config.outbound.requests_per_call_max = 5;
            config.outbound.timeout_ms = 1_000;
            config.outbound.wait_ms_max = 1_000;
        })
        .await;
        let token = host.token("alice", "cn");
        let fast = host
            .call(&token, "hostile-outbound", "flood", json!({"url": format!("{base}/bill")}))
            .await;
        assert_eq!(
            fast.body,
            json!({"answered": 5, "stopped_by": "outbound_too_many_requests"}),
            "{fast:?}"
        );
        // 300 ms a request, 1 s in all: three answers, then the call's wait is used up.
        let started = std::time::Instant::now();
        let slow = host
            .call(&token, "hostile-outbound", "flood", json!({"url": format!("{base}/takes-300ms")}))
            .await;
        assert_eq!(
            slow.body,
            json!({"answered": 3, "stopped_by": "outbound_timeout"}),
            "{slow:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        host.stop().await;
    }

    async fn a_plugin_cannot_set_the_headers_the_host_owns() {
        let base = partner().await;
        let host = TestHost::start(&[HOSTILE]).await;
        let token = host.token("alice", "cn");
        let url = format!("{base}/headers");
        let send = |name: &'static str, value: &'static str| {
            let (host, token, url) = (&host, &token, url.clone());
            async move {
                host.call(token, "hostile-outbound", "header", json!({"url": url, "name": name, "value": value}))
                    .await
            }
        };
        let traced = send("x-trace", "t-1").await;
        let own_host = base.trim_start_matches("http://");
        assert_eq!(traced.body, json!({"text": format!("host={own_host} x-trace=t-1")}), "{traced:?}");
        for (name, value) in [("Host", "intranet.bank.example"), ("content-length", "0"), ("Transfer-Encoding", "chunked"), ("connection", "upgrade")] {
            let refused = send(name, value).await;
            assert_eq!(refused.body, json!({"refused": "outbound_invalid_request"}), "{name}: {refused:?}");
        }
        host.stop().await;
    }
}
