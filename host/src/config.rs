//! The host's one configuration: defaults, then a TOML file, then `LIFECIRCLE_*` environment
//! variables, then command-line flags, validated before any port is bound.
//!
//! Unknown keys are errors that name the key, so a typo in a file or an environment variable
//! stops the process instead of silently running with a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the host can be told.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the embedded database and the compiled-plugin cache.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Development mode: directory of plugin bundles (one sub-directory per plugin, each with a
    /// `plugin.toml` and its component) that the host registers, approves and enables in
    /// `registry.dev_regions` at start-up, and again whenever a bundle's files change. Empty
    /// means none: plugins then come only through the admin API.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Directory of compiled plugins, keyed by component digest and engine settings. Unset
    /// means `<data_dir>/cache`. Safe to share between hosts of the same version.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Database URL: `sqlite:PATH` or `postgres://...`. Unset means the embedded SQLite file
    /// `<data_dir>/lifecircle.db`. The conventional `DATABASE_URL` variable sets it too (below
    /// `LIFECIRCLE_DATABASE_URL`).
    #[serde(default)]
    pub database_url: Option<String>,
    /// Log filter in `tracing` syntax (`info`, `lifecircle=debug,warn`); `RUST_LOG` wins.
    #[serde(default = "default_log")]
    pub log: String,
    /// Customer authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Limits every plugin call runs under, unless `plugin_limits` says otherwise for a plugin.
    #[serde(default)]
    pub limits: Limits,
    /// Per-plugin limits set by the bank, by plugin id. They replace `limits` for that plugin;
    /// a plugin's own manifest may only tighten them.
    #[serde(default)]
    pub plugin_limits: BTreeMap<String, LimitOverrides>,
    /// Settings of the WebAssembly engine shared by all plugins.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Settings of the points ledger.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Settings of the customer identity service.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Development mode: what the dev-mode approval of each bundle in `plugins_dir` grants, by
    /// plugin id. Uploaded versions get their grants from the reviewer who approves them.
    #[serde(default)]
    pub plugin_grants: BTreeMap<String, PluginGrants>,
    /// Settings of the plugin registry.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Development mode: where `serve` runs the biller simulator that `utility-payments`'
    /// development billers call (`host:port`; empty: not started). Ignored outside
    /// development mode.
    #[serde(default = "default_dev_biller_listen")]
    pub dev_biller_listen: String,
    /// The bank's local time and working days.
    #[serde(default)]
    pub calendar: crate::calendar::CalendarConfig,
    /// Invocation records and verifiable draws.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Scheduled plugin work.
    #[serde(default)]
    pub jobs: JobsConfig,
    /// Plugins' HTTP requests to partner systems.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Payments from and to customers' bank accounts.
    #[serde(default)]
    pub payments: PaymentsConfig,
    /// Analytics events plugins emit.
    #[serde(default)]
    pub events: EventsConfig,
    /// Campaign reports.
    #[serde(default)]
    pub reports: ReportsConfig,
    /// Vouchers plugins issue for other plugins to honour.
    #[serde(default)]
    pub vouchers: VouchersConfig,
    /// The embedded SQLite database.
    #[serde(default)]
    pub sqlite: SqliteConfig,
}

/// The embedded SQLite database (`sqlite`); ignored on PostgreSQL.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Bytes the write-ahead log may grow to before the commit writer restarts it from its
    /// start, and the size its file is cut back to then. Bounds the disk the log takes under
    /// sustained writes, which would otherwise grow it without end (at the benchmarks' rates,
    /// tens of megabytes a second). At least 1 MiB.
    #[serde(default = "default_sqlite_wal_bytes_max")]
    pub wal_bytes_max: u64,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            wal_bytes_max: default_sqlite_wal_bytes_max(),
        }
    }
}

fn default_sqlite_wal_bytes_max() -> u64 {
    64 << 20
}

/// Vouchers plugins issue for other plugins to honour (`vouchers`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VouchersConfig {
    /// The longest a voucher may stay valid, in days.
    #[serde(default = "default_vouchers_validity_days_max")]
    pub validity_days_max: u32,
}

impl Default for VouchersConfig {
    fn default() -> Self {
        Self {
            validity_days_max: default_vouchers_validity_days_max(),
        }
    }
}

fn default_vouchers_validity_days_max() -> u32 {
    90
}

/// Analytics events plugins emit (`events`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Events one call may emit.
    #[serde(default = "default_events_per_call_max")]
    pub per_call_max: u32,
    /// Bytes of one event's properties (JSON).
    #[serde(default = "default_events_properties_bytes_max")]
    pub properties_bytes_max: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            per_call_max: default_events_per_call_max(),
            properties_bytes_max: default_events_properties_bytes_max(),
        }
    }
}

fn default_events_per_call_max() -> u32 {
    16
}
fn default_events_properties_bytes_max() -> u32 {
    4096
}

/// Campaign reports (`GET /admin/v1/reports/{plugin}`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// What one point costs the bank, in minor units of the first of `payments.currencies`:
    /// with cash paid out, it makes a campaign's cost per participant.
    #[serde(default = "default_point_value_minor")]
    pub point_value_minor: i64,
    /// The most days one report spans.
    #[serde(default = "default_report_days_max")]
    pub days_max: u32,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            point_value_minor: default_point_value_minor(),
            days_max: default_report_days_max(),
        }
    }
}

fn default_point_value_minor() -> i64 {
    1
}
fn default_report_days_max() -> u32 {
    366
}

/// Which core-banking connector `payments` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Connector {
    /// Accounts in the host's database: development and tests.
    Sandbox,
    /// The bank's core system over HTTP (`payments.http_url`).
    Http,
}

/// Payments from and to customers' bank accounts (`payments`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// `sandbox` (default) or `http`.
    #[serde(default = "default_connector")]
    pub connector: Connector,
    /// The base URL of the bank's core-banking service (connector `http`).
    #[serde(default)]
    pub http_url: Option<String>,
    /// A bearer token the host sends to it, if it wants one.
    #[serde(default)]
    pub http_token: Option<String>,
    /// Longest wait for the bank's answer, in milliseconds; then the payment is pending.
    /// Waiting counts against `outbound.wait_ms_max`, the call's total wait on partners.
    #[serde(default = "default_payments_timeout_ms")]
    pub timeout_ms: u64,
    /// Currencies plugins may pay in (ISO 4217).
    #[serde(default = "default_currencies")]
    pub currencies: Vec<String>,
    /// Largest single payment, in minor units.
    #[serde(default = "default_amount_minor_max")]
    pub amount_minor_max: i64,
    /// Payments one call may make.
    #[serde(default = "default_payments_per_call_max")]
    pub per_call_max: u32,
    /// The balance a sandbox account opens with on first use, in minor units (0: accounts
    /// must be funded by an admin first).
    #[serde(default = "default_sandbox_opening_balance_minor")]
    pub sandbox_opening_balance_minor: i64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            connector: default_connector(),
            http_url: None,
            http_token: None,
            timeout_ms: default_payments_timeout_ms(),
            currencies: default_currencies(),
            amount_minor_max: default_amount_minor_max(),
            per_call_max: default_payments_per_call_max(),
            sandbox_opening_balance_minor: default_sandbox_opening_balance_minor(),
        }
    }
}

fn default_connector() -> Connector {
    Connector::Sandbox
}
fn default_payments_timeout_ms() -> u64 {
    5_000
}
fn default_currencies() -> Vec<String> {
    vec!["CNY".into()]
}
fn default_amount_minor_max() -> i64 {
    5_000_000
}
fn default_payments_per_call_max() -> u32 {
    4
}
fn default_sandbox_opening_balance_minor() -> i64 {
    100_000
}

/// Plugins' HTTP requests to partner systems (`outbound`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Longest wait for one response, body included, in milliseconds.
    #[serde(default = "default_outbound_timeout_ms")]
    pub timeout_ms: u64,
    /// Total time one call may wait on responses, in milliseconds. It extends the call's
    /// deadline (waiting burns no fuel).
    #[serde(default = "default_outbound_wait_ms_max")]
    pub wait_ms_max: u64,
    /// Requests one call may make.
    #[serde(default = "default_outbound_requests_per_call_max")]
    pub requests_per_call_max: u32,
    /// Bytes of one request body.
    #[serde(default = "default_outbound_request_bytes_max")]
    pub request_bytes_max: u64,
    /// Bytes of one response body.
    #[serde(default = "default_outbound_response_bytes_max")]
    pub response_bytes_max: u64,
    /// Whether a host name on an allow-list may lead to a private, loopback or link-local
    /// address (and plugins' requests may go through a proxy from the environment). Off:
    /// whoever runs a partner's DNS could otherwise point an allowed name at the bank's own
    /// network. Rules naming an IP address reach it either way.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_outbound_timeout_ms(),
            wait_ms_max: default_outbound_wait_ms_max(),
            requests_per_call_max: default_outbound_requests_per_call_max(),
            request_bytes_max: default_outbound_request_bytes_max(),
            response_bytes_max: default_outbound_response_bytes_max(),
            allow_private_addresses: false,
        }
    }
}

fn default_outbound_timeout_ms() -> u64 {
    5_000
}
fn default_outbound_wait_ms_max() -> u64 {
    15_000
}
fn default_outbound_requests_per_call_max() -> u32 {
    8
}
fn default_outbound_request_bytes_max() -> u64 {
    256 << 10
}
fn default_outbound_response_bytes_max() -> u64 {
    1 << 20
}

/// Scheduled plugin work.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs a plugin may have pending (or running) at once, across its regions. Bounds the
    /// jobs table.
    #[serde(default = "default_jobs_pending_max")]
    pub pending_max: u64,
    /// Bytes of one job's payload.
    #[serde(default = "default_jobs_payload_bytes_max")]
    pub payload_bytes_max: u32,
    /// Jobs one call may schedule (more stops the call: 507 `plugin_job_limit`).
    #[serde(default = "default_jobs_per_call_max")]
    pub per_call_max: u32,
    /// How far ahead a job may be due, in days.
    #[serde(default = "default_jobs_ahead_days_max")]
    pub ahead_days_max: u32,
    /// Attempts of a job before it is recorded as failed.
    #[serde(default = "default_jobs_attempts_max")]
    pub attempts_max: u32,
    /// Delay before the first retry, in milliseconds; it doubles with every attempt.
    #[serde(default = "default_jobs_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest delay between attempts, in milliseconds.
    #[serde(default = "default_jobs_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How often each host looks for due jobs, in milliseconds.
    #[serde(default = "default_jobs_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long a host holds a job it runs before another may take it over, in
    /// milliseconds. Must be longer than any plugin's deadline.
    #[serde(default = "default_jobs_lease_ms")]
    pub lease_ms: u64,
    /// Jobs one host claims (and runs at once) per poll.
    #[serde(default = "default_jobs_claim_max")]
    pub claim_max: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            pending_max: default_jobs_pending_max(),
            payload_bytes_max: default_jobs_payload_bytes_max(),
            per_call_max: default_jobs_per_call_max(),
            ahead_days_max: default_jobs_ahead_days_max(),
            attempts_max: default_jobs_attempts_max(),
            backoff_initial_ms: default_jobs_backoff_initial_ms(),
            backoff_max_ms: default_jobs_backoff_max_ms(),
            poll_interval_ms: default_jobs_poll_interval_ms(),
            lease_ms: default_jobs_lease_ms(),
            claim_max: default_jobs_claim_max(),
        }
    }
}

fn default_jobs_pending_max() -> u64 {
    100_000
}
fn default_jobs_payload_bytes_max() -> u32 {
    16 << 10
}
fn default_jobs_per_call_max() -> u32 {
    16
}
fn default_jobs_ahead_days_max() -> u32 {
    400
}
fn default_jobs_attempts_max() -> u32 {
    5
}
fn default_jobs_backoff_initial_ms() -> u64 {
    10_000
}
fn default_jobs_backoff_max_ms() -> u64 {
    3_600_000
}
fn default_jobs_poll_interval_ms() -> u64 {
    250
}
fn default_jobs_lease_ms() -> u64 {
    60_000
}
fn default_jobs_claim_max() -> u32 {
    16
}

/// Invocation records and verifiable draws.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Days invocation records, their draws and revealed draw seeds are kept. Bounds the
    /// audit tables.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// How often records past retention are deleted, in seconds.
    #[serde(default = "default_audit_sweep_interval_seconds")]
    pub sweep_interval_seconds: u64,
    /// Days after today whose draw seeds are committed (their SHA-256 published) in advance.
    #[serde(default = "default_commit_days_ahead")]
    pub commit_days_ahead: u32,
    /// How often the coming days' draw seeds are checked and committed, in seconds.
    #[serde(default = "default_commit_interval_seconds")]
    pub commit_interval_seconds: u64,
    /// Invocation records one admin page returns at most; also the most draw commitments one
    /// public listing returns.
    #[serde(default = "default_page_max")]
    pub page_max: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: default_retention_days(),
            sweep_interval_seconds: default_audit_sweep_interval_seconds(),
            commit_days_ahead: default_commit_days_ahead(),
            commit_interval_seconds: default_commit_interval_seconds(),
            page_max: default_page_max(),
        }
    }
}

fn default_dev_biller_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_retention_days() -> u32 {
    180
}
fn default_audit_sweep_interval_seconds() -> u64 {
    3600
}
fn default_commit_days_ahead() -> u32 {
    1
}
fn default_commit_interval_seconds() -> u64 {
    60
}
fn default_page_max() -> u32 {
    200
}

/// Settings of the plugin registry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The largest component an upload may carry. Bounds the memory and compile time one
    /// upload costs.
    #[serde(default = "default_component_bytes_max")]
    pub component_bytes_max: u64,
    /// The largest manifest an upload may carry.
    #[serde(default = "default_manifest_bytes_max")]
    pub manifest_bytes_max: u64,
    /// The largest per-region settings document (JSON bytes) an admin may set: every call of
    /// the plugin in the region carries it. At most 60 KiB, so it fits an admin request body
    /// (64 KiB).
    #[serde(default = "default_config_bytes_max")]
    pub config_bytes_max: u64,
    /// How often each host checks the database for registry changes made elsewhere (another
    /// host, the CLI), in milliseconds: the longest a change takes to reach every host.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Development mode: the regions the bundles of `plugins_dir` are enabled in, created if
    /// missing (in order, so a region below another needs its parent listed first).
    #[serde(default = "default_dev_regions")]
    pub dev_regions: Vec<String>,
    /// Development mode: how often the bundles of `plugins_dir` are checked for changes, in
    /// milliseconds.
    #[serde(default = "default_dev_watch_interval_ms")]
    pub dev_watch_interval_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            component_bytes_max: default_component_bytes_max(),
            manifest_bytes_max: default_manifest_bytes_max(),
            config_bytes_max: default_config_bytes_max(),
            poll_interval_ms: default_poll_interval_ms(),
            dev_regions: default_dev_regions(),
            dev_watch_interval_ms: default_dev_watch_interval_ms(),
        }
    }
}

fn default_component_bytes_max() -> u64 {
    32 << 20
}
fn default_manifest_bytes_max() -> u64 {
    64 << 10
}
fn default_config_bytes_max() -> u64 {
    32 << 10
}
fn default_poll_interval_ms() -> u64 {
    250
}
fn default_dev_regions() -> Vec<String> {
    vec!["dev".to_owned()]
}
fn default_dev_watch_interval_ms() -> u64 {
    1_000
}

/// What the bank granted one plugin.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrants {
    /// Customer profile fields (`region`, `tier`, `tags`) the plugin may see through
    /// `identity`, among those its manifest requests.
    #[serde(default)]
    pub identity_fields: Vec<String>,
}

/// What to do with a validly signed token of a customer the identity service does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCustomers {
    /// Enroll them from the token's `region` (required) and `tier` claims.
    AutoEnroll,
    /// Refuse with 403 `customer_not_enrolled`: only imported customers may enter.
    Reject,
}

/// Settings of the customer identity service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A valid token of a customer the service does not know: `auto_enroll` or `reject`.
    #[serde(default = "default_unknown_customers")]
    pub unknown_customers: UnknownCustomers,
    /// Longest line of a customer import, in bytes; a longer line is rejected and skipped.
    #[serde(default = "default_import_line_bytes_max")]
    pub import_line_bytes_max: usize,
    /// Bad lines an import report lists (the rest are counted).
    #[serde(default = "default_import_errors_listed_max")]
    pub import_errors_listed_max: usize,
    /// How long a host reuses a customer's profile before reading it again, in milliseconds
    /// (0: read it on every request). A freeze made on another host takes effect within it.
    #[serde(default = "default_customer_cache_ms")]
    pub customer_cache_ms: u64,
    /// Profiles a host keeps cached at most.
    #[serde(default = "default_customer_cache_entries")]
    pub customer_cache_entries: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            unknown_customers: default_unknown_customers(),
            import_line_bytes_max: default_import_line_bytes_max(),
            import_errors_listed_max: default_import_errors_listed_max(),
            customer_cache_ms: default_customer_cache_ms(),
            customer_cache_entries: default_customer_cache_entries(),
        }
    }
}

fn default_unknown_customers() -> UnknownCustomers {
    UnknownCustomers::AutoEnroll
}
fn default_import_line_bytes_max() -> usize {
    16 * 1024
}
fn default_import_errors_listed_max() -> usize {
    1000
}
fn default_customer_cache_ms() -> u64 {
    1000
}
fn default_customer_cache_entries() -> usize {
    100_000
}

/// A public key customer tokens may be signed with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKeyConfig {
    /// The `kid` header of tokens signed with it.
    pub kid: String,
    /// `RS256` or `ES256`: the only algorithm this key verifies.
    pub algorithm: String,
    /// PEM file of the public key.
    pub pem_file: PathBuf,
}

/// Settings of the points ledger.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Days awarded points stay valid when a plugin's manifest does not say.
    #[serde(default = "default_points_validity_days")]
    pub points_validity_days: u32,
    /// The longest validity a plugin may give points. Bounds how long a campaign's points
    /// stay a liability.
    #[serde(default = "default_points_validity_days_max")]
    pub points_validity_days_max: u32,
    /// The longest a plugin may hold a customer's points. Bounds how long points can be
    /// frozen.
    #[serde(default = "default_hold_seconds_max")]
    pub hold_seconds_max: u32,
    /// Postings one history page returns at most. Bounds one read's work.
    #[serde(default = "default_history_limit_max")]
    pub history_limit_max: u32,
    /// Ledger writes one plugin call may make. Bounds one commit's work.
    #[serde(default = "default_writes_per_call_max")]
    pub writes_per_call_max: u32,
    /// The longest idempotency key a plugin may give a ledger write, in bytes (keys are
    /// kept forever). An empty or longer key stops the call.
    #[serde(default = "default_key_bytes_max")]
    pub key_bytes_max: u32,
    /// The most points one funding request may move into a budget. Bounds a typo's damage.
    #[serde(default = "default_fund_points_max")]
    pub fund_points_max: i64,
    /// How often expired points are swept to the expired account, in seconds.
    #[serde(default = "default_sweep_interval_seconds")]
    pub sweep_interval_seconds: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            points_validity_days: default_points_validity_days(),
            points_validity_days_max: default_points_validity_days_max(),
            hold_seconds_max: default_hold_seconds_max(),
            history_limit_max: default_history_limit_max(),
            writes_per_call_max: default_writes_per_call_max(),
            key_bytes_max: default_key_bytes_max(),
            fund_points_max: default_fund_points_max(),
            sweep_interval_seconds: default_sweep_interval_seconds(),
        }
    }
}

fn default_points_validity_days() -> u32 {
    365
}
fn default_points_validity_days_max() -> u32 {
    730
}
fn default_hold_seconds_max() -> u32 {
    24 * 3600
}
fn default_history_limit_max() -> u32 {
    100
}
fn default_writes_per_call_max() -> u32 {
    32
}
fn default_key_bytes_max() -> u32 {
    512
}
fn default_fund_points_max() -> i64 {
    1_000_000_000_000
}
fn default_sweep_interval_seconds() -> u64 {
    60
}

/// How customers prove who they are.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret that customer tokens are signed with (at least 32 bytes). Unset, and with
    /// no public keys configured, means a random development secret kept in the database,
    /// which `lifecircle token` also uses.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Public keys (RS256, ES256) tokens may be signed with, each named by its `kid`.
    #[serde(default)]
    pub token_keys: Vec<TokenKeyConfig>,
    /// A JWKS file of public keys tokens may be signed with (each with a `kid`).
    #[serde(default)]
    pub token_jwks_file: Option<PathBuf>,
    /// The `iss` every token must carry, if set.
    #[serde(default)]
    pub token_issuer: Option<String>,
    /// The `aud` every token must carry, if set.
    #[serde(default)]
    pub token_audience: Option<String>,
    /// Clock skew tolerated when checking a token's `exp` and `nbf`, in seconds.
    #[serde(default = "default_token_leeway_seconds")]
    pub token_leeway_seconds: u64,
    /// A bootstrap `head_office` admin token (at least 32 bytes), named `config` in the admin
    /// audit. Unset means a random one kept in the database, printed by `serve` in development
    /// mode. Tokens made with `lifecircle admin create-token` need neither.
    #[serde(default)]
    pub admin_token: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: None,
            token_keys: Vec::new(),
            token_jwks_file: None,
            token_issuer: None,
            token_audience: None,
            token_leeway_seconds: default_token_leeway_seconds(),
            admin_token: None,
        }
    }
}

/// The bounds of one plugin call. Each one stops a specific way a plugin (or a client) could
/// hurt the host or other plugins; exceeding one ends the call with its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Instructions a call may execute (Wasmtime fuel). Bounds CPU burned by a runaway loop.
    #[serde(default = "default_fuel_max")]
    pub fuel_max: u64,
    /// Wall-clock time a call may take, in milliseconds, including time blocked in the host.
    /// Bounds how long a request can hold a connection and an instance.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Linear memory a call's instance may grow to, in bytes. Bounds memory bombs.
    #[serde(default = "default_memory_bytes_max")]
    pub memory_bytes_max: u64,
    /// Elements a call's tables may hold. Bounds table-growth bombs.
    #[serde(default = "default_table_elements_max")]
    pub table_elements_max: u64,
    /// Bytes of request body a client may send to the plugin. Bounds upload floods.
    #[serde(default = "default_request_bytes_max")]
    pub request_bytes_max: u64,
    /// Bytes of response body the plugin may return. Bounds what one call can push to a client.
    #[serde(default = "default_response_bytes_max")]
    pub response_bytes_max: u64,
    /// Calls into the host a call may make. Bounds host work a cheap guest loop can demand.
    #[serde(default = "default_host_calls_max")]
    pub host_calls_max: u64,
    /// Bytes a call may write to the log. Bounds log floods.
    #[serde(default = "default_log_bytes_max")]
    pub log_bytes_max: u64,
    /// Bytes of one `store` key. Bounds index bloat.
    #[serde(default = "default_store_key_bytes_max")]
    pub store_key_bytes_max: u64,
    /// Bytes of one `store` value. Bounds database growth per key.
    #[serde(default = "default_store_value_bytes_max")]
    pub store_value_bytes_max: u64,
    /// Keys a plugin may keep in `store` per region. Bounds database growth per plugin.
    #[serde(default = "default_store_keys_max")]
    pub store_keys_max: u64,
    /// Keys one `store.list-keys` call returns at most. Bounds one host call's work.
    #[serde(default = "default_store_list_keys_max")]
    pub store_list_keys_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel_max: default_fuel_max(),
            deadline_ms: default_deadline_ms(),
            memory_bytes_max: default_memory_bytes_max(),
            table_elements_max: default_table_elements_max(),
            request_bytes_max: default_request_bytes_max(),
            response_bytes_max: default_response_bytes_max(),
            host_calls_max: default_host_calls_max(),
            log_bytes_max: default_log_bytes_max(),
            store_key_bytes_max: default_store_key_bytes_max(),
            store_value_bytes_max: default_store_value_bytes_max(),
            store_keys_max: default_store_keys_max(),
            store_list_keys_max: default_store_list_keys_max(),
        }
    }
}

/// Some of [`Limits`], each optional: used for the bank's per-plugin settings and for a
/// plugin manifest's own `[limits]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // Each field is the `Limits` field of the same name.
pub struct LimitOverrides {
    pub fuel_max: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes_max: Option<u64>,
    pub table_elements_max: Option<u64>,
    pub request_bytes_max: Option<u64>,
    pub response_bytes_max: Option<u64>,
    pub host_calls_max: Option<u64>,
    pub log_bytes_max: Option<u64>,
    pub store_key_bytes_max: Option<u64>,
    pub store_value_bytes_max: Option<u64>,
    pub store_keys_max: Option<u64>,
    pub store_list_keys_max: Option<u64>,
}

/// Applies `$body` to every (name, field) pair of [`Limits`] and [`LimitOverrides`], so the
/// list of limits is written once.
macro_rules! for_each_limit {
    ($macro:ident) => {
        $macro!(
            fuel_max,
            deadline_ms,
            memory_bytes_max,
            table_elements_max,
            request_bytes_max,
            response_bytes_max,
            host_calls_max,
            log_bytes_max,
            store_key_bytes_max,
            store_value_bytes_max,
            store_keys_max,
            store_list_keys_max
        )
    };
}

/// A manifest asked for more than the bank allows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "limits.{name} = {requested} is above what the host allows ({allowed}); \
     lower it, or ask the bank to raise plugin_limits.<plugin>.{name}"
)]
pub struct LimitAboveHost {
    /// The limit's name.
    pub name: &'static str,
    /// What the manifest asked for.
    pub requested: u64,
    /// What the host allows.
    pub allowed: u64,
}

impl Limits {
    /// These limits with the bank's per-plugin overrides applied.
    pub fn overridden_by(mut self, overrides: &LimitOverrides) -> Limits {
        macro_rules! apply {
            ($($field:ident),*) => {$(
                if let Some(value) = overrides.$field {
                    self.$field = value;
                }
            )*};
        }
        for_each_limit!(apply);
        self
    }

    /// These limits tightened by a plugin manifest. A manifest may lower any limit; asking
    /// for more than the host allows is an error naming the limit.
    pub fn tightened_by(mut self, requested: &LimitOverrides) -> Result<Limits, LimitAboveHost> {
        macro_rules! apply {
            ($($field:ident),*) => {$(
                if let Some(value) = requested.$field {
                    if value > self.$field {
                        return Err(LimitAboveHost {
                            name: stringify!($field),
                            requested: value,
                            allowed: self.$field,
                        });
                    }
                    self.$field = value;
                }
            )*};
        }
        for_each_limit!(apply);
        Ok(self)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        macro_rules! check {
            ($($field:ident),*) => {$(
                if self.$field == 0 {
                    return Err(ConfigError::Invalid(format!(
                        "{path}.{} must be at least 1", stringify!($field)
                    )));
                }
            )*};
        }
        for_each_limit!(check);
        Ok(())
    }
}

/// Settings of the WebAssembly engine, shared by all plugins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Plugin instances that may exist at once (the pooling allocator's slots). Bounds the
    /// host's memory; a call beyond it gets 503 `host_overloaded`.
    #[serde(default = "default_instances_max")]
    pub instances_max: u32,
    /// Bytes of WebAssembly stack one call may use (engine-wide). Bounds deep recursion.
    #[serde(default = "default_stack_bytes_max")]
    pub stack_bytes_max: u64,
    /// How often the engine's deadline clock ticks, in milliseconds. Deadlines are enforced to
    /// within one tick.
    #[serde(default = "default_epoch_tick_ms")]
    pub epoch_tick_ms: u64,
    /// Instructions a call runs before it yields its thread to other requests. Keeps one
    /// busy plugin from delaying others on the same thread.
    #[serde(default = "default_fuel_yield_interval")]
    pub fuel_yield_interval: u64,
    /// Bytes of linear memory each pool slot keeps resident between instances: pages a call
    /// dirtied are reset in place up to this much, so reusing a slot neither faults pages in
    /// again nor stalls other cores with an madvise.
    #[serde(default = "default_memory_keep_resident_bytes")]
    pub memory_keep_resident_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            instances_max: default_instances_max(),
            stack_bytes_max: default_stack_bytes_max(),
            epoch_tick_ms: default_epoch_tick_ms(),
            fuel_yield_interval: default_fuel_yield_interval(),
            memory_keep_resident_bytes: default_memory_keep_resident_bytes(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins/dist/reference")
}
fn default_log() -> String {
    "info".to_owned()
}
fn default_token_leeway_seconds() -> u64 {
    30
}
fn default_fuel_max() -> u64 {
    500_000_000
}
fn default_deadline_ms() -> u64 {
    2_000
}
fn default_memory_bytes_max() -> u64 {
    64 << 20
}
fn default_table_elements_max() -> u64 {
    20_000
}
fn default_request_bytes_max() -> u64 {
    64 << 10
}
fn default_response_bytes_max() -> u64 {
    1 << 20
}
fn default_host_calls_max() -> u64 {
    10_000
}
fn default_log_bytes_max() -> u64 {
    64 << 10
}
fn default_store_key_bytes_max() -> u64 {
    512
}
fn default_store_value_bytes_max() -> u64 {
    256 << 10
}
fn default_store_keys_max() -> u64 {
    1_000_000
}
fn default_store_list_keys_max() -> u64 {
    1_000
}
fn default_instances_max() -> u32 {
    1_000
}
fn default_stack_bytes_max() -> u64 {
    512 << 10
}
fn default_epoch_tick_ms() -> u64 {
    5
}
fn default_fuel_yield_interval() -> u64 {
    1_000_000
}
fn default_memory_keep_resident_bytes() -> u64 {
    4 << 20
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file, an environment variable or a flag does not fit the schema (serde's message
    /// names the key).
    #[error("invalid configuration ({origin}): {message}")]
    Parse {
        /// Where the bad value came from.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// Values parse but do not make sense together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Prefix of the environment variables the host reads. `LIFECIRCLE_LIMITS__FUEL_MAX` sets
/// `limits.fuel_max`: a double underscore separates nested keys.
pub const ENV_PREFIX: &str = "LIFECIRCLE_";

/// Environment variables with [`ENV_PREFIX`] that are not configuration: the test suite's
/// and the admin command line's (`LIFECIRCLE_CLI_URL`, `LIFECIRCLE_CLI_TOKEN`).
const ENV_IGNORED_PREFIXES: [&str; 2] = ["LIFECIRCLE_TEST_", "LIFECIRCLE_CLI_"];

impl Default for Config {
    fn default() -> Self {
        // An empty table takes every default from the `serde(default = ...)` functions, so the
        // defaults are written once.
        Self::from_table(toml::Table::new(), "defaults").expect("the defaults are valid")
    }
}

impl Config {
    /// Builds the configuration from an optional file, the process environment and the
    /// command-line overrides (already in table form, highest precedence), then validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: toml::Table,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|error| ConfigError::Parse {
                    origin: path.display().to_string(),
                    message: error.message().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        // The file must be right on its own, so its errors name the file.
        Self::from_table(
            table.clone(),
            &file.map_or("defaults".into(), |p| p.display().to_string()),
        )?;
        merge(&mut table, env_table(env)?);
        Self::from_table(table.clone(), "environment")?;
        merge(&mut table, flags);
        let config = Self::from_table(table, "command line")?;
        config.validate()?;
        Ok(config)
    }

    fn from_table(table: toml::Table, origin: &str) -> Result<Config, ConfigError> {
        Config::deserialize(table).map_err(|error| ConfigError::Parse {
            origin: origin.to_owned(),
            message: error.message().to_owned(),
        })
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate("limits")?;
        for (plugin, overrides) in &self.plugin_limits {
            self.limits
                .overridden_by(overrides)
                .validate(&format!("plugin_limits.{plugin}"))?;
        }
        if let Some(secret) = &self.auth.token_secret
            && secret.len() < 32
        {
            return Err(ConfigError::Invalid(
                "auth.token_secret must be at least 32 bytes".into(),
            ));
        }
        if let Some(token) = &self.auth.admin_token
            && token.len() < 32
        {
            return Err(ConfigError::Invalid(
                "auth.admin_token must be at least 32 bytes".into(),
            ));
        }
        if self.identity.import_line_bytes_max == 0 {
            return Err(ConfigError::Invalid(
                "identity.import_line_bytes_max must be at least 1".into(),
            ));
        }
        crate::calendar::Calendar::new(&self.calendar).map_err(ConfigError::Invalid)?;
        let audit = &self.audit;
        for (name, value) in [
            ("audit.retention_days", u64::from(audit.retention_days)),
            ("audit.sweep_interval_seconds", audit.sweep_interval_seconds),
            (
                "audit.commit_interval_seconds",
                audit.commit_interval_seconds,
            ),
            ("audit.page_max", u64::from(audit.page_max)),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        let outbound = &self.outbound;
        for (name, value) in [
            ("outbound.timeout_ms", outbound.timeout_ms),
            ("outbound.wait_ms_max", outbound.wait_ms_max),
            (
                "outbound.requests_per_call_max",
                u64::from(outbound.requests_per_call_max),
            ),
            ("outbound.request_bytes_max", outbound.request_bytes_max),
            ("outbound.response_bytes_max", outbound.response_bytes_max),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.events.per_call_max == 0
            || self.events.properties_bytes_max == 0
            || self.reports.days_max == 0
            || self.reports.point_value_minor < 0
        {
            return Err(ConfigError::Invalid(
                "events.per_call_max, events.properties_bytes_max and reports.days_max must be \
                 at least 1, reports.point_value_minor not negative"
                    .into(),
            ));
        }
        if self.sqlite.wal_bytes_max < 1 << 20 {
            return Err(ConfigError::Invalid(
                "sqlite.wal_bytes_max must be at least 1048576 (1 MiB)".into(),
            ));
        }
        if self.vouchers.validity_days_max == 0 {
            return Err(ConfigError::Invalid(
                "vouchers.validity_days_max must be at least 1".into(),
            ));
        }
        let payments = &self.payments;
        if payments.connector == Connector::Http
            && !payments
                .http_url
                .as_deref()
                .is_some_and(|url| url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(
                "payments.connector = \"http\" needs payments.http_url, an http:// or https:// URL"
                    .into(),
            ));
        }
        if payments.timeout_ms == 0 || payments.per_call_max == 0 || payments.amount_minor_max <= 0
        {
            return Err(ConfigError::Invalid(
                "payments.timeout_ms, payments.per_call_max and payments.amount_minor_max must be at least 1".into(),
            ));
        }
        if let Some(currency) = payments
            .currencies
            .iter()
            .find(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(ConfigError::Invalid(format!(
                "payments.currencies: {currency:?} is not an ISO 4217 code such as CNY"
            )));
        }
        if payments.sandbox_opening_balance_minor < 0 {
            return Err(ConfigError::Invalid(
                "payments.sandbox_opening_balance_minor must not be negative".into(),
            ));
        }
        let jobs = &self.jobs;
        for (name, value) in [
            ("jobs.pending_max", jobs.pending_max),
            ("jobs.payload_bytes_max", u64::from(jobs.payload_bytes_max)),
            ("jobs.per_call_max", u64::from(jobs.per_call_max)),
            ("jobs.ahead_days_max", u64::from(jobs.ahead_days_max)),
            ("jobs.attempts_max", u64::from(jobs.attempts_max)),
            ("jobs.backoff_initial_ms", jobs.backoff_initial_ms),
            ("jobs.poll_interval_ms", jobs.poll_interval_ms),
            ("jobs.claim_max", u64::from(jobs.claim_max)),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if jobs.backoff_max_ms < jobs.backoff_initial_ms {
            return Err(ConfigError::Invalid(
                "jobs.backoff_max_ms must be at least jobs.backoff_initial_ms".into(),
            ));
        }
        let deadline_max = std::iter::once(self.limits.deadline_ms)
            .chain(
                self.plugin_limits
                    .values()
                    .map(|overrides| self.limits.overridden_by(overrides).deadline_ms),
            )
            .max()
            .unwrap_or(0);
        let longest_call = deadline_max.saturating_add(outbound.wait_ms_max);
        if jobs.lease_ms <= longest_call.saturating_mul(2) {
            return Err(ConfigError::Invalid(format!(
                "jobs.lease_ms ({}) must be more than twice the longest a call can run \
                 ({longest_call} ms: the longest plugin deadline plus outbound.wait_ms_max), \
                 so a running job is not taken over while it runs",
                jobs.lease_ms
            )));
        }
        let ledger = &self.ledger;
        if ledger.points_validity_days == 0
            || ledger.points_validity_days > ledger.points_validity_days_max
            || ledger.hold_seconds_max == 0
            || ledger.history_limit_max == 0
            || ledger.writes_per_call_max == 0
            || ledger.key_bytes_max == 0
            || ledger.fund_points_max < 1
            || ledger.sweep_interval_seconds == 0
        {
            return Err(ConfigError::Invalid(
                "ledger: every value must be at least 1, and points_validity_days at most \
                 points_validity_days_max"
                    .into(),
            ));
        }
        if self.engine.instances_max == 0 || self.engine.epoch_tick_ms == 0 {
            return Err(ConfigError::Invalid(
                "engine.instances_max and engine.epoch_tick_ms must be at least 1".into(),
            ));
        }
        if self.engine.stack_bytes_max < 64 << 10 {
            return Err(ConfigError::Invalid(
                "engine.stack_bytes_max must be at least 65536".into(),
            ));
        }
        let registry = &self.registry;
        if registry.component_bytes_max == 0
            || registry.manifest_bytes_max == 0
            || registry.config_bytes_max == 0
            || registry.poll_interval_ms == 0
            || registry.dev_watch_interval_ms == 0
        {
            return Err(ConfigError::Invalid(
                "registry: every size and interval must be at least 1".into(),
            ));
        }
        if registry.config_bytes_max > 60 << 10 {
            return Err(ConfigError::Invalid(
                "registry.config_bytes_max must be at most 61440: a region's settings are sent \
                 in one admin request of at most 64 KiB"
                    .into(),
            ));
        }
        if let Some(bad) = registry
            .dev_regions
            .iter()
            .find(|region| !crate::identity::is_region(region))
        {
            return Err(ConfigError::Invalid(format!(
                "registry.dev_regions: {bad:?} is not a region (lowercase letters, digits, '-')"
            )));
        }
        if let Some(url) = &self.database_url
            && !crate::db::is_supported_url(url)
        {
            return Err(ConfigError::Invalid(
                "database_url must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        Ok(())
    }

    /// The limits of plugin `plugin_id` before its manifest tightens them.
    pub fn limits_for(&self, plugin_id: &str) -> Limits {
        match self.plugin_limits.get(plugin_id) {
            Some(overrides) => self.limits.overridden_by(overrides),
            None => self.limits,
        }
    }

    /// The largest linear memory any plugin may have: the size of the engine's memory slots.
    pub fn memory_bytes_max_any_plugin(&self) -> u64 {
        self.plugin_limits
            .keys()
            .map(|plugin| self.limits_for(plugin).memory_bytes_max)
            .chain([self.limits.memory_bytes_max])
            .max()
            .unwrap_or(self.limits.memory_bytes_max)
    }

    /// The largest table any plugin may have.
    pub fn table_elements_max_any_plugin(&self) -> u64 {
        self.plugin_limits
            .keys()
            .map(|plugin| self.limits_for(plugin).table_elements_max)
            .chain([self.limits.table_elements_max])
            .max()
            .unwrap_or(self.limits.table_elements_max)
    }

    /// The largest request body any plugin accepts: the HTTP layer's outer body limit.
    pub fn request_bytes_max_any_plugin(&self) -> u64 {
        self.plugin_limits
            .keys()
            .map(|plugin| self.limits_for(plugin).request_bytes_max)
            .chain([self.limits.request_bytes_max])
            .max()
            .unwrap_or(self.limits.request_bytes_max)
    }

    /// The compiled-plugin cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }

    /// The SQLite database URL: `database_url`, or the file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("lifecircle.db").display()),
        }
    }
}

/// Turns `LIFECIRCLE_*` variables into a nested table; each value is read as a TOML value
/// (numbers, booleans) and otherwise taken as a string.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table, ConfigError> {
    let mut table = toml::Table::new();
    let mut database_url = None;
    for (name, raw) in env {
        if name == "DATABASE_URL" {
            database_url = Some(raw);
            continue;
        }
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_IGNORED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Parse {
                origin: format!("environment variable {name}"),
                message: "empty key segment".into(),
            });
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let mut node = &mut table;
        let (last, parents) = path
            .split_last()
            .expect("split yields one segment at least");
        for parent in parents {
            let entry = node
                .entry(parent.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError::Parse {
                        origin: format!("environment variable {name}"),
                        message: format!("{parent} is not a table"),
                    });
                }
            };
        }
        node.insert(last.clone(), value);
    }
    if let Some(url) = database_url {
        table
            .entry("database_url")
            .or_insert(toml::Value::String(url));
    }
    Ok(table)
}

/// Deep-merges `top` over `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_inner)), toml::Value::Table(top_inner)) => {
                merge(base_inner, top_inner)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(None, env(&[]), toml::Table::new()).expect("defaults load");
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn file_then_environment_then_flags_take_precedence_in_that_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("lifecircle.toml");
        std::fs::write(
            &file,
            "log = \"debug\"\n[limits]\nfuel_max = 5\ndeadline_ms = 7\n",
        )
        .expect("write");
        let mut flags = toml::Table::new();
        flags.insert("log".into(), toml::Value::String("warn".into()));
        let config = Config::load(
            Some(&file),
            env(&[
                ("LIFECIRCLE_LIMITS__FUEL_MAX", "9"),
                ("LIFECIRCLE_LOG", "trace"),
            ]),
            flags,
        )
        .expect("loads");
        assert_eq!(config.limits.fuel_max, 9);
        assert_eq!(config.limits.deadline_ms, 7);
        assert_eq!(config.log, "warn");
    }

    #[test]
    fn unknown_key_in_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("lifecircle.toml");
        std::fs::write(&file, "[limits]\nfuel_maxx = 5\n").expect("write");
        let error = Config::load(Some(&file), env(&[]), toml::Table::new())
            .expect_err("typo must be refused")
            .to_string();
        assert!(error.contains("fuel_maxx"), "{error}");
        assert!(error.contains("lifecircle.toml"), "{error}");
    }

    #[test]
    fn unknown_environment_variable_is_refused_with_its_name() {
        let error = Config::load(None, env(&[("LIFECIRCLE_LISTNE", "x")]), toml::Table::new())
            .expect_err("typo must be refused")
            .to_string();
        assert!(error.contains("listne"), "{error}");
        assert!(error.contains("environment"), "{error}");
    }

    #[test]
    fn test_suite_variables_are_not_configuration() {
        Config::load(
            None,
            env(&[("LIFECIRCLE_TEST_POSTGRES_URL", "postgres://x")]),
            toml::Table::new(),
        )
        .expect("ignored");
    }

    #[test]
    fn database_url_comes_from_database_url_unless_lifecircle_says_otherwise() {
        let config = Config::load(
            None,
            env(&[("DATABASE_URL", "postgres://db/a")]),
            toml::Table::new(),
        )
        .expect("loads");
        assert_eq!(config.database_url(), "postgres://db/a");
        let config = Config::load(
            None,
            env(&[
                ("DATABASE_URL", "postgres://db/a"),
                ("LIFECIRCLE_DATABASE_URL", "sqlite://x.db"),
            ]),
            toml::Table::new(),
        )
        .expect("loads");
        assert_eq!(config.database_url(), "sqlite://x.db");
        let error = Config::load(
            None,
            env(&[("DATABASE_URL", "mysql://x")]),
            toml::Table::new(),
        )
        .expect_err("mysql is refused")
        .to_string();
        assert!(error.contains("database_url"), "{error}");
    }

    #[test]
    fn zero_limit_is_refused() {
        let error = Config::load(
            None,
            env(&[("LIFECIRCLE_LIMITS__FUEL_MAX", "0")]),
            toml::Table::new(),
        )
        .expect_err("zero fuel is refused")
        .to_string();
        assert!(error.contains("limits.fuel_max"), "{error}");
    }

    #[test]
    fn manifest_may_tighten_but_not_raise_a_limit() {
        let host = Limits::default();
        let tighter = LimitOverrides {
            fuel_max: Some(10),
            ..LimitOverrides::default()
        };
        assert_eq!(host.tightened_by(&tighter).expect("tighter").fuel_max, 10);
        let looser = LimitOverrides {
            deadline_ms: Some(host.deadline_ms + 1),
            ..LimitOverrides::default()
        };
        let error = host.tightened_by(&looser).expect_err("looser is refused");
        assert_eq!(error.name, "deadline_ms");
    }

    #[test]
    fn bank_override_replaces_the_default_for_one_plugin() {
        let mut config = Config::default();
        config.plugin_limits.insert(
            "lottery".into(),
            LimitOverrides {
                memory_bytes_max: Some(128 << 20),
                ..LimitOverrides::default()
            },
        );
        assert_eq!(config.limits_for("lottery").memory_bytes_max, 128 << 20);
        assert_eq!(config.limits_for("other"), config.limits);
        assert_eq!(config.memory_bytes_max_any_plugin(), 128 << 20);
    }
}
