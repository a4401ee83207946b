//! The `merchant-coupons` reference scenario end to end, on each backend: stock and
//! per-customer limits under 200 concurrent claims, one redemption of a code under 200
//! concurrent tills, only at its merchant, a points price spent with the claim, and expiry
//! through a job.

use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const COUPONS: Bundle = Bundle::new("reference/merchant-coupons");
const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");
const DAY_MS: i64 = 86_400_000;

fn campaign(id: &str, stock: i64, extra: Value) -> Value {
    let mut campaign = json!({
        "id": id,
        "merchant": "tea-house",
        "title": "¥10 off",
        "discount": {"kind": "fixed", "fen": 1000},
        "min_spend_fen": 5000,
        "stock": stock,
        "per_customer_limit": 1,
        "valid_days": 1,
    });
    if let (Some(campaign), Some(extra)) = (campaign.as_object_mut(), extra.as_object()) {
        campaign.extend(extra.clone());
    }
    campaign
}

/// Sets the region `cn`'s campaigns.
async fn set_campaigns(host: &TestHost, campaigns: Value) {
    host.configure(
        "cn",
        "merchant-coupons",
        json!({"config": {"campaigns": campaigns}}),
    )
    .await;
}

async fn claim(host: &TestHost, token: &str, campaign: &str, key: &str) -> Reply {
    host.post_keyed(
        "/v1/scenarios/merchant-coupons/claim",
        token,
        json!({"campaign": campaign}),
        key,
    )
    .await
}

on_each_backend! {
    async fn two_hundred_claims_on_a_stock_of_ten_give_ten_distinct_codes() {
        let host = TestHost::start(&[COUPONS]).await;
        set_campaigns(&host, json!([campaign("tea", 10, json!({}))])).await;
        let tokens: Vec<String> = (0..200).map(|n| host.token(&format!("c{n}"), "cn")).collect();
        let claims = tokens.iter().map(|token| claim(&host, token, "tea", "k"));
        let replies = futures::future::join_all(claims).await;
        let mut codes: Vec<&str> = replies
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.body["coupon"]["code"].as_str())
            .collect();
        assert_eq!(codes.len(), 10, "{:?}", replies.iter().map(|r| (r.status, r.code().to_owned())).collect::<Vec<_>>());
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 10, "codes are distinct");
        assert!(codes.iter().all(|code| code.len() == 12));
        for reply in replies.iter().filter(|r| r.status != 200) {
            assert_eq!(reply.status, 409, "{reply:?}");
            assert!(
                reply.body["scenario_code"] == "sold_out" || reply.code() == "store_conflict",
                "{reply:?}"
            );
        }
        let listed = host.call(&tokens[0], "merchant-coupons", "campaigns", json!(null)).await;
        assert_eq!(listed.body["campaigns"][0]["left"], 0, "{listed:?}");
        host.stop().await;
    }

    async fn a_code_is_redeemed_once_only_at_its_merchant() {
        let host = TestHost::start(&[COUPONS]).await;
        set_campaigns(&host, json!([campaign("tea", 100, json!({"per_customer_limit": 2}))])).await;
        let tea_house = host.partner_key("tea-house", &["merchant-coupons"]).await;
        let noodle_bar = host.partner_key("noodle-bar", &["merchant-coupons"]).await;
        let alice = host.token("alice", "cn");
        let claimed = claim(&host, &alice, "tea", "a1").await;
        assert_eq!(claimed.status, 200, "{claimed:?}");
        let code = claimed.body["coupon"]["code"].as_str().expect("code").to_owned();
        // A retried claim is the same coupon; the limit counts claims, not retries.
        let again = claim(&host, &alice, "tea", "a1").await;
        assert_eq!(again.body["coupon"]["code"], json!(code));
        assert_eq!(claim(&host, &alice, "tea", "a2").await.status, 200);
        let third = claim(&host, &alice, "tea", "a3").await;
        assert_eq!(third.body["scenario_code"], "limit_reached", "{third:?}");

        let verify = "/partner/v1/scenarios/merchant-coupons/verify?region=cn";
        let checked = host.post_keyed(verify, &tea_house, json!({"code": code.to_lowercase(), "spend_fen": 6000}), "v").await;
        assert_eq!(checked.status, 200, "{checked:?}");
        assert_eq!(checked.body["redeemable"], true);
        assert_eq!(checked.body["discount_fen"], 1000);
        let elsewhere = host.post_keyed(verify, &noodle_bar, json!({"code": code}), "v").await;
        assert_eq!(elsewhere.body["scenario_code"], "coupon_not_found", "{elsewhere:?}");

        let redeem = "/partner/v1/scenarios/merchant-coupons/redeem?region=cn";
        let below = host.post_keyed(redeem, &tea_house, json!({"code": code, "spend_fen": 4000}), "low").await;
        assert_eq!(below.body["scenario_code"], "below_min_spend", "{below:?}");
        let keys: Vec<String> = (0..200).map(|n| format!("till-{n}")).collect();
        let tills = keys
            .iter()
            .map(|key| host.post_keyed(redeem, &tea_house, json!({"code": code, "spend_fen": 6000}), key));
        let replies = futures::future::join_all(tills).await;
        let winners: Vec<(usize, &Reply)> = replies.iter().enumerate().filter(|(_, r)| r.status == 200).collect();
        assert_eq!(winners.len(), 1, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
        assert_eq!(winners[0].1.body, json!({"code": code, "discount_fen": 1000, "pay_fen": 5000}));
        for reply in replies.iter().filter(|r| r.status != 200) {
            assert_eq!(reply.status, 409, "{reply:?}");
        }
        // The winning till's retry answers the same; the coupon shows redeemed.
        let retry = host.post_keyed(redeem, &tea_house, json!({"code": code, "spend_fen": 6000}), &keys[winners[0].0]).await;
        assert_eq!(retry.body, winners[0].1.body);
        // The same key with another spend (or coupon) is a mistake, not a retry.
        let reused = host.post_keyed(redeem, &tea_house, json!({"code": code, "spend_fen": 7000}), &keys[winners[0].0]).await;
        assert_eq!((reused.status, reused.body["scenario_code"].as_str()), (409, Some("idempotency_key_reused")), "{reused:?}");
        let mine = host.call(&alice, "merchant-coupons", "my-coupons", json!(null)).await;
        let statuses: Vec<&str> = mine.body["coupons"]
            .as_array()
            .map(|coupons| coupons.iter().filter_map(|c| c["status"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(statuses.len(), 2, "{mine:?}");
        assert!(statuses.contains(&"redeemed") && statuses.contains(&"issued"), "{mine:?}");
        // A customer cannot redeem.
        let by_customer = host.post_keyed("/v1/scenarios/merchant-coupons/redeem", &alice, json!({"code": code, "spend_fen": 6000}), "x").await;
        assert_eq!(by_customer.body["scenario_code"], "merchant_required", "{by_customer:?}");
        host.stop().await;
    }

    async fn a_points_price_is_spent_with_the_claim_and_unused_coupons_expire() {
        let host = TestHost::start_with(&[COUPONS, POINTS_DEMO], |config| {
            config.jobs.poll_interval_ms = 20;
        })
        .await;
        set_campaigns(&host, json!([campaign("tea", 100, json!({"price_points": 8}))])).await;
        let tea_house = host.partner_key("tea-house", &["merchant-coupons"]).await;
        let admin = host.state.admin_token.clone();
        let funded = host.post_keyed("/admin/v1/budgets/points-demo/cn", &admin, json!({"points": 100}), "f").await;
        assert_eq!(funded.status, 200, "{funded:?}");
        let alice = host.token("alice", "cn");
        let bob = host.token("bob", "cn");
        assert_eq!(host.call(&alice, "points-demo", "check-in", json!(null)).await.body["points"], 10);

        let claimed = claim(&host, &alice, "tea", "a1").await;
        assert_eq!(claimed.status, 200, "{claimed:?}");
        let points = host.request(reqwest::Method::GET, "/v1/points", Some(&alice), None).await;
        assert_eq!(points.body["available"], 2, "{points:?}");
        let poor = claim(&host, &bob, "tea", "b1").await;
        assert_eq!(poor.status, 422, "{poor:?}");
        assert_eq!(poor.body["scenario_code"], "points_insufficient");
        // Bob's failed claim took no stock.
        let listed = host.call(&bob, "merchant-coupons", "campaigns", json!(null)).await;
        assert_eq!(listed.body["campaigns"][0]["left"], 99, "{listed:?}");

        // Two days on, the expiry job has marked the unused coupon expired.
        let code = claimed.body["coupon"]["code"].as_str().expect("code").to_owned();
        let clock = &host.state.registry.clock;
        clock.set_ms(clock.now_ms() + 2 * DAY_MS);
        let mut job_status = Value::Null;
        for _ in 0..500 {
            let jobs = host
                .request(reqwest::Method::GET, "/admin/v1/jobs?plugin=merchant-coupons", Some(&admin), None)
                .await;
            job_status = jobs.body["jobs"][0]["status"].clone();
            if job_status == "done" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(job_status, "done");
        let mut connection = host.state.db.read.acquire().await.expect("connection");
        let stored: Vec<u8> = lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_scalar("SELECT value FROM store_entries WHERE plugin_id = 'merchant-coupons' AND key = $1")
                .bind(format!("coupon/{code}").into_bytes())
                .fetch_one(&mut *c)
                .await
                .expect("the coupon is stored")
        });
        drop(connection);
        let stored: Value = serde_json::from_slice(&stored).expect("JSON");
        assert_eq!(stored["status"], "expired", "{stored}");
        let redeem = "/partner/v1/scenarios/merchant-coupons/redeem?region=cn";
        let late = host.post_keyed(redeem, &tea_house, json!({"code": code, "spend_fen": 6000}), "late").await;
        assert_eq!(late.body["scenario_code"], "expired", "{late:?}");
        host.stop().await;
    }
}
