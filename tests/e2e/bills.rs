//! The `utility-payments` reference scenario end to end, on each backend, against the repo's
//! biller simulator: a bill paid (points once settled), the biller failing (refunded), timing
//! out and answering pending (settled by the polling job), pending then failing (refunded):
//! no money lost, exactly one of settled or refunded, points only for settled payments. And
//! against a core-banking server that answers late or declines a refund: a receipt says
//! `refunded` only once the bank has refunded, and polling goes on until the receipt is final.

use lifecircle_tests::core_bank::CoreBank;
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const BILLS: Bundle = Bundle::new("reference/utility-payments");

/// A host whose region `cn` pays its bills at the biller simulator, 10 points a payment.
async fn setup() -> TestHost {
    let host = TestHost::start_with(&[BILLS], |config| {
        config.jobs.poll_interval_ms = 20;
        config.outbound.timeout_ms = 500;
    })
    .await;
    host.pay_water_bills_at_a_simulator(10).await;
    host
}

async fn pay(host: &TestHost, token: &str, account: &str, key: &str) -> Reply {
    host.request_with_headers(
        reqwest::Method::POST,
        "/v1/scenarios/utility-payments/pay",
        Some(token),
        Some(
            json!({"biller": "water", "account": account, "fen": 4250})
                .to_string()
                .into_bytes(),
        ),
        &[("idempotency-key", key)],
    )
    .await
}

async fn points(host: &TestHost, token: &str) -> Value {
    host.request(reqwest::Method::GET, "/v1/points", Some(token), None)
        .await
        .body["total"]
        .clone()
}

/// Waits until the customer's only receipt is final (not pending, not refunding), and
/// returns it.
async fn final_receipt(host: &TestHost, token: &str) -> Value {
    let mut receipt = Value::Null;
    for _ in 0..500 {
        let listed = host
            .call(token, "utility-payments", "receipts", json!(null))
            .await;
        receipt = listed.body["receipts"][0].clone();
        if receipt["status"] != "pending" && receipt["status"] != "refunding" {
            return receipt;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the receipt did not become final: {receipt}");
}

on_each_backend! {
    async fn a_bill_ends_paid_or_refunded_whatever_the_biller_does() {
        let host = setup().await;

        // Inquiry, then a bill paid at once: debited, points awarded.
        let alice = host.token("alice", "cn");
        let due = host.call(&alice, "utility-payments", "inquire", json!({"biller": "water", "account": "0591-1"})).await;
        assert_eq!(due.body, json!({"due_fen": 4250, "period": "2026-11"}), "{due:?}");
        let none = host.call(&alice, "utility-payments", "inquire", json!({"biller": "water", "account": "nobill-1"})).await;
        assert_eq!(none.body, json!({"no_bill": true}));
        let paid = pay(&host, &alice, "0591-1", "a1").await;
        assert_eq!(paid.body["receipt"]["status"], "paid", "{paid:?}");
        assert_eq!(pay(&host, &alice, "0591-1", "a1").await.body["receipt"]["id"], paid.body["receipt"]["id"]);
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 4250);
        assert_eq!(points(&host, &alice).await, 10);

        // The biller refuses: refunded, no points.
        let bob = host.token("bob", "cn");
        let refused = pay(&host, &bob, "fail-1", "b1").await;
        assert_eq!(refused.body["receipt"]["status"], "refunded", "{refused:?}");
        assert_eq!(host.sandbox_balance("bob").await, 100_000);
        assert_eq!(points(&host, &bob).await, 0);

        // The biller answers too late: pending, then settled by the polling job.
        let carol = host.token("carol", "cn");
        let late = pay(&host, &carol, "slow-1", "c1").await;
        assert_eq!(late.body["receipt"]["status"], "pending", "{late:?}");
        assert_eq!(final_receipt(&host, &carol).await["status"], "paid");
        assert_eq!(host.sandbox_balance("carol").await, 100_000 - 4250);
        assert_eq!(points(&host, &carol).await, 10);

        // The biller answers pending, and confirms on its third status query.
        let dave = host.token("dave", "cn");
        let pending = pay(&host, &dave, "pending-1", "d1").await;
        assert_eq!(pending.body["receipt"]["status"], "pending", "{pending:?}");
        assert_eq!(final_receipt(&host, &dave).await["status"], "paid");
        assert_eq!(points(&host, &dave).await, 10);

        // The biller's proxy answers 503, but the biller has the payment: never refunded on
        // an unknown answer; the polling job finds it confirmed.
        let judy = host.token("judy", "cn");
        let busy = pay(&host, &judy, "busy-1", "j1").await;
        assert_eq!(busy.body["receipt"]["status"], "pending", "{busy:?}");
        assert_eq!(final_receipt(&host, &judy).await["status"], "paid");
        assert_eq!(host.sandbox_balance("judy").await, 100_000 - 4250);
        assert_eq!(points(&host, &judy).await, 10);

        // Pending, and the status queries are refused (403) at first: an answer that is not
        // the biller's word on the payment is asked again, never refunded.
        let kim = host.token("kim", "cn");
        pay(&host, &kim, "locked-1", "k1").await;
        assert_eq!(final_receipt(&host, &kim).await["status"], "paid");
        assert_eq!(host.sandbox_balance("kim").await, 100_000 - 4250);

        // Pending, then refused: refunded, no points.
        let erin = host.token("erin", "cn");
        pay(&host, &erin, "pendingfail-1", "e1").await;
        assert_eq!(final_receipt(&host, &erin).await["status"], "refunded");
        assert_eq!(host.sandbox_balance("erin").await, 100_000);
        assert_eq!(points(&host, &erin).await, 0);

        // Not enough money: declined, nothing moved. (Funding opens frank's account with what
        // it funds, not the sandbox's opening balance.)
        let poor = host.token("frank", "cn");
        let admin = host.state.admin_token.clone();
        let drained = host
            .request(
                reqwest::Method::POST,
                "/admin/v1/sandbox/accounts/frank/fund",
                Some(&admin),
                Some(json!({"amount_minor": 1_000, "currency": "CNY"}).to_string().into_bytes()),
            )
            .await;
        assert_eq!(drained.body["balance_minor"], 1_000, "{drained:?}");
        let declined = pay(&host, &poor, "0591-2", "f1").await;
        assert_eq!(declined.body["receipt"]["status"], "declined", "{declined:?}");
        assert_eq!(declined.body["receipt"]["reason"], "insufficient_funds");
        host.stop().await;
    }

    async fn a_bill_paid_as_the_points_budget_runs_out_is_kept_with_its_receipt() {
        // 1,000 points a payment from a budget of 1,000: one award for eight payments at once.
        let host = TestHost::start_with(&[BILLS], |config| config.jobs.poll_interval_ms = 20).await;
        host.pay_water_bills_at_a_simulator(1000).await;
        let customers: Vec<String> = (0..8).map(|n| format!("payer-{n}")).collect();
        let tokens: Vec<String> = customers.iter().map(|c| host.token(c, "cn")).collect();
        let pays = tokens.iter().map(|token| pay(&host, token, "0591-7", "p1"));
        let replies = futures::future::join_all(pays).await;
        // Each call made its debit before its commit found the budget taken by another: the
        // host runs such a call again, which pays no points and keeps the receipt.
        for reply in &replies {
            assert_eq!((reply.status, reply.body["receipt"]["status"].as_str()), (200, Some("paid")), "{reply:?}");
        }
        let points: Vec<i64> = replies.iter().filter_map(|r| r.body["receipt"]["points"].as_i64()).collect();
        assert_eq!(points.iter().filter(|p| **p == 1000).count(), 1, "{points:?}");
        assert_eq!(points.iter().sum::<i64>(), 1000, "{points:?}");
        for (customer, token) in customers.iter().zip(&tokens) {
            assert_eq!(host.sandbox_balance(customer).await, 100_000 - 4250, "{customer} debited once");
            let listed = host.call(token, "utility-payments", "receipts", json!(null)).await;
            assert_eq!(listed.body["receipts"].as_array().map(Vec::len), Some(1), "{customer}: {listed:?}");
        }
        host.stop().await;
    }

    async fn a_receipt_is_final_only_once_the_bank_has_moved_the_money() {
        let bank = CoreBank::default();
        let bank_url = bank.serve().await;
        let host = TestHost::start_with(&[BILLS], |config| {
            config.jobs.poll_interval_ms = 20;
            config.outbound.timeout_ms = 500;
            CoreBank::connect(config, &bank_url);
        })
        .await;
        host.pay_water_bills_at_a_simulator(10).await;

        // The debit is pending, then the biller answers pending to the poll's first request:
        // the next rounds go on polling (each round has a job of its own) until it confirms.
        let gina = host.token("slow-gina", "cn");
        let pending = pay(&host, &gina, "pending-1", "g1").await;
        assert_eq!(pending.body["receipt"]["status"], "pending", "{pending:?}");
        assert_eq!(final_receipt(&host, &gina).await["status"], "paid");
        assert_eq!(points(&host, &gina).await, 10);

        // The biller refuses, and the bank answers the refund late: the receipt says
        // refunded only when the bank's refund has succeeded.
        let hank = host.token("slow-hank", "cn");
        pay(&host, &hank, "fail-1", "h1").await;
        let receipt = final_receipt(&host, &hank).await;
        assert_eq!(receipt["status"], "refunded", "{receipt}");
        let payments = host.payments_of("slow-hank").await;
        let kinds: Vec<(&str, &str)> = payments.iter().map(|p| (p["kind"].as_str().unwrap_or(""), p["status"].as_str().unwrap_or(""))).collect();
        assert_eq!(kinds, [("debit", "succeeded"), ("refund", "succeeded")], "{payments:?}");
        assert_eq!(Some(&receipt["refund"]), payments.last().map(|p| &p["id"]));
        assert_eq!(points(&host, &hank).await, 0);

        // The bank declines the first refund: the receipt is refunding, and the refund is
        // asked again (a new key) until it is done; the money is refunded once.
        let ivan = host.token("frozen-ivan", "cn");
        let refunding = pay(&host, &ivan, "fail-2", "i1").await;
        assert_eq!(refunding.body["receipt"]["status"], "refunding", "{refunding:?}");
        let receipt = final_receipt(&host, &ivan).await;
        assert_eq!((receipt["status"].as_str(), receipt["refund_attempts"].as_u64()), (Some("refunded"), Some(2)), "{receipt}");
        let payments = host.payments_of("frozen-ivan").await;
        let kinds: Vec<(&str, &str)> = payments.iter().map(|p| (p["kind"].as_str().unwrap_or(""), p["status"].as_str().unwrap_or(""))).collect();
        assert_eq!(kinds, [("debit", "succeeded"), ("refund", "failed"), ("refund", "succeeded")], "{payments:?}");
        let refund_orders = bank.received().iter().filter(|o| o["kind"] == "refund" && o["account"] == "frozen-ivan").count();
        assert_eq!(refund_orders, 2, "one declined, one done");
        host.stop().await;
    }
}
