//! Scheduled jobs end to end on each backend, with `hello`'s reminders: a job runs for the
//! customer who scheduled it, lands only with its call, survives a restart and runs once with
//! two hosts on one database, is retried with backoff and then given up, waits for working
//! days, and can be cancelled by the plugin or an admin.

use std::time::Duration;

use lifecircle::Config;
use lifecircle::calendar::Calendar;
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use serde_json::{Value, json};

const HELLO: Bundle = Bundle::new("reference/hello");
const HOUR_MS: i64 = 3_600_000;

fn quick_jobs(config: &mut Config) {
    config.jobs.poll_interval_ms = 20;
    config.jobs.backoff_initial_ms = 100;
    config.jobs.backoff_max_ms = 1_000;
    config.jobs.attempts_max = 3;
}

async fn remind(host: &TestHost, token: &str, body: Value, key: &str) -> Reply {
    host.request_with_headers(
        reqwest::Method::POST,
        "/v1/scenarios/hello/remind",
        Some(token),
        Some(body.to_string().into_bytes()),
        &[("idempotency-key", key)],
    )
    .await
}

async fn reminded(host: &TestHost, token: &str) -> i64 {
    let reply = host.call(token, "hello", "reminders", json!(null)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["reminded"].as_i64().expect("reminded")
}

/// Waits until `customer`'s reminder count is `expected` (or fails after 20 s).
async fn await_reminded(host: &TestHost, token: &str, expected: i64) {
    for _ in 0..1000 {
        if reminded(host, token).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reminded(host, token).await, expected, "reminders never ran");
}

async fn job(host: &TestHost, id: &str) -> Value {
    let reply = host
        .request(
            reqwest::Method::GET,
            &format!("/admin/v1/jobs/{id}"),
            Some(&host.state.admin_token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// Waits until job `id` has `status` (or fails after 20 s).
async fn await_status(host: &TestHost, id: &str, status: &str) -> Value {
    let mut found = job(host, id).await;
    for _ in 0..1000 {
        if found["status"] == status {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        found = job(host, id).await;
    }
    panic!("job {id} never became {status}: {found}");
}

/// The count of open jobs that the pending-jobs limit reads (kept by triggers) is the number
/// of `hello`'s jobs that are pending or running.
async fn assert_open_jobs_counted(host: &TestHost) {
    let kept = host
        .count("SELECT COALESCE((SELECT open_jobs FROM jobs_usage WHERE plugin_id = 'hello'), 0)")
        .await;
    let open = host
        .count(
            "SELECT COUNT(*) FROM jobs WHERE plugin_id = 'hello' \
             AND status IN ('pending', 'running')",
        )
        .await;
    assert_eq!(kept, open, "the kept count of hello's open jobs");
}

fn advance(host: &TestHost, ms: i64) {
    let clock = &host.state.registry.clock;
    clock.set_ms(clock.now_ms() + ms);
}

on_each_backend! {
    async fn a_job_runs_once_for_the_customer_who_scheduled_it() {
        let host = TestHost::start_with(&[HELLO], quick_jobs).await;
        let alice = host.token("alice", "cn-fj");
        let bob = host.token("bob", "cn-fj");
        let scheduled = remind(&host, &alice, json!({}), "r1").await;
        assert_eq!(scheduled.status, 200, "{scheduled:?}");
        let id = scheduled.body["job"].as_str().expect("job id").to_owned();
        // The same key is the same job.
        let again = remind(&host, &alice, json!({}), "r1").await;
        assert_eq!(again.body["job"], scheduled.body["job"]);

        await_reminded(&host, &alice, 1).await;
        assert_eq!(reminded(&host, &bob).await, 0);
        let done = await_status(&host, &id, "done").await;
        assert_eq!(done["attempts"], 1);
        assert_eq!(done["region"], "cn-fj");
        assert_eq!(done["scheduled_by"], scheduled.request_id);
        assert_eq!(done["caller"], host.state.identity.pseudonym("hello", "alice"));
        assert_eq!(host.count("SELECT COUNT(*) FROM jobs").await, 1);

        // The run is an invocation like any other, for the same customer.
        let records = host
            .request(
                reqwest::Method::GET,
                "/admin/v1/invocations?plugin=hello&customer=alice",
                Some(&host.state.admin_token),
                None,
            )
            .await;
        let runs: Vec<&Value> = records.body["invocations"]
            .as_array()
            .map(|all| all.iter().filter(|r| r["action"] == "job:remind").collect())
            .unwrap_or_default();
        assert_eq!(runs.len(), 1, "{records:?}");
        assert_eq!(runs[0]["outcome"], "ok");
        assert_eq!(runs[0]["caller_kind"], "customer");
        assert_open_jobs_counted(&host).await;
        host.stop().await;
    }

    async fn a_job_lands_only_with_its_call() {
        let host = TestHost::start_with(&[HELLO], quick_jobs).await;
        let alice = host.token("alice", "cn");
        let failed = host.call(&alice, "hello", "remind-then-fail", json!({})).await;
        assert_eq!(failed.status, 422, "{failed:?}");
        assert_eq!(host.count("SELECT COUNT(*) FROM jobs").await, 0);

        // A plugin cancels a pending job with its call's commit.
        let later = remind(&host, &alice, json!({"after_seconds": 3600}), "later").await;
        let id = later.body["job"].as_str().expect("job id").to_owned();
        let cancelled = host.call(&alice, "hello", "cancel-reminder", json!({"job": id})).await;
        assert_eq!(cancelled.body, json!({"cancelled": true}), "{cancelled:?}");
        let again = host.call(&alice, "hello", "cancel-reminder", json!({"job": id})).await;
        assert_eq!(again.body, json!({"cancelled": false}));
        assert_eq!(job(&host, &id).await["status"], "cancelled");
        // Another region's customer cannot touch it.
        let elsewhere = host.token("carol", "cn-gd");
        let other = remind(&host, &alice, json!({"after_seconds": 3600}), "other").await;
        let other_id = other.body["job"].as_str().expect("job id").to_owned();
        let refused = host
            .call(&elsewhere, "hello", "cancel-reminder", json!({"job": other_id}))
            .await;
        assert_eq!(refused.body, json!({"cancelled": false}));
        assert_open_jobs_counted(&host).await;
        host.stop().await;
    }

    async fn a_failing_job_is_retried_with_backoff_then_given_up() {
        let host = TestHost::start_with(&[HELLO], quick_jobs).await;
        let alice = host.token("alice", "cn");
        // Always fails: given up after jobs.attempts_max = 3.
        let broken = remind(&host, &alice, json!({"fail_attempts": 99}), "broken").await;
        let broken_id = broken.body["job"].as_str().expect("job id").to_owned();
        let failed = await_status(&host, &broken_id, "failed").await;
        assert_eq!(failed["attempts"], 3);
        let error = failed["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("reminder_failed_on_purpose"), "{failed}");

        // Each attempt came after the one before by at least the backoff: 100 ms, then 200.
        // (A failed attempt's record is written a moment after the job is updated.)
        let mut starts: Vec<i64> = Vec::new();
        for _ in 0..100 {
            let records = host
                .request(
                    reqwest::Method::GET,
                    "/admin/v1/invocations?plugin=hello&limit=100",
                    Some(&host.state.admin_token),
                    None,
                )
                .await;
            starts = records.body["invocations"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .filter(|r| r["action"] == "job:remind")
                        .filter_map(|r| r["started_at_ms"].as_i64())
                        .collect()
                })
                .unwrap_or_default();
            if starts.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        starts.sort_unstable();
        assert_eq!(starts.len(), 3, "{starts:?}");
        assert!(starts[1] - starts[0] >= 100, "{starts:?}");
        assert!(starts[2] - starts[1] >= 200, "{starts:?}");

        // Fails once, then succeeds on the retry, and its effect lands once.
        let flaky = remind(&host, &alice, json!({"fail_attempts": 1}), "flaky").await;
        let flaky_id = flaky.body["job"].as_str().expect("job id").to_owned();
        let done = await_status(&host, &flaky_id, "done").await;
        assert_eq!(done["attempts"], 2);
        assert_eq!(reminded(&host, &alice).await, 1);
        assert_open_jobs_counted(&host).await;
        host.stop().await;
    }

    async fn a_job_waits_for_the_working_day_after_a_holiday() {
        let now = lifecircle::ledger::now_ms();
        let calendar_config = {
            let probe = Calendar::new(&Default::default()).expect("calendar");
            let tomorrow = probe.day_of(now).next();
            let mut config = lifecircle::calendar::CalendarConfig::default();
            config.holidays.insert("cn".into(), vec![tomorrow.to_string()]);
            config
        };
        let calendar = Calendar::new(&calendar_config).expect("calendar");
        let host = TestHost::start_with(&[HELLO], |config| {
            quick_jobs(config);
            config.calendar = calendar_config.clone();
        })
        .await;
        let alice = host.token("alice", "cn-fj");
        let scheduled = remind(&host, &alice, json!({"working_days": 1}), "wd").await;
        assert_eq!(scheduled.status, 200, "{scheduled:?}");
        let id = scheduled.body["job"].as_str().expect("job id").to_owned();
        let pending = job(&host, &id).await;
        let created = pending["created_at_ms"].as_i64().expect("created");
        let due = pending["due_at_ms"].as_i64().expect("due");
        assert_eq!(Some(due), calendar.add_working_days("cn-fj", created, 1));
        // Tomorrow is a holiday: at least two days on, never on a holiday or weekend.
        assert!(due >= created + 48 * HOUR_MS, "{pending}");
        assert!(calendar.is_working_day("cn-fj", calendar.day_of(due)));

        // Not before it is due...
        advance(&host, due - 60_000 - host.state.registry.clock.now_ms());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(job(&host, &id).await["status"], "pending");
        // ...and then it runs.
        advance(&host, 120_000);
        await_status(&host, &id, "done").await;
        assert_eq!(reminded(&host, &alice).await, 1);
        host.stop().await;
    }

    async fn jobs_survive_a_restart_and_run_once_with_two_hosts() {
        let host = TestHost::start_with(&[HELLO], |config| {
            quick_jobs(config);
            config.limits.deadline_ms = 1_000;
            config.jobs.lease_ms = 2_500;
            config.outbound.wait_ms_max = 100;
        })
        .await;
        let alice = host.token("alice", "cn");
        let mut ids = Vec::new();
        for n in 0..20 {
            let reply = remind(&host, &alice, json!({"after_seconds": 3600}), &format!("k{n}")).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            ids.push(reply.body["job"].as_str().expect("job id").to_owned());
        }
        let kept = host.stop_and_keep().await;

        // Two hosts on the one database, an hour later: each job runs on one of them, once.
        let first = TestHost::start_in(kept).await;
        let second = first.start_replica().await;
        advance(&first, 2 * HOUR_MS);
        advance(&second, 2 * HOUR_MS);
        let alice = first.token("alice", "cn");
        await_reminded(&first, &alice, 20).await;
        for id in &ids {
            let done = await_status(&first, id, "done").await;
            assert_eq!(done["attempts"], 1, "{done}");
        }
        assert_eq!(
            first
                .count("SELECT COUNT(*) FROM invocations WHERE action = 'job:remind'")
                .await,
            20
        );
        second.stop().await;
        first.stop().await;
    }

    async fn admins_list_and_cancel_pending_jobs() {
        let host = TestHost::start_with(&[HELLO], quick_jobs).await;
        let alice = host.token("alice", "cn-fj");
        let later = remind(&host, &alice, json!({"after_seconds": 3600}), "a").await;
        let id = later.body["job"].as_str().expect("job id").to_owned();
        let admin = host.state.admin_token.clone();
        let listed = host
            .request(reqwest::Method::GET, "/admin/v1/jobs?plugin=hello&status=pending", Some(&admin), None)
            .await;
        assert_eq!(listed.body["jobs"][0]["id"], json!(id), "{listed:?}");
        let bad = host
            .request(reqwest::Method::GET, "/admin/v1/jobs?status=sleeping", Some(&admin), None)
            .await;
        assert_eq!(bad.status, 400, "{bad:?}");

        // A branch admin of another province may not cancel it.
        let other = host
            .admin_token("guangdong", lifecircle::identity::admins::Role::BranchAdmin, Some("cn-gd"))
            .await;
        let path = format!("/admin/v1/jobs/{id}/cancel");
        let body = || Some(json!({"reason": "campaign withdrawn"}).to_string().into_bytes());
        let refused = host.request(reqwest::Method::POST, &path, Some(&other), body()).await;
        assert_eq!(refused.status, 403, "{refused:?}");
        let no_reason = host
            .request(reqwest::Method::POST, &path, Some(&admin), Some(b"{\"reason\": \" \"}".to_vec()))
            .await;
        assert_eq!(no_reason.status, 400, "{no_reason:?}");

        let cancelled = host.request(reqwest::Method::POST, &path, Some(&admin), body()).await;
        assert_eq!(cancelled.status, 200, "{cancelled:?}");
        assert_eq!(cancelled.body["status"], "cancelled");
        assert!(
            cancelled.body["last_error"].as_str().is_some_and(|e| e.contains("campaign withdrawn")),
            "{cancelled:?}"
        );
        let twice = host.request(reqwest::Method::POST, &path, Some(&admin), body()).await;
        assert_eq!(twice.status, 409, "{twice:?}");
        assert_eq!(twice.code(), "job_not_pending");
        let audit = host
            .request(reqwest::Method::GET, "/admin/v1/audit", Some(&admin), None)
            .await;
        assert_eq!(audit.body["entries"][0]["action"], "job.cancel", "{audit:?}");

        // A cancelled job never runs.
        advance(&host, 2 * HOUR_MS);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(reminded(&host, &alice).await, 0);
        assert_open_jobs_counted(&host).await;
        let missing = host
            .request(reqwest::Method::GET, "/admin/v1/jobs/nope", Some(&admin), None)
            .await;
        assert_eq!(missing.status, 404, "{missing:?}");
        assert_eq!(missing.code(), "job_not_found");
        host.stop().await;
    }

    async fn a_plugins_pending_jobs_are_bounded() {
        let host = TestHost::start_with(&[HELLO], |config| {
            quick_jobs(config);
            config.jobs.pending_max = 2;
        })
        .await;
        let alice = host.token("alice", "cn");
        // Concurrent calls each see room for their job; the commit lets two of them in.
        let keys: Vec<String> = (0..8).map(|n| format!("race{n}")).collect();
        let races = keys
            .iter()
            .map(|key| remind(&host, &alice, json!({"after_seconds": 3600}), key));
        let replies = futures::future::join_all(races).await;
        let scheduled = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(scheduled, 2, "{replies:?}");
        for reply in replies.iter().filter(|r| r.status != 200) {
            assert!(
                reply.code() == "plugin_job_limit" || reply.body["scenario_code"] == "job_not_scheduled",
                "{reply:?}"
            );
        }
        // Once the limit is known, the plugin is told so when it schedules.
        let third = remind(&host, &alice, json!({"after_seconds": 3600}), "c").await;
        assert_eq!(third.status, 422, "{third:?}");
        assert_eq!(third.body["scenario_code"], "job_not_scheduled");
        assert_eq!(host.count("SELECT COUNT(*) FROM jobs").await, 2);
        assert_open_jobs_counted(&host).await;

        // A cancelled job frees its place.
        let first = replies.iter().find(|r| r.status == 200).expect("a scheduled job");
        let id = first.body["job"].as_str().expect("job id");
        let cancelled = host
            .request(
                reqwest::Method::POST,
                &format!("/admin/v1/jobs/{id}/cancel"),
                Some(&host.state.admin_token),
                Some(json!({"reason": "make room"}).to_string().into_bytes()),
            )
            .await;
        assert_eq!(cancelled.status, 200, "{cancelled:?}");
        let fourth = remind(&host, &alice, json!({"after_seconds": 3600}), "d").await;
        assert_eq!(fourth.status, 200, "{fourth:?}");
        assert_open_jobs_counted(&host).await;
        host.stop().await;
    }
}
