//! Scheduled plugin work: the `jobs` interface a call schedules through, the `jobs` table, and
//! the runner that claims due jobs and calls the plugin's `job-handler.on-job`.
//!
//! A call's `schedule` and `cancel` are buffered like its `store` writes and land with them, at
//! its commit, only if the call returns `ok`. The runner of every host claims due jobs with a
//! lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer); a job's completion is
//! part of its own call's commit and only lands while the lease is still this host's, so two
//! hosts never both commit a job's effects. A failed attempt is retried with exponential
//! backoff until `jobs.attempts_max`, then recorded as failed with its last error.

pub mod runner;

use std::sync::Arc;

use serde::Serialize;

use crate::calendar::Calendar;
use crate::db::{Conn, Pool};
use crate::runtime::interfaces::jobs as wit;
use crate::runtime::{HostFailure, LimitExceeded, Metered};
use crate::{execute_rows, with_conn};

/// Longest job name.
pub const NAME_BYTES_MAX: usize = 64;

/// Job names with this prefix are the host's own; a plugin cannot schedule them.
pub const HOST_PREFIX: &str = "lifecircle.";

/// The host's job that runs a call again through `handle`: one that was answered payments and
/// then failed (see [`crate::invocation::invoke`]). Its payload is a [`CallAgain`].
pub const CALL_AGAIN: &str = "lifecircle.call-again";

/// The call a [`CALL_AGAIN`] job runs again, for the job's caller and region.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CallAgain {
    /// The action.
    pub action: String,
    /// The request body, as the client sent it.
    pub body: String,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
}

/// The limits of scheduling, from `[jobs]`.
#[derive(Debug, Clone, Copy)]
pub struct JobSettings {
    /// Pending jobs per plugin.
    pub pending_max: u64,
    /// Bytes of one payload.
    pub payload_bytes_max: u32,
    /// Jobs one call may schedule.
    pub per_call_max: u32,
    /// How far ahead a job may be due, in days.
    pub ahead_days_max: u32,
}

/// Who and where a call runs for, as its jobs will.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The plugin.
    pub plugin_id: String,
    /// The call's region.
    pub region: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: &'static str,
    /// The pseudonym or partner id; empty for the scheduler.
    pub caller: String,
    /// The customer's number, for the job's ledger.
    pub customer_number: Option<String>,
    /// The invocation scheduling.
    pub scheduled_by: String,
    /// The call's time.
    pub now_ms: i64,
    /// Working days.
    pub calendar: Arc<Calendar>,
    /// Limits.
    pub settings: JobSettings,
}

/// A job to insert at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Its id.
    pub id: String,
    /// The plugin.
    pub plugin_id: String,
    /// The region.
    pub region: String,
    /// Its name.
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// The plugin's idempotency key.
    pub key: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: &'static str,
    /// The pseudonym or partner id.
    pub caller: String,
    /// The customer's number.
    pub customer_number: Option<String>,
    /// When it is due.
    pub due_at_ms: i64,
    /// When it was scheduled.
    pub created_at_ms: i64,
    /// The invocation that scheduled it.
    pub scheduled_by: String,
}

/// A running job whose completion commits with its call's writes, if the lease still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    /// The job.
    pub id: String,
    /// The host holding the lease.
    pub owner: Arc<str>,
}

/// A call's job writes.
#[derive(Debug, Default)]
pub struct JobWrites {
    /// Jobs to insert.
    pub new: Vec<NewJob>,
    /// Pending jobs to cancel (of the call's plugin and region).
    pub cancels: Vec<String>,
    /// The job this call runs, completed with the commit.
    pub completes: Option<JobLease>,
    /// The plugin's limit of pending jobs, checked again at commit.
    pub pending_max: u64,
}

impl JobWrites {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.cancels.is_empty() && self.completes.is_none()
    }
}

/// One call's `jobs`: its context and buffered writes.
#[derive(Default)]
pub struct CallJobs {
    db: Option<Pool>,
    context: Option<JobContext>,
    new: Vec<NewJob>,
    cancels: Vec<String>,
    pending_committed: Option<u64>,
}

impl CallJobs {
    /// The jobs of a call in `context`, reading from `db`.
    pub fn new(db: Pool, context: JobContext) -> Self {
        Self {
            db: Some(db),
            context: Some(context),
            ..Self::default()
        }
    }

    /// The buffered writes.
    pub fn into_writes(self) -> JobWrites {
        let pending_max = self
            .context
            .as_ref()
            .map_or(0, |context| context.settings.pending_max);
        JobWrites {
            new: self.new,
            cancels: self.cancels,
            completes: None,
            pending_max,
        }
    }

    fn parts(&self) -> Result<(&Pool, &JobContext), HostFailure> {
        match (&self.db, &self.context) {
            (Some(db), Some(context)) => Ok((db, context)),
            _ => Err(HostFailure("jobs used without a context".into())),
        }
    }

    async fn schedule(
        &mut self,
        name: String,
        payload: String,
        when: wit::When,
        key: String,
    ) -> Result<Result<String, wit::ScheduleError>, Stop> {
        let Self {
            db: Some(db),
            context: Some(context),
            new,
            pending_committed,
            ..
        } = self
        else {
            return Err(HostFailure("jobs used without a context".into()).into());
        };
        let settings = context.settings;
        if !is_job_name(&name) || name.starts_with(HOST_PREFIX) {
            return Ok(Err(wit::ScheduleError::InvalidName));
        }
        if payload.len() as u64 > u64::from(settings.payload_bytes_max) {
            return Ok(Err(wit::ScheduleError::PayloadTooLarge(
                settings.payload_bytes_max,
            )));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&payload).is_err() {
            return Ok(Err(wit::ScheduleError::PayloadNotJson));
        }
        let due_at_ms = match due_at(context, &when) {
            Some(due) => due,
            None => {
                return Ok(Err(wit::ScheduleError::TooFarAhead(
                    settings.ahead_days_max,
                )));
            }
        };
        if let Some(earlier) = new.iter().find(|job| job.key == key) {
            return Ok(if earlier.name == name && earlier.payload == payload {
                Ok(earlier.id.clone())
            } else {
                Err(wit::ScheduleError::ExistsWithDifferentRequest)
            });
        }
        let mut connection = db.acquire().await.map_err(read_failure)?;
        if let Some((id, stored_name, stored_payload)) =
            by_key(&mut connection.conn(), &context.plugin_id, &key)
                .await
                .map_err(read_failure)?
        {
            return Ok(if stored_name == name && stored_payload == payload {
                Ok(id)
            } else {
                Err(wit::ScheduleError::ExistsWithDifferentRequest)
            });
        }
        if new.len() as u64 >= u64::from(settings.per_call_max) {
            return Err(Stop::Limit(LimitExceeded::JobsPerCall(u64::from(
                settings.per_call_max,
            ))));
        }
        let committed = match *pending_committed {
            Some(count) => count,
            None => {
                let count = pending_count(&mut connection.conn(), &context.plugin_id)
                    .await
                    .map_err(read_failure)?;
                *pending_committed = Some(count);
                count
            }
        };
        if committed + new.len() as u64 >= settings.pending_max {
            return Ok(Err(wit::ScheduleError::TooManyJobs(
                u32::try_from(settings.pending_max).unwrap_or(u32::MAX),
            )));
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        new.push(NewJob {
            id: id.clone(),
            plugin_id: context.plugin_id.clone(),
            region: context.region.clone(),
            name,
            payload,
            key,
            caller_kind: context.caller_kind,
            caller: context.caller.clone(),
            customer_number: context.customer_number.clone(),
            due_at_ms,
            created_at_ms: context.now_ms,
            scheduled_by: context.scheduled_by.clone(),
        });
        Ok(Ok(id))
    }

    async fn cancel(&mut self, job: String) -> Result<bool, Stop> {
        if let Some(at) = self.new.iter().position(|new| new.id == job) {
            self.new.remove(at);
            return Ok(true);
        }
        if self.cancels.contains(&job) {
            return Ok(false);
        }
        let (db, context) = self.parts()?;
        let mut connection = db.acquire().await.map_err(read_failure)?;
        let status: Option<String> = with_conn!(connection.conn(), c => {
            sqlx::query_scalar(
                "SELECT status FROM jobs WHERE id = $1 AND plugin_id = $2 AND region = $3",
            )
            .bind(&job)
            .bind(&context.plugin_id)
            .bind(&context.region)
            .fetch_optional(&mut *c)
            .await
            .map_err(read_failure)?
        });
        let pending = status.as_deref() == Some("pending");
        if pending {
            self.cancels.push(job);
        }
        Ok(pending)
    }
}

/// Why a `jobs` call stops the plugin.
enum Stop {
    Limit(LimitExceeded),
    Host(HostFailure),
}

impl From<HostFailure> for Stop {
    fn from(failure: HostFailure) -> Self {
        Stop::Host(failure)
    }
}

impl From<Stop> for wasmtime::Error {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Limit(limit) => limit.into(),
            Stop::Host(failure) => failure.into(),
        }
    }
}

fn read_failure(error: sqlx::Error) -> HostFailure {
    HostFailure(format!("jobs read: {error}"))
}

/// Whether `name` is a job name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn is_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// When a job scheduled at the context's time with `when` is due; `None` past the limit.
fn due_at(context: &JobContext, when: &wit::When) -> Option<i64> {
    let now = context.now_ms;
    let due = match *when {
        wit::When::AtMs(at) => at.max(now),
        wit::When::AfterSeconds(seconds) => {
            now.checked_add(i64::try_from(seconds).ok()?.checked_mul(1000)?)?
        }
        wit::When::AfterWorkingDays(days) => {
            context
                .calendar
                .add_working_days(&context.region, now, days)?
        }
    };
    let limit = now + i64::from(context.settings.ahead_days_max) * 86_400_000;
    (due <= limit).then_some(due)
}

impl wit::Host for Metered<'_, CallJobs> {
    async fn schedule(
        &mut self,
        name: String,
        payload: String,
        when: wit::When,
        idempotency_key: String,
    ) -> wasmtime::Result<Result<String, wit::ScheduleError>> {
        Ok(self
            .charge()?
            .schedule(name, payload, when, idempotency_key)
            .await?)
    }

    async fn cancel(&mut self, job: String) -> wasmtime::Result<bool> {
        Ok(self.charge()?.cancel(job).await?)
    }
}

/// The job a plugin scheduled under `key`: its id, name and payload.
async fn by_key(
    conn: &mut Conn<'_>,
    plugin_id: &str,
    key: &str,
) -> Result<Option<(String, String, String)>, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT id, name, payload FROM jobs WHERE plugin_id = $1 AND idempotency_key = $2",
        )
        .bind(plugin_id)
        .bind(key)
        .fetch_optional(&mut *c)
        .await
    })
}

/// How many jobs of `plugin_id` are pending or running (kept by the database's triggers on
/// `jobs`; see migration 0011).
pub async fn pending_count(conn: &mut Conn<'_>, plugin_id: &str) -> Result<u64, sqlx::Error> {
    let count: i64 = with_conn!(conn.reborrow(), c => {
        sqlx::query_scalar(
            "SELECT COALESCE((SELECT open_jobs FROM jobs_usage WHERE plugin_id = $1), 0)",
        )
        .bind(plugin_id)
        .fetch_one(&mut *c)
        .await?
    });
    Ok(count.max(0) as u64)
}

/// What the commit writer needs to know about the jobs of a batch, read in its transaction.
#[derive(Debug, Default)]
pub struct StagedJobs {
    /// Pending jobs per plugin, counting what the batch has added so far.
    pending: std::collections::HashMap<String, u64>,
    /// Running jobs whose completion the batch commits: id → lease owner.
    leases: std::collections::HashMap<String, Option<String>>,
}

/// Why a call's job writes do not hold at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobConflict {
    /// The plugin would have more pending jobs than allowed.
    Limit(u64),
    /// Another host took over the job this call ran.
    LeaseLost,
}

impl StagedJobs {
    /// Locks and counts the pending jobs of every plugin that `writes` schedule for, and
    /// reads the leases of the jobs they complete (locked on PostgreSQL).
    pub async fn load(
        conn: &mut Conn<'_>,
        writes: &[&JobWrites],
    ) -> Result<StagedJobs, sqlx::Error> {
        let mut staged = StagedJobs::default();
        let mut plugins: Vec<&str> = writes
            .iter()
            .flat_map(|w| w.new.iter().map(|job| job.plugin_id.as_str()))
            .collect();
        plugins.sort_unstable();
        plugins.dedup();
        for plugin in plugins {
            with_conn!(conn.reborrow(), c => {
                sqlx::query(
                    "INSERT INTO jobs_usage (plugin_id, checks) VALUES ($1, 1) \
                     ON CONFLICT (plugin_id) DO UPDATE SET checks = jobs_usage.checks + 1",
                )
                .bind(plugin)
                .execute(&mut *c)
                .await?;
            });
            let count = pending_count(conn, plugin).await?;
            staged.pending.insert(plugin.to_owned(), count);
        }
        let leased: Vec<&str> = writes
            .iter()
            .filter_map(|w| w.completes.as_ref().map(|lease| lease.id.as_str()))
            .collect();
        for id in leased {
            let owner: Option<Option<String>> = match conn.reborrow() {
                Conn::Sqlite(c) => {
                    sqlx::query_scalar(
                        "SELECT lease_owner FROM jobs WHERE id = $1 AND status = 'running'",
                    )
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?
                }
                Conn::Postgres(c) => {
                    sqlx::query_scalar(
                        "SELECT lease_owner FROM jobs WHERE id = $1 AND status = 'running' \
                         FOR UPDATE",
                    )
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?
                }
            };
            staged.leases.insert(id.to_owned(), owner.flatten());
        }
        Ok(staged)
    }

    /// Checks one call's job writes against the batch so far and counts them in; on an
    /// error nothing is counted.
    pub fn apply(&mut self, writes: &JobWrites) -> Result<(), JobConflict> {
        if let Some(lease) = &writes.completes {
            let holds = self
                .leases
                .get(&lease.id)
                .is_some_and(|owner| owner.as_deref() == Some(&*lease.owner));
            if !holds {
                return Err(JobConflict::LeaseLost);
            }
        }
        let mut added: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for job in &writes.new {
            *added.entry(&job.plugin_id).or_default() += 1;
        }
        for (plugin, count) in &added {
            let pending = self.pending.get(*plugin).copied().unwrap_or(0);
            if pending + count > writes.pending_max {
                return Err(JobConflict::Limit(writes.pending_max));
            }
        }
        for (plugin, count) in added {
            *self.pending.entry(plugin.to_owned()).or_default() += count;
        }
        if let Some(lease) = &writes.completes {
            // Completed: a second completion in the same batch would not hold.
            self.leases.insert(lease.id.clone(), None);
        }
        Ok(())
    }
}

/// Writes the job writes of the calls that committed: new jobs, cancels, completions.
pub async fn flush(
    conn: &mut Conn<'_>,
    writes: &[&JobWrites],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let new: Vec<&NewJob> = writes.iter().flat_map(|w| w.new.iter()).collect();
    execute_rows!(
        conn,
        &new,
        "INSERT INTO jobs (id, plugin_id, region, name, payload, idempotency_key, caller_kind, \
         caller, customer_number, status, due_at_ms, attempts, created_at_ms, scheduled_by) ",
        |row, job| row
            .push_bind(&job.id)
            .push_bind(&job.plugin_id)
            .push_bind(&job.region)
            .push_bind(&job.name)
            .push_bind(&job.payload)
            .push_bind(&job.key)
            .push_bind(job.caller_kind)
            .push_bind(&job.caller)
            .push_bind(&job.customer_number)
            .push_bind("pending")
            .push_bind(job.due_at_ms)
            .push_bind(0i64)
            .push_bind(job.created_at_ms)
            .push_bind(&job.scheduled_by),
        " ON CONFLICT (plugin_id, idempotency_key) DO NOTHING",
    );
    for write in writes {
        for id in &write.cancels {
            with_conn!(conn.reborrow(), c => {
                sqlx::query(
                    "UPDATE jobs SET status = 'cancelled', finished_at_ms = $2, \
                     last_error = 'cancelled by the plugin' WHERE id = $1 AND status = 'pending'",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&mut *c)
                .await?;
            });
        }
        if let Some(lease) = &write.completes {
            with_conn!(conn.reborrow(), c => {
                sqlx::query(
                    "UPDATE jobs SET status = 'done', finished_at_ms = $2, lease_owner = NULL, \
                     lease_until_ms = NULL, last_error = NULL WHERE id = $1",
                )
                .bind(&lease.id)
                .bind(now_ms)
                .execute(&mut *c)
                .await?;
            });
        }
    }
    Ok(())
}

/// A job as admins see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobView {
    /// The job id; also the paging cursor.
    pub id: String,
    /// The plugin.
    pub plugin_id: String,
    /// The region it runs in.
    pub region: String,
    /// Its name.
    pub name: String,
    /// `pending`, `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    /// When it is (or was) due, ms since the Unix epoch.
    pub due_at_ms: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed, or why it was cancelled.
    pub last_error: Option<String>,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: String,
    /// The customer's pseudonym for the plugin, or the partner's id.
    pub caller: String,
    /// When it was scheduled.
    pub created_at_ms: i64,
    /// The invocation that scheduled it.
    pub scheduled_by: String,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
}

const VIEW_COLUMNS: &str = "SELECT id, plugin_id, region, name, status, due_at_ms, attempts, \
     last_error, caller_kind, caller, created_at_ms, scheduled_by, finished_at_ms FROM jobs";

/// Which jobs to list.
#[derive(Debug, Default)]
pub struct JobFilter<'a> {
    /// One plugin only.
    pub plugin: Option<&'a str>,
    /// One status only.
    pub status: Option<&'a str>,
    /// Regions within this one only.
    pub scope: Option<&'a str>,
    /// Strictly before this job id.
    pub before: Option<&'a str>,
    /// Rows at most.
    pub limit: i64,
}

/// Jobs newest first, as `filter` says.
pub async fn page(
    conn: &mut Conn<'_>,
    filter: &JobFilter<'_>,
) -> Result<Vec<JobView>, sqlx::Error> {
    let subtree = filter.scope.map(|scope| format!("{scope}-%"));
    Ok(with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!(
            "{VIEW_COLUMNS} WHERE ($1 IS NULL OR plugin_id = $1) AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR region = $3 OR region LIKE $4) AND ($5 IS NULL OR id < $5) \
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(filter.plugin)
        .bind(filter.status)
        .bind(filter.scope)
        .bind(subtree)
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&mut *c)
        .await?
    }))
}

/// One job.
pub async fn get(conn: &mut Conn<'_>, id: &str) -> Result<Option<JobView>, sqlx::Error> {
    Ok(with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!("{VIEW_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
    }))
}

/// Cancels a pending job for an admin, in the caller's transaction. Returns whether it was
/// pending.
pub async fn cancel(
    conn: &mut Conn<'_>,
    id: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    if let Conn::Postgres(c) = conn.reborrow() {
        // Lock the plugin's count of open jobs before the job, as commits do (they lock the
        // count when they load, then the jobs they cancel): in the other order, a commit
        // on another host cancelling the same job could deadlock with this one.
        sqlx::query(
            "SELECT 1 FROM jobs_usage WHERE plugin_id = \
             (SELECT plugin_id FROM jobs WHERE id = $1) FOR UPDATE",
        )
        .bind(id)
        .execute(&mut *c)
        .await?;
    }
    let changed = with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at_ms = $2, last_error = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(now_ms)
        .bind(reason)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(changed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(now_ms: i64) -> JobContext {
        JobContext {
            plugin_id: "p".into(),
            region: "cn".into(),
            caller_kind: "customer",
            caller: "c".into(),
            customer_number: None,
            scheduled_by: "i".into(),
            now_ms,
            calendar: Arc::new(
                Calendar::new(&crate::calendar::CalendarConfig {
                    utc_offset_minutes: 0,
                    ..Default::default()
                })
                .expect("calendar"),
            ),
            settings: JobSettings {
                pending_max: 10,
                payload_bytes_max: 100,
                per_call_max: 2,
                ahead_days_max: 30,
            },
        }
    }

    #[test]
    fn due_times_follow_the_request_within_the_limit() {
        // 1970-01-02 was a Friday.
        let friday_noon = 86_400_000 + 12 * 3_600_000;
        let context = context(friday_noon);
        assert_eq!(
            due_at(&context, &wit::When::AfterSeconds(60)),
            Some(friday_noon + 60_000)
        );
        assert_eq!(due_at(&context, &wit::When::AtMs(0)), Some(friday_noon));
        assert_eq!(
            due_at(&context, &wit::When::AfterWorkingDays(1)),
            Some(friday_noon + 3 * 86_400_000)
        );
        assert_eq!(
            due_at(&context, &wit::When::AfterSeconds(31 * 86_400)),
            None
        );
        assert_eq!(due_at(&context, &wit::When::AfterSeconds(u64::MAX)), None);
    }

    #[test]
    fn job_names_are_short_and_plain() {
        assert!(is_job_name("pay-prize.v2_1"));
        assert!(!is_job_name(""));
        assert!(!is_job_name("pay prize"));
        assert!(!is_job_name(&"a".repeat(65)));
    }

    #[test]
    fn a_batch_counts_pending_jobs_and_honours_leases() {
        let job = |id: &str| NewJob {
            id: id.into(),
            plugin_id: "p".into(),
            region: "cn".into(),
            name: "n".into(),
            payload: "null".into(),
            key: id.into(),
            caller_kind: "scheduler",
            caller: String::new(),
            customer_number: None,
            due_at_ms: 0,
            created_at_ms: 0,
            scheduled_by: "i".into(),
        };
        let mut staged = StagedJobs::default();
        staged.pending.insert("p".into(), 1);
        staged.leases.insert("j".into(), Some("me".into()));
        let two = JobWrites {
            new: vec![job("a"), job("b")],
            pending_max: 3,
            ..JobWrites::default()
        };
        assert_eq!(staged.apply(&two), Ok(()));
        let one_more = JobWrites {
            new: vec![job("c")],
            pending_max: 3,
            ..JobWrites::default()
        };
        assert_eq!(staged.apply(&one_more), Err(JobConflict::Limit(3)));
        let theirs = JobWrites {
            completes: Some(JobLease {
                id: "j".into(),
                owner: "other".into(),
            }),
            ..JobWrites::default()
        };
        assert_eq!(staged.apply(&theirs), Err(JobConflict::LeaseLost));
        let mine = JobWrites {
            completes: Some(JobLease {
                id: "j".into(),
                owner: "me".into(),
            }),
            ..JobWrites::default()
        };
        assert_eq!(staged.apply(&mine), Ok(()));
        assert_eq!(staged.apply(&mine), Err(JobConflict::LeaseLost));
    }
}
