//! Points end to end: the `points-demo` plugin writing to the ledger through WIT, customers
//! reading `/v1/points`, admins funding budgets, on each database backend. Ledger writes land
//! only with a successful call, and never overspend under concurrent calls.

use lifecircle::ledger::{self, Operation, Request};
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");
const HOSTILE_LEDGER: Bundle = Bundle::new("hostile/hostile-ledger");
const PLUGIN: &str = "points-demo";
const REGION: &str = "cn-fj";

async fn fund(host: &TestHost, points: i64, key: &str) -> Reply {
    host.request_with_headers(
        reqwest::Method::POST,
        &format!("/admin/v1/budgets/{PLUGIN}/{REGION}"),
        Some(&host.state.admin_token),
        Some(json!({"points": points}).to_string().into_bytes()),
        &[("idempotency-key", key)],
    )
    .await
}

async fn call_keyed(host: &TestHost, token: &str, action: &str, body: Value, key: &str) -> Reply {
    host.request_with_headers(
        reqwest::Method::POST,
        &format!("/v1/scenarios/{PLUGIN}/{action}"),
        Some(token),
        Some(body.to_string().into_bytes()),
        &[("idempotency-key", key)],
    )
    .await
}

async fn points(host: &TestHost, token: &str) -> Value {
    let reply = host
        .request(reqwest::Method::GET, "/v1/points", Some(token), None)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// Gives `customer` `amount` points directly through the ledger (test setup).
async fn grant(host: &TestHost, customer: &str, amount: i64) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let mut transaction = host.state.db.write.begin().await.expect("transaction");
    let mut conn = transaction.conn();
    let request = |key: &'static str| Request {
        scope: PLUGIN,
        key,
        now_ms,
        memo: "setup",
        id: None,
    };
    let fund = Request {
        scope: ledger::ADMIN_SCOPE,
        ..request("setup-fund")
    };
    ledger::apply(
        &mut conn,
        &fund,
        PLUGIN,
        REGION,
        &Operation::Fund { amount },
    )
    .await
    .expect("fund");
    let award = Operation::Award {
        customer: customer.into(),
        amount,
        expires_at_ms: now_ms + 86_400_000,
    };
    ledger::apply(&mut conn, &request("setup-award"), PLUGIN, REGION, &award)
        .await
        .expect("award");
    transaction.commit().await.expect("commit");
}

async fn assert_invariants(host: &TestHost) {
    let mut connection = host.state.db.read.acquire().await.expect("connection");
    let broken = ledger::audit_invariants(&mut connection.conn())
        .await
        .expect("audit");
    assert!(broken.is_empty(), "{broken:?}");
}

on_each_backend! {
    async fn check_in_awards_points_once_a_day_from_the_funded_budget() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        let funded = fund(&host, 100, "f1").await;
        assert_eq!(funded.status, 200, "{funded:?}");
        assert_eq!(funded.body["budget"]["remaining"], 100);
        let token = host.token("6222000011112222", REGION);
        let first = host.call(&token, PLUGIN, "check-in", json!(null)).await;
        assert_eq!(first.status, 200, "{first:?}");
        let second = host.call(&token, PLUGIN, "check-in", json!(null)).await;
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(first.body["posting"], second.body["posting"], "one award per day");

        let balance = points(&host, &token).await;
        assert_eq!((balance["total"].as_i64(), balance["available"].as_i64()), (Some(10), Some(10)));
        let expires = balance["expiring"][0]["expires_at_ms"].as_i64().expect("a lot");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        let thirty_days = 30 * 86_400_000;
        assert!((now_ms + thirty_days - 60_000..=now_ms + thirty_days + 60_000).contains(&expires), "{balance}");

        let report = host
            .request(reqwest::Method::GET, &format!("/admin/v1/budgets/{PLUGIN}/{REGION}"), Some(&host.state.admin_token), None)
            .await;
        assert_eq!(report.body, json!({"funded": 100, "awarded": 10, "clawed_back": 0, "remaining": 90}));
        assert_invariants(&host).await;
        host.stop().await;
    }

    async fn a_check_in_without_budget_is_refused_and_writes_nothing() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        let token = host.token("c1", REGION);
        let reply = host.call(&token, PLUGIN, "check-in", json!(null)).await;
        assert_eq!(reply.status, 422, "{reply:?}");
        assert_eq!(reply.body["scenario_code"], "budget_exhausted");
        assert_eq!(points(&host, &token).await["total"], 0);
        host.stop().await;
    }

    async fn an_award_followed_by_an_error_or_a_panic_leaves_no_posting() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        fund(&host, 100, "f1").await;
        let token = host.token("c1", REGION);
        let refused = host.call(&token, PLUGIN, "award-then-fail", json!(null)).await;
        assert_eq!(refused.status, 422, "{refused:?}");
        let trapped = host.call(&token, PLUGIN, "award-then-panic", json!(null)).await;
        assert_eq!(trapped.status, 502, "{trapped:?}");
        assert_eq!(points(&host, &token).await["total"], 0);
        let history = host.request(reqwest::Method::GET, "/v1/points/history", Some(&token), None).await;
        assert_eq!(history.body["postings"], json!([]));
        let awards = host.count("SELECT COUNT(*) FROM ledger_postings WHERE kind = 'award'").await;
        assert_eq!(awards, 0);
        assert_invariants(&host).await;
        host.stop().await;
    }

    async fn two_hundred_concurrent_redeems_of_one_point_against_a_hundred_never_overspend() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        grant(&host, "alice", 100).await;
        let token = host.token("alice", REGION);
        let calls = (0..200).map(|i| {
            let (host, token) = (&host, &token);
            async move {
                let key = format!("r-{i}");
                call_keyed(host, token, "redeem", json!({"points": 1, "reward": "sticker"}), &key).await
            }
        });
        let replies = futures::future::join_all(calls).await;
        let succeeded = replies.iter().filter(|r| r.status == 200).count();
        for reply in replies.iter().filter(|r| r.status != 200) {
            // Refused during the call (422) or at commit when another call got there first (409).
            assert!(
                (reply.status == 422 && reply.body["scenario_code"] == "points_insufficient")
                    || (reply.status == 409 && reply.code() == "points_insufficient"),
                "{reply:?}"
            );
        }
        assert_eq!(succeeded, 100);
        let balance = points(&host, &token).await;
        assert_eq!((balance["total"].as_i64(), balance["available"].as_i64()), (Some(0), Some(0)));
        assert_invariants(&host).await;
        host.stop().await;
    }

    async fn a_retried_redeem_spends_once() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        grant(&host, "alice", 50).await;
        let token = host.token("alice", REGION);
        let body = json!({"points": 20, "reward": "coffee"});
        let first = call_keyed(&host, &token, "redeem", body.clone(), "same").await;
        let retry = call_keyed(&host, &token, "redeem", body, "same").await;
        assert_eq!((first.status, retry.status), (200, 200), "{first:?} {retry:?}");
        assert_eq!(first.body["posting"], retry.body["posting"]);
        assert_eq!(points(&host, &token).await["total"], 30);
        let other = call_keyed(&host, &token, "redeem", json!({"points": 21, "reward": "coffee"}), "same").await;
        assert_eq!(other.status, 409, "{other:?}");
        assert_eq!(other.body["scenario_code"], "exists_with_different_amount");
        host.stop().await;
    }

    async fn reserve_confirm_and_cancel_move_points_through_holds() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        grant(&host, "alice", 100).await;
        let token = host.token("alice", REGION);
        let reserved = call_keyed(&host, &token, "reserve", json!({"points": 30, "seconds": 600}), "h1").await;
        assert_eq!(reserved.status, 200, "{reserved:?}");
        let balance = points(&host, &token).await;
        assert_eq!((balance["available"].as_i64(), balance["held"].as_i64()), (Some(70), Some(30)));
        let hold = reserved.body["hold"].as_str().expect("hold id").to_owned();
        let confirmed = call_keyed(&host, &token, "confirm", json!({"hold": hold, "points": 20}), "c1").await;
        assert_eq!(confirmed.status, 200, "{confirmed:?}");
        let balance = points(&host, &token).await;
        assert_eq!((balance["total"].as_i64(), balance["available"].as_i64(), balance["held"].as_i64()), (Some(80), Some(80), Some(0)));
        let again = call_keyed(&host, &token, "confirm", json!({"hold": hold, "points": 1}), "c2").await;
        assert_eq!(again.status, 409, "{again:?}");

        let second = call_keyed(&host, &token, "reserve", json!({"points": 50, "seconds": 600}), "h2").await;
        let second_hold = second.body["hold"].as_str().expect("hold id").to_owned();
        assert_eq!(points(&host, &token).await["available"], 30);
        let cancelled = call_keyed(&host, &token, "cancel", json!({"hold": second_hold}), "x1").await;
        assert_eq!(cancelled.status, 200, "{cancelled:?}");
        assert_eq!(points(&host, &token).await["available"], 80);
        assert_invariants(&host).await;
        host.stop().await;
    }

    async fn a_refund_returns_the_points_to_their_lot() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        grant(&host, "alice", 40).await;
        let token = host.token("alice", REGION);
        let redeemed = call_keyed(&host, &token, "redeem", json!({"points": 15, "reward": "tea"}), "r1").await;
        let posting = redeemed.body["posting"].as_str().expect("posting").to_owned();
        let refunded = call_keyed(&host, &token, "refund", json!({"posting": posting}), "rf1").await;
        assert_eq!(refunded.status, 200, "{refunded:?}");
        assert_eq!(points(&host, &token).await["total"], 40);
        let twice = call_keyed(&host, &token, "refund", json!({"posting": posting}), "rf2").await;
        assert_eq!(twice.status, 409, "{twice:?}");
        assert_eq!(twice.body["scenario_code"], "already_reversed");
        assert_invariants(&host).await;
        host.stop().await;
    }

    async fn history_pages_newest_first_with_a_cursor() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        grant(&host, "alice", 100).await;
        let token = host.token("alice", REGION);
        for i in 0..3 {
            let reply = call_keyed(&host, &token, "redeem", json!({"points": 1 + i, "reward": format!("r{i}")}), &format!("k{i}")).await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        let first = host.request(reqwest::Method::GET, "/v1/points/history?limit=2", Some(&token), None).await;
        assert_eq!(first.status, 200, "{first:?}");
        let page = first.body["postings"].as_array().expect("postings");
        assert_eq!(page.len(), 2);
        assert_eq!((page[0]["points"].as_i64(), page[0]["memo"].as_str()), (Some(-3), Some("r2")));
        assert_eq!(page[0]["scenario"], PLUGIN);
        let cursor = first.body["next_cursor"].as_str().expect("more pages").to_owned();
        let second = host
            .request(reqwest::Method::GET, &format!("/v1/points/history?limit=2&cursor={cursor}"), Some(&token), None)
            .await;
        let page = second.body["postings"].as_array().expect("postings");
        assert_eq!(page.len(), 2);
        assert_eq!((page[0]["points"].as_i64(), page[1]["points"].as_i64()), (Some(-1), Some(100)));
        host.stop().await;
    }

    async fn admin_endpoints_need_the_admin_token_and_fund_once_per_key() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        let path = format!("/admin/v1/budgets/{PLUGIN}/{REGION}");
        let customer = host.token("alice", REGION);
        for token in [None, Some(customer.as_str()), Some("not-the-admin-token")] {
            let reply = host.request(reqwest::Method::GET, &path, token, None).await;
            assert_eq!(reply.status, 401, "{reply:?}");
            assert_eq!(reply.code(), "admin_token_invalid");
        }
        let no_key = host
            .request(reqwest::Method::POST, &path, Some(&host.state.admin_token), Some(br#"{"points": 5}"#.to_vec()))
            .await;
        assert_eq!(no_key.status, 400, "{no_key:?}");
        let bad_body = host
            .request_with_headers(reqwest::Method::POST, &path, Some(&host.state.admin_token), Some(br#"{"point": 5}"#.to_vec()), &[("idempotency-key", "k")])
            .await;
        assert_eq!((bad_body.status, bad_body.code()), (400, "body_invalid_json"), "{bad_body:?}");
        let first = fund(&host, 500, "k1").await;
        let retry = fund(&host, 500, "k1").await;
        assert_eq!(first.body["posting"], retry.body["posting"]);
        assert_eq!(retry.body["budget"]["funded"], 500);
        let other = fund(&host, 501, "k1").await;
        assert_eq!(other.status, 409, "{other:?}");
        host.stop().await;
    }

    async fn two_replicas_racing_for_one_key_give_it_to_one_call_and_fail_no_other() {
        // Two regions, so the two awards lock no account in common (two budgets, two
        // customers): only the key is shared.
        let first = TestHost::start_with(&[HOSTILE_LEDGER], |config| {
            config.registry.dev_regions = vec!["cn".into(), "hk".into()];
        })
        .await;
        first.fund("cn", "hostile-ledger", 1000, "fund-cn").await;
        first.fund("hk", "hostile-ledger", 1000, "fund-hk").await;
        let second = first.start_replica().await;
        // Each round: two customers, one on each replica, award under the same key at once.
        for round in 0..25 {
            let key = format!("shared-{round}");
            let calls = [(&first, "alice", "cn"), (&second, "bob", "hk")].map(|(host, customer, region)| {
                let token = host.token(customer, region);
                let key = key.clone();
                async move { host.call(&token, "hostile-ledger", "award", json!({"key": key})).await }
            });
            let replies = futures::future::join_all(calls).await;
            let won = replies.iter().filter(|r| r.status == 200 && r.body.get("posting").is_some()).count();
            let lost = replies
                .iter()
                .filter(|r| {
                    r.body.get("refused") == Some(&json!("exists_with_different_amount"))
                        || (r.status, r.code()) == (409, "ledger_conflict")
                })
                .count();
            assert_eq!((won, lost), (1, 1), "round {round}: {replies:?}");
        }
        assert_invariants(&first).await;
        second.stop().await;
        first.stop().await;
    }

    async fn funding_is_bounded_per_request_and_a_balance_never_wraps() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        let max = host.state.config.ledger.fund_points_max;
        let over = fund(&host, max + 1, "too-much").await;
        assert_eq!((over.status, over.code()), (400, "request_invalid"), "{over:?}");
        assert!(over.body["message"].as_str().is_some_and(|m| m.contains("ledger.fund_points_max")), "{over:?}");
        let huge = fund(&host, i64::MAX, "huge").await;
        assert_eq!(huge.status, 400, "{huge:?}");
        assert_eq!(fund(&host, max, "most").await.status, 200);
        host.stop().await;

        // With the bound lifted, the ledger itself refuses a sum past 64 bits.
        let host = TestHost::start_with(&[POINTS_DEMO], |config| config.ledger.fund_points_max = i64::MAX).await;
        assert_eq!(fund(&host, i64::MAX, "first").await.status, 200);
        let wrapped = fund(&host, 2, "second").await;
        assert_eq!(wrapped.status, 409, "{wrapped:?}");
        assert!(wrapped.body["message"].as_str().is_some_and(|m| m.contains("overflow")), "{wrapped:?}");
        let report = host
            .request(reqwest::Method::GET, &format!("/admin/v1/budgets/{PLUGIN}/{REGION}"), Some(&host.state.admin_token), None)
            .await;
        assert_eq!(report.body["funded"], i64::MAX, "the refused funding left nothing: {report:?}");
        assert_invariants(&host).await;
        host.stop().await;
    }

    async fn a_balance_read_in_the_same_call_shows_the_spend_taken_from_the_earliest_lot() {
        let host = TestHost::start(&[POINTS_DEMO]).await;
        fund(&host, 100, "f1").await;
        grant(&host, "c1", 10).await; // expires in a day
        let token = host.token("c1", REGION);
        let checked_in = host.call(&token, PLUGIN, "check-in", json!(null)).await; // 10, in 30 days
        assert_eq!(checked_in.status, 200, "{checked_in:?}");
        let redeemed = call_keyed(&host, &token, "redeem", json!({"points": 15, "reward": "tea"}), "r1").await;
        assert_eq!(redeemed.status, 200, "{redeemed:?}");
        let expiring = redeemed.body["balance"]["expiring"].as_array().expect("lots").clone();
        assert_eq!(expiring.len(), 1, "the day-long lot is used up first: {expiring:?}");
        assert_eq!(expiring[0]["points"], 5);
        // What the call saw is what was committed.
        assert_eq!(points(&host, &token).await["expiring"], json!(expiring));
        assert_invariants(&host).await;
        host.stop().await;
    }
}
