//! The end-to-end test harness: builds the plugins in `plugins/` once, starts real hosts on
//! `127.0.0.1:0` with a temporary SQLite database and chosen plugin bundles, and talks to them
//! over HTTP.
//!
//! A panic on any of a host's threads (its async workers or the engine's epoch thread) is a
//! host defect: the harness counts them and [`TestHost::stop`] fails the test if there were any.

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
/// plugin directory holding `bundles`.
pub fn test_config(data: &Path, bundles: &[Bundle]) -> Config {
    let plugins_dir = data.join("plugins");
    std::fs::create_dir_all(&plugins_dir).expect("create plugins dir");
    for bundle in bundles {
        bundle.install(&plugins_dir);
    }
    Config {
        data_dir: data.join("data"),
        plugins_dir,
        cache_dir: Some(repo_root().join("target/lifecircle-test-cache")),
        ..Config::default()
    }
}

/// A running host.
pub struct TestHost {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The host's services.
    pub state: AppState,
    /// The temporary directory with the database and plugins; kept for restarts.
    pub dir: TempDir,
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

    /// Starts a host with `bundles`, letting `configure` change the configuration.
    pub async fn start_with(bundles: &[Bundle], configure: impl FnOnce(&mut Config)) -> TestHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path(), bundles);
        configure(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts a host on `dir` (whose database may already hold data) with `config`.
    pub async fn start_in(dir: TempDir, config: Config) -> TestHost {
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
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// A valid token for `customer` in `region`.
    pub fn token(&self, customer: &str, region: &str) -> String {
        self.state.identity.mint(
            &Customer {
                id: customer.into(),
                region: region.into(),
            },
            Duration::from_secs(600),
        )
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

    /// Any request; `token` becomes a bearer token, `body` is sent as JSON.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("the host answers");
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

    /// Stops the host, waits for it to finish, fails if any host thread panicked, and hands
    /// back the directory (to restart on the same database).
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served
                .await
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
        assert_no_host_panics();
        self.dir
    }
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
