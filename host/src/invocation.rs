//! One scenario call end to end: run the plugin, commit its writes with its audit record,
//! count it in the metrics, and turn the outcome into an answer.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::AppState;
use crate::audit::fairness::DaySeed;
use crate::audit::{Draws, InvocationRecord};
use crate::commit::CommitError;
use crate::error::{ApiError, ErrorCode};
use crate::events::{CallEvents, EventContext};
use crate::identity::customers::Profile;
use crate::jobs::{self, CallJobs, JobContext, JobLease, JobSettings, NewJob};
use crate::ledger::{CallLedger, LedgerSettings};
use crate::outbound::CallOutbound;
use crate::payments::{CallPayments, PaymentContext};
use crate::registry::Deployment;
use crate::runtime::identity::{CallIdentity, Fields};
use crate::runtime::{CallError, CallInput, Caller, JobCall, Request};
use crate::store::{CallStore, Scope, StoreLimits};
use crate::vouchers::{CallVouchers, VoucherContext};

/// Runs `call` on the plugin version and settings of `deployment` and returns the plugin's
/// JSON response.
///
/// `customer` is the calling customer's profile: its number is for the ledger (the plugin
/// never sees it), its granted fields for `identity`.
///
/// A call that was answered payments and then failed is run again: at once, once, when it
/// lost a race at commit; and, if it still did not land, later, as a host job
/// ([`jobs::CALL_AGAIN`]) committed before the error is answered. Its payments happened; its
/// writes (a receipt, the job that follows the payment up) did not. The plugin's payment
/// keys find the same payments when it runs again, as they do when the client retries.
pub async fn invoke(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
) -> Result<String, ApiError> {
    let pays = (deployment.plugin.manifest.capabilities.interfaces.iter()).any(|i| i == "payments");
    if !pays {
        // A plugin without `payments` cannot be left with payments made and writes lost (and
        // pays no copy of its call).
        return attempt(state, deployment, call, customer, None, None)
            .await
            .0;
    }
    let (mut result, mut outcome) =
        attempt(state, deployment, call.clone(), customer, None, None).await;
    if let (Err(error), Outcome::LostRaceAfterPaying) = (&result, &outcome) {
        let again = Request {
            request_id: format!("{}-again", call.request_id),
            ..call.clone()
        };
        tracing::warn!(
            plugin = %deployment.plugin.manifest.id,
            request_id = %again.request_id,
            code = error.code().as_str(),
            "a call that made payments lost a race at commit; it runs again"
        );
        (result, outcome) = attempt(state, deployment, again, customer, None, None).await;
    }
    if result.is_err() && outcome != Outcome::Final {
        call_again_later(state, deployment, &call, customer).await;
    }
    result
}

/// Runs one attempt of a job (`call` carries its payload as the body) through the plugin's
/// `job-handler`; its writes commit with the job's completion, only while `lease` holds.
pub async fn run_job(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
    job: JobCall,
    lease: JobLease,
) -> Result<(), ApiError> {
    attempt(state, deployment, call, customer, Some(job), Some(lease))
        .await
        .0
        .map(drop)
}

/// Runs a call again for a [`jobs::CALL_AGAIN`] job, through `handle`; its writes commit with
/// the job's completion, only while `lease` holds. A failure is retried by the job runner.
pub async fn run_again(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
    lease: JobLease,
) -> Result<(), ApiError> {
    attempt(state, deployment, call, customer, None, Some(lease))
        .await
        .0
        .map(drop)
}

/// Commits a [`jobs::CALL_AGAIN`] job for `call`, due after the jobs' first backoff.
async fn call_again_later(
    state: &AppState,
    deployment: &Deployment,
    call: &Request,
    customer: Option<&Profile>,
) {
    let plugin_id = &deployment.plugin.manifest.id;
    let now_ms = state.registry.clock.now_ms();
    let (caller_kind, caller) = caller_parts(&call.caller);
    let payload = serde_json::to_string(&jobs::CallAgain {
        action: call.action.clone(),
        body: call.body.clone(),
        idempotency_key: call.idempotency_key.clone(),
    })
    .unwrap_or_default();
    let job = NewJob {
        id: uuid::Uuid::now_v7().simple().to_string(),
        plugin_id: plugin_id.clone(),
        region: call.region.clone(),
        name: jobs::CALL_AGAIN.to_owned(),
        payload,
        key: format!("{}:{}", jobs::CALL_AGAIN, call.request_id),
        caller_kind,
        caller,
        customer_number: customer.map(|c| c.customer_number.clone()),
        due_at_ms: now_ms + jobs::runner::backoff_ms(&state.config.jobs, 1),
        created_at_ms: now_ms,
        scheduled_by: call.request_id.clone(),
    };
    let id = job.id.clone();
    match state.committer.commit_host_job(job).await {
        Ok(()) => tracing::warn!(
            plugin = %plugin_id,
            request_id = %call.request_id,
            job = %id,
            "a call that made payments failed; the host runs it again as a job"
        ),
        Err(error) => tracing::error!(
            plugin = %plugin_id,
            request_id = %call.request_id,
            %error,
            "a call that made payments failed and could not be scheduled to run again; \
             its payments are in GET /admin/v1/payments"
        ),
    }
}

/// How an attempt ended, for [`invoke`] to decide whether to run it again.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Final,
    /// The call was answered payments, then its commit lost a race with another call (a
    /// store value or a ledger rule changed under it): nothing of it landed but the payments.
    LostRaceAfterPaying,
    /// The call was answered payments, then failed otherwise (an error, a trap, a limit, a
    /// commit that failed): nothing of it landed but the payments.
    FailedAfterPaying,
}

/// One run of `call` and the commit of its writes.
async fn attempt(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
    job: Option<JobCall>,
    lease: Option<JobLease>,
) -> (Result<String, ApiError>, Outcome) {
    let plugin = &deployment.plugin;
    let limits = plugin.limits;
    if call.body.len() as u64 > limits.request_bytes_max {
        let error = ApiError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "the request body is {} bytes; this scenario accepts at most {}",
                call.body.len(),
                limits.request_bytes_max
            ),
        );
        return (Err(error), Outcome::Final);
    }
    // The host's clock: the system's, unless a test fixed it (so plugins, jobs and draws
    // see the same time as schedules and expiry).
    let now =
        UNIX_EPOCH + std::time::Duration::from_millis(state.registry.clock.now_ms().max(0) as u64);
    let seed = match state
        .fairness
        .seed(&plugin.manifest.id, &deployment.region, unix_ms(now))
        .await
    {
        Ok(seed) => seed,
        Err(error) => return (Err(ApiError::internal(error)), Outcome::Final),
    };
    let (mut input, mut record) = prepare(state, deployment, call, customer, now, &seed);
    input.job = job;
    let mut output = state.runtime.call(&plugin.compiled, input).await;
    record.fuel_consumed = output.fuel_consumed;
    record.duration_us = output.elapsed.as_micros() as u64;
    record.draws = output.draws;
    record.ledger_writes = output
        .writes
        .ledger
        .iter()
        .map(|write| write.id.clone())
        .collect();

    if output.result.is_ok() {
        output.writes.jobs.completes = lease;
    }
    let mut outcome = Outcome::Final;
    let result = match output.result {
        Ok(body) if output.writes.is_empty() => {
            state.committer.record(record).await;
            Ok(body)
        }
        Ok(body) => match state.committer.commit(output.writes, record).await {
            Ok(()) => Ok(body),
            Err(error) => {
                if output.paid
                    && matches!(error, CommitError::Conflict(_) | CommitError::Ledger { .. })
                {
                    outcome = Outcome::LostRaceAfterPaying;
                }
                Err(ApiError::new(error.code(), error.to_string()))
            }
        },
        Err(error) => {
            record.outcome = error.code().as_str();
            state.committer.record(record).await;
            Err(call_error(error, &plugin.manifest.id))
        }
    };
    if result.is_err() && output.paid && outcome == Outcome::Final {
        outcome = Outcome::FailedAfterPaying;
    }
    let code = result.as_ref().err().map(ApiError::code);
    plugin
        .metrics
        .record(code, output.elapsed, output.fuel_consumed);
    (result, outcome)
}

/// Everything a call at `now` needs, and its audit record so far. Its draws come from
/// `seed`, the seed of its plugin, region and day.
pub fn prepare(
    state: &AppState,
    deployment: &Deployment,
    call: Request,
    customer: Option<&Profile>,
    now: SystemTime,
    seed: &DaySeed,
) -> (CallInput, InvocationRecord) {
    let plugin = &deployment.plugin;
    let limits = plugin.limits;
    let scope = Arc::new(Scope {
        plugin_id: plugin.manifest.id.clone(),
        region: call.region.clone(),
    });
    let store = CallStore::new(
        state.db.read.clone(),
        scope,
        StoreLimits {
            key_bytes_max: limits.store_key_bytes_max,
            value_bytes_max: limits.store_value_bytes_max,
            keys_max: limits.store_keys_max,
            list_keys_max: limits.store_list_keys_max,
            read_bytes_max: limits.memory_bytes_max,
        },
    );
    let (caller_kind, caller_name) = caller_parts(&call.caller);
    let now_ms = unix_ms(now);
    let record = InvocationRecord {
        id: call.request_id.clone(),
        started_at_ms: now_ms,
        plugin_id: plugin.manifest.id.clone(),
        plugin_version: plugin.version.clone(),
        plugin_digest: plugin.digest.clone(),
        config_digest: deployment.config_digest.clone(),
        region: call.region.clone(),
        caller_kind,
        caller: caller_name,
        action: call.action.clone(),
        input_digest: hex::encode(Sha256::digest(call.body.as_bytes())),
        outcome: "ok",
        fuel_consumed: 0,
        duration_us: 0,
        seed_commitment: seed.commitment.clone(),
        seed_region: seed.region.clone(),
        seed_day: seed.day.to_string(),
        draws: Vec::new(),
        ledger_writes: Vec::new(),
    };
    let ledger_config = &state.config.ledger;
    let ledger = CallLedger::new(
        state.db.read.clone(),
        &plugin.manifest.id,
        &call.region,
        customer.map(|c| c.customer_number.clone()),
        LedgerSettings {
            now_ms,
            points_validity_ms: deployment.points_validity_ms,
            hold_seconds_max: ledger_config.hold_seconds_max,
            history_limit_max: ledger_config.history_limit_max,
            writes_per_call_max: ledger_config.writes_per_call_max,
            key_bytes_max: ledger_config.key_bytes_max,
        },
    );
    let granted = |field: &str| plugin.identity_fields.iter().any(|f| f == field);
    let identity = CallIdentity(customer.map(|profile| Fields {
        region: granted("region").then(|| profile.region.clone()),
        tier: granted("tier").then(|| profile.tier.clone()),
        tags: granted("tags").then(|| profile.tags.clone()),
    }));
    let draws = Draws::new(seed.seed, call.request_id.clone());
    let outbound = CallOutbound::new(
        state.http.clone(),
        deployment.outbound.clone(),
        state.config.outbound,
        plugin.id.clone(),
    );
    let jobs_config = &state.config.jobs;
    let jobs = CallJobs::new(
        state.db.read.clone(),
        JobContext {
            plugin_id: plugin.manifest.id.clone(),
            region: call.region.clone(),
            caller_kind: record.caller_kind,
            caller: record.caller.clone(),
            customer_number: customer.map(|c| c.customer_number.clone()),
            scheduled_by: call.request_id.clone(),
            now_ms,
            calendar: state.calendar.clone(),
            settings: JobSettings {
                pending_max: jobs_config.pending_max,
                payload_bytes_max: jobs_config.payload_bytes_max,
                per_call_max: jobs_config.per_call_max,
                ahead_days_max: jobs_config.ahead_days_max,
            },
        },
    );
    let payments = CallPayments::new(
        state.db.clone(),
        state.bank.clone(),
        state.config.payments.clone(),
        PaymentContext {
            plugin_id: plugin.manifest.id.clone(),
            region: call.region.clone(),
            customer_number: customer.map(|c| c.customer_number.clone()),
            invocation_id: call.request_id.clone(),
        },
        outbound.waited(),
        state.config.outbound.wait_ms_max,
    );
    let events = CallEvents::new(
        EventContext {
            plugin_id: plugin.manifest.id.clone(),
            region: call.region.clone(),
            caller_kind: record.caller_kind,
            caller: record.caller.clone(),
            invocation_id: call.request_id.clone(),
            at_ms: now_ms,
        },
        state.config.events,
    );
    let vouchers = CallVouchers::new(
        state.vouchers.clone(),
        VoucherContext {
            plugin_id: plugin.manifest.id.clone(),
            region: call.region.clone(),
            customer_number: customer.map(|c| c.customer_number.clone()),
            now_ms,
        },
        state.config.vouchers,
    );
    let input = CallInput {
        identity,
        request: call,
        ledger,
        now,
        draws,
        store,
        config: deployment.config.clone(),
        limits,
        plugin_id: plugin.id.clone(),
        jobs,
        job: None,
        outbound,
        payments,
        events,
        vouchers,
    };
    (input, record)
}

/// The kind of `caller` (`customer`, `partner`, `scheduler`) and its pseudonym or partner id.
fn caller_parts(caller: &Caller) -> (&'static str, String) {
    match caller {
        Caller::Customer { pseudonym } => ("customer", pseudonym.clone()),
        Caller::Partner { partner_id } => ("partner", partner_id.clone()),
        Caller::Scheduler => ("scheduler", String::new()),
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn call_error(error: CallError, plugin_id: &str) -> ApiError {
    match error {
        CallError::Scenario {
            code,
            scenario_code,
            message,
        } => {
            let api = ApiError::new(code, message);
            match scenario_code {
                Some(scenario_code) => api.with_scenario_code(scenario_code),
                None => api,
            }
        }
        CallError::Limit { code, message } => {
            tracing::warn!(plugin = plugin_id, code = code.as_str(), "{message}");
            ApiError::new(code, message)
        }
        CallError::Trapped(detail) => {
            tracing::warn!(plugin = plugin_id, %detail, "plugin trapped");
            ApiError::new(
                ErrorCode::PluginTrapped,
                "the scenario failed while handling this request; nothing it did was kept",
            )
        }
        CallError::ResponseInvalid => ApiError::new(
            ErrorCode::PluginResponseInvalid,
            "the scenario returned a response that is not JSON",
        ),
        CallError::Overloaded => ApiError::new(
            ErrorCode::HostOverloaded,
            "the host is at its limit of concurrent scenario calls; retry shortly",
        ),
        CallError::Host(detail) => ApiError::internal(detail),
    }
}
