//! The `points-mall` reference scenario end to end, on each backend: two customers racing for
//! the last item (one wins, the other keeps its points), a physical order cancelled for the
//! points back into their lots and the stock back, fulfilment by the item's partner only.

use lifecircle_tests::{Bundle, TestHost, on_each_backend};
use serde_json::{Value, json};

const MALL: Bundle = Bundle::new("reference/points-mall");
const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");

/// A host with the mall selling `items` in `cn`, a funded check-in budget, and customers who
/// have checked in once (10 points each).
async fn mall(items: Value, customers: &[&str]) -> (TestHost, Vec<String>) {
    let host = TestHost::start(&[MALL, POINTS_DEMO]).await;
    host.configure("cn", "points-mall", json!({"config": {"items": items}}))
        .await;
    host.fund("cn", "points-demo", 1000, "f").await;
    let mut tokens = Vec::new();
    for customer in customers {
        let token = host.token(customer, "cn");
        let checked_in = host
            .call(&token, "points-demo", "check-in", json!(null))
            .await;
        assert_eq!(checked_in.body["points"], 10, "{checked_in:?}");
        tokens.push(token);
    }
    (host, tokens)
}

async fn points(host: &TestHost, token: &str) -> Value {
    host.request(reqwest::Method::GET, "/v1/points", Some(token), None)
        .await
        .body
}

const REDEEM: &str = "/v1/scenarios/points-mall/redeem";

on_each_backend! {
    async fn racing_for_the_last_item_one_wins_and_the_other_keeps_its_points() {
        let pen = json!([{"id": "pen", "title": "Pen", "price_points": 8, "stock": 1,
                          "per_customer_limit": 1, "kind": "virtual", "partner": "gifts"}]);
        let (host, tokens) = mall(pen, &["alice", "bob"]).await;
        let (alice, bob) = (&tokens[0], &tokens[1]);
        let (a, b) = tokio::join!(
            host.post_keyed(REDEEM, alice, json!({"item": "pen"}), "a"),
            host.post_keyed(REDEEM, bob, json!({"item": "pen"}), "b"),
        );
        let (winner, loser, winner_token, loser_token) = if a.status == 200 {
            (&a, &b, alice, bob)
        } else {
            (&b, &a, bob, alice)
        };
        assert_eq!(winner.status, 200, "{a:?} {b:?}");
        assert_eq!(loser.status, 409, "{loser:?}");
        assert!(
            loser.body["scenario_code"] == "sold_out" || loser.code() == "store_conflict",
            "{loser:?}"
        );
        assert_eq!(winner.body["order"]["status"], "fulfilled");
        assert_eq!(winner.body["order"]["code"].as_str().map(str::len), Some(16));
        assert_eq!(points(&host, winner_token).await["available"], 2);
        let kept = points(&host, loser_token).await;
        assert_eq!((kept["available"].clone(), kept["held"].clone()), (json!(10), json!(0)), "{kept}");

        // Without the points: refused before any stock moves.
        let carol = host.token("carol", "cn");
        let poor = host.post_keyed(REDEEM, &carol, json!({"item": "pen"}), "c").await;
        assert_eq!(poor.body["scenario_code"], "points_insufficient", "{poor:?}");
        host.stop().await;
    }

    async fn a_physical_order_is_cancelled_for_the_points_back_until_fulfilled() {
        let umbrella = json!([{"id": "umbrella", "title": "Umbrella", "price_points": 6, "stock": 5,
                               "per_customer_limit": 2, "kind": "physical", "partner": "gifts"}]);
        let (host, tokens) = mall(umbrella, &["alice"]).await;
        let alice = &tokens[0];
        let before = points(&host, alice).await;
        let no_address = host.post_keyed(REDEEM, alice, json!({"item": "umbrella"}), "r0").await;
        assert_eq!(no_address.body["scenario_code"], "address_required", "{no_address:?}");

        let address = json!({"item": "umbrella", "address": "1 Lujiang Rd, Xiamen"});
        let ordered = host.post_keyed(REDEEM, alice, address.clone(), "r1").await;
        assert_eq!(ordered.status, 200, "{ordered:?}");
        assert_eq!(ordered.body["order"]["status"], "awaiting_fulfilment");
        let again = host.post_keyed(REDEEM, alice, address.clone(), "r1").await;
        assert_eq!(again.body["order"]["id"], ordered.body["order"]["id"], "a retry is the same order");
        assert_eq!(points(&host, alice).await["available"], 4);
        let id = ordered.body["order"]["id"].as_str().expect("id").to_owned();

        let cancelled = host.post_keyed("/v1/scenarios/points-mall/cancel", alice, json!({"order": id}), "c1").await;
        assert_eq!(cancelled.body["order"]["status"], "cancelled", "{cancelled:?}");
        // The points are back, in the lot they came from (same expiry).
        assert_eq!(points(&host, alice).await, before);
        let catalog = host.call(alice, "points-mall", "catalog", json!(null)).await;
        assert_eq!(catalog.body["items"][0]["left"], 5, "{catalog:?}");
        assert_eq!(catalog.body["items"][0]["redeemed_by_you"], 0);

        // Fulfilled by its partner, it can no longer be cancelled; another partner cannot.
        let second = host.post_keyed(REDEEM, alice, address, "r2").await;
        let id = second.body["order"]["id"].as_str().expect("id").to_owned();
        let gifts = host.partner_key("gifts", &["points-mall"]).await;
        let other = host.partner_key("other-shop", &["points-mall"]).await;
        let fulfil = "/partner/v1/scenarios/points-mall/fulfil?region=cn";
        let wrong = host.post_keyed(fulfil, &other, json!({"order": id}), "f").await;
        assert_eq!(wrong.body["scenario_code"], "order_not_found", "{wrong:?}");
        let done = host.post_keyed(fulfil, &gifts, json!({"order": id, "tracking": "SF123"}), "f").await;
        assert_eq!(done.body["order"]["status"], "fulfilled", "{done:?}");
        let late = host.post_keyed("/v1/scenarios/points-mall/cancel", alice, json!({"order": id}), "c2").await;
        assert_eq!(late.body["scenario_code"], "already_fulfilled", "{late:?}");
        let listed = host.call(alice, "points-mall", "orders", json!(null)).await;
        assert_eq!(listed.body["orders"].as_array().map(Vec::len), Some(2), "{listed:?}");
        host.stop().await;
    }
}
