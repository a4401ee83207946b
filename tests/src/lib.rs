//! The end-to-end test harness: builds the plugins in `plugins/` once, starts real hosts on
//! `127.0.0.1:0` with a temporary database and chosen plugin bundles, and talks to them over
//! HTTP.
//!
//! The database is a temporary SQLite file, or, for tests written with [`on_each_backend!`]
//! and when `LIFECIRCLE_TEST_POSTGRES_URL` is set, a fresh schema in that PostgreSQL database.
//!
//! A panic on any of a host's threads (its async workers or the engine's epoch thread) is a
//! host defect: the harness counts them and [`TestHost::stop`] fails the test if there were any.

pub mod core_bank;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lifecircle::identity::Customer;
use lifecircle::{AppState, Config};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

/// The built bundles (`plugins/dist`), building them on first use.
pub fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let root = repo_root();
        let output = std::process::Command::new("bash")
            .arg(root.join("plugins/build.sh"))
            .output()
            .expect("bash runs plugins/build.sh");
        assert!(
            output.status.success(),
            "plugins/build.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        root.join("plugins/dist")
    })
}

/// The database a test host runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh schema in the PostgreSQL database of `LIFECIRCLE_TEST_POSTGRES_URL`.
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

/// The PostgreSQL URL the tests may use, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("LIFECIRCLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

impl Backend {
    /// Runs `test` with hosts it starts on this backend.
    pub async fn scope<F: Future>(self, test: F) -> F::Output {
        BACKEND.scope(self, test).await
    }

    /// The backend of the running test (SQLite unless it chose otherwise).
    pub fn current() -> Backend {
        BACKEND
            .try_with(|backend| *backend)
            .unwrap_or(Backend::Sqlite)
    }
}

/// Defines each test twice, as `<name>::sqlite` and `<name>::postgres`. The PostgreSQL one
/// runs when `LIFECIRCLE_TEST_POSTGRES_URL` is set (`.ci/run` sets it when the local server
/// answers) and otherwise says it was skipped.
#[macro_export]
macro_rules! on_each_backend {
    ($( $(#[$meta:meta])* async fn $name:ident() $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::Backend::Sqlite.scope(async $body).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::postgres_url().is_none() {
                    eprintln!("skipped: LIFECIRCLE_TEST_POSTGRES_URL is not set");
                    return;
                }
                $crate::Backend::Postgres.scope(async $body).await
            }
        }
    )*};
}

/// Creates a fresh schema in the test PostgreSQL database and returns its name and a URL that
/// uses it.
async fn postgres_schema() -> (String, String) {
    let base = postgres_url().expect("the postgres backend needs LIFECIRCLE_TEST_POSTGRES_URL");
    let schema = format!("lc_test_{}", uuid_like());
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut connection)
        .await
        .expect("create schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options[search_path]={schema}");
    (schema, url)
}

async fn drop_postgres_schema(schema: &str) {
    let Some(base) = postgres_url() else { return };
    if let Ok(mut connection) = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut connection)
            .await;
    }
}

/// A unique lowercase name fragment.
fn uuid_like() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A migrated database on the running test's [`Backend`], with a pool of several writers
/// (unlike a host, which writes through one connection), for tests of concurrent transactions.
pub struct TestDb {
    /// Connections that may all write at once.
    pub pool: lifecircle::db::Pool,
    _dir: TempDir,
    schema: Option<String>,
}

impl TestDb {
    /// Connections in [`TestDb::pool`].
    pub const CONNECTIONS: u32 = 16;

    /// A fresh database.
    pub async fn open() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, schema) = match Backend::current() {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("ledger.db").display()),
                None,
            ),
            Backend::Postgres => {
                let (schema, url) = postgres_schema().await;
                (url, Some(schema))
            }
        };
        // Migrate through the host's own opening path.
        lifecircle::db::Db::open(&url)
            .await
            .expect("open")
            .close()
            .await;
        let pool = match Backend::current() {
            Backend::Sqlite => {
                let options =
                    <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
                        .expect("url")
                        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                        .busy_timeout(Duration::from_secs(60));
                lifecircle::db::Pool::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(Self::CONNECTIONS)
                        .connect_with(options)
                        .await
                        .expect("sqlite pool"),
                )
            }
            Backend::Postgres => lifecircle::db::Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(Self::CONNECTIONS)
                    .connect(&url)
                    .await
                    .expect("postgres pool"),
            ),
        };
        TestDb {
            pool,
            _dir: dir,
            schema,
        }
    }

    /// Closes the pool and removes the database.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(schema) = &self.schema {
            drop_postgres_schema(schema).await;
        }
    }
}

/// Panics seen on host threads since the harness started.
static HOST_PANICS: AtomicUsize = AtomicUsize::new(0);

fn watch_for_host_panics() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if name == "tokio-runtime-worker" || name.starts_with("lifecircle") {
                HOST_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// A bundle to put in a test host's plugin directory, optionally changed.
#[derive(Clone)]
pub struct Bundle {
    /// Path under `plugins/dist`, for example `reference/hello`.
    pub source: &'static str,
    /// A new plugin id (the copy is a different plugin).
    pub id: Option<&'static str>,
    /// TOML appended to the manifest (for example a `[limits]` table).
    pub manifest_tail: &'static str,
}

impl Bundle {
    /// The bundle as built.
    pub const fn new(source: &'static str) -> Self {
        Self {
            source,
            id: None,
            manifest_tail: "",
        }
    }

    /// The bundle under another plugin id.
    pub const fn renamed(mut self, id: &'static str) -> Self {
        self.id = Some(id);
        self
    }

    /// The bundle with `tail` appended to its manifest.
    pub const fn with_manifest_tail(mut self, tail: &'static str) -> Self {
        self.manifest_tail = tail;
        self
    }

    fn install(&self, plugins_dir: &Path) {
        let source = dist().join(self.source);
        let name = self
            .id
            .unwrap_or_else(|| self.source.rsplit('/').next().expect("a path"));
        let target = plugins_dir.join(name);
        std::fs::create_dir_all(&target).expect("create bundle dir");
        std::fs::copy(source.join("plugin.wasm"), target.join("plugin.wasm"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
        let mut manifest =
            std::fs::read_to_string(source.join("plugin.toml")).expect("read manifest");
        if let Some(id) = self.id {
            let original = manifest
                .lines()
                .find(|line| line.starts_with("id = "))
                .expect("manifest has an id line")
                .to_owned();
            manifest = manifest.replacen(&original, &format!("id = \"{id}\""), 1);
        }
        manifest.push('\n');
        manifest.push_str(self.manifest_tail);
        std::fs::write(target.join("plugin.toml"), manifest).expect("write manifest");
    }
}

/// A configuration for a test host: temporary data, the shared compiled-plugin cache, and a
/// plugin directory holding `bundles`, enabled in region `cn` (and so its whole subtree).
pub fn test_config(data: &Path, bundles: &[Bundle]) -> Config {
    let plugins_dir = data.join("plugins");
    std::fs::create_dir_all(&plugins_dir).expect("create plugins dir");
    for bundle in bundles {
        bundle.install(&plugins_dir);
    }
    let mut config = Config {
        data_dir: data.join("data"),
        plugins_dir,
        cache_dir: Some(repo_root().join("target/lifecircle-test-cache")),
        ..Config::default()
    };
    // The tests' customers live under `cn`: development mode enables the bundles there.
    config.registry.dev_regions = vec!["cn".into()];
    config
}

/// Starts the repo's biller simulator on a free port of 127.0.0.1 and returns its address,
/// `http://127.0.0.1:PORT`; its billers' API is under `/bills`.
pub async fn biller_simulator() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(lifecircle::biller_sim::serve(listener));
    address
}

/// A running host.
pub struct TestHost {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The host's services.
    pub state: AppState,
    /// The temporary directory with the database and plugins; kept for restarts.
    pub dir: TempDir,
    /// The PostgreSQL schema the host uses, if it runs on PostgreSQL.
    schema: Option<String>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// The `x-request-id` header.
    pub request_id: String,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.expect("body");
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            request_id,
        }
    }

    /// The `code` of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl TestHost {
    /// Starts a host with `bundles` and the default test configuration.
    pub async fn start(bundles: &[Bundle]) -> TestHost {
        Self::start_with(bundles, |_| {}).await
    }

    /// Starts a host with `bundles`, letting `configure` change the configuration, on the
    /// running test's [`Backend`].
    pub async fn start_with(bundles: &[Bundle], configure: impl FnOnce(&mut Config)) -> TestHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path(), bundles);
        let schema = match Backend::current() {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let (schema, url) = postgres_schema().await;
                config.database_url = Some(url);
                Some(schema)
            }
        };
        configure(&mut config);
        Self::start_in(Kept {
            dir,
            config,
            schema,
        })
        .await
    }

    /// Starts a host again on what an earlier one kept (its database and plugins).
    pub async fn start_in(kept: Kept) -> TestHost {
        let Kept {
            dir,
            config,
            schema,
        } = kept;
        watch_for_host_panics();
        let state = lifecircle::build(config).await.expect("host starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(lifecircle::serve(
            listener,
            async {
                let _ = stopped.await;
            },
            state.clone(),
        ));
        TestHost {
            base,
            state,
            dir,
            schema,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// A valid token for `customer` in `region`, signed with the host's HS256 secret.
    pub fn token(&self, customer: &str, region: &str) -> String {
        self.state
            .identity
            .mint(
                &Customer {
                    id: customer.into(),
                    region: region.into(),
                },
                Duration::from_secs(600),
            )
            .expect("test hosts have an HS256 secret")
    }

    /// `POST /v1/scenarios/{plugin}/{action}` with a JSON body as the given customer.
    pub async fn call(&self, token: &str, plugin: &str, action: &str, body: Value) -> Reply {
        self.request(
            reqwest::Method::POST,
            &format!("/v1/scenarios/{plugin}/{action}"),
            Some(token),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// `POST path` as `token` with a JSON `body` and `Idempotency-Key: key`.
    pub async fn post_keyed(&self, path: &str, token: &str, body: Value, key: &str) -> Reply {
        self.request_with_headers(
            reqwest::Method::POST,
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
            &[("idempotency-key", key)],
        )
        .await
    }

    /// Enables `plugin`'s running version in `region` again with `settings`: the body of
    /// `PUT /admin/v1/regions/{region}/plugins/{plugin}` without the version
    /// (`{"config": ...}`, and `outbound_hosts` if it asks for any).
    pub async fn configure(&self, region: &str, plugin: &str, settings: Value) {
        let version = self
            .state
            .registry
            .deployment(plugin, region)
            .unwrap_or_else(|| panic!("{plugin} runs in {region}"))
            .plugin
            .version
            .clone();
        let mut body = settings;
        body["version"] = Value::String(version.to_string());
        let reply = self
            .request(
                reqwest::Method::PUT,
                &format!("/admin/v1/regions/{region}/plugins/{plugin}"),
                Some(&self.state.admin_token),
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    /// Funds `plugin`'s budget in `region` with `points` (once per `key`).
    pub async fn fund(&self, region: &str, plugin: &str, points: i64, key: &str) {
        let reply = self
            .post_keyed(
                &format!("/admin/v1/budgets/{plugin}/{region}"),
                &self.state.admin_token,
                serde_json::json!({ "points": points }),
                key,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    /// Has `utility-payments` in region `cn` pay water bills (100 to 100,000 fen) at a new
    /// [`biller_simulator`], earning `points_per_payment` from a budget of 1,000 points, and
    /// polling a pending payment at once, up to 10 times.
    pub async fn pay_water_bills_at_a_simulator(&self, points_per_payment: i64) {
        let api = format!("{}/bills", biller_simulator().await);
        self.configure(
            "cn",
            "utility-payments",
            serde_json::json!({
                "outbound_hosts": ["127.0.0.1"],
                "config": {
                    "points_per_payment": points_per_payment, "poll_seconds": 0, "poll_max": 10,
                    "billers": [{"id": "water", "kind": "water", "name": "Water", "api_url": api,
                                 "min_fen": 100, "max_fen": 100000}]
                }
            }),
        )
        .await;
        self.fund("cn", "utility-payments", 1000, "fund").await;
    }

    /// The host's record of every payment of `customer`, oldest first.
    pub async fn payments_of(&self, customer: &str) -> Vec<Value> {
        let listed = self
            .request(
                reqwest::Method::GET,
                &format!("/admin/v1/payments?customer={customer}"),
                Some(&self.state.admin_token),
                None,
            )
            .await;
        assert_eq!(listed.status, 200, "{listed:?}");
        let mut payments = listed.body["payments"]
            .as_array()
            .expect("payments")
            .clone();
        payments.reverse();
        payments
    }

    /// The balance of `customer`'s sandbox bank account, in minor units.
    pub async fn sandbox_balance(&self, customer: &str) -> i64 {
        let reply = self
            .request(
                reqwest::Method::GET,
                &format!("/admin/v1/sandbox/accounts/{customer}"),
                Some(&self.state.admin_token),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body["balance_minor"].as_i64().expect("a balance")
    }

    /// Registers partner `id` (head office) for `plugins` and returns a new API key of it.
    pub async fn partner_key(&self, id: &str, plugins: &[&str]) -> String {
        let admin = self.state.admin_token.clone();
        let partner = serde_json::json!({"name": id, "plugins": plugins}).to_string();
        let path = format!("/admin/v1/partners/{id}");
        let put = self
            .request(
                reqwest::Method::PUT,
                &path,
                Some(&admin),
                Some(partner.into_bytes()),
            )
            .await;
        assert_eq!(put.status, 200, "{put:?}");
        let keys = format!("{path}/keys");
        let key = serde_json::json!({"name": format!("key-{}", uuid_like())}).to_string();
        let issued = self
            .request(
                reqwest::Method::POST,
                &keys,
                Some(&admin),
                Some(key.into_bytes()),
            )
            .await;
        issued.body["key"]
            .as_str()
            .expect("a partner key")
            .to_owned()
    }

    /// Any request; `token` becomes a bearer token, `body` is sent as JSON.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.request_with_headers(method, path, token, body, &[])
            .await
    }

    /// Any request with extra headers.
    pub async fn request_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("the host answers");
        Reply::read(response).await
    }

    /// Uploads a bundle to `path` (`/admin/v1/plugins` or `/partner/v1/plugins`) as the
    /// upload endpoints take it.
    pub async fn upload(&self, path: &str, token: &str, manifest: &str, component: &[u8]) -> Reply {
        let (content_type, body) = lifecircle::registry::upload_form(manifest, component);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the host answers");
        Reply::read(response).await
    }

    /// Starts another host on this host's database, as a second replica behind the same load
    /// balancer would run: its own engine, registry and poller, no development bundles.
    pub async fn start_replica(&self) -> TestHost {
        let mut config = self.state.config.clone();
        config.plugins_dir = PathBuf::new();
        Self::start_in(Kept {
            dir: tempfile::tempdir().expect("tempdir"),
            config,
            schema: None,
        })
        .await
    }

    /// Creates an admin token with `role` (and `region` scope) in the host's database, as
    /// `lifecircle admin create-token` does, and returns it.
    pub async fn admin_token(
        &self,
        name: &str,
        role: lifecircle::identity::admins::Role,
        region: Option<&str>,
    ) -> String {
        let admin = lifecircle::identity::admins::Admin {
            name: name.into(),
            role,
            region: region.map(str::to_owned),
        };
        let mut transaction = self.state.db.write.begin().await.expect("transaction");
        let token = lifecircle::identity::admins::create(&mut transaction.conn(), &admin, 0)
            .await
            .expect("created");
        transaction.commit().await.expect("commit");
        token
    }

    /// The single integer `sql` selects (a `COUNT(*)`), read from the host's database.
    pub async fn count(&self, sql: &'static str) -> i64 {
        let mut connection = self.state.db.read.acquire().await.expect("connection");
        lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_scalar(sql)
                .fetch_one(&mut *c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// `GET path` as plain text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the host answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("text"))
    }

    /// Stops the host, fails if any host thread panicked, and removes its database.
    pub async fn stop(self) {
        let kept = self.stop_and_keep().await;
        if let Some(schema) = &kept.schema {
            drop_postgres_schema(schema).await;
        }
    }

    /// Stops the host, waits for it to finish, fails if any host thread panicked, and hands
    /// back its database and plugins (to look at, or to start again with [`TestHost::start_in`]).
    pub async fn stop_and_keep(mut self) -> Kept {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served
                .await
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
        self.state.db.close().await;
        assert_no_host_panics();
        Kept {
            dir: self.dir,
            config: self.state.config.clone(),
            schema: self.schema,
        }
    }
}

/// What a stopped host leaves: its directory, configuration and database.
pub struct Kept {
    /// The directory with plugins (and the SQLite file).
    pub dir: TempDir,
    /// The configuration it ran with.
    pub config: Config,
    /// Its PostgreSQL schema, if any.
    pub schema: Option<String>,
}

/// Fails if any host thread has panicked.
pub fn assert_no_host_panics() {
    assert_eq!(
        HOST_PANICS.load(Ordering::SeqCst),
        0,
        "a host thread panicked (see the output above)"
    );
}

/// Serializes tests that need the machine to themselves (timing-sensitive containment).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
