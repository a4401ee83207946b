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
use crate::jobs::{CallJobs, JobContext, JobLease, JobSettings};
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
pub async fn invoke(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
) -> Result<String, ApiError> {
    execute(state, deployment, call, customer, None).await
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
    execute(state, deployment, call, customer, Some((job, lease)))
        .await
        .map(drop)
}

async fn execute(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
    job: Option<(JobCall, JobLease)>,
) -> Result<String, ApiError> {
    let limits = deployment.plugin.limits;
    if call.body.len() as u64 > limits.request_bytes_max {
        return Err(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "the request body is {} bytes; this scenario accepts at most {}",
                call.body.len(),
                limits.request_bytes_max
            ),
        ));
    }
    let pays = (deployment.plugin.manifest.capabilities.interfaces.iter()).any(|i| i == "payments");
    if job.is_some() || !pays {
        // A job's failed attempt is retried by the job runner; a plugin without `payments`
        // cannot be left with payments made and writes lost (and pays no copy of its call).
        return attempt(state, deployment, call, customer, job).await.0;
    }
    let again = Request {
        request_id: format!("{}-again", call.request_id),
        ..call.clone()
    };
    match attempt(state, deployment, call, customer, None).await {
        // Its payments happened, its writes (the receipt, the job that follows the payment
        // up) did not: the host retries it once, as the client is told to, as a new
        // invocation. The plugin's payment keys find the same payments.
        (Err(error), Outcome::LostRaceAfterPaying) => {
            tracing::warn!(
                plugin = %deployment.plugin.manifest.id,
                request_id = %again.request_id,
                code = error.code().as_str(),
                "a call that made payments lost a race at commit; it runs again"
            );
            attempt(state, deployment, again, customer, None).await.0
        }
        (result, _) => result,
    }
}

/// How an attempt ended, for [`execute`] to decide whether to run it again.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Final,
    /// The call was answered payments, then its commit lost a race with another call (a
    /// store value or a ledger rule changed under it): nothing of it landed but the payments.
    LostRaceAfterPaying,
}

/// One run of `call` and the commit of its writes.
async fn attempt(
    state: &AppState,
    deployment: &Arc<Deployment>,
    call: Request,
    customer: Option<&Profile>,
    job: Option<(JobCall, JobLease)>,
) -> (Result<String, ApiError>, Outcome) {
    let plugin = &deployment.plugin;
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
    let lease = job.map(|(job, lease)| {
        input.job = Some(job);
        lease
    });
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
    let (caller_kind, caller_name) = match &call.caller {
        Caller::Customer { pseudonym } => ("customer", pseudonym.clone()),
        Caller::Partner { partner_id } => ("partner", partner_id.clone()),
        Caller::Scheduler => ("scheduler", String::new()),
    };
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
