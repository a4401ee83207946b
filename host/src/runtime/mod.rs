//! The only code that touches Wasmtime: the engine and its pooling allocator, compiling and
//! checking plugin components, and running one call in a fresh, bounded instance.
//!
//! Every call gets a new `Store` and a new instance from a pre-linked `InstancePre`; nothing
//! survives from one call to the next except what the plugin committed to `store`. A call is
//! bounded by fuel (instructions), an epoch deadline plus an outer timer (wall-clock time,
//! including time blocked in the host), a resource limiter (memory, tables), and the host
//! interfaces' own limits (host calls, log bytes, store sizes).

mod bindings;
mod cache;
pub mod clock;
pub mod identity;
pub mod limits;
pub mod log;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{
    Component, ComponentExportIndex, HasData, HasSelf, Linker, ResourceTable, types::ComponentItem,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::audit::{Draw, Draws};
use crate::config::{EngineConfig, Limits};
use crate::error::ErrorCode;
use crate::events::CallEvents;
use crate::jobs::CallJobs;
use crate::ledger::CallLedger;
use crate::outbound::CallOutbound;
use crate::payments::CallPayments;
use crate::registry::CallConfig;
use crate::store::{CallStore, WriteSet};
use crate::vouchers::CallVouchers;
use bindings::lifecircle::scenario::types as wit;
pub use limits::LimitExceeded;

/// The generated host traits of each WIT interface, for the modules that implement them.
pub(crate) use bindings::lifecircle::scenario as interfaces;

/// The package whose interfaces a plugin may import, by short name.
const PACKAGE: &str = "lifecircle:scenario";

/// The host capabilities a manifest may request, by short interface name.
pub const CAPABILITIES: &[&str] = &[
    "store", "config", "random", "clock", "log", "ledger", "identity", "jobs", "outbound",
    "payments", "events", "vouchers",
];

/// The export that runs scheduled jobs (world `scheduled-scenario`), and its function.
const JOB_HANDLER: (&str, &str) = ("lifecircle:scenario/job-handler@0.1.0", "on-job");

/// The customer profile fields a manifest may request through `identity`.
pub const IDENTITY_FIELDS: &[&str] = &["region", "tier", "tags"];

/// WASI interfaces every plugin may import without asking: what a Rust (or other) standard
/// library links against. They are inert here: no files are preopened, no environment or
/// arguments are set, stdout and stderr go to a small buffer, the wall clock reads the call's
/// fixed time, and sockets and HTTP are not among them.
const WASI_ALLOWED: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Bytes of a plugin's stdout and stderr kept for the log (a panic message lands there).
const STDIO_CAPTURE_BYTES: usize = 4096;

/// The engine shared by every plugin, and the linker with every host interface.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: cache::ArtifactCache,
    settings: EngineConfig,
    ticker_stop: Arc<AtomicBool>,
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component for this engine.
    #[error("not a valid WebAssembly component: {0:#}")]
    Compile(wasmtime::Error),
    /// The component imports an interface its manifest did not request.
    #[error(
        "imports `{import}`, which its manifest does not request; \
         add \"{capability}\" to [capabilities] interfaces in plugin.toml"
    )]
    Undeclared {
        /// The full import name.
        import: String,
        /// The capability to request.
        capability: String,
    },
    /// The component imports something this host does not offer at all.
    #[error("imports `{0}`, which this host does not provide (host offers {PACKAGE}@0.1.0: {caps})", caps = CAPABILITIES.join(", "))]
    Unsupported(String),
    /// The component does not export the `handler` this host calls.
    #[error("does not target world `scenario` of {PACKAGE}@0.1.0: {0:#}")]
    NotAScenario(wasmtime::Error),
    /// The component schedules jobs but cannot run them.
    #[error(
        "imports `jobs` but does not export `job-handler`; build it for world \
         `scheduled-scenario` (the SDK's `export!` does)"
    )]
    NoJobHandler,
}

/// A plugin component compiled, checked and pre-linked: instantiating it is cheap.
pub struct CompiledPlugin {
    pre: bindings::ScenarioPre<CallState>,
    /// Where `job-handler.on-job` is, if the component exports it.
    on_job: Option<ComponentExportIndex>,
}

/// The job a call runs instead of a request (through `job-handler.on-job`).
#[derive(Debug, Clone)]
pub struct JobCall {
    /// The job id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was due.
    pub due_at_ms: i64,
}

/// Who made a call, as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A customer, known to the plugin only by its per-plugin pseudonym.
    Customer {
        /// The per-plugin pseudonym.
        pseudonym: String,
    },
    /// A partner system.
    Partner {
        /// The partner's id.
        partner_id: String,
    },
    /// The host's scheduler.
    Scheduler,
}

/// One scenario request, as the plugin receives it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The action name.
    pub action: String,
    /// The JSON request body.
    pub body: String,
    /// Who is calling.
    pub caller: Caller,
    /// The region the call runs in.
    pub region: String,
    /// The request id.
    pub request_id: String,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
}

/// One call to run: the request and everything the host gives the call.
pub struct CallInput {
    /// The request.
    pub request: Request,
    /// The call's fixed time.
    pub now: SystemTime,
    /// The call's `random` stream.
    pub draws: Draws,
    /// The plugin's view of its `store`.
    pub store: CallStore,
    /// The plugin's view of the ledger.
    pub ledger: CallLedger,
    /// The plugin's settings for the region.
    pub config: CallConfig,
    /// The calling customer's granted profile fields.
    pub identity: identity::CallIdentity,
    /// The call's limits.
    pub limits: Limits,
    /// The plugin id (for log lines).
    pub plugin_id: Arc<str>,
    /// The plugin's view of `jobs`.
    pub jobs: CallJobs,
    /// The job to run instead of `request` (whose body is then the job's payload).
    pub job: Option<JobCall>,
    /// The plugin's view of `outbound`.
    pub outbound: CallOutbound,
    /// The plugin's view of `payments`.
    pub payments: CallPayments,
    /// The plugin's view of `events`.
    pub events: CallEvents,
    /// The plugin's view of `vouchers`.
    pub vouchers: CallVouchers,
}

/// What a call produced.
pub struct CallOutput {
    /// The response body, or why there is none.
    pub result: Result<String, CallError>,
    /// The writes to commit if the call succeeded; empty otherwise.
    pub writes: WriteSet,
    /// Fuel the call consumed.
    pub fuel_consumed: u64,
    /// Wall-clock time of the call, instantiation included.
    pub elapsed: Duration,
    /// The draws the call made, whatever its outcome.
    pub draws: Vec<Draw>,
    /// Whether the call asked `payments` for a payment (made now or earlier under its key):
    /// an external effect its failing does not undo.
    pub paid: bool,
}

/// Why a call produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin returned a `scenario-error`.
    #[error("{message}")]
    Scenario {
        /// The HTTP-level code for the error's kind.
        code: ErrorCode,
        /// The plugin's own code (`None` for an unknown action).
        scenario_code: Option<String>,
        /// The plugin's message.
        message: String,
    },
    /// The call ran into a limit.
    #[error("{message}")]
    Limit {
        /// Which limit.
        code: ErrorCode,
        /// What happened, for the client.
        message: String,
    },
    /// The plugin trapped on its own (a panic, an invalid instruction).
    #[error("the plugin failed: {0}")]
    Trapped(String),
    /// The plugin's response body is not JSON.
    #[error("the plugin returned a body that is not JSON")]
    ResponseInvalid,
    /// Every instance slot is in use.
    #[error("the host is at its instance limit; retry shortly")]
    Overloaded,
    /// The host failed (a database error inside a host call).
    #[error("host failure: {0}")]
    Host(String),
}

impl CallError {
    /// The error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::Scenario { code, .. } | CallError::Limit { code, .. } => *code,
            CallError::Trapped(_) => ErrorCode::PluginTrapped,
            CallError::ResponseInvalid => ErrorCode::PluginResponseInvalid,
            CallError::Overloaded => ErrorCode::HostOverloaded,
            CallError::Host(_) => ErrorCode::Internal,
        }
    }
}

/// How many calls into the host's interfaces a call has made, and may make.
///
/// WASI calls are not counted: they are cheap, bounded by fuel and the deadline, and do no
/// database work.
pub struct HostCallBudget {
    used: u64,
    max: u64,
}

/// One host interface's state for a call, with the call's host-call budget: the
/// "borrowed view" each interface's `Host` is implemented for. Every host function starts
/// with [`Metered::charge`].
pub struct Metered<'a, T> {
    budget: &'a mut HostCallBudget,
    inner: &'a mut T,
}

impl<'a, T> Metered<'a, T> {
    fn new(budget: &'a mut HostCallBudget, inner: &'a mut T) -> Self {
        Self { budget, inner }
    }

    /// Counts one host call, stopping the plugin past its limit, and gives the interface's
    /// state.
    pub fn charge(&mut self) -> Result<&mut T, LimitExceeded> {
        self.charge_for(1)
    }

    /// Counts `calls` host calls at once (a call that does the work of that many, such as
    /// `store.get-many`), stopping the plugin past its limit, and gives the interface's state.
    pub fn charge_for(&mut self, calls: u64) -> Result<&mut T, LimitExceeded> {
        self.budget.used = self.budget.used.saturating_add(calls);
        if self.budget.used > self.budget.max {
            return Err(LimitExceeded::HostCalls(self.budget.max));
        }
        Ok(self.inner)
    }
}

/// The [`HasData`] of a [`Metered`] interface.
struct Metering<T>(std::marker::PhantomData<fn() -> T>);

impl<T: 'static> HasData for Metering<T> {
    type Data<'a> = Metered<'a, T>;
}

/// A failure of the host inside a host call, raised as a trap so the call stops.
#[derive(Debug, thiserror::Error)]
#[error("host failure: {0}")]
pub struct HostFailure(pub String);

/// Everything one call's instance can reach: its store data.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: limits::CallLimiter,
    host_calls: HostCallBudget,
    store: CallStore,
    ledger: CallLedger,
    config: CallConfig,
    random: Draws,
    clock: clock::CallClock,
    log: log::CallLog,
    identity: identity::CallIdentity,
    jobs: CallJobs,
    outbound: CallOutbound,
    payments: CallPayments,
    events: CallEvents,
    vouchers: CallVouchers,
    /// When the call started and how long it may compute; its outbound wait extends it.
    deadline: (Instant, Duration),
    outbound_waited: Arc<AtomicU64>,
}

// `types` declares only types; there is nothing to implement.
impl interfaces::types::Host for CallState {}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Runtime {
    /// Builds the engine and linker. `memory_bytes_max` and `table_elements_max` size the
    /// pool's slots: the largest any plugin may be given.
    pub fn new(
        settings: &EngineConfig,
        memory_bytes_max: u64,
        table_elements_max: u64,
        cache_dir: std::path::PathBuf,
    ) -> wasmtime::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(settings.instances_max)
            .total_core_instances(settings.instances_max.saturating_mul(4))
            .total_memories(settings.instances_max.saturating_mul(2))
            .total_tables(settings.instances_max.saturating_mul(2))
            .total_stacks(settings.instances_max)
            .max_memories_per_component(2)
            .max_tables_per_component(4)
            .max_core_instances_per_component(32)
            .max_memory_size(usize::try_from(memory_bytes_max).unwrap_or(usize::MAX))
            .table_elements(usize::try_from(table_elements_max).unwrap_or(usize::MAX))
            // Keeping a slot's first pages resident makes reusing it nearly free; without
            // this, two threads contend on page faults and scale worse than one.
            .linear_memory_keep_resident(settings.memory_keep_resident_bytes as usize)
            .table_keep_resident(64 << 10)
            // With PAGEMAP_SCAN (Linux 6.7+) only the pages a call dirtied are reset, by memset,
            // instead of a memset of the whole resident prefix plus an madvise whose TLB
            // shootdowns stall every other core.
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // No plugin exports async functions; leaving concurrency support on costs every
            // call the setup of data structures it never uses.
            .concurrency_support(false)
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(settings.stack_bytes_max as usize)
            .async_stack_size(settings.stack_bytes_max as usize + (256 << 10))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::lifecircle::scenario::types::add_to_linker::<_, HasSelf<CallState>>(
            &mut linker,
            |state| state,
        )?;
        bindings::lifecircle::scenario::store::add_to_linker::<_, Metering<CallStore>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.store),
        )?;
        bindings::lifecircle::scenario::ledger::add_to_linker::<_, Metering<CallLedger>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.ledger),
        )?;
        bindings::lifecircle::scenario::config::add_to_linker::<_, Metering<CallConfig>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.config),
        )?;
        bindings::lifecircle::scenario::random::add_to_linker::<_, Metering<Draws>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.random),
        )?;
        bindings::lifecircle::scenario::clock::add_to_linker::<_, Metering<clock::CallClock>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.clock),
        )?;
        bindings::lifecircle::scenario::log::add_to_linker::<_, Metering<log::CallLog>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.log),
        )?;
        bindings::lifecircle::scenario::identity::add_to_linker::<
            _,
            Metering<identity::CallIdentity>,
        >(&mut linker, |state| {
            Metered::new(&mut state.host_calls, &mut state.identity)
        })?;

        bindings::lifecircle::scenario::jobs::add_to_linker::<_, Metering<CallJobs>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.jobs),
        )?;
        bindings::lifecircle::scenario::outbound::add_to_linker::<_, Metering<CallOutbound>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.outbound),
        )?;
        bindings::lifecircle::scenario::payments::add_to_linker::<_, Metering<CallPayments>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.payments),
        )?;
        bindings::lifecircle::scenario::events::add_to_linker::<_, Metering<CallEvents>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.events),
        )?;
        bindings::lifecircle::scenario::vouchers::add_to_linker::<_, Metering<CallVouchers>>(
            &mut linker,
            |state| Metered::new(&mut state.host_calls, &mut state.vouchers),
        )?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(
            engine.clone(),
            Duration::from_millis(settings.epoch_tick_ms),
            ticker_stop.clone(),
        );
        let cache = cache::ArtifactCache::new(cache_dir, &engine);
        Ok(Runtime {
            engine,
            linker,
            cache,
            settings: settings.clone(),
            ticker_stop,
        })
    }

    /// Compiles (or loads from the cache) a component, checks its imports against the
    /// capabilities its manifest requests, and pre-links it.
    pub fn compile(
        &self,
        digest: &str,
        wasm: &[u8],
        requested: &[String],
    ) -> Result<CompiledPlugin, LoadError> {
        let component = self
            .cache
            .component(&self.engine, digest, wasm)
            .map_err(LoadError::Compile)?;
        self.check_imports(&component, requested)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|error| LoadError::Unsupported(format!("{error:#}")))?;
        let pre = bindings::ScenarioPre::new(instance_pre).map_err(LoadError::NotAScenario)?;
        let on_job = component
            .get_export_index(None, JOB_HANDLER.0)
            .and_then(|handler| component.get_export_index(Some(&handler), JOB_HANDLER.1));
        if on_job.is_none() && requested.iter().any(|r| r == "jobs") {
            return Err(LoadError::NoJobHandler);
        }
        Ok(CompiledPlugin { pre, on_job })
    }

    fn check_imports(&self, component: &Component, requested: &[String]) -> Result<(), LoadError> {
        for (name, item) in component.component_type().imports(&self.engine) {
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                return Err(LoadError::Unsupported(name.to_owned()));
            }
            // `wasi:cli/stdout@0.2.3` → `wasi:cli/stdout`
            let unversioned = name.split('@').next().unwrap_or(name);
            if WASI_ALLOWED.contains(&unversioned) {
                continue;
            }
            let Some(interface) = unversioned
                .strip_prefix(PACKAGE)
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                return Err(LoadError::Unsupported(name.to_owned()));
            };
            if interface == "types" {
                continue;
            }
            if !CAPABILITIES.contains(&interface) {
                return Err(LoadError::Unsupported(name.to_owned()));
            }
            if !requested.iter().any(|r| r == interface) {
                return Err(LoadError::Undeclared {
                    import: name.to_owned(),
                    capability: interface.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Runs one call in a fresh instance, within `input.limits`.
    pub async fn call(&self, plugin: &CompiledPlugin, input: CallInput) -> CallOutput {
        let started = Instant::now();
        let limits = input.limits;
        let deadline = Duration::from_millis(limits.deadline_ms);
        let stdio = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
        let since_epoch = input
            .now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let wasi = WasiCtx::builder()
            .stdout(stdio.clone())
            .stderr(stdio.clone())
            .wall_clock(clock::FixedWallClock(since_epoch))
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: limits::CallLimiter::new(limits.memory_bytes_max, limits.table_elements_max),
            host_calls: HostCallBudget {
                used: 0,
                max: limits.host_calls_max,
            },
            store: input.store,
            ledger: input.ledger,
            config: input.config,
            random: input.draws,
            clock: clock::CallClock(since_epoch),
            log: log::CallLog::new(
                input.plugin_id,
                input.request.request_id.clone(),
                limits.log_bytes_max,
            ),
            identity: input.identity,
            jobs: input.jobs,
            outbound_waited: input.outbound.waited(),
            outbound: input.outbound,
            payments: input.payments,
            events: input.events,
            vouchers: input.vouchers,
            deadline: (started, deadline),
        };
        let waited = state.outbound_waited.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Fuel cannot fail to be set when fuel is enabled, which `new` does.
        let _ = store.set_fuel(limits.fuel_max);
        let _ = store.fuel_async_yield_interval(Some(self.settings.fuel_yield_interval));
        // The epoch deadline traps a plugin that computes past its time; the outer timeout
        // below also covers time blocked inside host calls, where epochs are not checked.
        let tick_ms = self.settings.epoch_tick_ms;
        let ticks = limits.deadline_ms.div_ceil(tick_ms) + 1;
        store.set_epoch_deadline(ticks);
        // Time spent waiting on outbound responses extends the deadline: the plugin did not
        // compute then.
        store.epoch_deadline_callback(move |context| {
            let state = context.data();
            let (started, deadline) = state.deadline;
            let waited = Duration::from_micros(state.outbound_waited.load(Ordering::Relaxed));
            let end = started + deadline + waited;
            let now = Instant::now();
            if now >= end {
                return Err(Trap::Interrupt.into());
            }
            let left = (end - now).as_millis() as u64;
            Ok(wasmtime::UpdateDeadline::Continue(
                left.div_ceil(tick_ms) + 1,
            ))
        });

        let job = input.job;
        let request = input.request;
        let job = job.map(|job| wit::Job {
            id: job.id,
            name: job.name,
            payload: request.body.clone(),
            caller: caller_to_wit(request.caller.clone()),
            region: request.region.clone(),
            attempt: job.attempt,
            due_at_ms: job.due_at_ms,
        });
        let request = wit::Request {
            action: request.action,
            body: request.body,
            caller: caller_to_wit(request.caller),
            region: request.region,
            request_id: request.request_id,
            idempotency_key: request.idempotency_key,
        };

        let outcome = extended_timeout(started, deadline, &waited, async {
            match job {
                None => {
                    let scenario = plugin.pre.instantiate_async(&mut store).await?;
                    scenario
                        .lifecircle_scenario_handler()
                        .call_handle(&mut store, &request)
                        .await
                }
                Some(job) => {
                    let index = plugin.on_job.as_ref().ok_or_else(|| {
                        HostFailure("the plugin exports no job-handler to run its job".into())
                    })?;
                    let instance = plugin
                        .pre
                        .instance_pre()
                        .instantiate_async(&mut store)
                        .await?;
                    let on_job = instance
                        .get_typed_func::<(wit::Job,), (Result<(), wit::ScenarioError>,)>(
                            &mut store, index,
                        )?;
                    let (result,) = on_job.call_async(&mut store, (job,)).await?;
                    Ok(result.map(|()| wit::Response {
                        body: "null".into(),
                    }))
                }
            }
        })
        .await;

        let (result, writes) = match outcome {
            Err(_elapsed) => (Err(deadline_error(limits.deadline_ms)), WriteSet::default()),
            Ok(Err(error)) => {
                let error = classify(error, &limits);
                if matches!(error, CallError::Trapped(_)) {
                    let output = stdio.contents();
                    if !output.is_empty() {
                        tracing::warn!(output = %String::from_utf8_lossy(&output), "plugin output before it trapped");
                    }
                }
                (Err(error), WriteSet::default())
            }
            Ok(Ok(Err(rejection))) => {
                (Err(scenario_error(rejection, &limits)), WriteSet::default())
            }
            Ok(Ok(Ok(response))) => match check_response(response.body, &limits) {
                Ok(body) => {
                    let state = store.data_mut();
                    let mut writes = std::mem::take(&mut state.store).into_writes();
                    writes.ledger = std::mem::take(&mut state.ledger).into_operations();
                    writes.jobs = std::mem::take(&mut state.jobs).into_writes();
                    writes.events = std::mem::take(&mut state.events).into_events();
                    writes.now_ms = since_epoch.as_millis() as i64;
                    (Ok(body), writes)
                }
                Err(error) => (Err(error), WriteSet::default()),
            },
        };
        let fuel_consumed = limits
            .fuel_max
            .saturating_sub(store.get_fuel().unwrap_or(0));
        CallOutput {
            result,
            writes,
            fuel_consumed,
            elapsed: started.elapsed(),
            draws: store.data_mut().random.take_recorded(),
            paid: store.data().payments.asked(),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch every `tick` until `stop` is set.
fn spawn_epoch_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("lifecircle-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .expect("the epoch thread starts");
}

/// Runs `call` until it ends or its time is up: `deadline` from `started`, plus the outbound
/// wait in `waited` (µs), which grows while the call runs.
async fn extended_timeout<T>(
    started: Instant,
    deadline: Duration,
    waited: &AtomicU64,
    call: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let mut call = std::pin::pin!(call);
    loop {
        let end = started + deadline + Duration::from_micros(waited.load(Ordering::Relaxed));
        match tokio::time::timeout_at(end.into(), &mut call).await {
            Ok(done) => return Ok(done),
            Err(elapsed) => {
                let extended =
                    started + deadline + Duration::from_micros(waited.load(Ordering::Relaxed));
                if Instant::now() >= extended {
                    return Err(elapsed);
                }
            }
        }
    }
}

fn caller_to_wit(caller: Caller) -> wit::Caller {
    match caller {
        Caller::Customer { pseudonym } => wit::Caller::Customer(wit::Customer { pseudonym }),
        Caller::Partner { partner_id } => wit::Caller::Partner(wit::Partner { partner_id }),
        Caller::Scheduler => wit::Caller::Scheduler,
    }
}

fn deadline_error(deadline_ms: u64) -> CallError {
    CallError::Limit {
        code: ErrorCode::PluginDeadlineExceeded,
        message: format!("the plugin did not finish within its deadline of {deadline_ms} ms"),
    }
}

/// Turns an error out of instantiation or the call into what went wrong.
fn classify(error: wasmtime::Error, limits: &Limits) -> CallError {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        let code = match limit {
            LimitExceeded::Memory(_) => ErrorCode::PluginMemoryLimit,
            LimitExceeded::Table(_) => ErrorCode::PluginTableLimit,
            LimitExceeded::HostCalls(_) => ErrorCode::PluginHostCallLimit,
            LimitExceeded::LogBytes(_) => ErrorCode::PluginLogLimit,
            LimitExceeded::StoreKeys(_) => ErrorCode::PluginStoreKeyLimit,
            LimitExceeded::StoreKeyBytes(_) => ErrorCode::PluginStoreKeyTooLarge,
            LimitExceeded::StoreValueBytes(_) => ErrorCode::PluginStoreValueTooLarge,
            LimitExceeded::LedgerWrites(_) => ErrorCode::PluginLedgerWriteLimit,
            LimitExceeded::JobsPerCall(_) => ErrorCode::PluginJobLimit,
            LimitExceeded::RandomBelowZero | LimitExceeded::LedgerKey(_) => {
                return CallError::Trapped(limit.to_string());
            }
        };
        return CallError::Limit {
            code,
            message: format!("the plugin was stopped: {limit}"),
        };
    }
    if let Some(failure) = error.downcast_ref::<HostFailure>() {
        return CallError::Host(failure.0.clone());
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return CallError::Overloaded;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::Limit {
            code: ErrorCode::PluginFuelExhausted,
            message: format!(
                "the plugin was stopped after {} instructions (its fuel limit)",
                limits.fuel_max
            ),
        },
        Some(Trap::Interrupt) => deadline_error(limits.deadline_ms),
        Some(Trap::StackOverflow) => CallError::Limit {
            code: ErrorCode::PluginStackOverflow,
            message: "the plugin recursed past its stack limit".into(),
        },
        Some(trap) => CallError::Trapped(trap.to_string()),
        None => CallError::Trapped(format!("{error:#}")),
    }
}

/// The plugin's refusal as the call's error; one larger than `response_bytes_max` (it is
/// sent to the client like a response) is the response limit's error instead.
fn scenario_error(rejection: wit::ScenarioError, limits: &Limits) -> CallError {
    let (code, detail) = match rejection {
        wit::ScenarioError::InvalidInput(detail) => (ErrorCode::ScenarioInvalidInput, Some(detail)),
        wit::ScenarioError::Refused(detail) => (ErrorCode::ScenarioRefused, Some(detail)),
        wit::ScenarioError::Conflict(detail) => (ErrorCode::ScenarioConflict, Some(detail)),
        wit::ScenarioError::UnknownAction => (ErrorCode::ScenarioActionUnknown, None),
    };
    let sent = |detail: &wit::ErrorDetail| json_len(&detail.code) + json_len(&detail.message);
    match detail {
        Some(detail) if sent(&detail) as u64 > limits.response_bytes_max => {
            too_large(sent(&detail), limits)
        }
        Some(detail) => CallError::Scenario {
            code,
            scenario_code: Some(detail.code),
            message: detail.message,
        },
        None => CallError::Scenario {
            code,
            scenario_code: None,
            message: "the plugin has no such action".into(),
        },
    }
}

/// The bytes `text` takes as a JSON string, quotes and escapes included (a control character
/// is six), counted without building it.
fn json_len(text: &str) -> usize {
    2 + text
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

fn too_large(bytes: usize, limits: &Limits) -> CallError {
    CallError::Limit {
        code: ErrorCode::PluginResponseTooLarge,
        message: format!(
            "the plugin's response of {bytes} bytes is over its limit of {} bytes",
            limits.response_bytes_max
        ),
    }
}

fn check_response(body: String, limits: &Limits) -> Result<String, CallError> {
    if body.len() as u64 > limits.response_bytes_max {
        return Err(too_large(body.len(), limits));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(CallError::ResponseInvalid);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::json_len;

    #[test]
    fn json_len_counts_what_serde_json_writes() {
        for text in [
            "",
            "plain",
            "quote \" and backslash \\",
            "lines\n\r\t and \u{8}\u{c}",
            "control \u{1} \u{1f} and del \u{7f}",
            "中文 and emoji 🎡",
        ] {
            let written = serde_json::to_string(text).expect("a string");
            assert_eq!(json_len(text), written.len(), "{text:?}");
        }
    }
}
