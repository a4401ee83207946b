//! The limits a call can run into inside the engine, as typed errors, and the resource limiter
//! that turns memory and table growth past a plugin's limit into one of them.

use wasmtime::ResourceLimiter;

/// A limit the host enforces while a plugin runs. Raised as a trap carrying this value, so
/// the call's outcome can be told apart from a plugin's own trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// Linear memory would grow past `memory_bytes_max`.
    #[error("linear memory would grow past {0} bytes")]
    Memory(u64),
    /// A table would grow past `table_elements_max`.
    #[error("a table would grow past {0} elements")]
    Table(u64),
    /// More host calls than `host_calls_max`.
    #[error("more than {0} host calls")]
    HostCalls(u64),
    /// More log bytes than `log_bytes_max`.
    #[error("more than {0} log bytes")]
    LogBytes(u64),
    /// More store keys than `store_keys_max`.
    #[error("more than {0} store keys")]
    StoreKeys(u64),
    /// A store key longer than `store_key_bytes_max`.
    #[error("a store key longer than {0} bytes")]
    StoreKeyBytes(u64),
    /// A store value larger than `store_value_bytes_max`.
    #[error("a store value larger than {0} bytes")]
    StoreValueBytes(u64),
    /// More ledger writes than `ledger.writes_per_call_max`.
    #[error("more than {0} ledger writes")]
    LedgerWrites(u64),
    /// More jobs scheduled than `jobs.per_call_max`.
    #[error("more than {0} jobs scheduled in one call")]
    JobsPerCall(u64),
    /// A ledger idempotency key that is empty or longer than `ledger.key_bytes_max`.
    #[error("a ledger idempotency key must be 1 to {0} bytes long")]
    LedgerKey(u64),
    /// A plugin asked for a random number below 0.
    #[error("random.below(0) has no answer")]
    RandomBelowZero,
}

/// Counts a call's memory and table growth against its limits.
#[derive(Debug)]
pub struct CallLimiter {
    /// The call's `memory_bytes_max`.
    pub memory_bytes_max: u64,
    /// The call's `table_elements_max`.
    pub table_elements_max: u64,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes_max {
            return Err(LimitExceeded::Memory(self.memory_bytes_max).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements_max {
            return Err(LimitExceeded::Table(self.table_elements_max).into());
        }
        Ok(true)
    }
}
