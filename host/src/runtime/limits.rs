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

/// Counts a call's memory and table growth against its limits: the limits bound everything
/// the call's instance has, summed over all its memories and all its tables (a component may
/// have more than one of each).
#[derive(Debug)]
pub struct CallLimiter {
    memory_bytes_max: u64,
    table_elements_max: u64,
    /// What was permitted so far. A permitted growth that then fails (past a memory's own
    /// maximum) stays counted: the sum can only be stricter than what is allocated.
    memory_bytes: u64,
    table_elements: u64,
}

impl CallLimiter {
    /// A limiter for a call with these limits.
    pub fn new(memory_bytes_max: u64, table_elements_max: u64) -> Self {
        Self {
            memory_bytes_max,
            table_elements_max,
            memory_bytes: 0,
            table_elements: 0,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    // Also called when a memory or table is created, with `current` 0.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let total = self.memory_bytes.saturating_add(growth);
        if total > self.memory_bytes_max {
            return Err(LimitExceeded::Memory(self.memory_bytes_max).into());
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let total = self.table_elements.saturating_add(growth);
        if total > self.table_elements_max {
            return Err(LimitExceeded::Table(self.table_elements_max).into());
        }
        self.table_elements = total;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_tables_are_bounded_in_sum_over_all_of_a_calls_memories_and_tables() {
        let mut limiter = CallLimiter::new(100, 10);
        // Two memories created at 40 each, then one grows to 60: 100 in all.
        assert!(limiter.memory_growing(0, 40, None).expect("first"));
        assert!(limiter.memory_growing(0, 40, None).expect("second"));
        assert!(limiter.memory_growing(40, 60, None).expect("to the limit"));
        // Either growing by one more byte passes the sum, though each is under 100.
        assert!(limiter.memory_growing(60, 61, None).is_err());
        assert!(limiter.memory_growing(40, 41, None).is_err());

        let mut limiter = CallLimiter::new(100, 10);
        assert!(limiter.table_growing(0, 6, None).expect("first table"));
        assert!(limiter.table_growing(0, 4, None).expect("second table"));
        assert!(limiter.table_growing(6, 7, None).is_err());
    }
}
