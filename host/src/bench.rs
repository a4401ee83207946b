//! `lifecircle bench`: measures the engine path and the HTTP path and prints tables.
//!
//! Engine: a fresh instance of `hello` per call (instantiate + `handle("echo")` + drop, with
//! the per-call setup the server does), on one thread and on two threads at once.
//!
//! HTTP: `POST /v1/scenarios/hello/echo` on a real Lifecircle server against a bare axum route
//! returning the same JSON, in the same process and the same run, each with the same number of
//! keep-alive connections on loopback. The ratio says what the host costs over plain axum.
//!
//! Ledger: `POST /v1/scenarios/points-demo/churn` (spend 1 point, award 1 point back from one
//! hot budget account, committed durably) with one customer per connection, on SQLite and, when
//! given a PostgreSQL URL, on PostgreSQL beside `pgbench -b tpcb-like` on the same server.
//!
//! Scenarios: `spin-wheel/spin` and `merchant-coupons/claim` of the reference plugins over
//! HTTP on SQLite, one customer per connection.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::identity::Customer;
use crate::invocation::prepare;
use crate::metrics::{CommitTotals, Metrics};
use crate::runtime::{self, Caller};
use crate::{AppState, build, serve};

/// The request body every case sends.
const BODY: &str = r#"{"hello":"world","amount":42}"#;

/// One of the tables `lifecircle bench` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    /// The engine path: fresh instance + `handle` + drop, 1 and 2 threads.
    Engine,
    /// `hello/echo` over HTTP beside a bare axum route.
    Http,
    /// Token verification and the customer import.
    Identity,
    /// `points-demo/churn` on SQLite (and PostgreSQL beside pgbench, given a URL).
    Ledger,
    /// The reference scenarios' hot actions.
    Scenarios,
}

/// What `lifecircle bench` measures, and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long each case is measured.
    pub duration: Duration,
    /// Concurrent connections of the HTTP cases.
    pub connections: usize,
    /// A PostgreSQL server for the ledger case's PostgreSQL rows and pgbench.
    pub postgres: Option<String>,
    /// Lines of the generated customer file the import case imports.
    pub import_lines: u64,
    /// The tables to print; empty for all.
    pub tables: Vec<Table>,
}

/// Runs every case of the chosen tables for `settings.duration` each and prints them. Uses
/// a temporary data directory; the plugins come from `config.plugins_dir`, which must contain
/// `hello`.
pub async fn run(mut config: Config, settings: Settings) -> anyhow::Result<()> {
    let Settings {
        duration,
        connections,
        postgres,
        import_lines,
        tables,
    } = settings;
    let wants = |table: Table| tables.is_empty() || tables.contains(&table);
    let data = tempfile::tempdir()?;
    config.data_dir = data.path().to_owned();
    config.database_url = None;
    // The bench's customers live in `cn`.
    config.registry.dev_regions = vec!["cn".into()];
    let template = config.clone();
    let state = build(config).await?;
    anyhow::ensure!(
        state.registry.deployment("hello", "cn").is_some(),
        "the plugins directory has no `hello` bundle; build the plugins first (make plugins)"
    );

    if wants(Table::Engine) {
        engine_table(&state, duration);
    }
    if wants(Table::Http) {
        http_table(&state, connections, duration).await?;
    }
    if wants(Table::Identity) {
        identity_cases(duration, import_lines).await?;
        println!();
    }
    if wants(Table::Ledger) {
        println!(
            "Ledger: POST /v1/scenarios/points-demo/churn (spend 1 + award 1 from one hot budget), {connections} connections, {} s per row",
            duration.as_secs()
        );
        print_header("backend", "calls/s");
        let sqlite = ledger_case(&state, connections, duration).await?;
        sqlite.print("lifecircle on SQLite");
        match &postgres {
            Some(url) => postgres_rows(url, template, connections, duration).await?,
            None => println!("(pass --postgres URL for the PostgreSQL rows and pgbench)"),
        }
    }
    if wants(Table::Scenarios) {
        scenario_cases(&state, connections, duration).await?;
    }
    Ok(())
}

/// The ledger table's PostgreSQL rows: the ledger case on a fresh schema of the server at
/// `url`, then pgbench on the same server, and their ratio.
async fn postgres_rows(
    url: &str,
    mut config: Config,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let schema = "lc_bench";
    recreate_schema(url, schema).await?;
    let data = tempfile::tempdir()?;
    config.data_dir = data.path().to_owned();
    let separator = if url.contains('?') { '&' } else { '?' };
    config.database_url = Some(format!("{url}{separator}options[search_path]={schema}"));
    let state = build(config).await?;
    let on_postgres = Measured {
        // The server process writes PostgreSQL's log and tables, not this one.
        disk_kb_per_call: None,
        ..ledger_case(&state, connections, duration).await?
    };
    on_postgres.print("lifecircle on PostgreSQL");
    match pgbench(url, connections, duration).await {
        Ok((tps, latency_ms)) => {
            println!(
                "{:>34} {:>12.0} {:>10} {:>10}   (average latency {latency_ms:.1} ms)",
                format!("pgbench tpcb-like, {connections} clients"),
                tps,
                "-",
                "-"
            );
            println!(
                "ratio lifecircle on PostgreSQL / pgbench: {:.2}",
                on_postgres.rate / tps
            );
        }
        Err(error) => println!("pgbench did not run: {error:#}"),
    }
    Ok(())
}

/// The engine table: `hello.echo` in a fresh instance per call on one and two threads.
fn engine_table(state: &AppState, duration: Duration) {
    println!(
        "Engine: fresh instance of `hello` per call (instantiate + handle(echo) + drop), {} s per row",
        duration.as_secs()
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "threads", "calls/s", "p50 µs", "p99 µs"
    );
    let one = engine_case(state, 1, duration);
    println!(
        "{:>8} {:>12.0} {:>10.1} {:>10.1}",
        1, one.rate, one.p50_us, one.p99_us
    );
    let two = engine_case(state, 2, duration);
    println!(
        "{:>8} {:>12.0} {:>10.1} {:>10.1}",
        2, two.rate, two.p50_us, two.p99_us
    );
    println!("scaling 1 → 2 threads: {:.2}x", two.rate / one.rate);
    println!();
}

/// The HTTP table: `hello/echo` on the host beside a bare axum route returning the same JSON.
async fn http_table(
    state: &AppState,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let customer = Customer {
        id: "bench-customer".into(),
        region: "cn".into(),
    };
    let token = state
        .identity
        .mint(&customer, Duration::from_secs(3600))
        .context(NO_SECRET)?;
    let lifecircle = Served::start(state).await?;
    let (bare_address, stop_bare) = {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().route(
            "/echo",
            axum::routing::post(
                |axum::Json(body): axum::Json<serde_json::Value>| async move {
                    axum::Json(serde_json::json!({ "echo": body }))
                },
            ),
        );
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        (address, stop)
    };

    println!(
        "HTTP: POST {BODY} with {connections} keep-alive connections on loopback, {} s per row",
        duration.as_secs()
    );
    print_header("server", "requests/s");
    let bare = http_case(
        bare_address,
        Arc::new(|_, _| post_request("/echo", None, BODY)),
        connections,
        duration,
        None,
    )
    .await?;
    bare.print("bare axum route (same JSON)");
    let host = lifecircle
        .measure(
            Arc::new(move |_, _| post_request("/v1/scenarios/hello/echo", Some(&token), BODY)),
            connections,
            duration,
        )
        .await?;
    host.print("lifecircle /v1/scenarios/hello/echo");
    println!("ratio lifecircle / bare axum: {:.2}", host.rate / bare.rate);
    lifecircle.stop().await;
    let _ = stop_bare.send(());
    println!();
    Ok(())
}

/// Token verification per request (HS256, and RS256/ES256 with the test key pairs in
/// `tests/fixtures/keys` when run from the repository), and a customer import of
/// `import_lines` generated lines through `lifecircle admin import-customers` in a child
/// process, which reports its own peak memory.
async fn identity_cases(duration: Duration, import_lines: u64) -> anyhow::Result<()> {
    use crate::identity::{Identity, TokenKey, TokenRules};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    println!(
        "Identity: customer token verification (one thread, {} s per row); customer import",
        duration.as_secs()
    );
    println!("{:>34} {:>12} {:>10}", "token", "verifies/s", "µs each");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": "6222000011112222", "region": "cn-fj", "exp": exp});
    let mut cases: Vec<(&str, Identity, String)> = Vec::new();
    let secret = [7u8; 32];
    let hs = Identity::hs256(&secret, &[1; 32], 0);
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret),
    )?;
    cases.push(("HS256", hs, token));
    let keys = std::path::Path::new("tests/fixtures/keys");
    for (name, algorithm, file) in [
        ("RS256", Algorithm::RS256, "rs-1"),
        ("ES256", Algorithm::ES256, "es-1"),
    ] {
        let (Ok(private), true) = (
            std::fs::read(keys.join(format!("{file}.key.pem"))),
            keys.join(format!("{file}.pub.pem")).is_file(),
        ) else {
            println!("{name:>34} (skipped: run from the repository for its test keys)");
            continue;
        };
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private)?,
            _ => EncodingKey::from_rsa_pem(&private)?,
        };
        let mut header = Header::new(algorithm);
        header.kid = Some(file.into());
        let token = jsonwebtoken::encode(&header, &claims, &encoding)?;
        let key = TokenKey::from_pem_file(file, name, &keys.join(format!("{file}.pub.pem")))?;
        cases.push((
            name,
            Identity::new(vec![key], &TokenRules::default(), None, &[1; 32]),
            token,
        ));
    }
    for (name, identity, token) in &cases {
        let started = Instant::now();
        let mut verified = 0u64;
        while started.elapsed() < duration {
            for _ in 0..100 {
                identity
                    .verify(token)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            }
            verified += 100;
        }
        let rate = verified as f64 / started.elapsed().as_secs_f64();
        println!("{name:>34} {rate:>12.0} {:>10.1}", 1e6 / rate);
    }

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("customers.jsonl");
    {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for index in 0..import_lines {
            writeln!(
                out,
                r#"{{"customer_number":"62220000{index:08}","region":"cn-fj-{}","tier":"gold","tags":["vip","potential VIP"]}}"#,
                index % 9
            )?;
        }
        out.flush()?;
    }
    let bytes = std::fs::metadata(&file)?.len();
    let started = Instant::now();
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["admin", "import-customers"])
        .arg(&file)
        .env("LIFECIRCLE_LOG", "warn")
        .output()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(output.status.success(), "the import failed: {output:?}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak = stderr
        .lines()
        .find_map(|line| line.split("peak memory ").nth(1))
        .unwrap_or("unknown")
        .trim();
    println!(
        "import of {import_lines} JSON lines ({:.0} MB) into SQLite: {:.0} customers/s, \
         {seconds:.1} s, peak memory {peak}, inserted {}",
        bytes as f64 / 1e6,
        import_lines as f64 / seconds,
        summary["inserted"]
    );
    Ok(())
}

/// Drops and creates `schema` in the PostgreSQL database at `url`.
async fn recreate_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(url).await?;
    for statement in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&statement).execute(&mut admin).await?;
    }
    admin.close().await?;
    Ok(())
}

/// Runs `pgbench -b tpcb-like` with `clients` clients for `duration` on a fresh schema
/// (scale = clients, so branches are not one hot row) and returns (tps, average latency ms).
async fn pgbench(url: &str, clients: usize, duration: Duration) -> anyhow::Result<(f64, f64)> {
    let schema = "lc_bench_pgbench";
    recreate_schema(url, schema).await?;
    let run = |args: Vec<String>| {
        let url = url.to_owned();
        async move {
            let output = tokio::process::Command::new("pgbench")
                .args(&args)
                .arg(&url)
                .env("PGOPTIONS", format!("-c search_path={schema}"))
                .output()
                .await?;
            anyhow::ensure!(
                output.status.success(),
                "pgbench {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
    };
    run(vec![
        "-i".into(),
        "-q".into(),
        "-s".into(),
        clients.to_string(),
    ])
    .await?;
    let report = run(vec![
        "-b".into(),
        "tpcb-like".into(),
        "-n".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        "2".into(),
        "-T".into(),
        duration.as_secs().max(1).to_string(),
    ])
    .await?;
    let number_after = |label: &str| {
        report
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    let tps = number_after("tps = ")
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output:\n{report}"))?;
    let latency = number_after("latency average = ").unwrap_or(f64::NAN);
    recreate_schema(url, schema).await?;
    Ok((tps, latency))
}

/// Why the benchmarks cannot sign their customer tokens.
const NO_SECRET: &str = "the benchmarks sign customer tokens with auth.token_secret; this \
                         configuration has only public keys, so set auth.token_secret too";

/// `churn` calls on `points-demo`, one customer per connection, all drawing on one budget.
async fn ledger_case(
    state: &AppState,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    use crate::ledger::{self, ADMIN_SCOPE, Operation, Request as LedgerRequest};
    const PLUGIN: &str = "points-demo";
    const REGION: &str = "cn";
    anyhow::ensure!(
        state.registry.deployment(PLUGIN, REGION).is_some(),
        "the plugins directory has no `points-demo` bundle; build the plugins first (make plugins)"
    );
    let now_ms = ledger::now_ms();
    let customer = |index: usize| format!("bench-ledger-{index}");
    {
        let mut transaction = state.db.write.begin().await?;
        let mut conn = transaction.conn();
        let fund = LedgerRequest {
            scope: ADMIN_SCOPE,
            key: "bench-fund",
            now_ms,
            memo: "bench setup",
            id: None,
        };
        let amount = 1_000_000_000;
        ledger::apply(
            &mut conn,
            &fund,
            PLUGIN,
            REGION,
            &Operation::Fund { amount },
        )
        .await?;
        for index in 0..connections {
            let key = format!("bench-award-{index}");
            let award = LedgerRequest {
                scope: PLUGIN,
                key: &key,
                ..fund.clone()
            };
            let expires_at_ms = now_ms + 86_400_000;
            let operation = Operation::Award {
                customer: customer(index),
                amount: 1_000,
                expires_at_ms,
            };
            ledger::apply(&mut conn, &award, PLUGIN, REGION, &operation).await?;
        }
        transaction.commit().await?;
    }
    let tokens = mint_tokens(state, connections, REGION, customer)?;
    let served = Served::start(state).await?;
    let make: MakeRequest = Arc::new(move |connection, n| {
        let mut request = post_request(
            "/v1/scenarios/points-demo/churn",
            Some(&tokens[connection]),
            "null",
        );
        request.headers_mut().insert(
            "idempotency-key",
            hyper::header::HeaderValue::from_str(&format!("{connection}-{n}")).expect("ASCII key"),
        );
        request
    });
    let measured = served.measure(make, connections, duration).await;
    served.stop().await;
    measured
}

/// The reference scenarios' hot actions over HTTP on SQLite, one customer per connection:
/// `spin-wheel/spin` (a wheel of free spins, 1 in 10 winning points from the budget) and
/// `merchant-coupons/claim` (a campaign with stock to spare). Skipped when the plugins
/// directory lacks them.
async fn scenario_cases(
    state: &AppState,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    use crate::ledger::{self, ADMIN_SCOPE, Operation, Request as LedgerRequest};
    use crate::registry::enablement::{self, Change, Setting};
    const REGION: &str = "cn";
    let (Some(wheel), Some(coupons)) = (
        state.registry.deployment("spin-wheel", REGION),
        state.registry.deployment("merchant-coupons", REGION),
    ) else {
        println!("(the spin-wheel and merchant-coupons bundles are missing: no scenario rows)");
        return Ok(());
    };
    let settings = [
        (
            "spin-wheel",
            wheel.plugin.version.clone(),
            serde_json::json!({
                "free_spins_per_day": 10000, "daily_limit": 10000, "cost_points": 0,
                "guarantee_after": 0,
                "prizes": [
                    {"id": "five", "title": "5 points", "kind": "points", "amount": 5,
                     "weight": 10, "stock": 1_000_000_000},
                    {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 90}
                ]
            }),
        ),
        (
            "merchant-coupons",
            coupons.plugin.version.clone(),
            serde_json::json!({"campaigns": [{
                "id": "bench", "merchant": "bench-shop", "title": "Bench",
                "discount": {"kind": "fixed", "fen": 100}, "stock": 1_000_000_000,
                "per_customer_limit": 1_000_000_000, "valid_days": 30
            }]}),
        ),
    ];
    let now_ms = ledger::now_ms();
    {
        let mut transaction = state.db.write.begin().await?;
        let mut conn = transaction.conn();
        for (plugin, version, config) in &settings {
            let setting = Setting {
                config: config.as_object().cloned().unwrap_or_default(),
                ..Setting::default()
            };
            let change = Change {
                version: Some(version),
                enabled: true,
                setting: &setting,
                by: "bench",
            };
            enablement::put(&mut conn, REGION, plugin, &change, now_ms).await?;
        }
        let fund = LedgerRequest {
            scope: ADMIN_SCOPE,
            key: "bench-wheel-fund",
            now_ms,
            memo: "bench setup",
            id: None,
        };
        let amount = 1_000_000_000;
        ledger::apply(
            &mut conn,
            &fund,
            "spin-wheel",
            REGION,
            &Operation::Fund { amount },
        )
        .await?;
        transaction.commit().await?;
    }
    state.registry.reload().await?;
    let tokens = mint_tokens(state, connections, REGION, |index| {
        format!("bench-scenario-{index}")
    })?;
    let served = Served::start(state).await?;
    println!();
    println!(
        "Scenarios: reference plugins' hot actions, {connections} connections (one customer each) on SQLite, {} s per row",
        duration.as_secs()
    );
    print_header("action", "calls/s");
    for (label, path, body) in [
        ("spin-wheel/spin", "/v1/scenarios/spin-wheel/spin", "null"),
        (
            "merchant-coupons/claim",
            "/v1/scenarios/merchant-coupons/claim",
            r#"{"campaign":"bench"}"#,
        ),
    ] {
        let tokens = tokens.clone();
        let make: MakeRequest = Arc::new(move |connection, n| {
            let mut request = post_request(path, Some(&tokens[connection]), body);
            request.headers_mut().insert(
                "idempotency-key",
                hyper::header::HeaderValue::from_str(&format!("{connection}-{n}"))
                    .expect("ASCII key"),
            );
            request
        });
        let measured = served.measure(make, connections, duration).await?;
        measured.print(label);
    }
    served.stop().await;
    Ok(())
}

/// Throughput and latency of one case.
struct Measured {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time of the whole process (host and in-process load generator alike) per call,
    /// where the operating system reports it.
    cpu_us_per_call: Option<f64>,
    /// Bytes the process sent to storage per call (the WAL, and the pages checkpointed from
    /// it into the database file), where the operating system reports it.
    disk_kb_per_call: Option<f64>,
    /// What the host's commit writer did meanwhile; `None` for a server without one.
    writer: Option<WriterShare>,
}

/// What the commit writer did over a case's measured window: every call's writes and audit
/// record go through it, one transaction at a time, so it bounds what the host can commit.
struct WriterShare {
    /// Share of the window it spent writing, 0 to 1.
    busy: f64,
    /// Its writing time per call it wrote (waits for a CPU and the disk included).
    us_per_call: f64,
    /// Calls per transaction.
    calls_per_batch: f64,
}

impl WriterShare {
    /// The writer's work between `before` and `after`, over a window of `elapsed`.
    fn between(before: CommitTotals, after: CommitTotals, elapsed: Duration) -> Option<Self> {
        let calls = after.calls.checked_sub(before.calls).filter(|c| *c > 0)? as f64;
        let batches = after.batches.saturating_sub(before.batches).max(1) as f64;
        let busy = after.busy.saturating_sub(before.busy).as_secs_f64();
        Some(WriterShare {
            busy: busy / elapsed.as_secs_f64(),
            us_per_call: busy * 1e6 / calls,
            calls_per_batch: calls / batches,
        })
    }
}

impl Measured {
    /// Prints the case's row under [`print_header`].
    fn print(&self, label: &str) {
        let cpu = self
            .cpu_us_per_call
            .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.0}"));
        let disk = self
            .disk_kb_per_call
            .map_or_else(|| "-".to_owned(), |kb| format!("{kb:.1}"));
        let (busy, writer_us, per_batch) = self.writer.as_ref().map_or_else(
            || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            |w| {
                (
                    format!("{:.0}%", w.busy * 100.0),
                    format!("{:.0}", w.us_per_call),
                    format!("{:.1}", w.calls_per_batch),
                )
            },
        );
        println!(
            "{label:>34} {:>12.0} {:>10.1} {:>10.1} {cpu:>12} {disk:>13} {busy:>12} {writer_us:>15} {per_batch:>12}",
            self.rate, self.p50_us, self.p99_us
        );
    }
}

/// Prints the header of a table of [`Measured`] rows.
fn print_header(first: &str, rate: &str) {
    println!(
        "{first:>34} {rate:>12} {:>10} {:>10} {:>12} {:>13} {:>12} {:>15} {:>12}",
        "p50 µs",
        "p99 µs",
        "CPU µs/call",
        "disk KB/call",
        "writer busy",
        "writer µs/call",
        "calls/batch"
    );
}

/// What this process has used so far, where the operating system reports it (Linux's
/// `/proc/self`): CPU time of all threads, and bytes sent to storage.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: Option<Duration>,
    disk_bytes: Option<u64>,
}

impl Usage {
    fn now() -> Usage {
        Usage {
            cpu: process_cpu(),
            disk_bytes: process_disk_bytes(),
        }
    }

    /// What was used between `before` and this.
    fn since(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.zip(before.cpu).map(|(a, b)| a.saturating_sub(b)),
            disk_bytes: self
                .disk_bytes
                .zip(before.disk_bytes)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// CPU time this process has used so far, all threads (`/proc/self/stat`).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses; user and
    // system time are the 14th and 15th, in ticks of 1/100 s.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// Bytes this process has caused to be sent to storage so far (`write_bytes` of
/// `/proc/self/io`: written to the page cache for a file, whether or not synced yet).
fn process_disk_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

fn summarize(mut latencies_ns: Vec<u64>, elapsed: Duration, used: Usage) -> Measured {
    latencies_ns.sort_unstable();
    let percentile = |p: f64| {
        if latencies_ns.is_empty() {
            return 0.0;
        }
        let index = ((latencies_ns.len() as f64 - 1.0) * p).round() as usize;
        latencies_ns[index] as f64 / 1000.0
    };
    let calls = latencies_ns.len();
    let per_call = |total: Option<f64>| total.filter(|_| calls > 0).map(|t| t / calls as f64);
    Measured {
        rate: calls as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        cpu_us_per_call: per_call(used.cpu.map(|cpu| cpu.as_secs_f64() * 1e6)),
        disk_kb_per_call: per_call(used.disk_bytes.map(|bytes| bytes as f64 / 1024.0)),
        writer: None,
    }
}

/// Calls `hello.echo` in a loop on `threads` threads at once, each with its own
/// single-threaded async runtime, after a short warm-up.
fn engine_case(state: &AppState, threads: usize, duration: Duration) -> Measured {
    let plugin = state
        .registry
        .deployment("hello", "cn")
        .expect("checked by the caller");
    let started = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let state = state.clone();
            let plugin = plugin.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                let customer = crate::identity::customers::Profile {
                    customer_number: "bench-customer".into(),
                    region: "cn".into(),
                    tier: String::new(),
                    tags: Vec::new(),
                    status: crate::identity::customers::Status::Active,
                    created_at_ms: 0,
                    updated_at_ms: 0,
                };
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime starts");
                runtime.block_on(async {
                    let seed = state
                        .fairness
                        .seed("hello", &plugin.region, crate::ledger::now_ms())
                        .await
                        .expect("the draw seed is readable");
                    let mut counter = 0u64;
                    let mut once = || {
                        counter += 1;
                        let (input, _record) = prepare(
                            &state,
                            &plugin,
                            runtime::Request {
                                action: "echo".into(),
                                body: BODY.into(),
                                caller: Caller::Customer {
                                    pseudonym: "bench".into(),
                                },
                                region: "cn".into(),
                                request_id: format!("bench-{thread}-{counter}"),
                                idempotency_key: None,
                            },
                            Some(&customer),
                            std::time::SystemTime::now(),
                            &seed,
                        );
                        let state = state.clone();
                        let plugin = plugin.clone();
                        async move {
                            let output = state.runtime.call(&plugin.plugin.compiled, input).await;
                            assert!(
                                output.result.is_ok(),
                                "hello.echo failed: {:?}",
                                output.result.err()
                            );
                        }
                    };
                    let warm_up = Instant::now() + Duration::from_millis(300);
                    while Instant::now() < warm_up {
                        once().await;
                    }
                    started.wait();
                    let begin = Instant::now();
                    let mut latencies = Vec::with_capacity(200_000);
                    while begin.elapsed() < duration {
                        let call = Instant::now();
                        once().await;
                        latencies.push(call.elapsed().as_nanos() as u64);
                    }
                    (latencies, begin.elapsed())
                })
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut elapsed = Duration::ZERO;
    for handle in handles {
        let (latencies, took) = handle.join().expect("a benchmark thread does not panic");
        all.extend(latencies);
        elapsed = elapsed.max(took);
    }
    summarize(all, elapsed, Usage::default())
}

/// Builds request `n` of connection `connection`.
type MakeRequest = Arc<dyn Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync>;

/// A POST of `body` to `path`, with an optional bearer token.
fn post_request(path: &str, token: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut request = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request")
}

/// Sends requests on `connections` keep-alive connections for `duration`; with the host's
/// `metrics`, measures its commit writer too.
async fn http_case(
    address: SocketAddr,
    make: MakeRequest,
    connections: usize,
    duration: Duration,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<Measured> {
    let warm_up = Duration::from_millis(500);
    let begin = Instant::now() + warm_up;
    let end = begin + duration;
    let mut tasks = Vec::new();
    for connection_index in 0..connections {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::with_capacity(100_000);
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                n += 1;
                let request = make(connection_index, n);
                let path = request.uri().path().to_owned();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::ensure!(
                    status.is_success(),
                    "{path} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                if now >= begin {
                    latencies.push(now.elapsed().as_nanos() as u64);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    // What the process used and the writer did over the measured window (after the
    // warm-up).
    let window = tokio::spawn(async move {
        let writer = || metrics.as_ref().map(|m| m.commit.totals());
        tokio::time::sleep_until(begin.into()).await;
        let (used_before, writer_before) = (Usage::now(), writer());
        tokio::time::sleep_until(end.into()).await;
        let used = Usage::now().since(used_before);
        let share = writer()
            .zip(writer_before)
            .and_then(|(after, before)| WriterShare::between(before, after, duration));
        (used, share)
    });
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let (used, writer) = window.await?;
    Ok(Measured {
        writer,
        ..summarize(all, duration, used)
    })
}

/// A host serving `state` on a free loopback port, for the HTTP cases.
struct Served {
    address: SocketAddr,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(state: &AppState) -> anyhow::Result<Served> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(
            listener,
            async {
                let _ = stopped.await;
            },
            state.clone(),
        ));
        Ok(Served {
            address,
            metrics: state.metrics.clone(),
            stop,
            served,
        })
    }

    /// [`http_case`] against this host, its commit writer measured too.
    async fn measure(
        &self,
        make: MakeRequest,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<Measured> {
        let metrics = Some(self.metrics.clone());
        http_case(self.address, make, connections, duration, metrics).await
    }

    /// Stops serving and waits until the host has.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
    }
}

/// A token for each of `count` customers in `region`, named by `customer(index)`.
fn mint_tokens(
    state: &AppState,
    count: usize,
    region: &str,
    customer: impl Fn(usize) -> String,
) -> anyhow::Result<Arc<Vec<String>>> {
    let tokens = (0..count)
        .map(|index| {
            state.identity.mint(
                &Customer {
                    id: customer(index),
                    region: region.into(),
                },
                Duration::from_secs(3600),
            )
        })
        .collect::<Option<_>>()
        .context(NO_SECRET)?;
    Ok(Arc::new(tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_disk_column_counts_what_the_process_writes_to_a_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let before = Usage::now();
        let megabyte = vec![7u8; 1 << 20];
        let mut file = std::fs::File::create(dir.path().join("written")).expect("a file");
        std::io::Write::write_all(&mut file, &megabyte).expect("the write");
        file.sync_all().expect("the sync");
        let used = Usage::now().since(before);
        let written = used.disk_bytes.expect("Linux reports write_bytes");
        assert!(
            written >= 1 << 20,
            "only {written} bytes counted after writing 1 MiB"
        );
        let measured = summarize(vec![1_000; 4], Duration::from_secs(1), used);
        let per_call = measured.disk_kb_per_call.expect("a figure per call");
        assert!(
            per_call >= 256.0,
            "{per_call} KB per call for 1 MiB over 4 calls"
        );
    }
}
