//! `lifecircle admin plugins|regions|enable|disable|kill|revive|rollback`: the admin API from
//! the command line, against a running host over HTTP with an admin token.
//!
//! Answers are printed as tables (or as the API's JSON with `--json`). Exit codes: 0 done,
//! 1 the host refused (the error's code and message are printed), 2 bad usage, 3 the host
//! could not be reached or failed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Where the host is and who is asking.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The host's base URL.
    #[arg(
        long,
        env = "LIFECIRCLE_CLI_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// An admin token (`lifecircle admin create-token`, or the one `serve` prints in
    /// development).
    #[arg(
        long,
        env = "LIFECIRCLE_CLI_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Plugin versions.
#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Upload a bundle directory (plugin.toml and its component) as a new version.
    Upload {
        /// The bundle directory.
        dir: PathBuf,
    },
    /// List versions, newest first.
    List {
        /// Only this plugin's.
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Show one version and what it requests.
    Show {
        /// The plugin id.
        plugin: String,
        /// The version.
        version: String,
    },
    /// Approve a version (reviewer or head office; not its uploader).
    Approve {
        /// The plugin id.
        plugin: String,
        /// The version.
        version: String,
        /// Why: kept with the review.
        #[arg(long)]
        reason: String,
        /// A customer profile field to grant among those requested (repeat for more).
        #[arg(long = "grant-identity-field", value_name = "FIELD")]
        identity_fields: Vec<String>,
    },
    /// Reject a version, with a reason the partner can act on.
    Reject {
        /// The plugin id.
        plugin: String,
        /// The version.
        version: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// The region tree.
#[derive(Subcommand, Debug)]
pub enum RegionsCommand {
    /// List regions.
    List,
    /// Create a region or rename it (its parent must exist).
    Put {
        /// The region, such as cn-fj-xm.
        name: String,
        /// The name people read.
        #[arg(long)]
        display_name: String,
    },
    /// What a region runs, with where each setting comes from.
    Show {
        /// The region.
        name: String,
    },
}

/// A plugin in a region.
#[derive(Args, Debug)]
pub struct Placement {
    /// The plugin id.
    pub plugin: String,
    /// The region (its subtree follows unless a region below sets its own).
    #[arg(long)]
    pub region: String,
}

/// What `enable` sets.
#[derive(Args, Debug)]
pub struct EnableArgs {
    #[command(flatten)]
    placement: Placement,
    /// The approved version to run.
    #[arg(long)]
    version: String,
    /// The region's settings for the plugin (its `config`): a JSON object, or @FILE to read
    /// one. (`--config` names the host's own configuration file.)
    #[arg(long, value_name = "JSON|@FILE")]
    settings: Option<String>,
    /// Only customers of this tier (repeat for more).
    #[arg(long = "tier")]
    tiers: Vec<String>,
    /// Only customers with this tag (repeat: all are needed).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Not before this time (ms since the Unix epoch).
    #[arg(long)]
    starts_at_ms: Option<i64>,
    /// Not from this time on (ms since the Unix epoch).
    #[arg(long)]
    ends_at_ms: Option<i64>,
    /// Days the points it awards here stay valid.
    #[arg(long)]
    points_validity_days: Option<u32>,
    /// A host it may reach through `outbound`, of those its manifest asks for (repeat for
    /// more).
    #[arg(long = "outbound-host", value_name = "HOST")]
    outbound_hosts: Vec<String>,
}

/// A remote admin command.
#[derive(Debug)]
pub enum Command {
    /// Plugin versions.
    Plugins(PluginsCommand),
    /// Regions.
    Regions(RegionsCommand),
    /// Enable a version in a region.
    Enable(EnableArgs),
    /// Switch a plugin off in a region's subtree.
    Disable(Placement),
    /// Stop a plugin at once in a region's subtree.
    Kill {
        /// Where.
        placement: Placement,
        /// Why.
        reason: String,
    },
    /// Lift a kill.
    Revive(Placement),
    /// Restore the version a region ran before.
    Rollback(Placement),
}

/// An answer from the host.
struct Answer {
    status: u16,
    body: Value,
}

/// Sends one request to the host.
async fn send(
    remote: &Remote,
    method: hyper::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    let url: hyper::Uri = format!("{}{path}", remote.url.trim_end_matches('/'))
        .parse()
        .with_context(|| {
            format!(
                "--url {:?} is not a URL such as http://127.0.0.1:8080",
                remote.url
            )
        })?;
    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "--url must be http://HOST:PORT (the host serves plain HTTP; reach it through your TLS proxy's internal address)"
    );
    let host = url.host().context("--url names no host")?;
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot reach the host at {}", remote.url))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, content_type);
    if let Some(token) = &remote.token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer { status, body })
}

async fn send_json(
    remote: &Remote,
    method: hyper::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Answer> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    send(remote, method, path, "application/json", bytes).await
}

/// Runs `command` and prints its answer; the exit code says how it went.
pub async fn run(remote: &Remote, command: Command) -> ExitCode {
    match request(remote, command).await {
        Ok((answer, print)) if answer.status < 300 => {
            if remote.json {
                println!("{:#}", answer.body);
            } else {
                print(&answer.body);
            }
            ExitCode::SUCCESS
        }
        Ok((answer, _)) => {
            let code = answer.body["code"].as_str().unwrap_or("error");
            let message = answer.body["message"].as_str().unwrap_or_default();
            eprintln!("error: {code}: {message} (HTTP {})", answer.status);
            ExitCode::from(if answer.status >= 500 { 3 } else { 1 })
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(3)
        }
    }
}

type Printer = fn(&Value);

async fn request(remote: &Remote, command: Command) -> anyhow::Result<(Answer, Printer)> {
    use hyper::Method;
    anyhow::ensure!(
        remote.token.is_some(),
        "give an admin token: --token TOKEN or LIFECIRCLE_CLI_TOKEN (create one with \
         `lifecircle admin create-token`)"
    );
    let at = |p: &Placement| format!("/admin/v1/regions/{}/plugins/{}", p.region, p.plugin);
    Ok(match command {
        Command::Plugins(PluginsCommand::Upload { dir }) => {
            let (manifest, component) = crate::registry::dev::read_bundle(&dir, u64::MAX)
                .map_err(|problem| anyhow::anyhow!("{}: {problem}", dir.display()))?;
            let (content_type, body) = crate::registry::upload_form(&manifest, &component);
            let path = "/admin/v1/plugins";
            let answer = send(remote, Method::POST, path, &content_type, body).await?;
            (answer, print_version)
        }
        Command::Plugins(PluginsCommand::List { plugin }) => {
            let path = match plugin {
                Some(plugin) => format!("/admin/v1/plugins?plugin={plugin}"),
                None => "/admin/v1/plugins".into(),
            };
            (
                send_json(remote, Method::GET, &path, None).await?,
                print_versions,
            )
        }
        Command::Plugins(PluginsCommand::Show { plugin, version }) => {
            let path = format!("/admin/v1/plugins/{plugin}/versions/{version}");
            (
                send_json(remote, Method::GET, &path, None).await?,
                print_version,
            )
        }
        Command::Plugins(PluginsCommand::Approve {
            plugin,
            version,
            reason,
            identity_fields,
        }) => {
            let path = format!("/admin/v1/plugins/{plugin}/versions/{version}/approve");
            let body = json!({"reason": reason, "grants": {"identity_fields": identity_fields}});
            (
                send_json(remote, Method::POST, &path, Some(body)).await?,
                print_version,
            )
        }
        Command::Plugins(PluginsCommand::Reject {
            plugin,
            version,
            reason,
        }) => {
            let path = format!("/admin/v1/plugins/{plugin}/versions/{version}/reject");
            let body = json!({"reason": reason});
            (
                send_json(remote, Method::POST, &path, Some(body)).await?,
                print_version,
            )
        }
        Command::Regions(RegionsCommand::List) => {
            let answer = send_json(remote, Method::GET, "/admin/v1/regions", None).await?;
            (answer, print_regions)
        }
        Command::Regions(RegionsCommand::Put { name, display_name }) => {
            let path = format!("/admin/v1/regions/{name}");
            let body = json!({"display_name": display_name});
            (
                send_json(remote, Method::PUT, &path, Some(body)).await?,
                print_region,
            )
        }
        Command::Regions(RegionsCommand::Show { name }) => {
            let path = format!("/admin/v1/regions/{name}/plugins");
            (
                send_json(remote, Method::GET, &path, None).await?,
                print_effective,
            )
        }
        Command::Enable(args) => {
            let config = match args.settings.as_deref() {
                None => json!({}),
                Some(text) => {
                    let text = match text.strip_prefix('@') {
                        Some(file) => std::fs::read_to_string(file)
                            .with_context(|| format!("cannot read --settings file {file}"))?,
                        None => text.to_owned(),
                    };
                    serde_json::from_str(&text).context("--settings is not a JSON object")?
                }
            };
            let body = json!({
                "version": args.version,
                "config": config,
                "tiers": args.tiers,
                "tags": args.tags,
                "starts_at_ms": args.starts_at_ms,
                "ends_at_ms": args.ends_at_ms,
                "points_validity_days": args.points_validity_days,
                "outbound_hosts": args.outbound_hosts,
            });
            let path = at(&args.placement);
            (
                send_json(remote, Method::PUT, &path, Some(body)).await?,
                print_change,
            )
        }
        Command::Disable(placement) => {
            let body = json!({"enabled": false});
            let answer = send_json(remote, Method::PUT, &at(&placement), Some(body)).await?;
            (answer, print_change)
        }
        Command::Kill { placement, reason } => {
            let path = format!("{}/kill", at(&placement));
            let body = json!({"reason": reason});
            (
                send_json(remote, Method::POST, &path, Some(body)).await?,
                print_kill,
            )
        }
        Command::Revive(placement) => {
            let path = format!("{}/kill", at(&placement));
            (
                send_json(remote, Method::DELETE, &path, None).await?,
                print_revive,
            )
        }
        Command::Rollback(placement) => {
            let path = format!("{}/rollback", at(&placement));
            (
                send_json(remote, Method::POST, &path, None).await?,
                print_change,
            )
        }
    })
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn version_row(v: &Value) -> Vec<String> {
    let digest = text(&v["digest"]);
    vec![
        text(&v["plugin_id"]),
        text(&v["version"]),
        text(&v["status"]),
        text(&v["uploaded_by"]),
        text(&v["reviewed_by"]),
        digest.chars().take(12).collect(),
    ]
}

const VERSION_HEADER: [&str; 6] = [
    "PLUGIN",
    "VERSION",
    "STATUS",
    "UPLOADED BY",
    "REVIEWED BY",
    "DIGEST",
];

fn print_versions(body: &Value) {
    let rows = body["versions"]
        .as_array()
        .map(|versions| versions.iter().map(version_row).collect())
        .unwrap_or_default();
    table(&VERSION_HEADER, rows);
}

fn print_version(body: &Value) {
    table(&VERSION_HEADER, vec![version_row(body)]);
    let requested = &body["requested"];
    println!(
        "requests interfaces: {}; identity fields: {}",
        text(&requested["interfaces"]),
        text(&requested["identity_fields"])
    );
    if let Some(grants) = body["grants"].as_object() {
        println!("granted: {}", Value::Object(grants.clone()));
    }
}

fn print_regions(body: &Value) {
    let rows = body["regions"]
        .as_array()
        .map(|regions| {
            regions
                .iter()
                .map(|r| {
                    vec![
                        text(&r["name"]),
                        text(&r["parent"]),
                        text(&r["display_name"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["REGION", "PARENT", "NAME"], rows);
}

fn print_region(body: &Value) {
    print_regions(&json!({"regions": [body]}));
}

fn print_effective(body: &Value) {
    let rows = body["effective"]
        .as_array()
        .map(|plugins| {
            plugins
                .iter()
                .map(|p| {
                    vec![
                        text(&p["plugin"]),
                        text(&p["state"]),
                        text(&p["version"]),
                        text(&p["from_region"]),
                        text(&p["revision"]),
                        text(&p["kill_reason"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "PLUGIN",
            "STATE",
            "VERSION",
            "FROM REGION",
            "REVISION",
            "KILLED BECAUSE",
        ],
        rows,
    );
}

fn print_change(body: &Value) {
    let after = &body["after"];
    let state = if after["enabled"] == json!(true) {
        "enabled"
    } else {
        "disabled"
    };
    println!(
        "{} in {}: {state}, version {} (revision {}; before: {})",
        text(&after["plugin_id"]),
        text(&after["region"]),
        text(&after["version"]),
        text(&after["revision"]),
        text(&body["before"]["version"]),
    );
}

fn print_kill(body: &Value) {
    println!(
        "killed {} in {} and below: {}",
        text(&body["plugin_id"]),
        text(&body["region"]),
        text(&body["reason"])
    );
}

fn print_revive(body: &Value) {
    println!(
        "revived {} in {} (it was killed by {}: {})",
        text(&body["plugin_id"]),
        text(&body["region"]),
        text(&body["killed_by"]),
        text(&body["reason"])
    );
}

/// `lifecircle verify-draw`: fetches an invocation's draw record from the host's public
/// endpoint and checks it here, trusting nothing the host computed: SHA-256 of the revealed
/// seed must be the commitment (and `expected_commitment`, one the verifier kept from before
/// the day, when given), and every draw must be what HMAC-SHA256 of the seed gives.
///
/// Exit codes: 0 verified, 1 not verified (a mismatch, or the seed is not revealed yet),
/// 3 the host could not be reached or failed.
pub async fn verify_draw(
    remote: &Remote,
    invocation: &str,
    expected_commitment: Option<&str>,
) -> ExitCode {
    let path = format!("/v1/fairness/draws/{invocation}");
    let answer = match send_json(remote, hyper::Method::GET, &path, None).await {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(3);
        }
    };
    if answer.status >= 300 {
        let code = answer.body["code"].as_str().unwrap_or("error");
        let message = answer.body["message"].as_str().unwrap_or_default();
        eprintln!("error: {code}: {message} (HTTP {})", answer.status);
        return ExitCode::from(if answer.status >= 500 { 3 } else { 1 });
    }
    let record: crate::api::audit::DrawRecord = match serde_json::from_value(answer.body.clone()) {
        Ok(record) => record,
        Err(error) => {
            eprintln!("error: the host's draw record is not in the expected form: {error}");
            return ExitCode::from(3);
        }
    };
    if remote.json {
        println!("{:#}", answer.body);
    }
    let seed = &record.seed;
    println!("invocation  {}", record.invocation);
    println!("plugin      {}", record.plugin);
    println!(
        "seed        region {}, day {}, commitment {}",
        seed.region, seed.day, seed.commitment
    );
    println!(
        "published   {} ms; day {}..{} ms",
        seed.published_at_ms, seed.starts_at_ms, seed.ends_at_ms
    );
    let Some(revealed) = &seed.seed else {
        println!(
            "not verifiable yet: the seed of {} is revealed when the day ends ({} ms); \
             run this again after that",
            seed.day, seed.ends_at_ms
        );
        return ExitCode::from(1);
    };
    let verification = crate::api::audit::verify(
        &record.invocation,
        revealed,
        &seed.commitment,
        &record.draws,
    );
    println!("{:<6} {:<22} {:<22} ok", "draw", "below", "value");
    for draw in &record.draws {
        let ok = !verification.mismatched.contains(&draw.seq);
        println!(
            "{:<6} {:<22} {:<22} {}",
            draw.seq,
            draw.upper.as_deref().unwrap_or("(64 bits)"),
            draw.value,
            if ok { "yes" } else { "NO" }
        );
    }
    let kept_matches = expected_commitment.is_none_or(|kept| kept == seed.commitment);
    if !kept_matches {
        println!(
            "NOT VERIFIED: the host now shows commitment {}, not the {} you kept",
            seed.commitment,
            expected_commitment.unwrap_or_default()
        );
    }
    if !verification.commitment_matches {
        println!("NOT VERIFIED: SHA-256 of the revealed seed is not the commitment");
    }
    if !verification.draws_match {
        println!(
            "NOT VERIFIED: draws {:?} are not what the seed gives",
            verification.mismatched
        );
    }
    if verification.verified && kept_matches {
        println!(
            "verified: the seed matches its commitment and all {} draws are what it gives",
            record.draws.len()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
