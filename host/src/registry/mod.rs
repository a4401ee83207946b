//! The plugin registry: plugin versions stored in the database (immutable, content-addressed,
//! reviewed), the region tree, and what each region runs (version, on/off, settings, targeting,
//! campaign window, kill switches).
//!
//! Every host serves calls from an in-memory [`Snapshot`] of that state. A change made through
//! this host swaps in a new snapshot as soon as it commits; every other host sees it within
//! `registry.poll_interval_ms`, because every change bumps one generation counter that hosts
//! poll. A call holds the [`Deployment`] it started with, so calls in flight finish on the
//! version and settings they started on while new calls see the change. Components are
//! compiled when they are uploaded (and on another host from the compile cache, when the
//! snapshot is rebuilt), never on the request path.

pub mod catalog;
mod config;
pub mod dev;
pub mod enablement;
mod manifest;
pub mod regions;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{Config, LimitAboveHost, Limits};
use crate::db::Db;
use crate::identity::customers::Profile;
use crate::metrics::{Metrics, PluginMetrics};
use crate::runtime::{CompiledPlugin, LoadError, Runtime};
use catalog::VersionRecord;
pub use config::CallConfig;
use enablement::{Enablement, Setting};
pub use manifest::{MANIFEST_FILE, Manifest, Translation, is_plugin_id};
pub use regions::ancestry;

/// The component file of a bundle whose manifest does not name one.
pub const DEFAULT_COMPONENT_FILE: &str = "plugin.wasm";

/// One approved plugin version, compiled and ready to instantiate.
pub struct Plugin {
    /// Its manifest.
    pub manifest: Manifest,
    /// The plugin id, shared cheaply with every call.
    pub id: Arc<str>,
    /// The version as stored (the manifest's, or in development mode the manifest's with the
    /// digest appended when the bundle changed under the same version).
    pub version: String,
    /// sha256 of the component, hex.
    pub digest: String,
    /// The limits its calls run under.
    pub limits: Limits,
    /// The compiled component.
    pub compiled: CompiledPlugin,
    /// The customer profile fields it may see: requested by the manifest and granted by the
    /// reviewer.
    pub identity_fields: Vec<String>,
    /// Its invocation metrics.
    pub metrics: Arc<PluginMetrics>,
}

/// What one region runs of one plugin: the version and the region's settings, resolved.
pub struct Deployment {
    /// The version.
    pub plugin: Arc<Plugin>,
    /// The region whose row this is (the caller's region or one above it).
    pub region: String,
    /// The row's revision.
    pub revision: i64,
    /// Targeting and schedule.
    pub setting: Setting,
    /// The settings the plugin reads: the manifest's defaults under the region's.
    pub config: CallConfig,
    /// sha256 of those settings (JSON text), hex: which settings a call saw.
    pub config_digest: String,
    /// How long the points it awards stay valid, in milliseconds.
    pub points_validity_ms: i64,
    /// The hosts it may reach through `outbound`: those granted here that its manifest asks
    /// for.
    pub outbound: Arc<[crate::outbound::HostRule]>,
}

impl Deployment {
    /// Whether a customer call is admitted at `now_ms`: the campaign window is open and the
    /// targeting admits the customer. Partner calls are not targeted (a merchant's till must
    /// still redeem a coupon after the campaign that gave it out has ended).
    pub fn admits(&self, customer: Option<&Profile>, now_ms: i64) -> bool {
        match customer {
            Some(profile) => {
                self.setting.open_at(now_ms) && self.setting.admits(&profile.tier, &profile.tags)
            }
            None => true,
        }
    }
}

/// What a region has of a plugin.
pub enum Lookup {
    /// It runs this deployment.
    Found(Arc<Deployment>),
    /// It would run, but a kill switch in the region or above stops it.
    Killed {
        /// What would run.
        deployment: Arc<Deployment>,
        /// The region the kill was set in.
        region: String,
        /// Why.
        reason: String,
    },
    /// Not enabled here (or nowhere: the caller cannot tell which).
    Missing,
}

/// One plugin's rows and kill switches, by region.
#[derive(Default)]
struct PluginState {
    /// `None`: the row disables the plugin in its subtree.
    rows: HashMap<String, Option<Arc<Deployment>>>,
    kills: HashMap<String, String>,
}

/// The registry as of one generation: what every region runs.
#[derive(Default)]
pub struct Snapshot {
    /// The generation it was read at (`-1`: never read).
    generation: i64,
    plugins: BTreeMap<String, PluginState>,
}

impl Snapshot {
    /// What `region` has of `plugin_id`: the nearest row at or above the region decides,
    /// then any kill at or above it stops it.
    pub fn lookup(&self, plugin_id: &str, region: &str) -> Lookup {
        let Some(state) = self.plugins.get(plugin_id) else {
            return Lookup::Missing;
        };
        let nearest = ancestry(region).find_map(|r| state.rows.get(r));
        let Some(Some(deployment)) = nearest else {
            return Lookup::Missing;
        };
        match ancestry(region).find_map(|r| state.kills.get_key_value(r)) {
            Some((region, reason)) => Lookup::Killed {
                deployment: deployment.clone(),
                region: region.clone(),
                reason: reason.clone(),
            },
            None => Lookup::Found(deployment.clone()),
        }
    }

    /// The deployments a customer in `region` may use at `now_ms`, by plugin id.
    pub fn available(&self, profile: &Profile, now_ms: i64) -> Vec<Arc<Deployment>> {
        self.plugins
            .keys()
            .filter_map(|id| match self.lookup(id, &profile.region) {
                Lookup::Found(deployment) if deployment.admits(Some(profile), now_ms) => {
                    Some(deployment)
                }
                _ => None,
            })
            .collect()
    }

    /// Every plugin id with a row or a kill switch anywhere, in order.
    pub fn plugin_ids(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// Every enabled deployment, by plugin id and region.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.plugins
            .values()
            .flat_map(|state| state.rows.values().flatten())
    }
}

/// The time schedules are checked against: the system clock, unless a test fixed it.
#[derive(Default)]
pub struct Clock {
    fixed_ms: AtomicI64,
}

impl Clock {
    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self.fixed_ms.load(Ordering::Relaxed) {
            0 => crate::ledger::now_ms(),
            fixed => fixed,
        }
    }

    /// Fixes the time at `ms` (0: back to the system clock). For tests of campaign windows.
    pub fn set_ms(&self, ms: i64) {
        self.fixed_ms.store(ms, Ordering::Relaxed);
    }
}

/// Why the registry could not load.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugins directory cannot be read.
    #[error(
        "cannot read plugins directory {path}: {source}; build the plugins first (make plugins) or pass --plugins DIR"
    )]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// One bundle is bad.
    #[error("plugin bundle {path}: {problem}")]
    Bundle {
        /// The bundle directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The database failed.
    #[error("plugin registry: {0}")]
    Database(#[from] sqlx::Error),
}

/// The live registry of one host.
pub struct Registry {
    db: Db,
    runtime: Arc<Runtime>,
    config: Config,
    metrics: Arc<Metrics>,
    current: RwLock<Arc<Snapshot>>,
    /// Compiled versions kept from one snapshot to the next; the lock also makes reloads take
    /// turns.
    compiled: tokio::sync::Mutex<HashMap<(String, String), Arc<Plugin>>>,
    /// The time campaign windows are checked against.
    pub clock: Clock,
}

impl Registry {
    /// An empty registry; [`Registry::reload`] reads the database.
    pub fn new(db: Db, runtime: Arc<Runtime>, config: Config, metrics: Arc<Metrics>) -> Self {
        Self {
            db,
            runtime,
            config,
            metrics,
            current: RwLock::new(Arc::new(Snapshot {
                generation: -1,
                ..Snapshot::default()
            })),
            compiled: tokio::sync::Mutex::default(),
            clock: Clock::default(),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the registry from the database if its generation moved since the last read, and
    /// swaps in the new snapshot. A version that no longer loads (the host's limits changed
    /// under it) is left out with an error in the log; the rest still changes.
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let mut compiled = self.compiled.lock().await;
        let mut connection = self.db.read.acquire().await?;
        let mut conn = connection.conn();
        // Read before the rows: a change committed in between is picked up by the next poll.
        let generation = enablement::generation(&mut conn).await?;
        if generation == self.snapshot().generation {
            return Ok(());
        }
        let rows = enablement::list(&mut conn, None).await?;
        let kills = enablement::kills(&mut conn, None).await?;
        let mut plugins: BTreeMap<String, PluginState> = BTreeMap::new();
        let mut used = HashMap::new();
        for row in rows {
            let deployment = match (&row.version, row.enabled) {
                (Some(version), true) => {
                    let key = (row.plugin_id.clone(), version.clone());
                    let plugin = match compiled.get(&key) {
                        Some(plugin) => Some(plugin.clone()),
                        None => {
                            self.load_version(&mut conn, &row.plugin_id, version)
                                .await?
                        }
                    };
                    plugin.map(|plugin| {
                        used.insert(key, plugin.clone());
                        Arc::new(self.deploy(plugin, &row))
                    })
                }
                _ => None,
            };
            plugins
                .entry(row.plugin_id.clone())
                .or_default()
                .rows
                .insert(row.region.clone(), deployment);
        }
        for kill in kills {
            plugins
                .entry(kill.plugin_id)
                .or_default()
                .kills
                .insert(kill.region, kill.reason);
        }
        *compiled = used;
        let snapshot = Arc::new(Snapshot {
            generation,
            plugins,
        });
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        tracing::debug!(generation, "plugin registry reloaded");
        Ok(())
    }

    /// Compiles a stored version (from the compile cache when this engine compiled it before).
    async fn load_version(
        &self,
        conn: &mut crate::db::Conn<'_>,
        plugin_id: &str,
        version: &str,
    ) -> Result<Option<Arc<Plugin>>, sqlx::Error> {
        let Some(record) = catalog::get(conn, plugin_id, version).await? else {
            return Ok(None);
        };
        let Some(wasm) = catalog::component(conn, &record.digest).await? else {
            return Ok(None);
        };
        let runtime = self.runtime.clone();
        let config = self.config.clone();
        let metrics = self.metrics.plugin(plugin_id);
        let built = tokio::task::spawn_blocking(move || {
            build_plugin(&runtime, &config, &record, &wasm, metrics)
        })
        .await
        .expect("compiling a plugin does not panic");
        match built {
            Ok(plugin) => Ok(Some(Arc::new(plugin))),
            Err(problem) => {
                tracing::error!(plugin = plugin_id, version, %problem, "stored plugin version does not load on this host; it stays unavailable");
                Ok(None)
            }
        }
    }

    fn deploy(&self, plugin: Arc<Plugin>, row: &Enablement) -> Deployment {
        let settings = enablement::merged_config(&plugin.manifest.defaults(), &row.setting.config);
        let config = CallConfig::new(settings);
        let ledger = &self.config.ledger;
        let validity_days = row
            .setting
            .points_validity_days
            .or(plugin.manifest.points_validity_days)
            .unwrap_or(ledger.points_validity_days)
            .min(ledger.points_validity_days_max);
        let requested = &plugin.manifest.capabilities.outbound_hosts;
        let outbound = row
            .setting
            .outbound_hosts
            .iter()
            .filter(|host| requested.contains(host))
            .filter_map(|host| crate::outbound::HostRule::parse(host).ok())
            .collect();
        Deployment {
            outbound,
            region: row.region.clone(),
            revision: row.revision,
            setting: row.setting.clone(),
            config_digest: hex::encode(Sha256::digest(config.as_json().as_bytes())),
            config,
            points_validity_ms: i64::from(validity_days) * 24 * 3600 * 1000,
            plugin,
        }
    }

    /// What `region` runs of `plugin_id` now, if anything (kill switches apply; targeting and
    /// schedule do not).
    pub fn deployment(&self, plugin_id: &str, region: &str) -> Option<Arc<Deployment>> {
        match self.snapshot().lookup(plugin_id, region) {
            Lookup::Found(deployment) => Some(deployment),
            Lookup::Killed { .. } | Lookup::Missing => None,
        }
    }

    /// Reloads every `interval` while the registry is alive, so changes made by other hosts
    /// (or the CLI) reach this one.
    pub fn start_polling(self: &Arc<Self>, interval: Duration) {
        let mut ticks = Ticks::new(self, interval);
        tokio::spawn(async move {
            while let Some(registry) = ticks.next().await {
                if let Err(error) = registry.reload().await {
                    tracing::warn!(%error, "cannot read the plugin registry; retrying");
                }
            }
        });
    }

    /// The database the registry lives in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The host configuration the registry checks bundles against.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks an uploaded bundle on a blocking thread (compiling is CPU work).
    pub async fn check(&self, manifest_text: String, wasm: Vec<u8>) -> Result<Checked, String> {
        let runtime = self.runtime.clone();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || check_bundle(&runtime, &config, manifest_text, wasm))
            .await
            .expect("checking a bundle does not panic")
    }
}

/// The ticks of a background task that works on the registry every `interval` for as long as
/// the registry lives (its host has not stopped).
pub(crate) struct Ticks {
    ticker: tokio::time::Interval,
    registry: Weak<Registry>,
}

impl Ticks {
    pub(crate) fn new(registry: &Arc<Registry>, interval: Duration) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            registry: Arc::downgrade(registry),
        }
    }

    /// Waits for the next tick; `None` once the registry is gone.
    pub(crate) async fn next(&mut self) -> Option<Arc<Registry>> {
        self.ticker.tick().await;
        self.registry.upgrade()
    }
}

/// A bundle that passed every check: ready to store.
pub struct Checked {
    /// The manifest.
    pub manifest: Manifest,
    /// Its text, stored as uploaded.
    pub manifest_text: String,
    /// sha256 of the component, hex.
    pub digest: String,
    /// The component.
    pub wasm: Vec<u8>,
}

/// The `multipart/form-data` body the upload endpoints take (the fields `manifest` and
/// `component`), with its content type. The boundary is random, so no bundle contains it.
pub fn upload_form(manifest: &str, component: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("lifecircle-{}", uuid::Uuid::now_v7().simple());
    let mut body = Vec::with_capacity(component.len() + manifest.len() + 512);
    for (name, file, content_type, bytes) in [
        (
            "manifest",
            MANIFEST_FILE,
            "application/toml",
            manifest.as_bytes(),
        ),
        (
            "component",
            DEFAULT_COMPONENT_FILE,
            "application/wasm",
            component,
        ),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{file}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Checks a bundle before anything is stored: sizes within `registry.*_bytes_max`, a valid
/// manifest, limits no looser than the host's, points validity within the host's maximum, and
/// a component that compiles, targets the `scenario` world and imports only what the manifest
/// requests. Compiling also fills the compile cache. The error names the problem.
pub fn check_bundle(
    runtime: &Runtime,
    config: &Config,
    manifest_text: String,
    wasm: Vec<u8>,
) -> Result<Checked, String> {
    let registry = &config.registry;
    let size_error = |what: &str, size: usize, max: u64, key: &str| {
        format!("{what} is {size} bytes, over the {max}-byte limit (registry.{key})")
    };
    if manifest_text.len() as u64 > registry.manifest_bytes_max {
        return Err(size_error(
            MANIFEST_FILE,
            manifest_text.len(),
            registry.manifest_bytes_max,
            "manifest_bytes_max",
        ));
    }
    if wasm.len() as u64 > registry.component_bytes_max {
        return Err(size_error(
            "the component",
            wasm.len(),
            registry.component_bytes_max,
            "component_bytes_max",
        ));
    }
    let manifest = Manifest::parse(&manifest_text)?;
    plugin_limits(config, &manifest)?;
    let digest = hex::encode(Sha256::digest(&wasm));
    runtime
        .compile(&digest, &wasm, &manifest.capabilities.interfaces)
        .map_err(|e: LoadError| format!("component: {e}"))?;
    Ok(Checked {
        manifest,
        manifest_text,
        digest,
        wasm,
    })
}

/// The limits a manifest's calls run under on this host, and its points validity checked.
fn plugin_limits(config: &Config, manifest: &Manifest) -> Result<Limits, String> {
    let limits = config
        .limits_for(&manifest.id)
        .tightened_by(&manifest.limits)
        .map_err(|e: LimitAboveHost| format!("{MANIFEST_FILE}: {e}"))?;
    let validity_days = manifest
        .points_validity_days
        .unwrap_or(config.ledger.points_validity_days);
    if validity_days == 0 || validity_days > config.ledger.points_validity_days_max {
        return Err(format!(
            "{MANIFEST_FILE}: points_validity_days = {validity_days} must be 1 to {} (the bank's \
             ledger.points_validity_days_max)",
            config.ledger.points_validity_days_max
        ));
    }
    Ok(limits)
}

/// Compiles a stored, approved version for this host.
fn build_plugin(
    runtime: &Runtime,
    config: &Config,
    record: &VersionRecord,
    wasm: &[u8],
    metrics: Arc<PluginMetrics>,
) -> Result<Plugin, String> {
    let manifest = Manifest::parse(&record.manifest_text)?;
    let limits = plugin_limits(config, &manifest)?;
    let compiled = runtime
        .compile(&record.digest, wasm, &manifest.capabilities.interfaces)
        .map_err(|e| format!("component: {e}"))?;
    let granted = record
        .grants
        .as_ref()
        .map(|grants| grants.identity_fields.clone())
        .unwrap_or_default();
    let identity_fields = manifest
        .capabilities
        .identity_fields
        .iter()
        .filter(|field| granted.contains(field))
        .cloned()
        .collect();
    Ok(Plugin {
        id: Arc::from(manifest.id.as_str()),
        version: record.version.clone(),
        digest: record.digest.clone(),
        manifest,
        limits,
        compiled,
        identity_fields,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_reads_the_fixed_time_until_released() {
        let clock = Clock::default();
        clock.set_ms(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.set_ms(0);
        assert!(clock.now_ms() > 1_000);
    }
}
