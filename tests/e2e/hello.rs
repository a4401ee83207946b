//! The reference plugin `hello`, end to end, on each database backend.

use lifecircle_tests::{Bundle, TestHost, on_each_backend};
use serde_json::json;

const HELLO: Bundle = Bundle::new("reference/hello");

on_each_backend! {
    async fn echo_returns_the_body_it_was_sent() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("6222000011112222", "cn-fj");
        let reply = host
            .call(
                &token,
                "hello",
                "echo",
                json!({"hello": "world", "n": [1, 2]}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, json!({"echo": {"hello": "world", "n": [1, 2]}}));
        assert_eq!(reply.request_id.len(), 32);
        host.stop().await;
    }

    async fn scenarios_lists_the_loaded_plugins_with_name_and_description() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("c1", "cn");
        let reply = host
            .request(reqwest::Method::GET, "/v1/scenarios", Some(&token), None)
            .await;
        assert_eq!(reply.status, 200);
        let scenarios = reply.body["scenarios"].as_array().expect("a list");
        assert_eq!(scenarios.len(), 1);
        assert_eq!(scenarios[0]["id"], "hello");
        assert_eq!(scenarios[0]["name"], "Hello");
        assert!(
            scenarios[0]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        host.stop().await;
    }

    async fn greet_reads_config_and_sees_a_pseudonym_not_the_customer_number() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("6222000011112222", "cn-fj-xm");
        let reply = host.call(&token, "hello", "greet", json!(null)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let message = reply.body["message"].as_str().expect("message");
        assert!(message.starts_with("Hello, "), "{message}");
        assert!(!message.contains("6222000011112222"), "{message}");
        let pseudonym = host.state.identity.pseudonym("hello", "6222000011112222");
        assert!(message.contains(&pseudonym), "{message}");
        assert_eq!(reply.body["region"], "cn-fj-xm");
        host.stop().await;
    }

    async fn count_is_kept_per_customer_in_store() {
        let host = TestHost::start(&[HELLO]).await;
        let alice = host.token("alice", "cn");
        let bob = host.token("bob", "cn");
        for expected in 1..=3 {
            let reply = host.call(&alice, "hello", "count", json!(null)).await;
            assert_eq!(reply.body, json!({"count": expected}), "{reply:?}");
        }
        let reply = host.call(&bob, "hello", "count", json!(null)).await;
        assert_eq!(reply.body, json!({"count": 1}));
        host.stop().await;
    }

    async fn count_is_scoped_per_region() {
        let host = TestHost::start(&[HELLO]).await;
        let alice = host.token("alice", "cn-fj");
        host.call(&alice, "hello", "count", json!(null)).await;
        host.call(&alice, "hello", "count", json!(null)).await;
        // The bank moves alice to Beijing: her calls now use that region's store. The region
        // is the identity service's, not the token's.
        let moved = host
            .request(
                reqwest::Method::PATCH,
                "/admin/v1/customers/alice",
                Some(&host.state.admin_token),
                Some(br#"{"region": "cn-bj"}"#.to_vec()),
            )
            .await;
        assert_eq!(moved.status, 200, "{moved:?}");
        let reply = host.call(&alice, "hello", "count", json!(null)).await;
        assert_eq!(reply.body, json!({"count": 1}));
        host.stop().await;
    }

    async fn a_call_that_returns_an_error_or_traps_leaves_no_store_write() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        assert_eq!(
            host.call(&token, "hello", "count", json!(null)).await.body,
            json!({"count": 1})
        );

        let refused = host
            .call(&token, "hello", "count-then-fail", json!(null))
            .await;
        assert_eq!(refused.status, 422, "{refused:?}");
        assert_eq!(refused.code(), "scenario_refused");
        assert_eq!(refused.body["scenario_code"], "demo_failure");

        let trapped = host
            .call(&token, "hello", "count-then-panic", json!(null))
            .await;
        assert_eq!(trapped.status, 502, "{trapped:?}");
        assert_eq!(trapped.code(), "plugin_trapped");

        assert_eq!(
            host.call(&token, "hello", "count", json!(null)).await.body,
            json!({"count": 2})
        );
        host.stop().await;
    }

    async fn concurrent_counts_by_one_customer_never_lose_an_increment() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        let calls = (0..50).map(|_| host.call(&token, "hello", "count", json!(null)));
        for reply in futures::future::join_all(calls).await {
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        // Increments are re-applied at commit against what other calls committed, so 50 calls
        // leave exactly 50, whatever the interleaving.
        let final_count = host.call(&token, "hello", "count", json!(null)).await;
        assert_eq!(final_count.body, json!({"count": 51}));
        host.stop().await;
    }

    async fn notes_round_trip_through_store() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        assert_eq!(
            host.call(&token, "hello", "note-get", json!(null))
                .await
                .body["note"],
            json!(null)
        );
        let set = host
            .call(
                &token,
                "hello",
                "note-set",
                json!({"text": "pay the water bill"}),
            )
            .await;
        assert_eq!(set.status, 200, "{set:?}");
        let got = host.call(&token, "hello", "note-get", json!(null)).await;
        assert_eq!(got.status, 200, "{got:?}");
        assert!(
            got.body.to_string().contains("pay the water bill"),
            "{got:?}"
        );
        host.stop().await;
    }

    async fn draw_validates_its_input_and_stays_in_range() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        for _ in 0..20 {
            let reply = host
                .call(&token, "hello", "draw", json!({"sides": 6}))
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let number = reply.body["number"].as_u64().expect("number");
            assert!((1..=6).contains(&number), "{number}");
        }
        let bad = host
            .call(&token, "hello", "draw", json!({"sides": 0}))
            .await;
        assert_eq!(bad.status, 400, "{bad:?}");
        assert_eq!(bad.code(), "scenario_invalid_input");
        let malformed = host
            .call(&token, "hello", "draw", json!({"sides": "six"}))
            .await;
        assert_eq!(malformed.status, 400, "{malformed:?}");
        host.stop().await;
    }

    async fn time_is_the_calls_fixed_time() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let reply = host.call(&token, "hello", "time", json!(null)).await;
        let seconds = reply.body["seconds"].as_i64().expect("seconds");
        assert!((before..=before + 5).contains(&seconds), "{reply:?}");
        host.stop().await;
    }

    async fn data_survives_a_restart_on_the_same_database() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        host.call(&token, "hello", "count", json!(null)).await;
        host.call(&token, "hello", "count", json!(null)).await;
        let kept = host.stop_and_keep().await;

        let host = TestHost::start_in(kept).await;
        let token = host.token("alice", "cn");
        assert_eq!(
            host.call(&token, "hello", "count", json!(null)).await.body,
            json!({"count": 3})
        );
        host.stop().await;
    }

    async fn every_invocation_leaves_an_audit_record() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn-fj");
        let ok = host.call(&token, "hello", "count", json!(null)).await;
        let refused = host
            .call(&token, "hello", "count-then-fail", json!(null))
            .await;
        let echo = host.call(&token, "hello", "echo", json!({"x": 1})).await;
        // Read-only calls' records are queued, not awaited: give the writer a moment.
        let mut rows = Vec::new();
        for _ in 0..50 {
            let mut connection = host.state.db.read.acquire().await.expect("connection");
            rows = lifecircle::with_conn!(connection.conn(), c => {
                sqlx::query_as::<_, (String, String, String, String, String, i64)>(
                    "SELECT id, action, outcome, caller, seed_commitment, fuel_consumed FROM invocations \
                     ORDER BY started_at_ms, id",
                )
                .fetch_all(&mut *c)
                .await
                .expect("query")
            });
            if rows.len() == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(rows.len(), 3, "{rows:?}");
        let by_id = |id: &str| rows.iter().find(|r| r.0 == id).expect("recorded").clone();
        assert_eq!(by_id(&ok.request_id).2, "ok");
        assert_eq!(by_id(&refused.request_id).2, "scenario_refused");
        let echo_row = by_id(&echo.request_id);
        assert_eq!(echo_row.1, "echo");
        assert_eq!(echo_row.3, host.state.identity.pseudonym("hello", "alice"));
        assert_eq!(echo_row.4.len(), 64);
        assert!(echo_row.5 > 0);
        host.stop().await;
    }

    async fn health_and_metrics_report_on_the_host() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        host.call(&token, "hello", "echo", json!(1)).await;
        host.call(&token, "hello", "count-then-fail", json!(null))
            .await;
        let (status, health) = host.get_text("/healthz").await;
        assert_eq!(status, 200);
        assert!(health.contains("\"ok\""), "{health}");
        let (status, metrics) = host.get_text("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            metrics.contains("lifecircle_invocations_total{plugin=\"hello\",outcome=\"ok\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("outcome=\"scenario_refused\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("lifecircle_invocation_duration_seconds_count{plugin=\"hello\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("lifecircle_fuel_consumed_total{plugin=\"hello\"}"),
            "{metrics}"
        );
        // Both calls' audit records went through the commit writer.
        host.state.committer.flush().await.expect("the writer answers");
        let (_, metrics) = host.get_text("/metrics").await;
        assert!(
            metrics.contains("lifecircle_commit_calls_total 2\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("lifecircle_commit_batches_total{result=\"rolled_back\"} 0"),
            "{metrics}"
        );
        let committed = host.state.metrics.commit.totals();
        assert!(
            (1..=3).contains(&committed.batches) && committed.busy > std::time::Duration::ZERO,
            "{committed:?}"
        );
        host.stop().await;
    }

    async fn queued_invocation_records_are_on_disk_when_shutdown_completes() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        for _ in 0..20 {
            assert_eq!(
                host.call(&token, "hello", "echo", json!(1)).await.status,
                200
            );
        }
        let kept = host.stop_and_keep().await;
        let db = lifecircle::db::Db::open(&kept.config.database_url()).await.expect("open");
        let mut connection = db.read.acquire().await.expect("connection");
        let recorded: i64 = lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_scalar("SELECT COUNT(*) FROM invocations")
                .fetch_one(&mut *c)
                .await
                .expect("count")
        });
        assert_eq!(recorded, 20);
        drop(connection);
        db.close().await;
        TestHost::start_in(kept).await.stop().await;
    }
}
