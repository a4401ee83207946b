//! `payments` end to end on each backend, with `hello`'s miniature bill payment: the sandbox
//! bank (idempotent retries, concurrent retries, insufficient funds, refunds of a bill the
//! biller did not confirm, never refunding more than was paid) and the HTTP connector against a
//! real core-banking server speaking the documented protocol (timeouts leave a payment
//! pending; asking again settles it; a transfer the bank never received is sent again).

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use lifecircle_tests::core_bank::CoreBank;
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const HELLO: Bundle = Bundle::new("reference/hello");
const HOSTILE: Bundle = Bundle::new("hostile/hostile-payments");

/// A biller: `/confirm` confirms every payment, `/reject` fails.
async fn biller() -> String {
    let app = Router::new()
        .route(
            "/confirm",
            post(|| async { axum::Json(json!({"confirmed": true})) }),
        )
        .route("/reject", post(|| async { StatusCode::BAD_GATEWAY }));
    serve(app).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn pay_bill(host: &TestHost, token: &str, fen: i64, biller_url: &str, key: &str) -> Reply {
    money(
        host,
        token,
        "pay-bill",
        json!({"fen": fen, "biller_url": biller_url}),
        key,
    )
    .await
}

async fn money(host: &TestHost, token: &str, action: &str, body: Value, key: &str) -> Reply {
    host.request_with_headers(
        reqwest::Method::POST,
        &format!("/v1/scenarios/hello/{action}"),
        Some(token),
        Some(body.to_string().into_bytes()),
        &[("idempotency-key", key)],
    )
    .await
}

on_each_backend! {
    async fn bill_payments_are_idempotent_and_refunded_when_the_biller_fails() {
        let biller = biller().await;
        let host = TestHost::start(&[HELLO]).await;
        let alice = host.token("alice", "cn");
        let confirm = format!("{biller}/confirm");
        let reject = format!("{biller}/reject");

        // Paid once, however often it is retried, also concurrently.
        let paid = pay_bill(&host, &alice, 4250, &confirm, "k1").await;
        assert_eq!(paid.status, 200, "{paid:?}");
        assert_eq!(paid.body["outcome"], "paid");
        let debit = paid.body["payment"]["id"].as_str().expect("id").to_owned();
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 4250);
        let retries = (0..5).map(|_| pay_bill(&host, &alice, 4250, &confirm, "k1"));
        for retry in futures::future::join_all(retries).await {
            assert_eq!(retry.body["payment"]["id"], json!(debit), "{retry:?}");
            assert_eq!(retry.body["outcome"], "paid");
        }
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 4250);
        let reused = pay_bill(&host, &alice, 9999, &confirm, "k1").await;
        assert_eq!(reused.status, 409, "{reused:?}");
        assert_eq!(reused.body["scenario_code"], "payment_key_reused");

        // The biller fails: the debit is refunded, once.
        let refunded = pay_bill(&host, &alice, 3000, &reject, "k2").await;
        assert_eq!(refunded.body["outcome"], "refunded", "{refunded:?}");
        assert_eq!(refunded.body["refund"]["status"], "succeeded");
        let again = pay_bill(&host, &alice, 3000, &reject, "k2").await;
        assert_eq!(again.body["refund"]["id"], refunded.body["refund"]["id"]);
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 4250);

        // Not enough money: declined, nothing moved.
        let declined = pay_bill(&host, &alice, 200_000, &confirm, "k3").await;
        assert_eq!(declined.body["outcome"], "declined", "{declined:?}");
        assert_eq!(declined.body["payment"]["reason"], "insufficient_funds");
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 4250);
        let too_large = pay_bill(&host, &alice, 6_000_000, &confirm, "k4").await;
        assert_eq!(too_large.body["scenario_code"], "amount_too_large", "{too_large:?}");

        // Refunds never add up to more than the debit, even when they race.
        let refunds = ["r1", "r2", "r3"].map(|key| {
            money(&host, &alice, "refund", json!({"payment": debit, "fen": 2000}), key)
        });
        let replies = futures::future::join_all(refunds).await;
        let succeeded = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(succeeded, 2, "{replies:?}");
        let over = replies.iter().find(|r| r.status != 200).expect("one refused");
        assert_eq!(over.status, 409, "{over:?}");
        assert_eq!(over.body["scenario_code"], "refund_exceeds_payment");
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 250);
        let failed_debit = declined.body["payment"]["id"].as_str().expect("id");
        let not_refundable = money(&host, &alice, "refund", json!({"payment": failed_debit, "fen": 1}), "r4").await;
        assert_eq!(not_refundable.body["scenario_code"], "payment_not_refundable");

        // Another customer cannot see or refund alice's payment.
        let bob = host.token("bob", "cn");
        let foreign = money(&host, &bob, "refund", json!({"payment": debit, "fen": 1}), "r5").await;
        assert_eq!(foreign.body["scenario_code"], "payment_not_found", "{foreign:?}");

        let listed = host
            .request(reqwest::Method::GET, "/admin/v1/payments?customer=alice", Some(&host.state.admin_token), None)
            .await;
        // Debit k1, debit k2 and its refund, the declined k3, two refunds.
        assert_eq!(listed.body["payments"].as_array().map(Vec::len), Some(6), "{listed:?}");
        host.stop().await;
    }

    async fn the_http_connector_speaks_the_documented_protocol() {
        let biller = biller().await;
        let bank = CoreBank::default();
        let bank_url = bank.serve().await;
        let host = TestHost::start_with(&[HELLO], |config| {
            CoreBank::connect(config, &bank_url);
        })
        .await;
        let confirm = format!("{biller}/confirm");

        let alice = host.token("alice", "cn");
        let paid = pay_bill(&host, &alice, 4250, &confirm, "k1").await;
        assert_eq!(paid.body["outcome"], "paid", "{paid:?}");
        let id = paid.body["payment"]["id"].as_str().expect("id").to_owned();
        let received = bank.received();
        assert_eq!(
            received[0],
            json!({"idempotency_key": id, "kind": "debit", "account": "alice",
                   "amount_minor": 4250, "currency": "CNY", "memo": "bill"})
        );

        let poor = host.token("poor-carol", "cn");
        let declined = pay_bill(&host, &poor, 100, &confirm, "k2").await;
        assert_eq!(declined.body["payment"]["reason"], "insufficient_funds", "{declined:?}");

        // The bank answers after the timeout: the payment is pending; asking again settles it.
        let slow = host.token("slow-dave", "cn");
        let pending = pay_bill(&host, &slow, 500, &confirm, "k3").await;
        assert_eq!(pending.body["outcome"], "pending", "{pending:?}");
        let id = pending.body["payment"]["id"].as_str().expect("id").to_owned();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let settled = money(&host, &slow, "payment", json!({"payment": id}), "s1").await;
        assert_eq!(settled.body["payment"]["status"], "succeeded", "{settled:?}");

        // The bank failed before it received the transfer: asking again sends it.
        let flaky = host.token("flaky-erin", "cn");
        let pending = pay_bill(&host, &flaky, 700, &confirm, "k4").await;
        assert_eq!(pending.body["outcome"], "pending", "{pending:?}");
        let id = pending.body["payment"]["id"].as_str().expect("id").to_owned();
        let settled = money(&host, &flaky, "payment", json!({"payment": id}), "s2").await;
        assert_eq!(settled.body["payment"]["status"], "succeeded", "{settled:?}");
        assert_eq!(bank.executed(&id), 1, "sent again, executed once");
        host.stop().await;
    }

    async fn a_call_makes_at_most_payments_per_call_max_payments() {
        let host = TestHost::start_with(&[HOSTILE], |config| {
            config.payments.per_call_max = 3;
        })
        .await;
        let token = host.token("alice", "cn");
        let reply = host.call(&token, "hostile-payments", "flood", json!(null)).await;
        assert_eq!(reply.body, json!({"made": 3, "stopped_by": "too_many_payments"}), "{reply:?}");
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 3);
        host.stop().await;
    }

    async fn a_call_that_fails_after_paying_is_run_again_until_it_lands() {
        let host = TestHost::start_with(&[HOSTILE], |config| {
            config.jobs.poll_interval_ms = 20;
            config.jobs.backoff_initial_ms = 1_000;
            config.jobs.backoff_max_ms = 1_000;
            config.jobs.attempts_max = 5;
        })
        .await;
        let clock = &host.state.registry.clock;
        let start_ms = clock.now_ms();
        clock.set_ms(start_ms);
        let token = host.token("alice", "cn");
        // The plugin traps after its debit for the next minute.
        let body = json!({"fen": 250, "trap_until_s": start_ms / 1000 + 60});
        let trapped = pay_then_trap(&host, &token, &body, "bill-1").await;
        assert_eq!(trapped.code(), "plugin_trapped", "{trapped:?}");
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 250, "debited");
        // Answered only once the host's job to run the call again is on disk.
        let pending = hostile_jobs(&host, "pending").await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0]["name"], "lifecircle.call-again");
        assert_eq!(pending[0]["scheduled_by"], trapped.request_id);
        assert_eq!(pending[0]["caller_kind"], "customer");
        assert_eq!(pending[0]["due_at_ms"], start_ms + 1_000);
        let id = pending[0]["id"].as_str().expect("job id").to_owned();
        // Still trapping: the run fails and is retried after the backoff.
        clock.set_ms(start_ms + 1_000);
        let retried = await_job(&host, &id, |j| j["attempts"] == 1 && j["status"] == "pending").await;
        assert!(
            retried["last_error"].as_str().is_some_and(|e| e.starts_with("plugin_trapped")),
            "{retried}"
        );
        // Past the trap: the call lands, with the payment it was answered the first time.
        clock.set_ms(start_ms + 61_000);
        let done = await_job(&host, &id, |j| j["status"] == "done").await;
        assert_eq!(done["attempts"], 2, "{done}");
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 250, "debited once");
        let payments = host.payments_of("alice").await;
        assert_eq!(payments.len(), 1, "{payments:?}");
        assert_eq!(
            host.count("SELECT COUNT(*) FROM store_entries WHERE plugin_id = 'hostile-payments'")
                .await,
            1,
            "the receipt was kept"
        );
        // The receipt is the one the app's retry finds: the same payment, no new debit.
        let retry = pay_then_trap(&host, &token, &body, "bill-1").await;
        assert_eq!(retry.status, 200, "{retry:?}");
        assert_eq!(retry.body["payment"], payments[0]["id"]);
        assert_eq!(host.sandbox_balance("alice").await, 100_000 - 250);
        assert!(hostile_jobs(&host, "pending").await.is_empty());

        // A call that failed before any payment is not run again.
        let nothing = json!({"fen": 0, "trap_until_s": 0});
        let refused = pay_then_trap(&host, &token, &nothing, "bill-2").await;
        assert_eq!(refused.status, 422, "{refused:?}");
        assert_eq!(
            host.count("SELECT COUNT(*) FROM jobs WHERE plugin_id = 'hostile-payments'").await,
            1
        );
        host.stop().await;
    }
}

async fn pay_then_trap(host: &TestHost, token: &str, body: &Value, key: &str) -> Reply {
    let path = "/v1/scenarios/hostile-payments/pay-then-trap";
    host.post_keyed(path, token, body.clone(), key).await
}

/// `hostile-payments`' jobs with `status`, newest first.
async fn hostile_jobs(host: &TestHost, status: &str) -> Vec<Value> {
    let path = format!("/admin/v1/jobs?plugin=hostile-payments&status={status}");
    let reply = host
        .request(
            reqwest::Method::GET,
            &path,
            Some(&host.state.admin_token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["jobs"].as_array().expect("jobs").clone()
}

/// Job `id` once `wanted` holds of it (or a panic after 20 s).
async fn await_job(host: &TestHost, id: &str, wanted: fn(&Value) -> bool) -> Value {
    let path = format!("/admin/v1/jobs/{id}");
    let mut found = Value::Null;
    for _ in 0..1000 {
        found = host
            .request(
                reqwest::Method::GET,
                &path,
                Some(&host.state.admin_token),
                None,
            )
            .await
            .body;
        if wanted(&found) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never got where the test waits for: {found}");
}
