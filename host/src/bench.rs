//! `lifecircle bench`: measures the engine path and the HTTP path and prints tables.
//!
//! Engine: a fresh instance of `hello` per call (instantiate + `handle("echo")` + drop, with
//! the per-call setup the server does), on one thread and on two threads at once.
//!
//! HTTP: `POST /v1/scenarios/hello/echo` on a real Lifecircle server against a bare axum route
//! returning the same JSON, in the same process and the same run, each with the same number of
//! keep-alive connections on loopback. The ratio says what the host costs over plain axum.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::identity::Customer;
use crate::invocation::prepare;
use crate::runtime::{self, Caller};
use crate::{AppState, build, serve};

/// The request body every case sends.
const BODY: &str = r#"{"hello":"world","amount":42}"#;

/// Runs every case for `duration` each and prints the tables. Uses a temporary data directory;
/// the plugins come from `config.plugins_dir`, which must contain `hello`.
pub async fn run(mut config: Config, duration: Duration, connections: usize) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    config.data_dir = data.path().to_owned();
    config.database_url = None;
    let state = build(config).await?;
    anyhow::ensure!(
        state.registry.get("hello").is_some(),
        "the plugins directory has no `hello` bundle; build the plugins first (make plugins)"
    );

    println!(
        "Engine: fresh instance of `hello` per call (instantiate + handle(echo) + drop), {} s per row",
        duration.as_secs()
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "threads", "calls/s", "p50 µs", "p99 µs"
    );
    let one = engine_case(&state, 1, duration);
    println!(
        "{:>8} {:>12.0} {:>10.1} {:>10.1}",
        1, one.rate, one.p50_us, one.p99_us
    );
    let two = engine_case(&state, 2, duration);
    println!(
        "{:>8} {:>12.0} {:>10.1} {:>10.1}",
        2, two.rate, two.p50_us, two.p99_us
    );
    println!("scaling 1 → 2 threads: {:.2}x", two.rate / one.rate);
    println!();

    let customer = Customer {
        id: "bench-customer".into(),
        region: "cn".into(),
    };
    let token = state.identity.mint(&customer, Duration::from_secs(3600));
    let (lifecircle_address, stop_lifecircle) = {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            async {
                let _ = stopped.await;
            },
            state.clone(),
        ));
        (address, stop)
    };
    let (bare_address, stop_bare) = {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().route(
            "/echo",
            post(
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
    println!(
        "{:>34} {:>12} {:>10} {:>10}",
        "server", "requests/s", "p50 µs", "p99 µs"
    );
    let bare = http_case(bare_address, "/echo", None, connections, duration).await?;
    println!(
        "{:>34} {:>12.0} {:>10.1} {:>10.1}",
        "bare axum route (same JSON)", bare.rate, bare.p50_us, bare.p99_us
    );
    let host = http_case(
        lifecircle_address,
        "/v1/scenarios/hello/echo",
        Some(&token),
        connections,
        duration,
    )
    .await?;
    println!(
        "{:>34} {:>12.0} {:>10.1} {:>10.1}",
        "lifecircle /v1/scenarios/hello/echo", host.rate, host.p50_us, host.p99_us
    );
    println!("ratio lifecircle / bare axum: {:.2}", host.rate / bare.rate);
    let _ = stop_lifecircle.send(());
    let _ = stop_bare.send(());
    Ok(())
}

/// Throughput and latency of one case.
struct Measured {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn summarize(mut latencies_ns: Vec<u64>, elapsed: Duration) -> Measured {
    latencies_ns.sort_unstable();
    let percentile = |p: f64| {
        if latencies_ns.is_empty() {
            return 0.0;
        }
        let index = ((latencies_ns.len() as f64 - 1.0) * p).round() as usize;
        latencies_ns[index] as f64 / 1000.0
    };
    Measured {
        rate: latencies_ns.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
}

/// Calls `hello.echo` in a loop on `threads` threads at once, each with its own
/// single-threaded async runtime, after a short warm-up.
fn engine_case(state: &AppState, threads: usize, duration: Duration) -> Measured {
    let plugin = state.registry.get("hello").expect("checked by the caller");
    let started = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let state = state.clone();
            let plugin = plugin.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime starts");
                runtime.block_on(async {
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
                            Some("bench-customer"),
                        );
                        let state = state.clone();
                        let plugin = plugin.clone();
                        async move {
                            let output = state.runtime.call(&plugin.compiled, input).await;
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
    summarize(all, elapsed)
}

/// Sends requests on `connections` keep-alive connections for `duration`.
async fn http_case(
    address: std::net::SocketAddr,
    path: &'static str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let warm_up = Duration::from_millis(500);
    let begin = Instant::now() + warm_up;
    let end = begin + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::with_capacity(100_000);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut request = Request::post(path)
                    .header("host", "localhost")
                    .header("content-type", "application/json");
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                let request = request.body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
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
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(summarize(all, duration))
}
