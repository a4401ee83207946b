//! The `spin-wheel` reference scenario end to end, on each backend: 1,000 spins follow the
//! weights and never give a prize beyond its stock, every draw verifies against the revealed
//! seed; the guarantee after misses, the daily limit, paid spins, a cash prize paid by a job
//! through payments (until the bank confirms it, when the bank answers late or declines), and
//! a budget that runs out (never over-awarded).

use lifecircle_tests::core_bank::CoreBank;
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const WHEEL: Bundle = Bundle::new("reference/spin-wheel");
const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");
const DAY_MS: i64 = 86_400_000;

async fn set_wheel(host: &TestHost, wheel: Value) {
    host.configure("cn", "spin-wheel", json!({ "config": wheel }))
        .await;
}

async fn fund(host: &TestHost, plugin: &str, points: i64) {
    host.fund("cn", plugin, points, &format!("fund-{plugin}"))
        .await;
}

async fn spin(host: &TestHost, token: &str, key: &str) -> Reply {
    host.post_keyed("/v1/scenarios/spin-wheel/spin", token, json!(null), key)
        .await
}

on_each_backend! {
    async fn a_thousand_spins_follow_weights_and_stock_and_every_draw_verifies() {
        let host = TestHost::start(&[WHEEL]).await;
        set_wheel(&host, json!({
            "free_spins_per_day": 1000, "daily_limit": 1000, "cost_points": 0, "guarantee_after": 0,
            "prizes": [
                {"id": "five", "title": "5 points", "kind": "points", "amount": 5, "weight": 30, "stock": 10000},
                {"id": "one", "title": "1 point", "kind": "points", "amount": 1, "weight": 20, "stock": 50},
                {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 50}
            ]
        })).await;
        fund(&host, "spin-wheel", 100_000).await;
        let alice = host.token("alice", "cn");
        let mut counts = std::collections::BTreeMap::new();
        let mut draws = Vec::new();
        for n in 0..1000 {
            let reply = spin(&host, &alice, &format!("s{n}")).await;
            assert_eq!(reply.status, 200, "spin {n}: {reply:?}");
            *counts.entry(reply.body["prize"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
            draws.push(reply.request_id.clone());
        }
        // "one" runs out of stock (50) early and leaves the wheel: never beyond its stock.
        assert_eq!(counts.get("one"), Some(&50), "{counts:?}");
        // Then 30:50 between "five" and "thanks" (about 30:20:50 before): about 337 of "five";
        // the bounds are five standard deviations.
        let five = counts.get("five").copied().unwrap_or(0);
        assert!((260..=420).contains(&five), "{counts:?}");
        assert_eq!(counts.values().sum::<i32>(), 1000);
        let points = host.request(reqwest::Method::GET, "/v1/points", Some(&alice), None).await;
        assert_eq!(points.body["total"], json!(5 * five + 50), "{points:?}");

        // Once the day is over every draw checks out against the revealed seed.
        let clock = &host.state.registry.clock;
        clock.set_ms(clock.now_ms() + 2 * DAY_MS);
        for draw in &draws {
            let record = host
                .request(reqwest::Method::GET, &format!("/v1/fairness/draws/{draw}"), None, None)
                .await;
            assert_eq!(record.body["verification"]["verified"], true, "{record:?}");
            assert_eq!(record.body["draws"].as_array().map(Vec::len), Some(1), "{record:?}");
        }
        host.stop().await;
    }

    async fn the_guarantee_limits_paid_spins_and_a_cash_prize_paid_by_a_job() {
        let host = TestHost::start_with(&[WHEEL, POINTS_DEMO], |config| {
            config.jobs.poll_interval_ms = 20;
        })
        .await;
        set_wheel(&host, json!({
            "free_spins_per_day": 1, "daily_limit": 4, "cost_points": 3, "guarantee_after": 2,
            "payout_working_days": 0,
            "prizes": [
                {"id": "red-packet", "title": "¥8.88", "kind": "cash", "amount": 888, "weight": 1, "stock": 10},
                {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 1000000}
            ]
        })).await;
        fund(&host, "points-demo", 1000).await;
        let alice = host.token("alice", "cn");
        assert_eq!(host.call(&alice, "points-demo", "check-in", json!(null)).await.body["points"], 10);

        // Free, then paid: two misses (a win is one in a million), then the guarantee.
        let first = spin(&host, &alice, "a").await;
        assert_eq!((first.body["paid_with"].clone(), first.body["outcome"].clone()), (json!("free"), json!("thanks")), "{first:?}");
        let second = spin(&host, &alice, "b").await;
        assert_eq!((second.body["paid_with"].clone(), second.body["outcome"].clone()), (json!("points"), json!("thanks")), "{second:?}");
        let third = spin(&host, &alice, "c").await;
        assert_eq!(third.body["outcome"], "won", "guaranteed after 2 misses: {third:?}");
        assert_eq!(third.body["prize"], "red-packet");
        let again = spin(&host, &alice, "c").await;
        assert_eq!(again.body["draw"], third.body["draw"], "a retried spin is the same spin");
        let points = host.request(reqwest::Method::GET, "/v1/points", Some(&alice), None).await;
        assert_eq!(points.body["available"], 4, "two paid spins of 3: {points:?}");
        assert_eq!(spin(&host, &alice, "d").await.status, 200);
        let fifth = spin(&host, &alice, "e").await;
        assert_eq!(fifth.body["scenario_code"], "daily_limit_reached", "{fifth:?}");

        // The red packet reaches alice's account through the payout job.
        let job = third.body["payout_job"].as_str().expect("a payout job").to_owned();
        let admin = host.state.admin_token.clone();
        let mut status = Value::Null;
        for _ in 0..500 {
            let found = host.request(reqwest::Method::GET, &format!("/admin/v1/jobs/{job}"), Some(&admin), None).await;
            status = found.body["status"].clone();
            if status == "done" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status, "done");
        let account = host
            .request(reqwest::Method::GET, "/admin/v1/sandbox/accounts/alice", Some(&admin), None)
            .await;
        assert_eq!(account.body["balance_minor"], 100_000 + 888, "{account:?}");
        host.stop().await;
    }

    async fn a_cash_prize_is_paid_once_even_when_the_bank_answers_late_or_declines() {
        let bank = CoreBank::default();
        let bank_url = bank.serve().await;
        let host = TestHost::start_with(&[WHEEL], |config| {
            config.jobs.poll_interval_ms = 20;
            // A run that fails is not retried: only the job's own next runs go on paying.
            config.jobs.attempts_max = 1;
            CoreBank::connect(config, &bank_url);
        })
        .await;
        set_wheel(&host, json!({
            "free_spins_per_day": 1, "daily_limit": 1, "payout_working_days": 0, "payout_poll_seconds": 0,
            "prizes": [
                {"id": "red-packet", "title": "¥8.88", "kind": "cash", "amount": 888, "weight": 1},
                {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 0}
            ]
        })).await;
        let admin = host.state.admin_token.clone();
        // slow-*: the bank answers after the host stopped waiting; frozen-*: it declines the
        // first payout.
        for (customer, expected) in [("slow-carl", vec!["succeeded"]), ("frozen-dora", vec!["failed", "succeeded"])] {
            let token = host.token(customer, "cn");
            let won = spin(&host, &token, "s1").await;
            assert_eq!(won.body["outcome"], "won", "{won:?}");
            let mut statuses = Vec::new();
            for _ in 0..500 {
                let payments = host.payments_of(customer).await;
                statuses = payments.iter().map(|p| p["status"].as_str().unwrap_or("").to_owned()).collect();
                if statuses.last().is_some_and(|s| s == "succeeded") {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(statuses, expected, "{customer}");
            let payouts = bank.received().iter().filter(|o| o["account"] == customer).count();
            assert_eq!(payouts, expected.len(), "{customer}: one order per payout");
        }
        let failed = host
            .request(reqwest::Method::GET, "/admin/v1/jobs?plugin=spin-wheel&status=failed", Some(&admin), None)
            .await;
        assert_eq!(failed.body["jobs"], json!([]), "no run of the payout failed: {failed:?}");
        host.stop().await;
    }

    async fn an_empty_budget_turns_points_prizes_into_thanks() {
        let host = TestHost::start(&[WHEEL]).await;
        set_wheel(&host, json!({
            "free_spins_per_day": 5, "daily_limit": 5,
            "prizes": [
                {"id": "fifty", "title": "50 points", "kind": "points", "amount": 50, "weight": 1, "stock": 100},
                {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 0}
            ]
        })).await;
        fund(&host, "spin-wheel", 60).await;
        let alice = host.token("alice", "cn");
        let first = spin(&host, &alice, "a").await;
        assert_eq!(first.body["outcome"], "won", "{first:?}");
        let second = spin(&host, &alice, "b").await;
        assert_eq!(
            (second.body["outcome"].clone(), second.body["reason"].clone()),
            (json!("thanks"), json!("budget_exhausted")),
            "{second:?}"
        );
        let wheel = host.call(&alice, "spin-wheel", "wheel", json!(null)).await;
        assert_eq!(wheel.body["prizes"][0]["left"], 99, "the refused prize's stock stays: {wheel:?}");
        let budget = host
            .request(reqwest::Method::GET, "/admin/v1/budgets/spin-wheel/cn", Some(&host.state.admin_token), None)
            .await;
        assert_eq!(budget.body["remaining"], 10, "{budget:?}");
        host.stop().await;
    }
}
