//! Partners: the merchant tills and biller systems that call their own plugins through
//! `/partner/v1/...` with an API key. A partner reaches only the plugins an admin listed for it,
//! and the plugin sees a partner caller, never a customer.

use serde::{Deserialize, Serialize};

use super::{new_secret, secret_digest};
use crate::db::Conn;
use crate::registry::is_plugin_id;
use crate::with_conn;

/// A partner and the plugins it may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    /// Its id (lowercase letters, digits, '-'), shown to plugins as the caller.
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// The plugins it may call.
    pub plugins: Vec<String>,
}

impl Partner {
    /// Whether the partner may call `plugin_id`.
    pub fn owns(&self, plugin_id: &str) -> bool {
        self.plugins.iter().any(|p| p == plugin_id)
    }
}

/// Checks a partner's id, name and plugins.
pub fn check(partner: &Partner) -> Result<(), String> {
    if !is_plugin_id(&partner.id) {
        return Err("a partner id is 1 to 64 lowercase letters, digits or '-'".into());
    }
    if partner.name.trim().is_empty() || partner.name.len() > 200 {
        return Err("a partner name is 1 to 200 bytes".into());
    }
    if let Some(bad) = partner.plugins.iter().find(|p| !is_plugin_id(p)) {
        return Err(format!("{bad:?} is not a plugin id"));
    }
    Ok(())
}

/// The partner `id`, if it exists.
pub async fn get(conn: &mut Conn<'_>, id: &str) -> Result<Option<Partner>, sqlx::Error> {
    let row: Option<(String, String, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT id, name, plugins FROM partners WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.map(|(id, name, plugins)| Partner {
        id,
        name,
        plugins: serde_json::from_str(&plugins).unwrap_or_default(),
    }))
}

/// Creates or replaces `partner`.
pub async fn put(conn: &mut Conn<'_>, partner: &Partner, now_ms: i64) -> Result<(), sqlx::Error> {
    let plugins = serde_json::to_string(&partner.plugins).unwrap_or_else(|_| "[]".into());
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO partners (id, name, plugins, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             plugins = excluded.plugins, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&partner.id)
        .bind(&partner.name)
        .bind(plugins)
        .bind(now_ms)
        .execute(&mut *c)
        .await
        .map(drop)
    })
}

/// Creates an API key named `name` for partner `id` and returns it: the only time it is shown.
/// `None` if the partner already has a key of that name.
pub async fn create_key(
    conn: &mut Conn<'_>,
    id: &str,
    name: &str,
    now_ms: i64,
) -> Result<Option<String>, sqlx::Error> {
    let key = new_secret("lcp_")?;
    Ok(add_key(conn, id, name, &key, now_ms).await?.then_some(key))
}

/// Adds `key` as the key named `name` of partner `id`, kept as its digest. `false` if the
/// partner already has a key of that name (then nothing changes).
pub async fn add_key(
    conn: &mut Conn<'_>,
    id: &str,
    name: &str,
    key: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO partner_keys (digest, partner_id, name, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (partner_id, name) DO NOTHING",
        )
        .bind(secret_digest(key))
        .bind(id)
        .bind(name)
        .bind(now_ms)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(inserted > 0)
}

/// The partner `key` belongs to, if any (looked up by digest).
pub async fn find(conn: &mut Conn<'_>, key: &str) -> Result<Option<Partner>, sqlx::Error> {
    let id: Option<String> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar("SELECT partner_id FROM partner_keys WHERE digest = $1")
            .bind(secret_digest(key))
            .fetch_optional(&mut *c)
            .await?
    });
    match id {
        Some(id) => get(conn, &id).await,
        None => Ok(None),
    }
}
