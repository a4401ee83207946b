//! Regions: a tree managed by head office (`cn` → `cn-fj` → `cn-fj-xm`). A child's name is its
//! parent's name, `-`, and one more part, so the tree can be read from any name: admin scopes
//! and enablement inheritance walk names, and the table only says which regions exist.

use serde::Serialize;

use crate::db::Conn;
use crate::identity::is_region;
use crate::with_conn;

/// A region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Its parent (`None`: a top-level region).
    pub parent: Option<String>,
    /// The name people read.
    pub display_name: String,
}

/// Why a region could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The name is malformed.
    #[error(
        "{0:?} is not a region name: parts of lowercase letters and digits joined by '-', at most 64 bytes"
    )]
    Name(String),
    /// The display name is empty or long.
    #[error("display_name must be 1 to 200 bytes and not blank")]
    DisplayName,
    /// The parent does not exist.
    #[error("region {parent} does not exist; create it before {name}")]
    ParentMissing {
        /// The new region.
        name: String,
        /// Its missing parent.
        parent: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The region's parent by name (`cn-fj-xm` → `cn-fj`), `None` for a top-level region.
pub fn parent_of(name: &str) -> Option<&str> {
    name.rfind('-').map(|at| &name[..at])
}

/// `name` and every region above it, nearest first: `cn-fj-xm`, `cn-fj`, `cn`.
pub fn ancestry(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |current| parent_of(current))
}

/// Creates a region, or renames it if it exists. Returns the region before (`None`: new).
pub async fn put(
    conn: &mut Conn<'_>,
    name: &str,
    display_name: &str,
    now_ms: i64,
) -> Result<Option<Region>, RegionError> {
    if !is_region(name) {
        return Err(RegionError::Name(name.to_owned()));
    }
    if display_name.trim().is_empty() || display_name.len() > 200 {
        return Err(RegionError::DisplayName);
    }
    let parent = parent_of(name);
    if let Some(parent) = parent
        && get(conn, parent).await?.is_none()
    {
        return Err(RegionError::ParentMissing {
            name: name.to_owned(),
            parent: parent.to_owned(),
        });
    }
    let before = get(conn, name).await?;
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO regions (name, parent, display_name, created_at_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(name)
        .bind(parent)
        .bind(display_name)
        .bind(now_ms)
        .execute(&mut *c)
        .await?;
    });
    Ok(before)
}

/// The region `name`.
pub async fn get(conn: &mut Conn<'_>, name: &str) -> Result<Option<Region>, sqlx::Error> {
    let row: Option<(String, Option<String>, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT name, parent, display_name FROM regions WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.map(|(name, parent, display_name)| Region {
        name,
        parent,
        display_name,
    }))
}

/// Every region, by name (so each parent comes before its children).
pub async fn list(conn: &mut Conn<'_>) -> Result<Vec<Region>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT name, parent, display_name FROM regions ORDER BY name")
            .fetch_all(&mut *c)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(name, parent, display_name)| Region {
            name,
            parent,
            display_name,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_the_tree() {
        assert_eq!(parent_of("cn-fj-xm"), Some("cn-fj"));
        assert_eq!(parent_of("cn"), None);
        assert_eq!(
            ancestry("cn-fj-xm").collect::<Vec<_>>(),
            ["cn-fj-xm", "cn-fj", "cn"]
        );
        assert!(is_region("cn-fj-xm") && is_region("dev"));
        for bad in ["", "-cn", "cn-", "cn--fj", "CN", "cn fj"] {
            assert!(!is_region(bad), "{bad:?}");
        }
    }
}
