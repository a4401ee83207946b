//! Plugin versions in the database: the component bytes (content-addressed by sha256), the
//! manifest, and the review. A version never changes after upload except by its one review.
//!
//! The four-eyes rule lives here: whoever uploaded a version cannot approve or reject it.

use serde::{Deserialize, Serialize};

use super::{Checked, Manifest};
use crate::db::Conn;
use crate::with_conn;

/// Where a version is in its review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Uploaded, waiting for a reviewer.
    Submitted,
    /// May be enabled.
    Approved,
    /// May not be enabled.
    Rejected,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
        }
    }

    fn parse(name: &str) -> Status {
        match name {
            "approved" => Status::Approved,
            "rejected" => Status::Rejected,
            _ => Status::Submitted,
        }
    }
}

/// What a reviewer granted a version, among what its manifest requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Customer profile fields the plugin may see through `identity`.
    #[serde(default)]
    pub identity_fields: Vec<String>,
}

/// One stored version, without its component bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionRecord {
    /// The plugin.
    pub plugin_id: String,
    /// The version.
    pub version: String,
    /// sha256 of the component, hex.
    pub digest: String,
    /// Review state.
    pub status: Status,
    /// Who uploaded it (an admin's name, or `partner:<id>`).
    pub uploaded_by: String,
    /// When, ms since the Unix epoch.
    pub uploaded_at_ms: i64,
    /// Who reviewed it.
    pub reviewed_by: Option<String>,
    /// When.
    pub reviewed_at_ms: Option<i64>,
    /// The reviewer's reason.
    pub review_reason: Option<String>,
    /// What the review granted.
    pub grants: Option<Grants>,
    /// The manifest's text.
    #[serde(skip)]
    pub manifest_text: String,
}

impl VersionRecord {
    /// The manifest (checked at upload, so it parses).
    pub fn manifest(&self) -> Option<Manifest> {
        toml::from_str(&self.manifest_text).ok()
    }
}

/// Why an upload or review was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Id and version exist with another component or manifest.
    #[error(
        "{plugin_id} {version} was already uploaded with a different component or manifest (component digest {existing}); versions are immutable, so give this one a new version"
    )]
    VersionExists {
        /// The plugin.
        plugin_id: String,
        /// The version.
        version: String,
        /// The stored digest.
        existing: String,
    },
    /// No such version.
    #[error("no version {version} of plugin {plugin_id}")]
    VersionNotFound {
        /// The plugin.
        plugin_id: String,
        /// The version.
        version: String,
    },
    /// The version has been reviewed.
    #[error(
        "{plugin_id} {version} was already {status} by {reviewer}; upload a new version to review again"
    )]
    AlreadyReviewed {
        /// The plugin.
        plugin_id: String,
        /// The version.
        version: String,
        /// Its state.
        status: &'static str,
        /// Who reviewed it.
        reviewer: String,
    },
    /// The reviewer uploaded it.
    #[error(
        "{reviewer} uploaded {plugin_id} {version}, so someone else must review it (four-eyes rule)"
    )]
    OwnUpload {
        /// The plugin.
        plugin_id: String,
        /// The version.
        version: String,
        /// The reviewer.
        reviewer: String,
    },
    /// A grant the manifest did not request.
    #[error("{0}")]
    GrantInvalid(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new version.
    New,
    /// The same bytes were already stored under this id and version: nothing changed.
    Unchanged,
}

/// Stores a checked upload under `version` (the manifest's, or in development mode one
/// derived from it) as a `submitted` version, or finds it already stored (the same component
/// and the same manifest text under the same id and version).
pub async fn store(
    conn: &mut Conn<'_>,
    bundle: &Checked,
    version: &str,
    uploaded_by: &str,
    now_ms: i64,
) -> Result<Stored, CatalogError> {
    let Checked {
        manifest,
        manifest_text,
        digest,
        wasm: component,
    } = bundle;
    if let Some(existing) = get(conn, &manifest.id, version).await? {
        if existing.digest == *digest && existing.manifest_text == *manifest_text {
            return Ok(Stored::Unchanged);
        }
        return Err(CatalogError::VersionExists {
            plugin_id: manifest.id.clone(),
            version: version.to_owned(),
            existing: existing.digest,
        });
    }
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO plugin_artifacts (digest, component, size_bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(component.as_slice())
        .bind(component.len() as i64)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO plugin_versions (plugin_id, version, digest, manifest, status, \
             uploaded_by, uploaded_at_ms) VALUES ($1, $2, $3, $4, 'submitted', $5, $6)",
        )
        .bind(&manifest.id)
        .bind(version)
        .bind(digest)
        .bind(manifest_text)
        .bind(uploaded_by)
        .bind(now_ms)
        .execute(&mut *c)
        .await?;
    });
    Ok(Stored::New)
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
);

const COLUMNS: &str = "SELECT plugin_id, version, digest, status, uploaded_by, uploaded_at_ms, \
    reviewed_by, reviewed_at_ms, review_reason, grants, manifest FROM plugin_versions";

fn record(row: Row) -> VersionRecord {
    let (
        plugin_id,
        version,
        digest,
        status,
        uploaded_by,
        uploaded_at_ms,
        reviewed_by,
        reviewed_at_ms,
        review_reason,
        grants,
        manifest_text,
    ) = row;
    VersionRecord {
        plugin_id,
        version,
        digest,
        status: Status::parse(&status),
        uploaded_by,
        uploaded_at_ms,
        reviewed_by,
        reviewed_at_ms,
        review_reason,
        grants: grants.and_then(|g| serde_json::from_str(&g).ok()),
        manifest_text,
    }
}

/// Version `version` of `plugin_id`.
pub async fn get(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    version: &str,
) -> Result<Option<VersionRecord>, sqlx::Error> {
    let sql = format!("{COLUMNS} WHERE plugin_id = $1 AND version = $2");
    let row: Option<Row> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&sql)
            .bind(plugin_id)
            .bind(version)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.map(record))
}

/// Every version, or every version of `plugin_id`, newest upload first, at most `limit`.
pub async fn list(
    conn: &mut Conn<'_>,
    plugin_id: Option<&str>,
    limit: i64,
) -> Result<Vec<VersionRecord>, sqlx::Error> {
    let sql = format!(
        "{COLUMNS} WHERE ($1 IS NULL OR plugin_id = $1) \
         ORDER BY uploaded_at_ms DESC, plugin_id, version LIMIT $2"
    );
    let rows: Vec<Row> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&sql)
            .bind(plugin_id)
            .bind(limit)
            .fetch_all(&mut *c)
            .await?
    });
    Ok(rows.into_iter().map(record).collect())
}

/// The component bytes with sha256 `digest`.
pub async fn component(conn: &mut Conn<'_>, digest: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT component FROM plugin_artifacts WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&mut *c)
            .await
    })
}

/// A review decision.
pub struct Review<'a> {
    /// Who decides.
    pub reviewer: &'a str,
    /// Approve or reject.
    pub approve: bool,
    /// Why.
    pub reason: &'a str,
    /// What an approval grants.
    pub grants: Grants,
    /// Whether the four-eyes rule applies (only development mode, approving its own bundles,
    /// skips it).
    pub four_eyes: bool,
}

/// Approves or rejects a submitted version, once.
pub async fn review(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    version: &str,
    decision: &Review<'_>,
    now_ms: i64,
) -> Result<VersionRecord, CatalogError> {
    let existing =
        get(conn, plugin_id, version)
            .await?
            .ok_or_else(|| CatalogError::VersionNotFound {
                plugin_id: plugin_id.to_owned(),
                version: version.to_owned(),
            })?;
    if existing.status != Status::Submitted {
        return Err(CatalogError::AlreadyReviewed {
            plugin_id: plugin_id.to_owned(),
            version: version.to_owned(),
            status: existing.status.as_str(),
            reviewer: existing.reviewed_by.unwrap_or_default(),
        });
    }
    if decision.four_eyes && existing.uploaded_by == decision.reviewer {
        return Err(CatalogError::OwnUpload {
            plugin_id: plugin_id.to_owned(),
            version: version.to_owned(),
            reviewer: decision.reviewer.to_owned(),
        });
    }
    let requested = existing
        .manifest()
        .map(|m| m.capabilities.identity_fields)
        .unwrap_or_default();
    if let Some(extra) = decision
        .grants
        .identity_fields
        .iter()
        .find(|field| !requested.contains(field))
    {
        return Err(CatalogError::GrantInvalid(format!(
            "grants.identity_fields: {extra:?} is not among the fields the manifest requests ({})",
            requested.join(", ")
        )));
    }
    let status = if decision.approve {
        Status::Approved
    } else {
        Status::Rejected
    };
    let grants = decision
        .approve
        .then(|| serde_json::to_string(&decision.grants).unwrap_or_default());
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "UPDATE plugin_versions SET status = $1, reviewed_by = $2, reviewed_at_ms = $3, \
             review_reason = $4, grants = $5 WHERE plugin_id = $6 AND version = $7",
        )
        .bind(status.as_str())
        .bind(decision.reviewer)
        .bind(now_ms)
        .bind(decision.reason)
        .bind(grants)
        .bind(plugin_id)
        .bind(version)
        .execute(&mut *c)
        .await?;
    });
    Ok(get(conn, plugin_id, version)
        .await?
        .expect("the version was just read in this transaction"))
}
