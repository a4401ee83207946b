//! Work for later: schedule a job now, and the host calls [`Scenario::on_job`] with it when
//! it is due, for the same customer (or partner) and region as the call that scheduled it.
//!
//! A job is part of the call that schedules it: it lands with the call's [`store`] and
//! [`ledger`] writes, and only if the call returns `Ok`. Jobs survive restarts and run once
//! even with several hosts. When `on_job` returns an error or panics, nothing it wrote is kept
//! and the host retries it later with growing delays, up to the bank's limit of attempts; then
//! the job is recorded as failed, for the bank's admins to see. Payments and outbound requests
//! happen in every attempt that makes them: key them by [`Job::id`], which stays the same
//! across attempts, so a retried job does not pay twice.
//!
//! Import: list `"jobs"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::jobs::{self, When};
//! use lifecircle_sdk::{Job, Request, Response, Scenario, ScenarioError};
//!
//! struct Lottery;
//!
//! impl Scenario for Lottery {
//!     fn handle(request: Request) -> Result<Response, ScenarioError> {
//!         // A cash prize is paid five working days after the draw.
//!         let prize = serde_json::json!({"draw": request.request_id(), "yuan": 8});
//!         let key = format!("prize:{}", request.request_id());
//!         let job = jobs::schedule("pay-prize", &prize, When::AfterWorkingDays(5), &key)?;
//!         Response::json(&serde_json::json!({ "payout": job }))
//!     }
//!
//!     fn on_job(job: Job) -> Result<(), ScenarioError> {
//!         match job.name() {
//!             "pay-prize" => Ok(()), // pay it through `payments`
//!             _ => Err(ScenarioError::unknown_action()),
//!         }
//!     }
//! }
//! ```
//!
//! [`Scenario::on_job`]: crate::Scenario::on_job
//! [`store`]: crate::store
//! [`ledger`]: crate::ledger

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::lifecircle::scenario::jobs as raw;
use crate::__private::bindings::lifecircle::scenario::types::Job as RawJob;
use crate::{Caller, ScenarioError};

/// When a job is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At this time, in milliseconds since the Unix epoch (in the past: as soon as possible).
    AtMs(i64),
    /// This many seconds after the call's time.
    AfterSeconds(u64),
    /// This many working days after the call's day, at the same local time of day, in the
    /// calendar of the call's region (weekends and the bank's holidays skipped).
    AfterWorkingDays(u32),
}

/// Why a job was not scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The name is not 1 to 64 bytes of letters, digits, `-`, `_` and `.`, or it starts with
    /// `lifecircle.` (the host's own jobs).
    InvalidName,
    /// The payload does not serialize to JSON.
    PayloadNotJson,
    /// The payload is longer than the bank allows.
    PayloadTooLarge {
        /// The limit in bytes.
        max_bytes: u32,
    },
    /// The plugin has as many pending jobs as the bank allows.
    TooManyJobs {
        /// The limit.
        max: u32,
    },
    /// The time is further ahead than the bank allows.
    TooFarAhead {
        /// The limit in days.
        max_days: u32,
    },
    /// The idempotency key was used before for another job.
    ExistsWithDifferentRequest,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName => {
                write!(
                    f,
                    "job names are 1 to 64 letters, digits, '-', '_' or '.', not starting \
                     with 'lifecircle.'"
                )
            }
            Self::PayloadNotJson => write!(f, "the job's payload is not JSON"),
            Self::PayloadTooLarge { max_bytes } => {
                write!(f, "the job's payload is over {max_bytes} bytes")
            }
            Self::TooManyJobs { max } => write!(f, "the scenario has {max} jobs pending already"),
            Self::TooFarAhead { max_days } => {
                write!(f, "jobs may be due at most {max_days} days ahead")
            }
            Self::ExistsWithDifferentRequest => {
                write!(f, "the job's idempotency key was used for another job")
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

/// A plugin that cannot schedule its job refuses the request: `?` turns a [`ScheduleError`]
/// into a `job_not_scheduled` refusal (HTTP 422), or a `job_key_reused` conflict (409).
impl From<ScheduleError> for ScenarioError {
    fn from(error: ScheduleError) -> Self {
        match error {
            ScheduleError::ExistsWithDifferentRequest => {
                ScenarioError::conflict("job_key_reused", error.to_string())
            }
            _ => ScenarioError::refused("job_not_scheduled", error.to_string()),
        }
    }
}

/// Schedules the job `name` with `payload` at `when`; returns the job id.
///
/// Idempotent: the same `idempotency_key` with the same name and payload returns the first
/// job's id; with anything else, [`ScheduleError::ExistsWithDifferentRequest`]. Keys are
/// unique per plugin: derive them from what makes the job unique (`prize:<draw id>`).
///
/// # Panics
///
/// The host stops a call that schedules more jobs than the bank allows per call.
///
/// ```no_run
/// use lifecircle_sdk::jobs::{self, When};
///
/// let id = jobs::schedule("expire-coupon", &"CODE123", When::AfterSeconds(86_400), "expire:CODE123")
///     .expect("scheduled");
/// # let _ = id;
/// ```
pub fn schedule(
    name: &str,
    payload: &impl Serialize,
    when: When,
    idempotency_key: &str,
) -> Result<String, ScheduleError> {
    let payload = serde_json::to_string(payload).map_err(|_| ScheduleError::PayloadNotJson)?;
    let when = match when {
        When::AtMs(ms) => raw::When::AtMs(ms),
        When::AfterSeconds(seconds) => raw::When::AfterSeconds(seconds),
        When::AfterWorkingDays(days) => raw::When::AfterWorkingDays(days),
    };
    raw::schedule(name, &payload, when, idempotency_key).map_err(|error| match error {
        raw::ScheduleError::InvalidName => ScheduleError::InvalidName,
        raw::ScheduleError::PayloadNotJson => ScheduleError::PayloadNotJson,
        raw::ScheduleError::PayloadTooLarge(max_bytes) => {
            ScheduleError::PayloadTooLarge { max_bytes }
        }
        raw::ScheduleError::TooManyJobs(max) => ScheduleError::TooManyJobs { max },
        raw::ScheduleError::TooFarAhead(max_days) => ScheduleError::TooFarAhead { max_days },
        raw::ScheduleError::ExistsWithDifferentRequest => ScheduleError::ExistsWithDifferentRequest,
    })
}

/// Cancels a pending job of this plugin in the call's region, with the call's commit. Returns
/// whether it was pending.
///
/// ```no_run
/// use lifecircle_sdk::jobs;
///
/// let cancelled = jobs::cancel("0193a0b0c0d0e0f0a0b0c0d0e0f0a0b0");
/// # let _ = cancelled;
/// ```
pub fn cancel(job: &str) -> bool {
    raw::cancel(job)
}

/// One attempt of a job the plugin scheduled, as [`Scenario::on_job`](crate::Scenario::on_job)
/// receives it.
///
/// ```
/// use lifecircle_sdk::{Caller, Job};
///
/// let job = Job::new("pay-prize", Caller::Scheduler, r#"{"yuan": 8}"#);
/// let prize: serde_json::Value = job.json().expect("JSON");
/// assert_eq!(prize["yuan"], 8);
/// assert_eq!(job.attempt(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    id: String,
    name: String,
    payload: String,
    caller: Caller,
    region: String,
    attempt: u32,
    due_at_ms: i64,
}

impl Job {
    /// A first attempt of job `name` for `caller` with the JSON text `payload`, id `test`, in
    /// region `test`, due at 0. Meant for unit tests.
    pub fn new(name: impl Into<String>, caller: Caller, payload: impl Into<String>) -> Self {
        Self {
            id: "test".to_owned(),
            name: name.into(),
            payload: payload.into(),
            caller,
            region: "test".to_owned(),
            attempt: 1,
            due_at_ms: 0,
        }
    }

    pub(crate) fn from_raw(raw: RawJob) -> Self {
        Self {
            id: raw.id,
            name: raw.name,
            payload: raw.payload,
            caller: Caller::from_raw(raw.caller),
            region: raw.region,
            attempt: raw.attempt,
            due_at_ms: raw.due_at_ms,
        }
    }

    /// The job id, as [`schedule`] returned it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name the plugin gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The payload, as JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The payload, deserialized; a payload that does not fit `T` is an
    /// [`InvalidInput`](ScenarioError::InvalidInput) error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ScenarioError> {
        serde_json::from_str(&self.payload)
            .map_err(|error| ScenarioError::invalid_input("job_payload_invalid", error.to_string()))
    }

    /// Who the scheduling call was for: the job's `ledger` and `identity` are theirs.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The customer's pseudonym, if the job is for a customer.
    pub fn customer_pseudonym(&self) -> Option<&str> {
        self.caller.customer_pseudonym()
    }

    /// The region the job runs in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When it was due, in milliseconds since the Unix epoch.
    pub fn due_at_ms(&self) -> i64 {
        self.due_at_ms
    }
}
