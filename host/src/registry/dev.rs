//! Development mode: `lifecircle serve --plugins DIR` registers each bundle in `DIR` (a
//! directory with a `plugin.toml` and its component), approves it, and enables it in
//! `registry.dev_regions`, through the same checks and tables as an upload. A watcher does it
//! again when a bundle's files change, so a partner's rebuilt plugin is served without a
//! restart.
//!
//! Versions are immutable, so a bundle whose component or manifest changed under the same
//! `version` is stored as `<version>+dev.<12 hex digits of the sha256 of both>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::catalog::{self, CatalogError, Grants, Review, Stored};
use super::enablement::{self, Change, Setting};
use super::{
    Checked, DEFAULT_COMPONENT_FILE, MANIFEST_FILE, Registry, RegistryError, Ticks, regions,
};
use crate::audit::admin::{self as admin_audit, Change as AuditChange};

/// The actor recorded for development-mode changes.
const ACTOR: &str = "dev";

/// The bundle directories in `dir`, sorted.
fn bundles(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    let mut bundles: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join(MANIFEST_FILE).is_file())
        .collect();
    bundles.sort();
    Ok(bundles)
}

/// Reads a bundle directory's manifest text and component bytes (the file the manifest's
/// `component` names, or `plugin.wasm`), refusing a component over `component_bytes_max`
/// before reading it.
pub fn read_bundle(bundle: &Path, component_bytes_max: u64) -> Result<(String, Vec<u8>), String> {
    let text = std::fs::read_to_string(bundle.join(MANIFEST_FILE))
        .map_err(|e| format!("cannot read {MANIFEST_FILE}: {e}"))?;
    let component = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|table| table.get("component")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_COMPONENT_FILE));
    let path = bundle.join(component);
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read component {}: {e}", path.display()))?
        .len();
    if size > component_bytes_max {
        return Err(format!(
            "component {} is {size} bytes, over the {component_bytes_max}-byte limit \
             (registry.component_bytes_max)",
            path.display()
        ));
    }
    let wasm = std::fs::read(&path)
        .map_err(|e| format!("cannot read component {}: {e}", path.display()))?;
    Ok((text, wasm))
}

/// Registers, approves and enables every bundle in `dir` in the development regions, then
/// reloads. A bad bundle stops it with an error naming the bundle and the problem, before
/// anything is written.
pub async fn install(registry: &Registry, dir: &Path) -> Result<(), RegistryError> {
    let config = registry.config();
    let mut checked: Vec<Checked> = Vec::new();
    for bundle in bundles(dir)? {
        let bad = |problem: String| RegistryError::Bundle {
            path: bundle.clone(),
            problem,
        };
        let (text, wasm) =
            read_bundle(&bundle, config.registry.component_bytes_max).map_err(bad)?;
        let started = std::time::Instant::now();
        let bundle_checked = registry.check(text, wasm).await.map_err(bad)?;
        if checked
            .iter()
            .any(|c| c.manifest.id == bundle_checked.manifest.id)
        {
            return Err(bad(format!(
                "a second bundle with id {:?}",
                bundle_checked.manifest.id
            )));
        }
        tracing::info!(
            plugin = %bundle_checked.manifest.id,
            version = %bundle_checked.manifest.version,
            digest = %&bundle_checked.digest[..12],
            elapsed_ms = started.elapsed().as_millis() as u64,
            "plugin bundle checked"
        );
        checked.push(bundle_checked);
    }
    let now_ms = crate::ledger::now_ms();
    let mut transaction = registry.db().write.begin().await?;
    let mut conn = transaction.conn();
    for region in &config.registry.dev_regions {
        if regions::get(&mut conn, region).await?.is_none() {
            let display = format!("{region} (development)");
            regions::put(&mut conn, region, &display, now_ms)
                .await
                .map_err(|error| RegistryError::Bundle {
                    path: dir.to_owned(),
                    problem: error.to_string(),
                })?;
        }
    }
    for bundle in &checked {
        let version = store(&mut conn, config, bundle, now_ms).await?;
        let id = &bundle.manifest.id;
        for region in &config.registry.dev_regions {
            let current = enablement::get(&mut conn, region, id).await?;
            if current
                .as_ref()
                .is_some_and(|row| row.enabled && row.version.as_deref() == Some(version.as_str()))
            {
                continue;
            }
            // Development grants the plugin every host it asks for.
            let setting = Setting {
                outbound_hosts: bundle.manifest.capabilities.outbound_hosts.clone(),
                ..current.map(|row| row.setting).unwrap_or_default()
            };
            let change = Change {
                version: Some(&version),
                enabled: true,
                setting: &setting,
                by: ACTOR,
            };
            let (before, after) = enablement::put(&mut conn, region, id, &change, now_ms).await?;
            let audit = AuditChange {
                actor: ACTOR,
                action: "enablement.put",
                target: format!("region/{region}/plugin/{id}"),
                region: Some(region),
                before: before.and_then(|b| serde_json::to_value(b).ok()),
                after: serde_json::to_value(after).ok(),
            };
            admin_audit::record(&mut conn, &audit, now_ms).await?;
        }
    }
    transaction.commit().await?;
    registry.reload().await?;
    Ok(())
}

/// Stores one checked bundle and approves it with the grants of `plugin_grants.<id>` in the
/// host's configuration; returns the version it is stored under.
async fn store(
    conn: &mut crate::db::Conn<'_>,
    config: &crate::config::Config,
    bundle: &Checked,
    now_ms: i64,
) -> Result<String, RegistryError> {
    let manifest = &bundle.manifest;
    let bad = |problem: String| RegistryError::Bundle {
        path: PathBuf::from(&manifest.id),
        problem,
    };
    let plain = manifest.version.clone();
    let mut version = plain.clone();
    loop {
        match catalog::store(conn, bundle, &version, ACTOR, now_ms).await {
            Ok(Stored::New | Stored::Unchanged) => break,
            Err(CatalogError::VersionExists { .. }) if version == plain => {
                let both = Sha256::new()
                    .chain_update(bundle.manifest_text.as_bytes())
                    .chain_update(bundle.digest.as_bytes())
                    .finalize();
                version = format!("{plain}+dev.{}", &hex::encode(both)[..12]);
            }
            Err(CatalogError::Database(error)) => return Err(error.into()),
            Err(other) => return Err(bad(other.to_string())),
        }
    }
    let record = catalog::get(conn, &manifest.id, &version)
        .await?
        .expect("the version was just stored");
    if record.status == catalog::Status::Submitted {
        let granted = config
            .plugin_grants
            .get(&manifest.id)
            .map(|grants| grants.identity_fields.clone())
            .unwrap_or_default();
        let review = Review {
            reviewer: ACTOR,
            approve: true,
            reason: "development mode",
            grants: Grants {
                identity_fields: manifest
                    .capabilities
                    .identity_fields
                    .iter()
                    .filter(|field| granted.contains(field))
                    .cloned()
                    .collect(),
            },
            four_eyes: false,
        };
        match catalog::review(conn, &manifest.id, &version, &review, now_ms).await {
            Ok(_) => {}
            Err(CatalogError::Database(error)) => return Err(error.into()),
            Err(other) => return Err(bad(other.to_string())),
        }
    } else if record.status == catalog::Status::Rejected {
        return Err(bad(format!(
            "{} {version} was rejected by {}; give the bundle a new version",
            manifest.id,
            record.reviewed_by.unwrap_or_default()
        )));
    }
    Ok(version)
}

/// The files whose change triggers a reinstall: each bundle's manifest and component, with
/// their sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files = Vec::new();
    for bundle in bundles(dir).unwrap_or_default() {
        let Ok(entries) = std::fs::read_dir(&bundle) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if let Ok(metadata) = entry.metadata() {
                files.push((entry.path(), metadata.len(), metadata.modified().ok()));
            }
        }
    }
    files.sort();
    files
}

/// Installs the bundles of `dir` again whenever their files change, every `interval`, while
/// the registry is alive. A bundle that no longer passes the checks is reported in the log
/// and the previous version keeps serving.
pub fn watch(registry: &Arc<Registry>, dir: PathBuf, interval: Duration) {
    let mut ticks = Ticks::new(registry, interval);
    let mut seen = fingerprint(&dir);
    tokio::spawn(async move {
        while let Some(registry) = ticks.next().await {
            let now = fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            match install(&registry, &dir).await {
                Ok(()) => tracing::info!(dir = %dir.display(), "plugin bundles changed; reloaded"),
                Err(error) => {
                    tracing::warn!(%error, "plugin bundles changed but did not load; the previous versions keep serving")
                }
            }
        }
    });
}
