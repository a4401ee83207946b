//! Hostile plugin proving the **jobs** limits.
//!
//! - Action `flood` schedules `flood-0`, `flood-1`, ... forever in one call: proves
//!   `jobs.per_call_max` (the host stops the call, nothing is scheduled).
//! - Action `big-payload` schedules one job with a payload of `{"bytes": n}` bytes: proves
//!   `jobs.payload_bytes_max` (the host refuses the job; the plugin passes the refusal on).
//! - Action `far` schedules one job `{"days": n}` days ahead: proves `jobs.ahead_days_max`.
//! - Action `one` schedules one job an hour ahead, per request: with enough calls, proves
//!   `jobs.pending_max`.
//! - Action `named` schedules one job named `{"name": "..."}`: proves that names starting
//!   with `lifecircle.` are the host's (the host refuses them).
//!
//! Its jobs do nothing when they run.

use lifecircle_sdk::jobs::{self, When};
use lifecircle_sdk::{Job, Request, Response, Scenario, ScenarioError};
use serde::Deserialize;

struct HostileJobs;

impl Scenario for HostileJobs {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "flood" => flood(),
            "big-payload" => {
                let SizeBody { bytes } = request.json()?;
                let payload = "p".repeat(bytes);
                jobs::schedule(
                    "big",
                    &payload,
                    When::AfterSeconds(3600),
                    request.request_id(),
                )?;
                Ok(Response::empty())
            }
            "far" => {
                let DaysBody { days } = request.json()?;
                jobs::schedule(
                    "far",
                    &(),
                    When::AfterSeconds(days.saturating_mul(86_400)),
                    request.request_id(),
                )?;
                Ok(Response::empty())
            }
            "named" => {
                let NameBody { name } = request.json()?;
                jobs::schedule(&name, &(), When::AfterSeconds(3600), request.request_id())?;
                Ok(Response::empty())
            }
            "one" => {
                jobs::schedule("one", &(), When::AfterSeconds(3600), request.request_id())?;
                Ok(Response::empty())
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }

    fn on_job(_job: Job) -> Result<(), ScenarioError> {
        Ok(())
    }
}

lifecircle_sdk::export!(HostileJobs);

fn flood() -> ! {
    let mut index: u64 = 0;
    loop {
        let key = format!("flood-{index}");
        // An error (the pending limit) is ignored: the loop goes on until the host stops it.
        let _ = jobs::schedule("flood", &index, When::AfterSeconds(3600), &key);
        index = index.wrapping_add(1);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeBody {
    bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaysBody {
    days: u64,
}
