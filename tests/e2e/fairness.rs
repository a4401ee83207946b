//! Verifiable draws and invocation records, end to end on each backend: seeds committed before
//! their day and revealed after it, draws recomputed by the host and by `lifecircle
//! verify-draw`'s check, tampering caught; admins reading invocation records with their
//! postings and draws.

use std::process::ExitCode;

use lifecircle::client::{Remote, verify_draw};
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const HELLO: Bundle = Bundle::new("reference/hello");
const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");
const DAY_MS: i64 = 86_400_000;

/// `GET path` without credentials, retried until it answers 200 (records of read-only calls
/// are written a moment after the answer).
async fn get_eventually(host: &TestHost, path: &str) -> Reply {
    let mut reply = host.request(reqwest::Method::GET, path, None, None).await;
    for _ in 0..100 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        reply = host.request(reqwest::Method::GET, path, None, None).await;
    }
    reply
}

fn remote(host: &TestHost) -> Remote {
    Remote {
        url: host.base.clone(),
        token: None,
        json: false,
    }
}

async fn sql(host: &TestHost, statement: &str) {
    let mut connection = host.state.db.write.acquire().await.expect("connection");
    lifecircle::with_conn!(connection.conn(), c => {
        sqlx::query(statement).execute(&mut *c).await.expect("statement");
    });
}

on_each_backend! {
    async fn seeds_are_committed_before_their_day_and_revealed_after_it() {
        let host = TestHost::start(&[HELLO]).await;
        let listed = get_eventually(&host, "/v1/fairness/commitments?plugin=hello").await;
        let mut commitments = listed.body["commitments"].as_array().cloned().unwrap_or_default();
        for _ in 0..100 {
            if commitments.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let listed = get_eventually(&host, "/v1/fairness/commitments?plugin=hello").await;
            commitments = listed.body["commitments"].as_array().cloned().unwrap_or_default();
        }
        // Today's and tomorrow's (audit.commit_days_ahead = 1), for the region that enables it.
        assert_eq!(commitments.len(), 2, "{commitments:?}");
        let tomorrow = &commitments[1];
        assert_eq!(tomorrow["region"], "cn");
        assert!(tomorrow["published_at_ms"].as_i64() < tomorrow["starts_at_ms"].as_i64());
        assert!(commitments.iter().all(|c| c["seed"].is_null()), "{commitments:?}");

        // Two days on, both days are over: their seeds are out and match the commitments.
        let now = host.state.registry.clock.now_ms();
        host.state.registry.clock.set_ms(now + 3 * DAY_MS);
        let from = commitments[0]["day"].as_str().expect("day");
        let listed = get_eventually(
            &host,
            &format!("/v1/fairness/commitments?plugin=hello&from={from}&to={}", tomorrow["day"].as_str().expect("day")),
        )
        .await;
        let revealed = listed.body["commitments"].as_array().cloned().unwrap_or_default();
        assert_eq!(revealed.len(), 2, "{listed:?}");
        for commitment in &revealed {
            let seed = hex::decode(commitment["seed"].as_str().expect("revealed")).expect("hex");
            assert_eq!(
                hex::encode(Sha256::digest(&seed)),
                commitment["commitment"].as_str().expect("commitment")
            );
        }

        let bad = host
            .request(reqwest::Method::GET, "/v1/fairness/commitments?from=2026-02-30", None, None)
            .await;
        assert_eq!(bad.status, 400, "{bad:?}");
        assert_eq!(bad.code(), "request_invalid");
        host.stop().await;
    }

    async fn a_recorded_draw_verifies_once_revealed_and_tampering_fails() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn-fj");
        let reply = host.call(&token, "hello", "draw", json!({"sides": 6})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let number = reply.body["number"].as_u64().expect("number");
        let path = format!("/v1/fairness/draws/{}", reply.request_id);

        // Before the day is over: the draw is on record, the seed is not out.
        let record = get_eventually(&host, &path).await;
        assert_eq!(record.status, 200, "{record:?}");
        assert!(record.body["seed"]["seed"].is_null(), "{record:?}");
        assert!(record.body["verification"].is_null(), "{record:?}");
        let draws = record.body["draws"].as_array().cloned().unwrap_or_default();
        assert_eq!(draws.len(), 1, "{record:?}");
        assert_eq!(draws[0]["upper"], "6");
        assert_eq!(draws[0]["value"], (number - 1).to_string());
        assert_eq!(
            verify_draw(&remote(&host), &reply.request_id, None).await,
            ExitCode::from(1),
            "not verifiable before the seed is revealed"
        );

        // After it: the host and the independent check agree it is honest.
        let commitment = record.body["seed"]["commitment"].as_str().expect("commitment").to_owned();
        let now = host.state.registry.clock.now_ms();
        host.state.registry.clock.set_ms(now + 2 * DAY_MS);
        let record = get_eventually(&host, &path).await;
        assert_eq!(
            record.body["verification"],
            json!({"commitment_matches": true, "draws_match": true, "verified": true, "mismatched": []})
        );
        assert_eq!(
            verify_draw(&remote(&host), &reply.request_id, Some(&commitment)).await,
            ExitCode::SUCCESS
        );
        assert_eq!(
            verify_draw(&remote(&host), &reply.request_id, Some(&"0".repeat(64))).await,
            ExitCode::from(1),
            "a commitment other than the one kept fails"
        );

        // A changed draw fails.
        let other = (number % 6).to_string();
        sql(&host, &format!(
            "UPDATE fairness_draws SET value = '{other}' WHERE invocation_id = '{}'",
            reply.request_id
        ))
        .await;
        let record = get_eventually(&host, &path).await;
        assert_eq!(record.body["verification"]["draws_match"], json!(false), "{record:?}");
        assert_eq!(record.body["verification"]["mismatched"], json!([0]));
        assert_eq!(
            verify_draw(&remote(&host), &reply.request_id, None).await,
            ExitCode::from(1)
        );
        sql(&host, &format!(
            "UPDATE fairness_draws SET value = '{}' WHERE invocation_id = '{}'",
            number - 1,
            reply.request_id
        ))
        .await;
        assert_eq!(
            verify_draw(&remote(&host), &reply.request_id, None).await,
            ExitCode::SUCCESS
        );

        // A changed seed fails: it no longer hashes to the commitment.
        sql(
            &host,
            "UPDATE fairness_seeds SET seed = \
             CASE WHEN substr(seed, 1, 1) = '0' THEN '1' ELSE '0' END || substr(seed, 2)",
        )
        .await;
        let record = get_eventually(&host, &path).await;
        assert_eq!(record.body["verification"]["commitment_matches"], json!(false), "{record:?}");
        assert_eq!(record.body["verification"]["verified"], json!(false));
        assert_eq!(
            verify_draw(&remote(&host), &reply.request_id, None).await,
            ExitCode::from(1)
        );

        let missing = host
            .request(reqwest::Method::GET, "/v1/fairness/draws/nope", None, None)
            .await;
        assert_eq!(missing.status, 404, "{missing:?}");
        assert_eq!(missing.code(), "invocation_not_found");
        host.stop().await;
    }

    async fn admins_read_invocation_records_with_postings_and_draws() {
        let host = TestHost::start(&[HELLO, POINTS_DEMO]).await;
        let funded = host
            .request_with_headers(
                reqwest::Method::POST,
                "/admin/v1/budgets/points-demo/cn-fj",
                Some(&host.state.admin_token),
                Some(json!({"points": 100}).to_string().into_bytes()),
                &[("idempotency-key", "fund-1")],
            )
            .await;
        assert_eq!(funded.status, 200, "{funded:?}");
        let alice = host.token("alice", "cn-fj");
        let bob = host.token("bob", "cn-gd");
        let checked_in = host.call(&alice, "points-demo", "check-in", json!(null)).await;
        assert_eq!(checked_in.status, 200, "{checked_in:?}");
        let drew = host.call(&alice, "hello", "draw", json!({"sides": 100})).await;
        assert_eq!(drew.status, 200, "{drew:?}");
        let failed = host.call(&alice, "points-demo", "award-then-fail", json!(null)).await;
        assert_eq!(failed.status, 422, "{failed:?}");
        host.call(&bob, "hello", "echo", json!(1)).await;

        let admin = host.state.admin_token.clone();
        let list = |query: &'static str| {
            let host = &host;
            let admin = admin.clone();
            async move {
                let mut reply = Reply { status: 0, body: Value::Null, request_id: String::new() };
                for _ in 0..100 {
                    reply = host
                        .request(reqwest::Method::GET, &format!("/admin/v1/invocations{query}"), Some(&admin), None)
                        .await;
                    if reply.body["invocations"].as_array().is_some_and(|i| i.len() >= 3) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                reply
            }
        };
        // Alice's, across plugins, by her customer number: newest first.
        let reply = list("?customer=alice").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let records = reply.body["invocations"].as_array().cloned().unwrap_or_default();
        let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap_or("")).collect();
        assert_eq!(ids, [&failed.request_id, &drew.request_id, &checked_in.request_id], "{reply:?}");

        let check_in = &records[2];
        assert_eq!(check_in["outcome"], "ok");
        assert_eq!(check_in["caller"], host.state.identity.pseudonym("points-demo", "alice"));
        let postings = check_in["postings"].as_array().cloned().unwrap_or_default();
        assert_eq!(postings.len(), 1, "{check_in:?}");
        assert_eq!(postings[0]["id"], checked_in.body["posting"]);
        assert_eq!(postings[0]["kind"], "award");
        assert_eq!(postings[0]["amount"], checked_in.body["points"]);
        assert_eq!(check_in["input_digest"].as_str().map(str::len), Some(64));
        assert!(check_in["fuel_consumed"].as_i64() > Some(0));

        let draw = &records[1];
        assert_eq!(draw["draws"].as_array().map(Vec::len), Some(1), "{draw:?}");
        assert_eq!(draw["postings"], json!([]));
        assert_eq!(draw["seed"]["region"], "cn");

        // A failed call is recorded with its outcome, and none of its ledger writes.
        assert_eq!(records[0]["outcome"], "scenario_refused");
        assert_eq!(records[0]["postings"], json!([]));

        // One plugin, one region, paged.
        let reply = list("?plugin=hello&region=cn-gd").await;
        let records = reply.body["invocations"].as_array().cloned().unwrap_or_default();
        assert_eq!(records.len(), 1, "{reply:?}");
        assert_eq!(records[0]["action"], "echo");
        let page = host
            .request(reqwest::Method::GET, "/admin/v1/invocations?limit=1", Some(&admin), None)
            .await;
        let cursor = page.body["next_cursor"].as_str().expect("a next page").to_owned();
        let next = host
            .request(reqwest::Method::GET, &format!("/admin/v1/invocations?limit=1&cursor={cursor}"), Some(&admin), None)
            .await;
        assert!(next.body["invocations"][0]["id"].as_str() < Some(cursor.as_str()), "{next:?}");

        // A branch admin sees its own subtree only.
        let branch = host
            .admin_token("fujian", lifecircle::identity::admins::Role::BranchAdmin, Some("cn-fj"))
            .await;
        let scoped = host
            .request(reqwest::Method::GET, "/admin/v1/invocations?limit=100", Some(&branch), None)
            .await;
        let regions: Vec<&str> = scoped.body["invocations"]
            .as_array()
            .map(|records| records.iter().filter_map(|r| r["region"].as_str()).collect())
            .unwrap_or_default();
        assert!(!regions.is_empty() && regions.iter().all(|r| *r == "cn-fj"), "{scoped:?}");
        let refused = host
            .request(reqwest::Method::GET, "/admin/v1/invocations?region=cn-gd", Some(&branch), None)
            .await;
        assert_eq!(refused.status, 403, "{refused:?}");
        let one = host
            .request(reqwest::Method::GET, &format!("/admin/v1/invocations/{}", drew.request_id), Some(&branch), None)
            .await;
        assert_eq!(one.status, 200, "{one:?}");
        let other = records[0]["id"].as_str().expect("id");
        let hidden = host
            .request(reqwest::Method::GET, &format!("/admin/v1/invocations/{other}"), Some(&branch), None)
            .await;
        assert_eq!(hidden.status, 403, "{hidden:?}");
        host.stop().await;
    }

    async fn records_past_retention_are_swept_with_their_draws_and_events() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("alice", "cn");
        let drew = host.call(&token, "hello", "draw", json!({"sides": 6})).await;
        let path = format!("/v1/fairness/draws/{}", drew.request_id);
        assert_eq!(get_eventually(&host, &path).await.status, 200);
        let later = lifecircle::ledger::now_ms() + 1;
        assert_eq!(lifecircle::audit::sweep(&host.state.db, later).await.expect("sweep"), 1);
        assert_eq!(host.count("SELECT COUNT(*) FROM fairness_draws").await, 0);
        assert_eq!(host.count("SELECT COUNT(*) FROM events").await, 0, "the draw's event too");
        let gone = host.request(reqwest::Method::GET, &path, None, None).await;
        assert_eq!(gone.status, 404, "{gone:?}");
        host.stop().await;
    }
}
