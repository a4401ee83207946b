//! The `lifecircle` command: serve plugins, mint development tokens, manage admin tokens and
//! customers, run the benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lifecircle::Config;
use lifecircle::client::{self, EnableArgs, Placement, PluginsCommand, RegionsCommand, Remote};
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
    /// Manage admin tokens and customers without a running host.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Check a recorded draw against its revealed seed, independently of the host's own check.
    VerifyDraw {
        #[command(flatten)]
        remote: Remote,
        /// The invocation id (the x-request-id of the call that drew).
        #[arg(long)]
        invocation: String,
        /// The commitment you kept from before the day (from GET /v1/fairness/commitments);
        /// the host must still show the same one.
        #[arg(long, value_name = "HEX")]
        commitment: Option<String>,
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
        /// Lines of the generated customer file the import case imports.
        #[arg(long, default_value_t = 1_000_000)]
        import_lines: u64,
        /// Only these tables, comma separated: engine, http, identity, ledger, scenarios
        /// (default: all).
        #[arg(long, value_delimiter = ',', value_name = "TABLES")]
        only: Vec<lifecircle::bench::Table>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin API token and print it (once).
    CreateToken {
        /// head_office, branch_admin, reviewer or viewer.
        #[arg(long)]
        role: String,
        /// The region it manages (branch_admin: required; head_office: none).
        #[arg(long)]
        region: Option<String>,
        /// A name for it, recorded as the actor of every change it makes.
        #[arg(long)]
        name: String,
    },
    /// Import customers from a JSON Lines or CSV file, showing progress.
    ImportCustomers {
        /// The file.
        file: PathBuf,
        /// jsonl or csv (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
    },
    /// Plugin versions on a running host: upload, list, show, approve, reject.
    Plugins {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// The region tree of a running host: list, put, show.
    Regions {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: RegionsCommand,
    },
    /// Run an approved version in a region (and the regions under it).
    Enable {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: EnableArgs,
    },
    /// Switch a plugin off in a region's subtree.
    Disable {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        placement: Placement,
    },
    /// Stop a plugin at once in a region's subtree, whatever is enabled there.
    Kill {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        placement: Placement,
        /// Why: other admins read it.
        #[arg(long)]
        reason: String,
    },
    /// Lift a kill.
    Revive {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        placement: Placement,
    },
    /// Restore the version a region ran before its last version change.
    Rollback {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        placement: Placement,
    },
}

fn main() -> anyhow::Result<ExitCode> {
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
    let remote = |remote: Remote, command: client::Command| {
        Ok(runtime.block_on(client::run(&remote, command)))
    };
    let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Serve { .. } => done(runtime.block_on(serve(config))),
        Command::Token {
            customer,
            region,
            ttl,
        } => done(runtime.block_on(token(config, customer, region, ttl))),
        Command::VerifyDraw {
            remote,
            invocation,
            commitment,
        } => Ok(runtime.block_on(client::verify_draw(
            &remote,
            &invocation,
            commitment.as_deref(),
        ))),
        Command::Admin { command } => match command {
            AdminCommand::CreateToken { role, region, name } => {
                done(runtime.block_on(create_token(config, role, region, name)))
            }
            AdminCommand::ImportCustomers { file, format } => {
                done(runtime.block_on(import_customers(config, file, format)))
            }
            AdminCommand::Plugins { remote: r, command } => {
                remote(r, client::Command::Plugins(command))
            }
            AdminCommand::Regions { remote: r, command } => {
                remote(r, client::Command::Regions(command))
            }
            AdminCommand::Enable { remote: r, args } => remote(r, client::Command::Enable(args)),
            AdminCommand::Disable {
                remote: r,
                placement,
            } => remote(r, client::Command::Disable(placement)),
            AdminCommand::Kill {
                remote: r,
                placement,
                reason,
            } => remote(r, client::Command::Kill { placement, reason }),
            AdminCommand::Revive {
                remote: r,
                placement,
            } => remote(r, client::Command::Revive(placement)),
            AdminCommand::Rollback {
                remote: r,
                placement,
            } => remote(r, client::Command::Rollback(placement)),
        },
        Command::Bench {
            seconds,
            connections,
            postgres,
            import_lines,
            only,
            ..
        } => done(runtime.block_on(lifecircle::bench::run(
            config,
            lifecircle::bench::Settings {
                duration: Duration::from_secs(seconds),
                connections,
                postgres,
                import_lines,
                tables: only,
            },
        ))),
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
    let dev_region = state
        .config
        .registry
        .dev_regions
        .first()
        .cloned()
        .unwrap_or_else(|| "dev".into());
    let snapshot = state.registry.snapshot();
    let mut deployments: Vec<_> = snapshot
        .deployments()
        .filter(|deployment| deployment.region == dev_region)
        .collect();
    deployments.sort_by(|a, b| a.plugin.id.cmp(&b.plugin.id));
    say!("Plugins enabled in region {dev_region}:");
    for deployment in &deployments {
        let plugin = &deployment.plugin;
        say!(
            "  {:<24} {:<10} {}",
            plugin.manifest.id,
            plugin.version,
            plugin.manifest.name
        );
    }
    let development = !state.config.plugins_dir.as_os_str().is_empty();
    let running: Vec<&str> = deployments.iter().map(|d| &*d.plugin.id).collect();
    let partner_keys = if development {
        lifecircle::development::seed(&state, &dev_region, &running)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "could not seed the development data");
                Vec::new()
            })
    } else {
        Vec::new()
    };
    let simulator = &state.config.dev_biller_listen;
    if !state.config.plugins_dir.as_os_str().is_empty() && !simulator.is_empty() {
        match tokio::net::TcpListener::bind(simulator.as_str()).await {
            Ok(listener) => {
                say!("Biller simulator (development): http://{simulator}/bills");
                tokio::spawn(lifecircle::biller_sim::serve(listener));
            }
            Err(error) => {
                tracing::warn!(%simulator, %error, "the biller simulator did not start; bill payments in development will fail");
            }
        }
    }
    if deployments.iter().any(|d| &*d.plugin.id == "hello") {
        let customer = Customer {
            id: "demo-customer".into(),
            region: dev_region.clone(),
        };
        let minted = state
            .identity
            .mint(&customer, Duration::from_secs(24 * 3600))
            .filter(|_| state.development_secret);
        let token = minted.unwrap_or_else(|| {
            format!("$(lifecircle token --customer demo-customer --region {dev_region})")
        });
        if state.development_secret {
            say!("Admin token (development): {}", state.admin_token);
        }
        say!("Try it:");
        say!(
            "  curl -s -X POST http://{address}/v1/scenarios/hello/echo -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"hello\":\"world\"}}'"
        );
        let scenarios = [
            "utility-payments",
            "spin-wheel",
            "merchant-coupons",
            "points-mall",
        ];
        if development
            && state.development_secret
            && scenarios.iter().all(|id| running.contains(id))
        {
            print_walkthrough(&mut out, address, &dev_region, &token, &partner_keys);
        }
    }
    drop(out);
    lifecircle::serve(listener, shutdown_signal(), state).await?;
    Ok(())
}

/// Prints the loop through the four reference scenarios as curl lines that work as printed,
/// but for the `<...>` values each answer gives for the next.
fn print_walkthrough(
    out: &mut impl std::io::Write,
    address: SocketAddr,
    region: &str,
    token: &str,
    partner_keys: &[lifecircle::development::PartnerKey],
) {
    use lifecircle::development::{BUDGET_POINTS, CUSTOMERS, WELCOME_POINTS};
    let customer = |action: &str, key: &str, body: &str| {
        format!(
            "  curl -s -X POST http://{address}/v1/scenarios/{action} -H 'Authorization: Bearer {token}' -H 'Idempotency-Key: {key}' -H 'Content-Type: application/json' -d '{body}'"
        )
    };
    let partner = |partner: &str, action: &str, key: &str, body: &str| {
        let secret = partner_keys
            .iter()
            .find(|k| k.partner == partner)
            .map_or("<partner key>", |k| k.key.as_str());
        format!(
            "  curl -s -X POST 'http://{address}/partner/v1/scenarios/{action}?region={region}' -H 'Authorization: Bearer {secret}' -H 'Idempotency-Key: {key}' -H 'Content-Type: application/json' -d '{body}'"
        )
    };
    let lines = [
        format!(
            "Development data: customers {} (sandbox bank accounts, {WELCOME_POINTS} welcome points each), budgets of {BUDGET_POINTS} points.",
            CUSTOMERS.join(", ")
        ),
        "Partner keys (development):".to_owned(),
    ]
    .into_iter()
    .chain(
        partner_keys
            .iter()
            .map(|k| format!("  {:<16} {:<18} {}", k.partner, k.plugin, k.key)),
    )
    .chain([
        "The loop (bill → points → spin → coupon → till → mall → cancel), as demo-customer:"
            .to_owned(),
        "  # 1. Pay a water bill from the sandbox account: 10 points once the biller confirms."
            .to_owned(),
        customer(
            "utility-payments/pay",
            "bill-1",
            r#"{"biller":"xm-water","account":"0591-1","fen":4250}"#,
        ),
        "  # 2. The points, and when they expire.".to_owned(),
        format!("  curl -s http://{address}/v1/points -H 'Authorization: Bearer {token}'"),
        "  # 3. Spin the wheel (the first spin of the day is free); a coupon prize answers a voucher."
            .to_owned(),
        customer("spin-wheel/spin", "spin-1", "null"),
        "  # 4. Claim the won coupon with its voucher, or claim one without a prize."
            .to_owned(),
        customer(
            "merchant-coupons/claim",
            "claim-1",
            r#"{"campaign":"tea-10","voucher":"<voucher>"}"#,
        ),
        customer(
            "merchant-coupons/claim",
            "claim-2",
            r#"{"campaign":"tea-10"}"#,
        ),
        "  # 5. The tea house's till redeems the coupon's code on a ¥68 bill.".to_owned(),
        partner(
            "tea-house",
            "merchant-coupons/redeem",
            "till-1",
            r#"{"code":"<code>","spend_fen":6800}"#,
        ),
        "  # 6. The mall: order an umbrella for 1200 points, cancel it, and the points are back."
            .to_owned(),
        customer("points-mall/catalog", "catalog-1", "null"),
        customer(
            "points-mall/redeem",
            "order-1",
            r#"{"item":"umbrella","address":"1 Lujiang Rd, Xiamen"}"#,
        ),
        customer(
            "points-mall/cancel",
            "cancel-1",
            r#"{"order":"<order>"}"#,
        ),
        "Press Ctrl-C to stop.".to_owned(),
    ]);
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
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
    let customer = Customer {
        id: customer,
        region,
    };
    let token = identity.mint(&customer, Duration::from_secs(ttl)).context(
        "this host verifies mobile banking's public keys only, so it cannot sign tokens; \
             set auth.token_secret (HS256) to mint development tokens",
    )?;
    println!("{token}");
    Ok(())
}

async fn create_token(
    config: Config,
    role: String,
    region: Option<String>,
    name: String,
) -> anyhow::Result<()> {
    use lifecircle::identity::admins::{self, Admin, Role};
    let role = Role::parse(&role).with_context(|| {
        format!("--role {role:?}: use head_office, branch_admin, reviewer or viewer")
    })?;
    let admin = Admin { name, role, region };
    admins::check(&admin.name, admin.role, admin.region.as_deref())?;
    let (db, _, _) = lifecircle::open_identity(&config).await?;
    let mut transaction = db.write.begin().await?;
    let now_ms = lifecircle::ledger::now_ms();
    let token = admins::create(&mut transaction.conn(), &admin, now_ms).await?;
    let change = lifecircle::audit::admin::Change {
        actor: "cli",
        action: "admin_token.create",
        target: format!("admin_token/{}", admin.name),
        region: admin.region.as_deref(),
        before: None,
        after: Some(serde_json::to_value(&admin)?),
    };
    lifecircle::audit::admin::record(&mut transaction.conn(), &change, now_ms).await?;
    transaction.commit().await?;
    eprintln!(
        "Created admin token {:?} ({}{}). It is shown once; keep it safe:",
        admin.name,
        admin.role.as_str(),
        admin
            .region
            .as_deref()
            .map(|r| format!(" of {r}"))
            .unwrap_or_default()
    );
    println!("{token}");
    Ok(())
}

async fn import_customers(
    config: Config,
    file: PathBuf,
    format: Option<String>,
) -> anyhow::Result<()> {
    use lifecircle::identity::import::{Format, ImportLimits, Importer};
    use tokio::io::AsyncReadExt;
    let name = format.or_else(|| {
        file.extension()
            .map(|extension| extension.to_string_lossy().into_owned())
    });
    let format = name
        .as_deref()
        .and_then(Format::from_name)
        .with_context(|| {
            format!(
                "cannot tell the format of {}: give --format jsonl or --format csv",
                file.display()
            )
        })?;
    let mut input = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let total = input.metadata().await?.len();
    let (db, _, _) = lifecircle::open_identity(&config).await?;
    let limits = ImportLimits {
        line_bytes_max: config.identity.import_line_bytes_max,
        errors_listed_max: config.identity.import_errors_listed_max,
    };
    let mut importer = Importer::new(db.write.clone(), format, "cli", None, limits);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    let started = std::time::Instant::now();
    let mut shown = std::time::Instant::now();
    loop {
        let n = input.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        read += n as u64;
        importer.feed(&buffer[..n]).await?;
        if shown.elapsed() >= Duration::from_millis(250) {
            shown = std::time::Instant::now();
            progress(importer.summary().lines, read, total, started.elapsed());
        }
    }
    let summary = importer.finish().await?;
    progress(summary.lines, read, total, started.elapsed());
    eprintln!();
    if let Some(peak) = peak_memory_bytes() {
        eprintln!("peak memory {:.1} MB", peak as f64 / 1e6);
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The process's peak resident memory (Linux's `VmHWM`), if known.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One line of import progress on stderr, redrawn in place.
fn progress(lines: u64, read: u64, total: u64, elapsed: Duration) {
    let percent = if total == 0 {
        100.0
    } else {
        read as f64 * 100.0 / total as f64
    };
    let rate = lines as f64 / elapsed.as_secs_f64().max(0.001);
    eprint!(
        "\r{lines:>10} lines  {:>8.1} / {:.1} MB  {percent:>5.1}%  {rate:>9.0} lines/s",
        read as f64 / 1e6,
        total as f64 / 1e6
    );
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
