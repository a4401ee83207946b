//! Campaign reports: what a plugin did in a region subtree over a span of local days, from
//! the invocation records, ledger postings, payments and events, with a daily series.
//!
//! Cost is what the campaign gave away: cash paid out (in the first of `payments.currencies`)
//! plus the points awarded net of clawbacks, each valued at `reports.point_value_minor`; cost
//! per participant divides it by the distinct customers who called the plugin.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::calendar::{Calendar, Date};
use crate::db::Conn;
use crate::with_conn;

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportQuery<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// Regions within this one only (`None`: everywhere).
    pub scope: Option<&'a str>,
    /// The first local day.
    pub from: Date,
    /// The last local day.
    pub to: Date,
    /// The currency costs are counted in.
    pub currency: &'a str,
    /// What a point costs, in minor units of `currency`.
    pub point_value_minor: i64,
}

/// A campaign report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The plugin.
    pub plugin: String,
    /// The region subtree (`null`: everywhere).
    pub region: Option<String>,
    /// The first day, `YYYY-MM-DD`.
    pub from: String,
    /// The last day.
    pub to: String,
    /// Invocations (requests and job runs).
    pub invocations: i64,
    /// Distinct customers who called it.
    pub participants: i64,
    /// Invocations by outcome (`ok` or an error code).
    pub outcomes: BTreeMap<String, i64>,
    /// Points moved by the plugin.
    pub points: Points,
    /// What is left in the plugin's budgets in the subtree now.
    pub budget_remaining: i64,
    /// Money moved by the plugin, by currency (succeeded payments only).
    pub cash: BTreeMap<String, Cash>,
    /// What the campaign gave away, in `cost_currency` minor units: cash paid out plus points
    /// awarded (net) at the point value.
    pub cost_minor: i64,
    /// The currency of the cost.
    pub cost_currency: String,
    /// `cost_minor` per participant (`null` without participants).
    pub cost_per_participant_minor: Option<f64>,
    /// Events the plugin emitted, by name.
    pub events: BTreeMap<String, i64>,
    /// Day by day.
    pub daily: Vec<Daily>,
}

/// Points a plugin moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Points {
    /// Awarded to customers, net of awards reversed.
    pub awarded: i64,
    /// Spent by customers (spends and captured holds), net of spends reversed.
    pub spent: i64,
    /// Awards reversed (clawed back).
    pub awards_reversed: i64,
    /// Spends reversed (given back).
    pub spends_reversed: i64,
}

/// Money a plugin moved in one currency, minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Cash {
    /// Taken from customers.
    pub debited: i64,
    /// Given back to customers against debits.
    pub refunded: i64,
    /// Paid to customers (prizes).
    pub paid_out: i64,
}

/// One day of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Daily {
    /// The local day.
    pub day: String,
    /// Invocations.
    pub invocations: i64,
    /// Distinct customers.
    pub participants: i64,
    /// Points awarded, net.
    pub points_awarded: i64,
    /// Points spent, net.
    pub points_spent: i64,
    /// Cash paid out, in the cost currency.
    pub cash_paid_out_minor: i64,
    /// Events emitted.
    pub events: i64,
}

/// Builds the report `query` asks for, with days from `calendar`.
pub async fn build(
    conn: &mut Conn<'_>,
    calendar: &Calendar,
    query: &ReportQuery<'_>,
) -> Result<Report, sqlx::Error> {
    let from_ms = calendar.start_of(query.from);
    let to_ms = calendar.start_of(query.to.next());
    // Days are counted in SQL as (ms + offset) / day: the offset that makes local midnight a
    // multiple of a day.
    let offset_ms = -calendar.start_of(Date::from_days(0));
    let subtree = query.scope.map(|scope| format!("{scope}-%"));
    let window = Window {
        plugin: query.plugin,
        from_ms,
        to_ms,
        offset_ms,
        scope: query.scope,
        subtree: subtree.as_deref(),
    };
    let first = query.from.days();
    let span = (query.to.days() - first + 1).max(0) as usize;
    let mut daily: Vec<Daily> = (0..span)
        .map(|n| Daily {
            day: Date::from_days(first + n as i64).to_string(),
            ..Daily::default()
        })
        .collect();
    let index = |day: i64| usize::try_from(day - first).ok();

    let mut outcomes = BTreeMap::new();
    let mut invocations = 0;
    for (day, outcome, count) in grouped(conn, &window, INVOCATIONS).await? {
        invocations += count;
        *outcomes.entry(outcome).or_insert(0) += count;
        if let Some(row) = index(day).and_then(|i| daily.get_mut(i)) {
            row.invocations += count;
        }
    }
    for (day, _, count) in grouped(conn, &window, PARTICIPANTS_DAILY).await? {
        if let Some(row) = index(day).and_then(|i| daily.get_mut(i)) {
            row.participants = count;
        }
    }
    let participants = grouped(conn, &window, PARTICIPANTS)
        .await?
        .first()
        .map_or(0, |row| row.2);

    let mut points = Points::default();
    for (day, kind, amount) in grouped(conn, &window, POSTINGS).await? {
        let (awarded, spent) = match kind.as_str() {
            "award" => {
                points.awarded += amount;
                (amount, 0)
            }
            "spend" | "capture" => {
                points.spent += amount;
                (0, amount)
            }
            "reverse-award" => {
                points.awards_reversed += amount;
                points.awarded -= amount;
                (-amount, 0)
            }
            "reverse-spend" => {
                points.spends_reversed += amount;
                points.spent -= amount;
                (0, -amount)
            }
            _ => (0, 0),
        };
        if let Some(row) = index(day).and_then(|i| daily.get_mut(i)) {
            row.points_awarded += awarded;
            row.points_spent += spent;
        }
    }

    let mut cash: BTreeMap<String, Cash> = BTreeMap::new();
    for (day, kind_currency, amount) in grouped(conn, &window, PAYMENTS).await? {
        let (kind, currency) = kind_currency
            .split_once(' ')
            .unwrap_or((kind_currency.as_str(), ""));
        let totals = cash.entry(currency.to_owned()).or_default();
        match kind {
            "debit" => totals.debited += amount,
            "refund" => totals.refunded += amount,
            "payout" => {
                totals.paid_out += amount;
                if currency == query.currency
                    && let Some(row) = index(day).and_then(|i| daily.get_mut(i))
                {
                    row.cash_paid_out_minor += amount;
                }
            }
            _ => {}
        }
    }

    let mut events = BTreeMap::new();
    for (day, name, count) in grouped(conn, &window, EVENTS).await? {
        *events.entry(name).or_insert(0) += count;
        if let Some(row) = index(day).and_then(|i| daily.get_mut(i)) {
            row.events += count;
        }
    }

    let budget_remaining = budget_remaining(conn, query.plugin, query.scope).await?;
    let paid_out = cash.get(query.currency).map_or(0, |c| c.paid_out);
    let cost_minor = paid_out + points.awarded.max(0) * query.point_value_minor;
    Ok(Report {
        plugin: query.plugin.to_owned(),
        region: query.scope.map(str::to_owned),
        from: query.from.to_string(),
        to: query.to.to_string(),
        invocations,
        participants,
        outcomes,
        points,
        budget_remaining,
        cash,
        cost_minor,
        cost_currency: query.currency.to_owned(),
        cost_per_participant_minor: (participants > 0)
            .then(|| (cost_minor as f64 / participants as f64 * 100.0).round() / 100.0),
        events,
        daily,
    })
}

/// The rows a report reads: one plugin, a time window, a region subtree.
struct Window<'a> {
    plugin: &'a str,
    from_ms: i64,
    to_ms: i64,
    offset_ms: i64,
    scope: Option<&'a str>,
    subtree: Option<&'a str>,
}

/// Each grouped query selects (day, key, number) with `$1` the plugin, `$2`/`$3` the window,
/// `$4` the day offset and `$5`/`$6` the region subtree.
const INVOCATIONS: &str = "SELECT (started_at_ms + $4) / 86400000, outcome, COUNT(*) \
     FROM invocations WHERE plugin_id = $1 AND started_at_ms >= $2 AND started_at_ms < $3 \
     AND ($5 IS NULL OR region = $5 OR region LIKE $6) GROUP BY 1, 2";

const PARTICIPANTS_DAILY: &str = "SELECT (started_at_ms + $4) / 86400000, '', \
     COUNT(DISTINCT caller) FROM invocations WHERE plugin_id = $1 AND started_at_ms >= $2 \
     AND started_at_ms < $3 AND caller_kind = 'customer' \
     AND ($5 IS NULL OR region = $5 OR region LIKE $6) GROUP BY 1";

const PARTICIPANTS: &str = "SELECT COALESCE(MIN((started_at_ms + $4) / 86400000), 0), '', \
     COUNT(DISTINCT caller) \
     FROM invocations WHERE plugin_id = $1 AND started_at_ms >= $2 AND started_at_ms < $3 \
     AND caller_kind = 'customer' AND ($5 IS NULL OR region = $5 OR region LIKE $6)";

const POSTINGS: &str = "SELECT (created_at_ms + $4) / 86400000, \
     CASE WHEN kind = 'reverse' AND to_account LIKE 'budget:%' THEN 'reverse-award' \
     WHEN kind = 'reverse' THEN 'reverse-spend' ELSE kind END, \
     CAST(SUM(amount) AS BIGINT) FROM ledger_postings WHERE plugin_id = $1 \
     AND created_at_ms >= $2 AND created_at_ms < $3 \
     AND ($5 IS NULL OR region = $5 OR region LIKE $6) GROUP BY 1, 2";

const PAYMENTS: &str = "SELECT (created_at_ms + $4) / 86400000, kind || ' ' || currency, \
     CAST(SUM(minor_units) AS BIGINT) FROM payments WHERE plugin_id = $1 \
     AND status = 'succeeded' AND created_at_ms >= $2 AND created_at_ms < $3 \
     AND ($5 IS NULL OR region = $5 OR region LIKE $6) GROUP BY 1, 2";

const EVENTS: &str = "SELECT (at_ms + $4) / 86400000, name, COUNT(*) FROM events \
     WHERE plugin_id = $1 AND at_ms >= $2 AND at_ms < $3 \
     AND ($5 IS NULL OR region = $5 OR region LIKE $6) GROUP BY 1, 2";

async fn grouped(
    conn: &mut Conn<'_>,
    window: &Window<'_>,
    sql: &str,
) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(sql)
            .bind(window.plugin)
            .bind(window.from_ms)
            .bind(window.to_ms)
            .bind(window.offset_ms)
            .bind(window.scope)
            .bind(window.subtree)
            .fetch_all(&mut *c)
            .await
    })
}

/// What is left in `plugin`'s budgets in `scope`'s subtree (everywhere without one).
async fn budget_remaining(
    conn: &mut Conn<'_>,
    plugin: &str,
    scope: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let (exact, like) = match scope {
        Some(scope) => (
            format!("budget:{plugin}:{scope}"),
            format!("budget:{plugin}:{scope}-%"),
        ),
        None => (String::new(), format!("budget:{plugin}:%")),
    };
    let remaining: Option<i64> = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT CAST(SUM(balance) AS BIGINT) FROM ledger_accounts \
             WHERE kind = 'budget' AND (id = $1 OR id LIKE $2)",
        )
        .bind(exact)
        .bind(like)
        .fetch_one(&mut *c)
        .await?
    });
    Ok(remaining.unwrap_or(0))
}

/// Whole days in the span `from..=to`.
pub fn days(from: Date, to: Date) -> i64 {
    to.days() - from.days() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_counts_both_ends() {
        let day = Date::from_days(100);
        assert_eq!(days(day, day), 1);
        assert_eq!(days(day, Date::from_days(130)), 31);
    }
}
