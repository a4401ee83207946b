//! The call's time.
//!
//! It is read once when the call starts and stays fixed for the whole call (WASI's wall clock
//! reports the same instant), so a replayed call sees the same time.
//!
//! Import: list `"clock"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::clock;
//!
//! let day = clock::unix_seconds().div_euclid(86_400);
//! # let _ = day;
//! ```

use crate::__private::bindings::lifecircle::scenario::clock as raw;

/// A point in time: seconds and nanoseconds since 1970-01-01T00:00:00Z.
///
/// ```
/// use lifecircle_sdk::clock::Instant;
///
/// let instant = Instant { seconds: 1_700_000_000, nanoseconds: 500_000_000 };
/// assert_eq!(instant.unix_milliseconds(), 1_700_000_000_500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds past `seconds`, below 1,000,000,000.
    pub nanoseconds: u32,
}

impl Instant {
    /// Whole milliseconds since 1970-01-01T00:00:00Z.
    ///
    /// ```
    /// use lifecircle_sdk::clock::Instant;
    ///
    /// let instant = Instant { seconds: 2, nanoseconds: 999_999 };
    /// assert_eq!(instant.unix_milliseconds(), 2_000);
    /// ```
    pub fn unix_milliseconds(&self) -> i128 {
        i128::from(self.seconds) * 1_000 + i128::from(self.nanoseconds / 1_000_000)
    }
}

/// Returns the call's time.
///
/// ```no_run
/// use lifecircle_sdk::clock;
///
/// let now = clock::now();
/// println!("{}.{:09}", now.seconds, now.nanoseconds);
/// ```
pub fn now() -> Instant {
    let raw::Instant {
        seconds,
        nanoseconds,
    } = raw::now();
    Instant {
        seconds,
        nanoseconds,
    }
}

/// Returns the call's time in whole seconds since 1970-01-01T00:00:00Z.
///
/// ```no_run
/// use lifecircle_sdk::clock;
///
/// let expires_at = clock::unix_seconds() + 3_600;
/// # let _ = expires_at;
/// ```
pub fn unix_seconds() -> i64 {
    now().seconds
}
