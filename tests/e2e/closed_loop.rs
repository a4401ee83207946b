//! The closed loop the four reference scenarios make together, on each backend: a customer
//! pays a water bill and earns points, spends points on a spin and wins a coupon (a voucher
//! signed by the host), claims it in the coupons scenario, redeems it at the merchant's till,
//! spends the rest of the points in the mall, cancels the order and has the points back. And
//! the vouchers that carry a prize from one scenario to another cannot be forged, stolen or
//! stretched.

use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const BILLS: Bundle = Bundle::new("reference/utility-payments");
const WHEEL: Bundle = Bundle::new("reference/spin-wheel");
const COUPONS: Bundle = Bundle::new("reference/merchant-coupons");
const MALL: Bundle = Bundle::new("reference/points-mall");
const HOSTILE: Bundle = Bundle::new("hostile/hostile-vouchers");

/// A host running the four scenarios in `cn` against a biller simulator: a bill pays 100
/// points, a spin costs 30 and always wins a coupon of `tea` (5 kept for prizes), the mall
/// sells an umbrella for 60.
async fn setup(extra: &[Bundle]) -> TestHost {
    let mut bundles = vec![BILLS, WHEEL, COUPONS, MALL];
    bundles.extend_from_slice(extra);
    let host = TestHost::start(&bundles).await;
    host.pay_water_bills_at_a_simulator(100).await;
    host.configure(
        "cn",
        "spin-wheel",
        json!({"config": {
            "free_spins_per_day": 0, "cost_points": 30, "daily_limit": 5,
            "prizes": [
                {"id": "tea-coupon", "title": "¥10 off tea", "kind": "coupon", "campaign": "tea",
                 "weight": 1, "stock": 5},
                {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 0}
            ]
        }}),
    )
    .await;
    tea_campaign(&host, 10, 5).await;
    host.configure(
        "cn",
        "points-mall",
        json!({"config": {"items": [{
            "id": "umbrella", "title": "Bank umbrella", "price_points": 60, "stock": 3,
            "per_customer_limit": 1, "kind": "physical", "partner": "gift-logistics"
        }]}}),
    )
    .await;
    host
}

/// Sets the coupons of `cn`: campaign `tea` of `stock` coupons, `prize_stock` of them kept for
/// the wheel's prizes, whose vouchers it honours.
async fn tea_campaign(host: &TestHost, stock: i64, prize_stock: i64) {
    host.configure(
        "cn",
        "merchant-coupons",
        json!({"config": {
            "voucher_issuers": ["spin-wheel"],
            "campaigns": [{
                "id": "tea", "merchant": "tea-house", "title": "¥10 off",
                "discount": {"kind": "fixed", "fen": 1000}, "min_spend_fen": 5000,
                "stock": stock, "prize_stock": prize_stock, "per_customer_limit": 1,
                "valid_days": 7
            }]
        }}),
    )
    .await;
}

async fn points(host: &TestHost, token: &str) -> i64 {
    let reply = host
        .request(reqwest::Method::GET, "/v1/points", Some(token), None)
        .await;
    reply.body["total"].as_i64().expect("a points total")
}

async fn post(host: &TestHost, token: &str, path: &str, body: Value, key: &str) -> Reply {
    host.post_keyed(path, token, body, key).await
}

/// Spins and returns the won voucher.
async fn win_voucher(host: &TestHost, token: &str, key: &str) -> String {
    let spin = post(
        host,
        token,
        "/v1/scenarios/spin-wheel/spin",
        json!(null),
        key,
    )
    .await;
    assert_eq!(spin.status, 200, "{spin:?}");
    assert_eq!(spin.body["outcome"], "won", "{spin:?}");
    assert_eq!(spin.body["kind"], "coupon", "{spin:?}");
    assert_eq!(spin.body["campaign"], "tea", "{spin:?}");
    spin.body["voucher"]
        .as_str()
        .expect("a coupon prize carries its voucher")
        .to_owned()
}

async fn claim(host: &TestHost, token: &str, voucher: &str, key: &str) -> Reply {
    post(
        host,
        token,
        "/v1/scenarios/merchant-coupons/claim",
        json!({"campaign": "tea", "voucher": voucher}),
        key,
    )
    .await
}

on_each_backend! {
    async fn a_bill_pays_for_a_spin_whose_coupon_is_redeemed_and_the_rest_goes_to_the_mall() {
        let host = setup(&[]).await;
        let token = host.token("lin", "cn");

        // Pay a bill: settled with the biller, 100 points.
        let paid = post(
            &host,
            &token,
            "/v1/scenarios/utility-payments/pay",
            json!({"biller": "water", "account": "0591-1", "fen": 4250}),
            "bill-1",
        )
        .await;
        assert_eq!(paid.status, 200, "{paid:?}");
        assert_eq!(paid.body["receipt"]["status"], "paid", "{paid:?}");
        assert_eq!(points(&host, &token).await, 100);

        // Spin with 30 of them and win a coupon of `tea`.
        let voucher = win_voucher(&host, &token, "spin-1").await;
        assert_eq!(points(&host, &token).await, 70);
        let prizes = host.call(&token, "spin-wheel", "my-prizes", json!(null)).await;
        assert_eq!(prizes.body["prizes"][0]["voucher"], voucher.as_str(), "{prizes:?}");

        // Claim it: free, from the stock kept for prizes, outside the per-customer limit.
        let claimed = claim(&host, &token, &voucher, "claim-1").await;
        assert_eq!(claimed.status, 200, "{claimed:?}");
        let coupon = claimed.body["coupon"].clone();
        let code = coupon["code"].as_str().expect("a code").to_owned();
        assert_eq!(coupon["campaign"], "tea");
        assert_eq!(points(&host, &token).await, 70, "a prize costs no points");
        // The same voucher again, under another key: the same coupon, not a second one.
        let again = claim(&host, &token, &voucher, "claim-2").await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body["coupon"]["code"], code.as_str(), "{again:?}");
        let campaigns = host.call(&token, "merchant-coupons", "campaigns", json!(null)).await;
        assert_eq!(campaigns.body["campaigns"][0]["prizes_left"], 4, "{campaigns:?}");
        assert_eq!(campaigns.body["campaigns"][0]["left"], 5, "{campaigns:?}");
        // The customer's own limit is untouched: an ordinary claim still works.
        let bought = post(
            &host,
            &token,
            "/v1/scenarios/merchant-coupons/claim",
            json!({"campaign": "tea"}),
            "claim-3",
        )
        .await;
        assert_eq!(bought.status, 200, "{bought:?}");
        assert_ne!(bought.body["coupon"]["code"], code.as_str());

        // Another customer cannot use it.
        let other = host.token("wang", "cn");
        let stolen = claim(&host, &other, &voucher, "claim-1").await;
        assert_eq!(stolen.status, 422, "{stolen:?}");
        assert_eq!(stolen.body["scenario_code"], "voucher_not_yours", "{stolen:?}");

        // Redeem it at the merchant's till.
        let till = host.partner_key("tea-house", &["merchant-coupons"]).await;
        let redeemed = post(
            &host,
            &till,
            "/partner/v1/scenarios/merchant-coupons/redeem?region=cn",
            json!({"code": code, "spend_fen": 6800}),
            "till-1",
        )
        .await;
        assert_eq!(redeemed.status, 200, "{redeemed:?}");
        assert_eq!(redeemed.body["discount_fen"], 1000, "{redeemed:?}");
        assert_eq!(redeemed.body["pay_fen"], 5800, "{redeemed:?}");

        // Spend 60 of the remaining 70 in the mall, cancel, and have them back.
        let ordered = post(
            &host,
            &token,
            "/v1/scenarios/points-mall/redeem",
            json!({"item": "umbrella", "address": "1 Lujiang Rd, Xiamen"}),
            "mall-1",
        )
        .await;
        assert_eq!(ordered.status, 200, "{ordered:?}");
        assert_eq!(points(&host, &token).await, 10);
        let order = ordered.body["order"]["id"].clone();
        let cancelled = post(
            &host,
            &token,
            "/v1/scenarios/points-mall/cancel",
            json!({"order": order}),
            "cancel-1",
        )
        .await;
        assert_eq!(cancelled.status, 200, "{cancelled:?}");
        assert_eq!(cancelled.body["order"]["status"], "cancelled", "{cancelled:?}");
        let balance = host
            .request(reqwest::Method::GET, "/v1/points", Some(&token), None)
            .await;
        assert_eq!(balance.body["total"], 70, "{balance:?}");
        // Back into the lot the bill's award made, with its expiry.
        assert_eq!(balance.body["expiring"].as_array().map(Vec::len), Some(1), "{balance:?}");
        assert_eq!(balance.body["expiring"][0]["points"], 70, "{balance:?}");

        let mut connection = host.state.db.read.acquire().await.expect("connection");
        let broken = lifecircle::ledger::audit_invariants(&mut connection.conn())
            .await
            .expect("audit");
        assert!(broken.is_empty(), "ledger invariants broken: {broken:?}");
        drop(connection);
        host.stop().await;
    }

    async fn a_voucher_is_honoured_once_and_prizes_never_pass_the_stock() {
        let host = TestHost::start(&[WHEEL, COUPONS]).await;
        host.configure(
            "cn",
            "spin-wheel",
            json!({"config": {
                "free_spins_per_day": 5, "daily_limit": 5,
                "prizes": [{"id": "tea-coupon", "title": "¥10 off tea", "kind": "coupon",
                            "campaign": "tea", "weight": 1, "stock": 3}]
            }}),
        )
        .await;
        tea_campaign(&host, 4, 2).await;
        let token = host.token("lin", "cn");

        // Ten claims race with one voucher under ten keys: one coupon, the same for all that
        // land; the others are told to retry.
        let voucher = win_voucher(&host, &token, "spin-1").await;
        let keys: Vec<String> = (0..10).map(|n| format!("race-{n}")).collect();
        let replies =
            futures::future::join_all(keys.iter().map(|key| claim(&host, &token, &voucher, key)))
                .await;
        let mut codes: Vec<&str> = replies
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.body["coupon"]["code"].as_str())
            .collect();
        assert!(!codes.is_empty(), "{replies:?}");
        codes.dedup();
        assert_eq!(codes.len(), 1, "one coupon for one voucher: {replies:?}");
        for reply in replies.iter().filter(|r| r.status != 200) {
            assert_eq!(reply.status, 409, "{reply:?}");
        }
        let mine = host.call(&token, "merchant-coupons", "my-coupons", json!(null)).await;
        assert_eq!(mine.body["coupons"].as_array().map(Vec::len), Some(1), "{mine:?}");
        let campaigns = host.call(&token, "merchant-coupons", "campaigns", json!(null)).await;
        assert_eq!(campaigns.body["campaigns"][0]["prizes_left"], 1, "{campaigns:?}");

        // The second prize takes the last coupon kept for prizes; the wheel's third (its stock
        // is set higher than the campaign keeps) finds none.
        let second = win_voucher(&host, &token, "spin-2").await;
        assert_eq!(claim(&host, &token, &second, "c-2").await.status, 200);
        let third = win_voucher(&host, &token, "spin-3").await;
        let refused = claim(&host, &token, &third, "c-3").await;
        assert_eq!(refused.status, 409, "{refused:?}");
        assert_eq!(refused.body["scenario_code"], "sold_out", "{refused:?}");

        // Ordinary claims take the other two; then the campaign is out, whatever an admin
        // does to `prize_stock` afterwards.
        for customer in ["wang", "zhao"] {
            let buyer = host.token(customer, "cn");
            let bought = post(
                &host,
                &buyer,
                "/v1/scenarios/merchant-coupons/claim",
                json!({"campaign": "tea"}),
                "buy",
            )
            .await;
            assert_eq!(bought.status, 200, "{bought:?}");
        }
        tea_campaign(&host, 4, 4).await;
        let late = claim(&host, &token, &third, "c-4").await;
        assert_eq!(late.status, 409, "{late:?}");
        assert_eq!(late.body["scenario_code"], "sold_out", "never more than the stock: {late:?}");
        let campaigns = host.call(&token, "merchant-coupons", "campaigns", json!(null)).await;
        assert_eq!(campaigns.body["campaigns"][0]["prizes_left"], 0, "{campaigns:?}");
        assert_eq!(campaigns.body["campaigns"][0]["left"], 0, "{campaigns:?}");
        host.stop().await;
    }

    async fn vouchers_cannot_be_forged_stolen_or_stretched() {
        let host = TestHost::start_with(&[WHEEL, COUPONS, HOSTILE], |config| {
            config.vouchers.validity_days_max = 10;
        })
        .await;
        host.configure(
            "cn",
            "spin-wheel",
            json!({"config": {
                "free_spins_per_day": 5, "daily_limit": 5, "coupon_claim_days": 10,
                "prizes": [{"id": "tea-coupon", "title": "¥10 off tea", "kind": "coupon",
                            "campaign": "tea", "weight": 1, "stock": 1}]
            }}),
        )
        .await;
        tea_campaign(&host, 3, 1).await;
        let token = host.token("lin", "cn");
        let mint = |days: u64, label: &str| {
            host.call(
                &token,
                "hostile-vouchers",
                "mint",
                json!({"recipient": "merchant-coupons", "label": label, "days": days}),
            )
        };

        // Longer than `vouchers.validity_days_max`: refused by the host.
        let stretched = mint(11, "coupon:tea").await;
        assert_eq!(stretched.status, 422, "{stretched:?}");
        assert_eq!(stretched.body["scenario_code"], "voucher_not_issued", "{stretched:?}");
        assert!(
            stretched.body["message"].as_str().unwrap_or("").contains("10 days"),
            "{stretched:?}"
        );

        // A look-alike of the wheel's prize from a plugin the coupons do not trust.
        let minted = mint(10, "coupon:tea").await;
        assert_eq!(minted.status, 200, "{minted:?}");
        let look_alike = minted.body["voucher"].as_str().expect("a voucher").to_owned();
        let refused = claim(&host, &token, &look_alike, "c-1").await;
        assert_eq!(refused.status, 400, "{refused:?}");
        assert_eq!(refused.body["scenario_code"], "voucher_not_accepted", "{refused:?}");

        // The wheel's own voucher: another plugin cannot open it, an altered copy is no
        // voucher, and only its prize stock backs it.
        let voucher = win_voucher(&host, &token, "spin-1").await;
        let opened = host
            .call(&token, "hostile-vouchers", "open", json!({"voucher": voucher}))
            .await;
        assert_eq!(opened.status, 400, "{opened:?}");
        assert_eq!(opened.body["scenario_code"], "voucher_invalid", "{opened:?}");
        let mut altered = voucher.clone().into_bytes();
        let middle = altered.len() / 2;
        altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        let forged = claim(&host, &token, &altered, "c-2").await;
        assert_eq!(forged.status, 400, "{forged:?}");
        assert_eq!(forged.body["scenario_code"], "voucher_invalid", "{forged:?}");
        let claimed = claim(&host, &token, &voucher, "c-3").await;
        assert_eq!(claimed.status, 200, "{claimed:?}");

        // The wheel's only coupon prize is gone: the next spin gets the documented fallback.
        let next = post(&host, &token, "/v1/scenarios/spin-wheel/spin", json!(null), "spin-2").await;
        assert_eq!(next.body["outcome"], "thanks", "{next:?}");
        assert_eq!(next.body["reason"], "no prize left", "{next:?}");

        // An expired voucher: the host's clock moves past its one day.
        let fresh = host.token("wang", "cn");
        host.configure(
            "cn",
            "spin-wheel",
            json!({"config": {
                "free_spins_per_day": 5, "daily_limit": 5, "coupon_claim_days": 1,
                "prizes": [{"id": "tea-coupon", "title": "¥10 off tea", "kind": "coupon",
                            "campaign": "tea", "weight": 1}]
            }}),
        )
        .await;
        let late = win_voucher(&host, &fresh, "spin-3").await;
        let clock = &host.state.registry.clock;
        clock.set_ms(clock.now_ms() + 86_400_000);
        let expired = claim(&host, &fresh, &late, "c-4").await;
        assert_eq!(expired.status, 422, "{expired:?}");
        assert_eq!(expired.body["scenario_code"], "voucher_expired", "{expired:?}");
        host.stop().await;
    }
}
