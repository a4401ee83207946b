//! Lifecircle: a WebAssembly plugin host that runs a bank's partners' life-scenario plugins
//! (bill payments, coupons, lotteries, points) for mobile banking.
//!
//! [`build`] turns a [`Config`] into the running services ([`AppState`]): database, engine,
//! plugins, commit writer. [`app`] is the HTTP router over them and [`serve`] runs it on a
//! listener until a shutdown signal; [`run`] does all three.

pub mod api;
pub mod audit;
pub mod bench;
pub mod biller_sim;
pub mod calendar;
pub mod client;
pub mod commit;
pub mod config;
pub mod db;
pub mod development;
pub mod error;
pub mod events;
pub mod identity;
pub mod invocation;
pub mod jobs;
pub mod ledger;
pub mod metrics;
pub mod outbound;
pub mod payments;
pub mod registry;
pub mod reports;
pub mod runtime;
pub mod store;
pub mod vouchers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;

/// Everything a request handler can reach.
pub type AppState = Arc<Services>;

/// The host's running services.
pub struct Services {
    /// The configuration the host started with.
    pub config: Config,
    /// The database.
    pub db: db::Db,
    /// The WebAssembly engine.
    pub runtime: Arc<runtime::Runtime>,
    /// The plugin registry: what each region runs.
    pub registry: Arc<registry::Registry>,
    /// Customer tokens and pseudonyms.
    pub identity: identity::Identity,
    /// Recently read customer profiles.
    pub customers: identity::customers::Cache,
    /// The commit writer.
    pub committer: commit::Committer,
    /// Invocation metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The draw seeds: committed before their day, revealed after it.
    pub fairness: Arc<audit::fairness::Fairness>,
    /// Local days and working days.
    pub calendar: Arc<calendar::Calendar>,
    /// The HTTP client plugins' `outbound` requests share.
    pub http: reqwest::Client,
    /// Signs and checks the vouchers plugins issue.
    pub vouchers: Arc<vouchers::Signer>,
    /// The core-banking connector `payments` goes through.
    pub bank: Arc<dyn payments::CoreBanking>,
    /// Whether the token secret is the generated development secret.
    pub development_secret: bool,
    /// The admin token (from config, or generated into the database).
    pub admin_token: String,
    /// sha256 of the admin token, compared in constant time.
    admin_token_digest: [u8; 32],
}

impl Services {
    /// Whether `presented` is the admin token, compared in constant time (by digest, so the
    /// comparison leaks neither the token nor its length).
    pub fn admin_token_matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(self.admin_token_digest.iter())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The database cannot be opened or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// The database URL.
        url: String,
        /// What went wrong.
        source: sqlx::Error,
    },
    /// The engine cannot be created.
    #[error("cannot create the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    /// A plugin bundle is bad.
    #[error(transparent)]
    Plugins(#[from] registry::RegistryError),
    /// A customer-token key could not be loaded.
    #[error(transparent)]
    TokenKey(#[from] identity::token::KeyError),
    /// The calendar settings are invalid.
    #[error("{0}")]
    Calendar(String),
    /// The HTTP client for `outbound` and `payments` cannot be built (TLS roots).
    #[error("cannot set up HTTPS for plugins' outbound requests: {0}")]
    HttpClient(reqwest::Error),
}

/// Opens the database and returns the identity service (used by `lifecircle token` too).
pub async fn open_identity(
    config: &Config,
) -> Result<(db::Db, identity::Identity, bool), StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let url = config.database_url();
    let database_error = |source| StartError::Database {
        url: db::redacted(&url),
        source,
    };
    let db = db::Db::open_with(&url, &config.sqlite)
        .await
        .map_err(database_error)?;
    let auth = &config.auth;
    let mut keys = Vec::new();
    for key in &auth.token_keys {
        keys.push(identity::TokenKey::from_pem_file(
            &key.kid,
            &key.algorithm,
            &key.pem_file,
        )?);
    }
    if let Some(path) = &auth.token_jwks_file {
        keys.extend(identity::TokenKey::from_jwks_file(path)?);
    }
    // A development secret only when the bank configured no key at all: with public keys, an
    // HS256 token is accepted only if the bank set a secret too.
    let (secret, development) = match &auth.token_secret {
        Some(secret) => (Some(secret.as_bytes().to_vec()), false),
        None if keys.is_empty() => (
            Some(db.secret("token").await.map_err(database_error)?),
            true,
        ),
        None => (None, false),
    };
    if let Some(secret) = &secret {
        keys.push(identity::TokenKey::hs256(secret));
    }
    let rules = identity::TokenRules {
        issuer: auth.token_issuer.clone(),
        audience: auth.token_audience.clone(),
        leeway_seconds: auth.token_leeway_seconds,
    };
    let pseudonym_key = db.secret("pseudonym").await.map_err(database_error)?;
    let identity = identity::Identity::new(keys, &rules, secret.as_deref(), &pseudonym_key);
    Ok((db, identity, development))
}

/// Starts every service the configuration describes.
pub async fn build(config: Config) -> Result<AppState, StartError> {
    let (db, identity, development_secret) = open_identity(&config).await?;
    let calendar =
        Arc::new(calendar::Calendar::new(&config.calendar).map_err(StartError::Calendar)?);
    let runtime = Arc::new(
        runtime::Runtime::new(
            &config.engine,
            config.memory_bytes_max_any_plugin(),
            config.table_elements_max_any_plugin(),
            config.cache_dir(),
        )
        .map_err(StartError::Engine)?,
    );
    let metrics = Arc::new(metrics::Metrics::default());
    let registry = Arc::new(registry::Registry::new(
        db.clone(),
        runtime.clone(),
        config.clone(),
        metrics.clone(),
    ));
    if config.plugins_dir.as_os_str().is_empty() {
        registry
            .reload()
            .await
            .map_err(registry::RegistryError::from)?;
    } else {
        registry::dev::install(&registry, &config.plugins_dir).await?;
        registry::dev::watch(
            &registry,
            config.plugins_dir.clone(),
            std::time::Duration::from_millis(config.registry.dev_watch_interval_ms),
        );
    }
    registry.start_polling(std::time::Duration::from_millis(
        config.registry.poll_interval_ms,
    ));
    let admin_token = match &config.auth.admin_token {
        Some(token) => token.clone(),
        None => hex::encode(
            db.secret("admin")
                .await
                .map_err(|source| StartError::Database {
                    url: db::redacted(&config.database_url()),
                    source,
                })?,
        ),
    };
    let admin_token_digest = {
        use sha2::{Digest, Sha256};
        Sha256::digest(admin_token.as_bytes()).into()
    };
    let customers = identity::customers::Cache::new(
        std::time::Duration::from_millis(config.identity.customer_cache_ms),
        config.identity.customer_cache_entries,
    );
    let committer = commit::Committer::start(db.clone(), metrics.clone());
    ledger::start_sweeper(
        db.clone(),
        std::time::Duration::from_secs(config.ledger.sweep_interval_seconds),
    );
    let audit_config = &config.audit;
    audit::start_sweeper(
        db.clone(),
        std::time::Duration::from_secs(u64::from(audit_config.retention_days) * 86_400),
        std::time::Duration::from_secs(audit_config.sweep_interval_seconds),
    );
    let fairness = Arc::new(audit::fairness::Fairness::new(db.clone(), calendar.clone()));
    fairness.start_committing(
        registry.clone(),
        audit_config.commit_days_ahead,
        std::time::Duration::from_secs(audit_config.commit_interval_seconds),
    );
    let http = outbound::client(!config.outbound.allow_private_addresses)
        .map_err(StartError::HttpClient)?;
    let bank_http = outbound::client(false).map_err(StartError::HttpClient)?;
    let bank = payments::connector(&config.payments, &db, &bank_http);
    let vouchers = Arc::new(vouchers::Signer::new(
        &db.secret("vouchers")
            .await
            .map_err(|source| StartError::Database {
                url: db::redacted(&config.database_url()),
                source,
            })?,
    ));
    let state = Arc::new(Services {
        config,
        db,
        runtime,
        registry,
        identity,
        customers,
        committer,
        metrics,
        fairness,
        calendar,
        bank,
        vouchers,
        http,
        development_secret,
        admin_token,
        admin_token_digest,
    });
    jobs::runner::start(&state);
    Ok(state)
}

/// The HTTP router over `state`.
pub fn app(state: AppState) -> axum::Router {
    api::router(state)
}

/// Serves `state` on `listener` until `shutdown` completes, lets requests in flight finish,
/// and waits until every queued write and invocation record is on disk.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    state: AppState,
) -> std::io::Result<()> {
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Err(error) = state.committer.flush().await {
        tracing::error!(%error, "could not write the last invocation records");
    }
    Ok(())
}

/// Builds the services from `config` and serves them on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: Config,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let state = build(config).await?;
    serve(listener, shutdown, state).await?;
    Ok(())
}
