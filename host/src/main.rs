//! The `lifecircle` command: serve plugins, mint development tokens, run the benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lifecircle::Config;
use lifecircle::identity::{Customer, is_region};

#[derive(Parser)]
#[command(
    name = "lifecircle",
    version,
    about = "Runs partners' life-scenario plugins for mobile banking."
)]
struct Cli {
    /// Configuration file (TOML). Environment variables LIFECIRCLE_* override it; flags
    /// override both.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the database and compiled-plugin cache.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the plugins over HTTP.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Directory of plugin bundles (default plugins/dist/reference).
        #[arg(long, value_name = "DIR")]
        plugins: Option<PathBuf>,
    },
    /// Print a customer token signed with the host's secret (for development and tests).
    Token {
        /// The bank's customer number (the token's `sub`).
        #[arg(long)]
        customer: String,
        /// The customer's region, for example cn-fj.
        #[arg(long)]
        region: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Measure the engine and the HTTP path and print a table.
    Bench {
        /// Directory containing the `hello` bundle (default plugins/dist/reference).
        #[arg(long, value_name = "DIR")]
        plugins: Option<PathBuf>,
        /// Seconds to measure each case.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent connections of the HTTP cases.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// A PostgreSQL URL: adds the ledger case on PostgreSQL and `pgbench -b tpcb-like` on
        /// the same server (schemas lc_bench and lc_bench_pgbench are dropped and recreated).
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut flags = toml::Table::new();
    if let Some(dir) = &cli.data_dir {
        flags.insert("data_dir".into(), dir.display().to_string().into());
    }
    match &cli.command {
        Command::Serve { listen, plugins } => {
            if let Some(listen) = listen {
                flags.insert("listen".into(), listen.to_string().into());
            }
            if let Some(plugins) = plugins {
                flags.insert("plugins_dir".into(), plugins.display().to_string().into());
            }
        }
        Command::Bench {
            plugins: Some(plugins),
            ..
        } => {
            flags.insert("plugins_dir".into(), plugins.display().to_string().into());
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref(), std::env::vars(), flags)?;
    init_tracing(&config.log);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { .. } => runtime.block_on(serve(config)),
        Command::Token {
            customer,
            region,
            ttl,
        } => runtime.block_on(token(config, customer, region, ttl)),
        Command::Bench {
            seconds,
            connections,
            postgres,
            ..
        } => runtime.block_on(lifecircle::bench::run(
            config,
            Duration::from_secs(seconds),
            connections,
            postgres,
        )),
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Logs go to stderr; stdout carries only what a user asked for (the banner, a token).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let state = lifecircle::build(config).await?;
    // The banner is for whoever started the host; if they closed stdout, serve on regardless.
    let mut out = std::io::stdout().lock();
    macro_rules! say {
        ($($arg:tt)*) => {{
            use std::io::Write as _;
            let _ = writeln!(out, $($arg)*);
        }};
    }
    say!("Lifecircle is serving on http://{address}");
    say!("Plugins:");
    for plugin in state.registry.iter() {
        say!(
            "  {:<24} {:<10} {}",
            plugin.manifest.id,
            plugin.manifest.version,
            plugin.manifest.name
        );
    }
    if state.registry.get("hello").is_some() {
        let customer = Customer {
            id: "demo-customer".into(),
            region: "cn".into(),
        };
        let token = if state.development_secret {
            state
                .identity
                .mint(&customer, Duration::from_secs(24 * 3600))
        } else {
            "$(lifecircle token --customer demo-customer --region cn)".to_owned()
        };
        if state.development_secret {
            say!("Admin token (development): {}", state.admin_token);
        }
        say!("Try it:");
        say!(
            "  curl -s -X POST http://{address}/v1/scenarios/hello/echo -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"hello\":\"world\"}}'"
        );
    }
    drop(out);
    lifecircle::serve(listener, shutdown_signal(), state).await?;
    Ok(())
}

async fn token(config: Config, customer: String, region: String, ttl: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        !customer.is_empty() && customer.len() <= 128,
        "--customer must be 1 to 128 bytes"
    );
    anyhow::ensure!(
        is_region(&region),
        "--region must be lowercase letters, digits or '-' (e.g. cn-fj)"
    );
    let (_db, identity, _) = lifecircle::open_identity(&config).await?;
    println!(
        "{}",
        identity.mint(
            &Customer {
                id: customer,
                region
            },
            Duration::from_secs(ttl)
        )
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down; letting requests in flight finish");
}
