//! The record of admin changes: who (the token's name), what, on what, when, and the target
//! before and after, written in the same transaction as the change itself.

use serde::Serialize;
use serde_json::Value;

use crate::db::Conn;
use crate::with_conn;

/// One admin change to record.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The admin token's name (`cli` for the command line).
    pub actor: &'a str,
    /// What was done, such as `budget.fund` or `customer.update`.
    pub action: &'a str,
    /// What it was done to, such as `budget/points-demo/cn-fj`.
    pub target: String,
    /// The region it belongs to, if one (branch admins see their subtree's entries).
    pub region: Option<&'a str>,
    /// The target before (`None`: it did not exist).
    pub before: Option<Value>,
    /// The target after (`None`: it no longer exists).
    pub after: Option<Value>,
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Time-ordered id, also the paging cursor.
    pub id: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Where.
    pub region: Option<String>,
    /// Before.
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

/// Records `change` at `at_ms` in `conn`'s transaction.
pub async fn record(
    conn: &mut Conn<'_>,
    change: &Change<'_>,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    let json = |value: &Option<Value>| value.as_ref().map(Value::to_string);
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO admin_audit (id, at_ms, actor, action, target, region, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().simple().to_string())
        .bind(at_ms)
        .bind(change.actor)
        .bind(change.action)
        .bind(&change.target)
        .bind(change.region)
        .bind(json(&change.before))
        .bind(json(&change.after))
        .execute(&mut *c)
        .await
        .map(drop)
    })
}

/// Recorded changes newest first, strictly older than the entry `before` if given, at most
/// `limit`; only those of regions within `scope` when given.
pub async fn page(
    conn: &mut Conn<'_>,
    scope: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    type Row = (
        String,
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    // Region names are lowercase letters, digits and '-': nothing LIKE treats specially.
    let subtree = scope.map(|scope| format!("{scope}-%"));
    let rows: Vec<Row> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, at_ms, actor, action, target, region, before, after FROM admin_audit \
             WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR region = $2 OR region LIKE $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(before)
        .bind(scope)
        .bind(subtree)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?
    });
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    Ok(rows
        .into_iter()
        .map(
            |(id, at_ms, actor, action, target, region, before, after)| Entry {
                id,
                at_ms,
                actor,
                action,
                target,
                region,
                before: parse(before),
                after: parse(after),
            },
        )
        .collect())
}
