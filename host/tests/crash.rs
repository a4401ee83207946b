//! Durability: the real `lifecircle` binary under concurrent ledger writes, killed with SIGKILL
//! mid-load and restarted on the same database. Every write a client saw acknowledged must be
//! there, and every ledger invariant must hold.
//!
//! Runs on SQLite, and on PostgreSQL when `LIFECIRCLE_TEST_POSTGRES_URL` is set. Needs the
//! reference bundles in `plugins/dist/reference` (`make test` builds them first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

const CLIENTS: usize = 16;
const REGION: &str = "dev";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository")
        .to_owned()
}

/// Where the host keeps its data, and the database URL it uses.
struct Target {
    data_dir: PathBuf,
    database_url: String,
}

fn lifecircle(target: &Target) -> Command {
    let plugins = repo_root().join("plugins/dist/reference");
    assert!(
        plugins.join("points-demo/plugin.wasm").is_file(),
        "build the plugins first: make plugins (make test does)"
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifecircle"));
    command
        .arg("--data-dir")
        .arg(&target.data_dir)
        .env("LIFECIRCLE_DATABASE_URL", &target.database_url)
        .env("LIFECIRCLE_PLUGINS_DIR", plugins)
        .env(
            "LIFECIRCLE_CACHE_DIR",
            repo_root().join("target/lifecircle-test-cache"),
        )
        .env("LIFECIRCLE_LOG", "warn")
        // Not the development port: other hosts may be running.
        .env("LIFECIRCLE_DEV_BILLER_LISTEN", "\"127.0.0.1:0\"");
    command
}

/// Starts `serve` and returns the child, its base URL and the development admin token.
fn start(target: &Target) -> (Child, String, String) {
    let mut child = lifecircle(target)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("lifecircle starts");
    let stdout = child.stdout.take().expect("piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, so the host never writes into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut base = None;
    let mut admin = None;
    while base.is_none() || admin.is_none() {
        let line = receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("serve prints its banner");
        if let Some(url) = line.strip_prefix("Lifecircle is serving on ") {
            base = Some(url.trim().to_owned());
        }
        if let Some(token) = line.strip_prefix("Admin token (development): ") {
            admin = Some(token.trim().to_owned());
        }
    }
    (child, base.expect("url"), admin.expect("admin token"))
}

fn token(target: &Target, customer: &str) -> String {
    let output = lifecircle(target)
        .args(["token", "--customer", customer, "--region", REGION])
        .output()
        .expect("lifecircle token runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    key: &str,
    body: Value,
) -> Option<(u16, Value)> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

async fn kill_mid_load_and_check(target: Target) {
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|i| token(&target, &format!("crash-{i}")))
        .collect();
    let (mut server, base, admin) = start(&target);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let funded = post(
        &client,
        format!("{base}/admin/v1/budgets/points-demo/{REGION}"),
        &admin,
        "crash-fund",
        json!({"points": 1_000_000}),
    )
    .await
    .expect("fund answers");
    assert_eq!(funded.0, 200, "{funded:?}");

    // Each client checks in once, then redeems a point and refunds it, over and over, keeping
    // the id of every write the host acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokens.iter().enumerate().map(|(n, token)| {
        let (client, base, stop, token) =
            (client.clone(), base.clone(), stop.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let scenario = |action: &str| format!("{base}/v1/scenarios/points-demo/{action}");
            match post(
                &client,
                scenario("check-in"),
                &token,
                &format!("c{n}"),
                json!(null),
            )
            .await
            {
                Some((200, body)) => {
                    acknowledged.push(body["posting"].as_str().expect("posting").to_owned())
                }
                other => panic!("check-in failed before the kill: {other:?}"),
            }
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let Some((status, body)) = post(
                    &client,
                    scenario("redeem"),
                    &token,
                    &format!("r{n}-{round}"),
                    json!({"points": 1, "reward": "crash test"}),
                )
                .await
                else {
                    break;
                };
                if status != 200 {
                    continue;
                }
                let posting = body["posting"].as_str().expect("posting").to_owned();
                acknowledged.push(posting.clone());
                match post(
                    &client,
                    scenario("refund"),
                    &token,
                    &format!("f{n}-{round}"),
                    json!({"posting": posting}),
                )
                .await
                {
                    Some((200, body)) => {
                        acknowledged.push(body["reversal"].as_str().expect("reversal").to_owned())
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            acknowledged
        })
    });
    let clients: Vec<_> = clients.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no graceful shutdown, no flush.
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for handle in clients {
        acknowledged.extend(handle.await.expect("client task"));
    }
    assert!(
        acknowledged.len() > CLIENTS * 2,
        "the load ran before the kill: {}",
        acknowledged.len()
    );

    let (mut restarted, base, _) = start(&target);
    let db = lifecircle::db::Db::open(&target.database_url)
        .await
        .expect("open");
    let mut connection = db.read.acquire().await.expect("connection");
    for id in &acknowledged {
        let found: i64 = lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_scalar("SELECT COUNT(*) FROM ledger_postings WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *c)
                .await
                .expect("query")
        });
        assert_eq!(
            found, 1,
            "acknowledged posting {id} is missing after the crash"
        );
    }
    let broken = lifecircle::ledger::audit_invariants(&mut connection.conn())
        .await
        .expect("audit");
    assert!(broken.is_empty(), "{broken:?}");
    drop(connection);
    db.close().await;
    // The restarted host serves.
    let balance = client
        .get(format!("{base}/v1/points"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .expect("answers");
    assert_eq!(balance.status(), 200);
    restarted.kill().expect("stop");
    restarted.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killing_the_host_mid_load_loses_no_acknowledged_write() {
    let data = tempfile::tempdir().expect("tempdir");
    let target = Target {
        database_url: format!("sqlite://{}", data.path().join("lifecircle.db").display()),
        data_dir: data.path().to_owned(),
    };
    kill_mid_load_and_check(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killing_the_host_mid_load_loses_no_acknowledged_write() {
    let Some(base) = std::env::var("LIFECIRCLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: LIFECIRCLE_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("lc_crash_{}", std::process::id());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connect");
    for statement in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&statement)
            .execute(&mut admin)
            .await
            .expect("schema");
    }
    let separator = if base.contains('?') { '&' } else { '?' };
    let data = tempfile::tempdir().expect("tempdir");
    let target = Target {
        database_url: format!("{base}{separator}options[search_path]={schema}"),
        data_dir: data.path().to_owned(),
    };
    kill_mid_load_and_check(target).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop schema");
}
