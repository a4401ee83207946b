//! Campaign reports and events end to end on each backend: a scripted scenario (check-ins,
//! a redemption, draws, a cash prize, a failed call) whose report must match figures computed
//! by hand, per region subtree and day by day.

use lifecircle_tests::{Bundle, TestHost, on_each_backend};
use serde_json::{Value, json};

const HELLO: Bundle = Bundle::new("reference/hello");
const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");
const HOSTILE: Bundle = Bundle::new("hostile/hostile-events");

async fn report(host: &TestHost, query: &str) -> Value {
    let reply = host
        .request(
            reqwest::Method::GET,
            &format!("/admin/v1/reports/{query}"),
            Some(&host.state.admin_token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// Waits until `count` invocations of `plugin` are on record (read-only calls' records are
/// written a moment after their answers).
async fn await_records(host: &TestHost, plugin: &str, count: i64) {
    for _ in 0..200 {
        let mut connection = host.state.db.read.acquire().await.expect("connection");
        let found: i64 = lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_scalar("SELECT COUNT(*) FROM invocations WHERE plugin_id = $1")
                .bind(plugin)
                .fetch_one(&mut *c)
                .await
                .expect("count")
        });
        if found >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{plugin} never had {count} invocation records");
}

on_each_backend! {
    async fn a_report_matches_the_figures_of_a_scripted_campaign() {
        let host = TestHost::start(&[HELLO, POINTS_DEMO]).await;
        let admin = host.state.admin_token.clone();
        let funded = host.post_keyed("/admin/v1/budgets/points-demo/cn-fj", &admin, json!({"points": 1000}), "f1").await;
        assert_eq!(funded.status, 200, "{funded:?}");
        let alice = host.token("alice", "cn-fj");
        let bob = host.token("bob", "cn-fj");
        let carol = host.token("carol", "cn-gd");

        // points-demo: two check-ins of 10 in Fujian, one redemption of 5; Guangdong has no
        // budget, so carol's check-in fails.
        for token in [&alice, &bob] {
            let reply = host.call(token, "points-demo", "check-in", json!(null)).await;
            assert_eq!(reply.body["points"], 10, "{reply:?}");
        }
        let redeemed = host.post_keyed("/v1/scenarios/points-demo/redeem", &alice, json!({"points": 5, "reward": "cup"}), "r1").await;
        assert_eq!(redeemed.status, 200, "{redeemed:?}");
        let failed = host.call(&carol, "points-demo", "check-in", json!(null)).await;
        assert_eq!(failed.status, 422, "{failed:?}");

        // hello: two draws (events) and a cash prize of 8.88 yuan for alice.
        for _ in 0..2 {
            let drew = host.call(&alice, "hello", "draw", json!({"sides": 6})).await;
            assert_eq!(drew.status, 200, "{drew:?}");
        }
        let prize = host.post_keyed("/v1/scenarios/hello/prize", &alice, json!({"fen": 888}), "p1").await;
        assert_eq!(prize.body["payment"]["status"], "succeeded", "{prize:?}");
        await_records(&host, "points-demo", 4).await;
        await_records(&host, "hello", 3).await;

        let today = host.state.calendar.day_of(host.state.registry.clock.now_ms());
        let yesterday = lifecircle::calendar::Date::from_days(today.days() - 1);
        let fujian = report(&host, &format!("points-demo?region=cn-fj&from={yesterday}&to={today}")).await;
        assert_eq!(fujian["invocations"], 3, "{fujian}");
        assert_eq!(fujian["participants"], 2);
        assert_eq!(fujian["outcomes"], json!({"ok": 3}));
        assert_eq!(fujian["points"], json!({"awarded": 20, "spent": 5, "awards_reversed": 0, "spends_reversed": 0}));
        assert_eq!(fujian["budget_remaining"], 980);
        // 20 points at 1 fen each, over 2 customers.
        assert_eq!(fujian["cost_minor"], 20);
        assert_eq!(fujian["cost_per_participant_minor"], 10.0);
        assert_eq!(
            fujian["daily"],
            json!([
                {"day": yesterday.to_string(), "invocations": 0, "participants": 0, "points_awarded": 0,
                 "points_spent": 0, "cash_paid_out_minor": 0, "events": 0},
                {"day": today.to_string(), "invocations": 3, "participants": 2, "points_awarded": 20,
                 "points_spent": 5, "cash_paid_out_minor": 0, "events": 0}
            ])
        );

        // Everywhere: carol's failed check-in counts as an invocation and a participant.
        let everywhere = report(&host, "points-demo").await;
        assert_eq!(everywhere["invocations"], 4, "{everywhere}");
        assert_eq!(everywhere["participants"], 3);
        assert_eq!(everywhere["outcomes"]["ok"], 3);
        assert_eq!(everywhere["outcomes"]["scenario_refused"], 1);
        assert_eq!(everywhere["daily"].as_array().map(Vec::len), Some(30));

        let hello = report(&host, "hello?region=cn-fj").await;
        assert_eq!(hello["participants"], 1, "{hello}");
        assert_eq!(hello["cash"], json!({"CNY": {"debited": 0, "refunded": 0, "paid_out": 888}}));
        assert_eq!(hello["cost_minor"], 888);
        assert_eq!(hello["cost_per_participant_minor"], 888.0);
        assert_eq!(hello["events"], json!({"draw.made": 2}));

        let events = host
            .request(reqwest::Method::GET, "/admin/v1/events?plugin=hello&name=draw.made", Some(&admin), None)
            .await;
        let listed = events.body["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(listed.len(), 2, "{events:?}");
        assert_eq!(listed[0]["caller"], host.state.identity.pseudonym("hello", "alice"));

        // A branch admin's report covers its own subtree; another is refused.
        let branch = host
            .admin_token("guangdong", lifecircle::identity::admins::Role::BranchAdmin, Some("cn-gd"))
            .await;
        let own = host
            .request(reqwest::Method::GET, "/admin/v1/reports/points-demo", Some(&branch), None)
            .await;
        assert_eq!(own.body["invocations"], 1, "{own:?}");
        assert_eq!(own.body["region"], "cn-gd");
        let other = host
            .request(reqwest::Method::GET, "/admin/v1/reports/points-demo?region=cn-fj", Some(&branch), None)
            .await;
        assert_eq!(other.status, 403, "{other:?}");
        let too_long = host
            .request(reqwest::Method::GET, "/admin/v1/reports/points-demo?from=2020-01-01", Some(&admin), None)
            .await;
        assert_eq!(too_long.status, 400, "{too_long:?}");
        host.stop().await;
    }

    async fn a_call_emits_events_within_the_limits_only() {
        let host = TestHost::start_with(&[HOSTILE], |config| {
            config.events.per_call_max = 5;
            config.events.properties_bytes_max = 1024;
        })
        .await;
        let token = host.token("alice", "cn");
        let flood = host.call(&token, "hostile-events", "flood", json!(null)).await;
        assert_eq!(flood.body, json!({"emitted": 5, "stopped_by": "TooManyEvents { max: 5 }"}), "{flood:?}");
        let big = host.call(&token, "hostile-events", "big", json!({"bytes": 2000})).await;
        assert_eq!(big.status, 422, "{big:?}");
        assert_eq!(big.body["scenario_code"], "event_not_recorded");
        let small = host.call(&token, "hostile-events", "big", json!({"bytes": 100})).await;
        assert_eq!(small.status, 200, "{small:?}");
        assert_eq!(host.count("SELECT COUNT(*) FROM events").await, 6);
        host.stop().await;
    }
}
