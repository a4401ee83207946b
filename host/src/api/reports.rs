//! Campaign reports and the events behind them.
//!
//! - `GET /admin/v1/reports/{plugin}?region=&from=&to=` reports what a plugin did in a region
//!   subtree (default: the admin's scope, or everywhere) over local days `from`..=`to`
//!   (default: the last 30 days up to today).
//! - `GET /admin/v1/events?plugin=&name=&region=&cursor=&limit=` pages through the events a
//!   plugin emitted, newest first.

use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use crate::AppState;
use crate::calendar::Date;
use crate::error::{ApiError, ErrorCode};
use crate::events::{self, Event};
use crate::identity::is_region;
use crate::registry::is_plugin_id;
use crate::reports::{self, Report, ReportQuery};

/// The report routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(campaign_report))
        .routes(routes!(list_events))
}

/// Days a report spans when `from` is not given.
const DEFAULT_DAYS: i64 = 30;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    /// The region subtree (default: the admin's scope, or everywhere).
    region: Option<String>,
    /// The first local day, `YYYY-MM-DD` (default: 29 days before `to`).
    from: Option<String>,
    /// The last local day, `YYYY-MM-DD` (default: today).
    to: Option<String>,
}

/// The region subtree to read: `asked` if the admin may read it, else the admin's own scope.
fn scope<'a>(admin: &'a Admin, asked: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    if let Some(region) = asked {
        if !is_region(region) {
            return Err(invalid(
                "regions are lowercase letters, digits and '-'".into(),
            ));
        }
        admin.may_read(Some(region))?;
        return Ok(Some(region));
    }
    Ok(admin.0.region.as_deref())
}

#[utoipa::path(
    get,
    path = "/admin/v1/reports/{plugin}",
    tag = "admin",
    params(("plugin" = String, Path, description = "The plugin id"), ReportParams),
    responses((status = 200, description = "Invocations, participants, outcomes, points, budget, cash, cost per participant, events, day by day", body = Report), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The scope does not allow it")),
    security(("admin_token" = []))
)]
async fn campaign_report(
    State(state): State<AppState>,
    admin: Admin,
    Path(plugin): Path<String>,
    Query(params): Query<ReportParams>,
) -> Result<Json<Report>, ApiError> {
    if !is_plugin_id(&plugin) {
        return Err(invalid(
            "plugin ids are lowercase letters, digits and '-'".into(),
        ));
    }
    let scope = scope(&admin, params.region.as_deref())?;
    let day = |text: &Option<String>, name: &str| {
        text.as_deref()
            .map(|text| {
                Date::parse(text).ok_or_else(|| {
                    invalid(format!("{name} must be a date, YYYY-MM-DD; got {text:?}"))
                })
            })
            .transpose()
    };
    let today = state.calendar.day_of(state.registry.clock.now_ms());
    let to = day(&params.to, "to")?.unwrap_or(today);
    let from = day(&params.from, "from")?
        .unwrap_or_else(|| Date::from_days(to.days() - (DEFAULT_DAYS - 1)));
    let days_max = i64::from(state.config.reports.days_max);
    let span = reports::days(from, to);
    if span < 1 || span > days_max {
        return Err(invalid(format!(
            "`from` must be on or before `to`, and a report spans at most {days_max} days \
             (reports.days_max)"
        )));
    }
    let currency = state
        .config
        .payments
        .currencies
        .first()
        .map_or("CNY", String::as_str);
    let query = ReportQuery {
        plugin: &plugin,
        scope,
        from,
        to,
        currency,
        point_value_minor: state.config.reports.point_value_minor,
    };
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let report = reports::build(&mut connection.conn(), &state.calendar, &query)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(report))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The plugin.
    plugin: String,
    /// One event name only.
    name: Option<String>,
    /// Regions within this one only (default: the admin's scope).
    region: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Events per page (at most `audit.page_max`).
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventPage {
    events: Vec<Event>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/events",
    tag = "admin",
    params(EventsQuery),
    responses((status = 200, description = "Events, newest first", body = EventPage), (status = 400, description = "Bad input; the error names it"), (status = 401, description = "No valid credential"), (status = 403, description = "The scope does not allow it")),
    security(("admin_token" = []))
)]
async fn list_events(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    if !is_plugin_id(&query.plugin) {
        return Err(invalid(
            "plugin ids are lowercase letters, digits and '-'".into(),
        ));
    }
    let scope = scope(&admin, query.region.as_deref())?;
    let limit = super::page_limit(query.limit, 50, state.config.audit.page_max);
    let mut connection = state.db.read.acquire().await.map_err(ApiError::internal)?;
    let events = events::page(
        &mut connection.conn(),
        &query.plugin,
        query.name.as_deref(),
        scope,
        query.cursor.as_deref(),
        i64::from(limit),
    )
    .await
    .map_err(ApiError::internal)?;
    let next_cursor = super::next_cursor(&events, limit, |event| &event.id);
    Ok(Json(EventPage {
        events,
        next_cursor,
    }))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::RequestInvalid, message)
}
