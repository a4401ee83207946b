//! The job runner: every host polls for due jobs, claims a few with a lease, and runs each
//! through `job-handler.on-job` like a request, for the caller and region that scheduled it
//! (a [`super::CALL_AGAIN`] job runs its call through `handle` instead).
//!
//! A claim is one statement: due `pending` jobs (and `running` ones whose lease ran out, their
//! host having stopped) become `running` under this host's lease, their attempt counted. On
//! PostgreSQL the candidates are locked `FOR UPDATE SKIP LOCKED`, so hosts claiming at once
//! take different jobs; SQLite has one writer. A success completes the job in its call's commit
//! (see [`super::StagedJobs`]); a failure puts it back to `pending` after a backoff, or, at the
//! last attempt, records it as `failed` with its error.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::JobsConfig;
use crate::db::{Conn, Db};
use crate::identity::customers::{self, Profile, Status};
use crate::registry::Lookup;
use crate::runtime::{Caller, JobCall, Request};
use crate::{AppState, Services, with_conn};

/// A job this host claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// The job id.
    pub id: String,
    /// The plugin.
    pub plugin_id: String,
    /// The region.
    pub region: String,
    /// Its name.
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// `customer`, `partner` or `scheduler`.
    pub caller_kind: String,
    /// The pseudonym or partner id.
    pub caller: String,
    /// The customer's number.
    pub customer_number: Option<String>,
    /// Attempts including this one.
    pub attempts: i64,
    /// When it was due.
    pub due_at_ms: i64,
}

const CLAIM: &str = "UPDATE jobs SET status = 'running', lease_owner = $1, \
     lease_until_ms = $3, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM jobs WHERE status IN ('pending', 'running') \
     AND due_at_ms <= $2 AND (status = 'pending' OR lease_until_ms < $2) \
     ORDER BY due_at_ms LIMIT $4";

const CLAIMED: &str = ") RETURNING id, plugin_id, region, name, payload, caller_kind, caller, \
     customer_number, attempts, due_at_ms";

/// Claims up to `max` due jobs for `owner` until `now_ms + lease_ms`.
pub async fn claim(
    db: &Db,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
    max: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut transaction = db.write.begin().await?;
    let claimed = match transaction.conn() {
        Conn::Sqlite(c) => {
            sqlx::query_as(&format!("{CLAIM}{CLAIMED}"))
                .bind(owner)
                .bind(now_ms)
                .bind(now_ms + lease_ms)
                .bind(max)
                .fetch_all(&mut *c)
                .await?
        }
        Conn::Postgres(c) => {
            sqlx::query_as(&format!("{CLAIM} FOR UPDATE SKIP LOCKED{CLAIMED}"))
                .bind(owner)
                .bind(now_ms)
                .bind(now_ms + lease_ms)
                .bind(max)
                .fetch_all(&mut *c)
                .await?
        }
    };
    transaction.commit().await?;
    Ok(claimed)
}

/// The delay before attempt `attempts + 1`: `initial`, doubling, at most `max`.
pub fn backoff_ms(config: &JobsConfig, attempts: i64) -> i64 {
    let doublings = u32::try_from((attempts - 1).clamp(0, 40)).unwrap_or(40);
    let delay = config
        .backoff_initial_ms
        .saturating_mul(1u64 << doublings.min(40));
    i64::try_from(delay.min(config.backoff_max_ms)).unwrap_or(i64::MAX)
}

/// Records a failed attempt of `job`: back to `pending` after the backoff, or `failed` after
/// the last attempt. Only while this host still holds the lease.
pub async fn failed_attempt(
    db: &Db,
    config: &JobsConfig,
    job: &Claimed,
    owner: &str,
    error: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut transaction = db.write.begin().await?;
    let mut conn = transaction.conn();
    let give_up = job.attempts >= i64::from(config.attempts_max);
    let error = truncate(error, 1000);
    with_conn!(conn.reborrow(), c => {
        if give_up {
            sqlx::query(
                "UPDATE jobs SET status = 'failed', finished_at_ms = $3, last_error = $4, \
                 lease_owner = NULL, lease_until_ms = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(&job.id)
            .bind(owner)
            .bind(now_ms)
            .bind(&error)
            .execute(&mut *c)
            .await?;
        } else {
            sqlx::query(
                "UPDATE jobs SET status = 'pending', due_at_ms = $3, last_error = $4, \
                 lease_owner = NULL, lease_until_ms = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(&job.id)
            .bind(owner)
            .bind(now_ms + backoff_ms(config, job.attempts))
            .bind(&error)
            .execute(&mut *c)
            .await?;
        }
    });
    transaction.commit().await?;
    if give_up {
        tracing::warn!(
            job = %job.id,
            plugin = %job.plugin_id,
            attempts = job.attempts,
            %error,
            "job failed for good"
        );
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Starts this host's runner: it polls every `jobs.poll_interval_ms` until the services are
/// dropped.
pub fn start(state: &AppState) {
    let services: Weak<Services> = Arc::downgrade(state);
    let owner: Arc<str> = Arc::from(uuid::Uuid::now_v7().simple().to_string());
    let interval = Duration::from_millis(state.config.jobs.poll_interval_ms);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(state) = services.upgrade() else {
                return;
            };
            if let Err(error) = run_due(&state, &owner).await {
                tracing::warn!(%error, "could not claim due jobs; retrying");
            }
        }
    });
}

/// Claims the due jobs and runs them, concurrently, until none is left due.
async fn run_due(state: &AppState, owner: &Arc<str>) -> Result<(), sqlx::Error> {
    let config = &state.config.jobs;
    loop {
        let now_ms = state.registry.clock.now_ms();
        let claimed = claim(
            &state.db,
            owner,
            now_ms,
            i64::try_from(config.lease_ms).unwrap_or(i64::MAX),
            i64::from(config.claim_max),
        )
        .await?;
        let count = claimed.len();
        let runs: Vec<_> = claimed
            .into_iter()
            .map(|job| {
                let state = state.clone();
                let owner = owner.clone();
                tokio::spawn(async move { run_one(&state, job, owner).await })
            })
            .collect();
        for run in runs {
            if let Err(error) = run.await {
                tracing::error!(%error, "a job run panicked");
            }
        }
        if count < config.claim_max as usize {
            return Ok(());
        }
    }
}

/// Runs one attempt of `job` and records how it went.
async fn run_one(state: &AppState, job: Claimed, owner: Arc<str>) {
    let config = &state.config.jobs;
    let now_ms = state.registry.clock.now_ms();
    let failed = |error: String| {
        let job = job.clone();
        let owner = owner.clone();
        async move {
            if let Err(db_error) =
                failed_attempt(&state.db, config, &job, &owner, &error, now_ms).await
            {
                tracing::error!(job = %job.id, %db_error, "could not record a failed job attempt");
            }
        }
    };
    if job.attempts > i64::from(config.attempts_max) {
        failed(format!(
            "gave up after {} attempts (the last one's host stopped)",
            config.attempts_max
        ))
        .await;
        return;
    }
    let deployment = match state
        .registry
        .snapshot()
        .lookup(&job.plugin_id, &job.region)
    {
        Lookup::Found(deployment) => deployment,
        Lookup::Killed { region, .. } => {
            failed(format!(
                "the plugin is killed in {region}; the job is tried again later, until its \
                 attempts run out"
            ))
            .await;
            return;
        }
        Lookup::Missing => {
            failed(format!(
                "the plugin is not enabled in {} or above it",
                job.region
            ))
            .await;
            return;
        }
    };
    let customer = match &job.customer_number {
        Some(number) => match customer_profile(state, number, &job.region).await {
            Ok(profile) => Some(profile),
            Err(error) => {
                failed(format!("could not read the customer: {error}")).await;
                return;
            }
        },
        None => None,
    };
    let caller = match job.caller_kind.as_str() {
        "customer" => Caller::Customer {
            pseudonym: job.caller.clone(),
        },
        "partner" => Caller::Partner {
            partner_id: job.caller.clone(),
        },
        _ => Caller::Scheduler,
    };
    let lease = super::JobLease {
        id: job.id.clone(),
        owner: owner.clone(),
    };
    let request_id = uuid::Uuid::now_v7().simple().to_string();
    let outcome = if job.name == super::CALL_AGAIN {
        let again: super::CallAgain = match serde_json::from_str(&job.payload) {
            Ok(again) => again,
            Err(error) => {
                failed(format!("the call to run again is unreadable: {error}")).await;
                return;
            }
        };
        let request = Request {
            action: again.action,
            body: again.body,
            caller,
            region: job.region.clone(),
            request_id,
            idempotency_key: again.idempotency_key,
        };
        crate::invocation::run_again(state, &deployment, request, customer.as_ref(), lease).await
    } else {
        let request = Request {
            action: format!("job:{}", job.name),
            body: job.payload.clone(),
            caller,
            region: job.region.clone(),
            request_id,
            idempotency_key: Some(job.id.clone()),
        };
        let call = JobCall {
            id: job.id.clone(),
            name: job.name.clone(),
            attempt: u32::try_from(job.attempts).unwrap_or(u32::MAX),
            due_at_ms: job.due_at_ms,
        };
        crate::invocation::run_job(state, &deployment, request, customer.as_ref(), call, lease)
            .await
    };
    match outcome {
        Ok(()) => {}
        Err(error) if error.code() == crate::error::ErrorCode::StoreConflict => {
            // A lost lease or a store conflict: retried like any failure (a lost lease's
            // update finds the job no longer ours and changes nothing).
            failed(error.message().to_owned()).await;
        }
        Err(error) => {
            let code = match error.scenario_code() {
                Some(scenario_code) => format!("{} ({scenario_code})", error.code().as_str()),
                None => error.code().as_str().to_owned(),
            };
            failed(format!("{code}: {}", error.message())).await;
        }
    }
}

/// The profile of customer `number` for a job: as the identity service has it, or, for a
/// customer only their token proved, what the job knows.
async fn customer_profile(
    state: &AppState,
    number: &str,
    region: &str,
) -> Result<Profile, sqlx::Error> {
    let mut connection = state.db.read.acquire().await?;
    Ok(customers::get(&mut connection.conn(), number)
        .await?
        .unwrap_or_else(|| Profile {
            customer_number: number.to_owned(),
            region: region.to_owned(),
            tier: String::new(),
            tags: Vec::new(),
            status: Status::Active,
            created_at_ms: 0,
            updated_at_ms: 0,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let config = JobsConfig {
            backoff_initial_ms: 1000,
            backoff_max_ms: 5000,
            ..JobsConfig::default()
        };
        let delays: Vec<i64> = (1..=5)
            .map(|attempts| backoff_ms(&config, attempts))
            .collect();
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff_ms(&config, 1000), 5000);
    }
}
