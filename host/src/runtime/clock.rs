//! The `clock` interface: the call's time, fixed when the call starts, and the same instant
//! behind WASI's wall clock so replays see one time.

use std::time::Duration;

use super::Metered;
use super::bindings::lifecircle::scenario::clock::{Host, Instant};

/// The call's fixed time, as a duration since the Unix epoch.
pub struct CallClock(pub Duration);

impl Host for Metered<'_, CallClock> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        let clock = self.charge()?;
        Ok(Instant {
            seconds: i64::try_from(clock.0.as_secs()).unwrap_or(i64::MAX),
            nanoseconds: clock.0.subsec_nanos(),
        })
    }
}

/// WASI's wall clock for a call: always the call's time.
pub struct FixedWallClock(pub Duration);

impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}
