//! The `events` interface: analytics events a plugin emits, buffered with the call and
//! written with its commit, only if the call succeeds; and reading them back for admins.

use serde::Serialize;

use crate::config::EventsConfig;
use crate::db::Conn;
use crate::runtime::interfaces::events as wit;
use crate::runtime::{HostFailure, Metered};
use crate::{execute_rows, with_conn};

/// An event to write at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Its id.
    pub id: String,
    /// When, ms since the Unix epoch (the call's time).
    pub at_ms: i64,
    /// The plugin.
    pub plugin_id: String,
    /// The call's region.
    pub region: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: &'static str,
    /// The pseudonym or partner id.
    pub caller: String,
    /// The event's name.
    pub name: String,
    /// A JSON object.
    pub properties: String,
    /// The invocation that emitted it.
    pub invocation_id: String,
}

/// Who emits, where and when: what every event of a call shares.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// The plugin.
    pub plugin_id: String,
    /// The call's region.
    pub region: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: &'static str,
    /// The pseudonym or partner id.
    pub caller: String,
    /// The invocation.
    pub invocation_id: String,
    /// The call's time.
    pub at_ms: i64,
}

/// One call's `events`.
#[derive(Default)]
pub struct CallEvents {
    context: Option<(EventContext, EventsConfig)>,
    emitted: Vec<NewEvent>,
}

impl CallEvents {
    /// The events of a call in `context`.
    pub fn new(context: EventContext, config: EventsConfig) -> Self {
        Self {
            context: Some((context, config)),
            emitted: Vec::new(),
        }
    }

    /// The buffered events.
    pub fn into_events(self) -> Vec<NewEvent> {
        self.emitted
    }

    fn emit(
        &mut self,
        name: String,
        properties: String,
    ) -> Result<Result<(), wit::EventError>, HostFailure> {
        let Some((context, config)) = &self.context else {
            return Err(HostFailure("events used without a context".into()));
        };
        if !crate::jobs::is_job_name(&name) {
            return Ok(Err(wit::EventError::InvalidName));
        }
        if properties.len() as u64 > u64::from(config.properties_bytes_max) {
            return Ok(Err(wit::EventError::PropertiesTooLarge(
                config.properties_bytes_max,
            )));
        }
        let is_object = serde_json::from_str::<serde_json::Value>(&properties)
            .is_ok_and(|value| value.is_object());
        if !is_object {
            return Ok(Err(wit::EventError::PropertiesNotAnObject));
        }
        if self.emitted.len() as u64 >= u64::from(config.per_call_max) {
            return Ok(Err(wit::EventError::TooManyEvents(config.per_call_max)));
        }
        self.emitted.push(NewEvent {
            id: uuid::Uuid::now_v7().simple().to_string(),
            at_ms: context.at_ms,
            plugin_id: context.plugin_id.clone(),
            region: context.region.clone(),
            caller_kind: context.caller_kind,
            caller: context.caller.clone(),
            name,
            properties,
            invocation_id: context.invocation_id.clone(),
        });
        Ok(Ok(()))
    }
}

impl wit::Host for Metered<'_, CallEvents> {
    fn emit(
        &mut self,
        name: String,
        properties: String,
    ) -> wasmtime::Result<Result<(), wit::EventError>> {
        Ok(self.charge()?.emit(name, properties)?)
    }
}

/// Writes `events`, many per statement.
pub async fn insert_all(conn: &mut Conn<'_>, events: &[&NewEvent]) -> Result<(), sqlx::Error> {
    execute_rows!(
        conn,
        events,
        "INSERT INTO events (id, at_ms, plugin_id, region, caller_kind, caller, name, \
         properties, invocation_id) ",
        |row, event| row
            .push_bind(&event.id)
            .push_bind(event.at_ms)
            .push_bind(&event.plugin_id)
            .push_bind(&event.region)
            .push_bind(event.caller_kind)
            .push_bind(&event.caller)
            .push_bind(&event.name)
            .push_bind(&event.properties)
            .push_bind(&event.invocation_id),
    );
    Ok(())
}

/// An event as admins read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    /// Its id; also the paging cursor.
    pub id: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// The plugin.
    pub plugin_id: String,
    /// The region.
    pub region: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: String,
    /// The customer's pseudonym for the plugin, or the partner's id.
    pub caller: String,
    /// The event's name.
    pub name: String,
    /// Its properties, JSON text.
    pub properties: String,
    /// The invocation that emitted it.
    pub invocation_id: String,
}

/// Events of `plugin` newest first, of one name and regions within `scope` when given,
/// strictly before event `before`, at most `limit`.
pub async fn page(
    conn: &mut Conn<'_>,
    plugin: &str,
    name: Option<&str>,
    scope: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let subtree = scope.map(|scope| format!("{scope}-%"));
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, at_ms, plugin_id, region, caller_kind, caller, name, properties, \
             invocation_id FROM events WHERE plugin_id = $1 AND ($2 IS NULL OR name = $2) \
             AND ($3 IS NULL OR region = $3 OR region LIKE $4) AND ($5 IS NULL OR id < $5) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(plugin)
        .bind(name)
        .bind(scope)
        .bind(subtree)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *c)
        .await
    })
}
