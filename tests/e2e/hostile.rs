//! Every limit, proved by a hostile plugin: each gets its documented status within its bound
//! while concurrent `hello` calls keep succeeding, and nothing it wrote is kept.

use std::time::{Duration, Instant};

use lifecircle::Config;
use lifecircle::config::LimitOverrides;
use lifecircle_tests::{Bundle, TestHost, exclusive};
use serde_json::{Value, json};

const HELLO: Bundle = Bundle::new("reference/hello");

const HOSTILE: [Bundle; 12] = [
    Bundle::new("hostile/hostile-loop"),
    Bundle::new("hostile/hostile-loop").renamed("hostile-loop-unfueled"),
    Bundle::new("hostile/hostile-sleep"),
    Bundle::new("hostile/hostile-memory"),
    Bundle::new("hostile/hostile-recursion"),
    Bundle::new("hostile/hostile-panic"),
    Bundle::new("hostile/hostile-response"),
    Bundle::new("hostile/hostile-host-calls"),
    Bundle::new("hostile/hostile-log"),
    Bundle::new("hostile/hostile-store"),
    Bundle::new("hostile/hostile-jobs"),
    Bundle::new("hostile/hostile-ledger"),
];

const DEADLINE_MS: u64 = 1_000;

/// Tight limits, so each hostile plugin hits its own limit quickly.
fn tight_limits(config: &mut Config) {
    config.limits.fuel_max = 50_000_000;
    config.limits.deadline_ms = DEADLINE_MS;
    config.limits.memory_bytes_max = 32 << 20;
    config.limits.host_calls_max = 1_000;
    config.limits.log_bytes_max = 16 << 10;
    config.limits.response_bytes_max = 256 << 10;
    config.limits.store_key_bytes_max = 256;
    config.limits.store_value_bytes_max = 64 << 10;
    config.limits.store_keys_max = 100;
    config.jobs.per_call_max = 8;
    config.jobs.payload_bytes_max = 1024;
    config.jobs.ahead_days_max = 30;
    config.ledger.key_bytes_max = 64;
    // The same endless loop with fuel to spare: only the epoch deadline can stop it.
    config.plugin_limits.insert(
        "hostile-loop-unfueled".into(),
        LimitOverrides {
            fuel_max: Some(1 << 50),
            ..LimitOverrides::default()
        },
    );
}

/// (plugin, action, body, status, code)
const CASES: [(&str, &str, &str, u16, &str); 29] = [
    ("hostile-loop", "spin", "null", 504, "plugin_fuel_exhausted"),
    (
        "hostile-loop-unfueled",
        "spin",
        "null",
        504,
        "plugin_deadline_exceeded",
    ),
    (
        "hostile-sleep",
        "sleep",
        "null",
        504,
        "plugin_deadline_exceeded",
    ),
    ("hostile-memory", "grow", "null", 507, "plugin_memory_limit"),
    (
        "hostile-recursion",
        "recurse-native",
        "null",
        507,
        "plugin_stack_overflow",
    ),
    // Overflowing Rust's own shadow stack in linear memory is an out-of-bounds access.
    (
        "hostile-recursion",
        "recurse",
        "null",
        502,
        "plugin_trapped",
    ),
    ("hostile-panic", "panic", "null", 502, "plugin_trapped"),
    ("hostile-panic", "trap", "null", 502, "plugin_trapped"),
    (
        "hostile-response",
        "huge",
        r#"{"bytes": 1048576}"#,
        502,
        "plugin_response_too_large",
    ),
    (
        "hostile-response",
        "huge-refusal",
        r#"{"bytes": 1048576}"#,
        502,
        "plugin_response_too_large",
    ),
    (
        "hostile-response",
        "huge-refusal",
        r#"{"bytes": 100}"#,
        422,
        "scenario_refused",
    ),
    (
        "hostile-response",
        "not-json",
        "null",
        502,
        "plugin_response_invalid",
    ),
    (
        "hostile-host-calls",
        "flood",
        "null",
        502,
        "plugin_host_call_limit",
    ),
    ("hostile-log", "flood", "null", 502, "plugin_log_limit"),
    (
        "hostile-store",
        "many-keys",
        "null",
        507,
        "plugin_store_key_limit",
    ),
    (
        "hostile-store",
        "big-value",
        r#"{"bytes": 1048576}"#,
        507,
        "plugin_store_value_too_large",
    ),
    (
        "hostile-store",
        "big-key",
        r#"{"bytes": 4096}"#,
        507,
        "plugin_store_key_too_large",
    ),
    ("hostile-store", "big-value", r#"{"bytes": 100}"#, 200, ""),
    (
        "hostile-store",
        "many-gets",
        r#"{"keys": 2000}"#,
        502,
        "plugin_host_call_limit",
    ),
    (
        "hostile-store",
        "big-read",
        r#"{"bytes": 65536, "copies": 600}"#,
        507,
        "plugin_memory_limit",
    ),
    ("hostile-jobs", "flood", "null", 507, "plugin_job_limit"),
    (
        "hostile-jobs",
        "big-payload",
        r#"{"bytes": 4096}"#,
        422,
        "scenario_refused",
    ),
    (
        "hostile-jobs",
        "far",
        r#"{"days": 31}"#,
        422,
        "scenario_refused",
    ),
    ("hostile-jobs", "big-payload", r#"{"bytes": 100}"#, 200, ""),
    // Job names starting with `lifecircle.` are the host's own.
    (
        "hostile-jobs",
        "named",
        r#"{"name": "lifecircle.call-again"}"#,
        422,
        "scenario_refused",
    ),
    (
        "hostile-jobs",
        "named",
        r#"{"name": "lifecircle-call-again"}"#,
        200,
        "",
    ),
    // Ledger keys are kept forever: none empty, none past ledger.key_bytes_max.
    (
        "hostile-ledger",
        "spend",
        r#"{"bytes": 0}"#,
        502,
        "plugin_trapped",
    ),
    (
        "hostile-ledger",
        "spend",
        r#"{"bytes": 65}"#,
        502,
        "plugin_trapped",
    ),
    ("hostile-ledger", "spend", r#"{"bytes": 64}"#, 200, ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_plugin_is_contained_while_hello_keeps_answering() {
    let _machine = exclusive().await;
    let mut bundles = HOSTILE.to_vec();
    bundles.push(HELLO);
    let host = TestHost::start_with(&bundles, tight_limits).await;
    let token = host.token("alice", "cn");

    let hostile = async {
        let calls = CASES.iter().map(|(plugin, action, body, _, _)| {
            let host = &host;
            let token = &token;
            async move {
                let started = Instant::now();
                let body: Value = serde_json::from_str(body).expect("case body");
                let reply = host.call(token, plugin, action, body).await;
                (reply, started.elapsed())
            }
        });
        futures::future::join_all(calls).await
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let bystanders = async {
        let clients = (0..4).map(|client| {
            let (host, token, done) = (&host, &token, &done);
            async move {
                let mut answered = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let reply = host
                        .call(token, "hello", "echo", json!({"client": client}))
                        .await;
                    assert_eq!(
                        reply.status, 200,
                        "hello failed beside hostile plugins: {reply:?}"
                    );
                    answered += 1;
                }
                answered
            }
        });
        futures::future::join_all(clients).await
    };
    let (results, answered) = tokio::join!(
        async {
            let results = hostile.await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            results
        },
        bystanders
    );

    for ((plugin, action, _, status, code), (reply, elapsed)) in CASES.iter().zip(&results) {
        assert_eq!(reply.status, *status, "{plugin}.{action}: {reply:?}");
        if !code.is_empty() {
            assert_eq!(reply.code(), *code, "{plugin}.{action}: {reply:?}");
            assert!(
                reply.body["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{plugin}.{action}: {reply:?}"
            );
        }
        // Contained within its own bound: the deadline, plus slack for a loaded machine.
        assert!(
            *elapsed < Duration::from_millis(DEADLINE_MS + 3_000),
            "{plugin}.{action} took {elapsed:?}"
        );
    }
    assert!(
        answered.iter().all(|n| *n > 0),
        "every bystander got answers: {answered:?}"
    );

    let (good_key, _) = results.last().expect("the last case");
    assert_eq!(
        good_key.body,
        json!({"refused": "points_insufficient"}),
        "a key within the limit reaches the ledger's own rules"
    );

    // Nothing a stopped call wrote was kept; only the one good write landed.
    let keys = host
        .count("SELECT COUNT(*) FROM store_entries WHERE plugin_id = 'hostile-store'")
        .await;
    assert_eq!(keys, 1);
    let jobs = host
        .count("SELECT COUNT(*) FROM jobs WHERE plugin_id = 'hostile-jobs'")
        .await;
    assert_eq!(
        jobs, 2,
        "only the two jobs within the limits (a small payload, a name not the host's) were scheduled"
    );
    let reply = host.call(&token, "hello", "count", json!(null)).await;
    assert_eq!(reply.body, json!({"count": 1}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_instance_pool_are_503_host_overloaded() {
    let _machine = exclusive().await;
    let host = TestHost::start_with(&[Bundle::new("hostile/hostile-sleep")], |config| {
        config.engine.instances_max = 2;
        config.limits.deadline_ms = 1_500;
    })
    .await;
    let token = host.token("alice", "cn");
    let calls = (0..4).map(|_| host.call(&token, "hostile-sleep", "sleep", json!(null)));
    let replies = futures::future::join_all(calls).await;
    let overloaded = replies.iter().filter(|r| r.status == 503).count();
    let timed_out = replies.iter().filter(|r| r.status == 504).count();
    assert_eq!(overloaded + timed_out, 4, "{replies:?}");
    assert!(overloaded >= 1, "{replies:?}");
    assert!(timed_out >= 1, "{replies:?}");
    for reply in replies.iter().filter(|r| r.status == 503) {
        assert_eq!(reply.code(), "host_overloaded");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_larger_than_the_limit_is_507_plugin_table_limit() {
    let small_table = HELLO
        .renamed("hello-small-table")
        .with_manifest_tail("[limits]\ntable_elements_max = 1\n");
    let host = TestHost::start(&[small_table]).await;
    let token = host.token("alice", "cn");
    let reply = host
        .call(&token, "hello-small-table", "echo", json!({}))
        .await;
    assert_eq!(reply.status, 507, "{reply:?}");
    assert_eq!(reply.code(), "plugin_table_limit");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_may_tighten_its_own_limits() {
    let tight = HELLO
        .renamed("hello-tight")
        .with_manifest_tail("[limits]\nfuel_max = 1000\n");
    let host = TestHost::start(&[tight]).await;
    let token = host.token("alice", "cn");
    let reply = host.call(&token, "hello-tight", "echo", json!({})).await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.code(), "plugin_fuel_exhausted");
    host.stop().await;
}
