//! The plugin's own key-value data, scoped by the host to this plugin and the call's region.
//!
//! Keys are strings, values are bytes. Writes made during a call are buffered: later reads in
//! the same call see them, other calls see them only once this call returns `Ok` and the host
//! commits them, all together. Returning an `Err`, panicking or running past a limit discards
//! them.
//!
//! The bank limits key bytes, value bytes, the number of keys, and rows per
//! [`list_keys`] page. Going past the key, value or key-count limit stops the call like
//! running out of memory; it is not an error a plugin can handle.
//!
//! Import: list `"store"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::store;
//!
//! store::set("greeting", b"hello");
//! assert_eq!(store::get("greeting").as_deref(), Some(&b"hello"[..]));
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::lifecircle::scenario::store as raw;
use crate::ScenarioError;

/// The inclusive range a counter must stay within after [`increment`].
///
/// ```
/// use lifecircle_sdk::store::Bounds;
///
/// let stock = Bounds { min: 0, max: 100 };
/// assert_eq!(Bounds::NON_NEGATIVE.min, 0);
/// # let _ = stock;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The smallest value allowed.
    pub min: i64,
    /// The largest value allowed.
    pub max: i64,
}

impl Bounds {
    /// `0..=i64::MAX`: a counter that never goes below zero.
    pub const NON_NEGATIVE: Self = Self {
        min: 0,
        max: i64::MAX,
    };
}

/// Why [`increment`] did not change a counter.
///
/// ```
/// use lifecircle_sdk::store::IncrementError;
///
/// let error = IncrementError::OutOfBounds { current: 5 };
/// assert_eq!(error.to_string(), "the counter would leave its bounds (it is 5)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrementError {
    /// The new value would fall outside the bounds; the counter is unchanged.
    OutOfBounds {
        /// The counter's current value.
        current: i64,
    },
    /// The key holds a value that is not a counter (counters are ASCII decimal integers).
    NotACounter,
}

impl fmt::Display for IncrementError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfBounds { current } => {
                write!(
                    formatter,
                    "the counter would leave its bounds (it is {current})"
                )
            }
            Self::NotACounter => formatter.write_str("the key holds a value that is not a counter"),
        }
    }
}

impl std::error::Error for IncrementError {}

/// Returns the value stored under `key`, if any.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let visits = store::get("visits").unwrap_or_default();
/// # let _ = visits;
/// ```
pub fn get(key: &str) -> Option<Vec<u8>> {
    raw::get(key)
}

/// Returns the values stored under `keys`, in the same order (`None`: absent), as many
/// [`get`]s would, but with one read of the database for all of them. Use it for the keys of
/// a [`page`], or for every key a call knows up front it will read; later reads of these keys
/// in the same call cost nothing.
///
/// Each key counts as one host call against the call's limit, and values adding up to more
/// than the call's memory limit stop the call.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let values = store::get_many(&["visits", "last-visit"]);
/// let (visits, last_visit) = (&values[0], &values[1]);
/// # let _ = (visits, last_visit);
/// ```
pub fn get_many<K: AsRef<str>>(keys: &[K]) -> Vec<Option<Vec<u8>>> {
    let keys: Vec<String> = keys.iter().map(|key| key.as_ref().to_owned()).collect();
    raw::get_many(&keys)
}

/// Stores `value` under `key`, replacing what was there.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// store::set("banner", b"Spring draw is open");
/// ```
pub fn set(key: &str, value: &[u8]) {
    raw::set(key, value);
}

/// Removes `key`. Returns whether it was there.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let was_there = store::delete("banner");
/// # let _ = was_there;
/// ```
pub fn delete(key: &str) -> bool {
    raw::delete(key)
}

/// Lists keys that start with `prefix`, in byte order, strictly after `after` when given, at
/// most `limit` of them (the host caps `limit` at its page size).
///
/// To page, pass the last key of one page as `after` of the next; a page shorter than asked
/// for can still be followed by more if the host capped it, so stop on an empty page.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let mut after: Option<String> = None;
/// loop {
///     let page = store::list_keys("prize/", after.as_deref(), 100);
///     let Some(last) = page.last().cloned() else { break };
///     // ... use `page` ...
///     after = Some(last);
/// }
/// ```
pub fn list_keys(prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
    raw::list_keys(prefix, after, limit)
}

/// One page of a listing: up to `limit` keys under `prefix` after `after` (as
/// [`list_keys`]), and the cursor of the next page, the last key, when the page is full
/// (`None`: this was the last page). Answer the cursor as the listing's `next`, and read it
/// back with [`Request::page_after`](crate::Request::page_after).
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let (keys, next) = store::page("orders/customer-1/", None, 50);
/// # let _ = (keys, next);
/// ```
pub fn page(prefix: &str, after: Option<&str>, limit: u32) -> (Vec<String>, Option<String>) {
    let keys = list_keys(prefix, after, limit);
    let next = (keys.len() == limit as usize)
        .then(|| keys.last().cloned())
        .flatten();
    (keys, next)
}

/// The counter under `key`: 0 when the key is missing or does not hold a counter. For showing
/// a count (stock left, spins today); to change one, use [`increment`], whose bounds the host
/// checks again at commit.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let claimed = store::counter("claimed/tea-10");
/// # let _ = claimed;
/// ```
pub fn counter(key: &str) -> i64 {
    get(key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// Adds `delta` to the counter under `key` (a missing key counts as 0) if the result stays
/// within `bounds`, and returns the new value.
///
/// Use it for stock and per-customer limits: the host checks the bounds again when the call
/// commits, against what other calls committed meanwhile, so a counter never leaves its
/// bounds however many calls race. If that late check fails the whole call fails with
/// HTTP 409 `store_conflict` and none of its writes land.
///
/// ```no_run
/// use lifecircle_sdk::store::{self, Bounds, IncrementError};
/// use lifecircle_sdk::ScenarioError;
///
/// match store::increment("prizes-left", -1, Bounds::NON_NEGATIVE) {
///     Ok(left) => println!("{left} prizes left"),
///     Err(IncrementError::OutOfBounds { .. }) => {
///         return Err(ScenarioError::conflict("out_of_stock", "All prizes are gone."));
///     }
///     Err(IncrementError::NotACounter) => panic!("prizes-left is always a counter"),
/// }
/// # Ok::<(), ScenarioError>(())
/// ```
pub fn increment(key: &str, delta: i64, bounds: Bounds) -> Result<i64, IncrementError> {
    let bounds = raw::Bounds {
        min: bounds.min,
        max: bounds.max,
    };
    raw::increment(key, delta, bounds).map_err(|error| match error {
        raw::IncrementError::OutOfBounds(current) => IncrementError::OutOfBounds { current },
        raw::IncrementError::NotACounter => IncrementError::NotACounter,
    })
}

/// Replaces the value under `key` with `new` (`None` deletes it) only if the current value
/// equals `expected` (`None` meaning absent). Returns whether it did.
///
/// As with [`increment`], the host checks the expectation again at commit; if another call
/// changed the key meanwhile, this call fails with HTTP 409 `store_conflict` and none of its
/// writes land.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// // Claim a voucher code only if nobody has claimed it yet.
/// let claimed = store::compare_and_swap("voucher/SPRING-42", None, Some(b"c-7f3a"));
/// # let _ = claimed;
/// ```
pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool {
    raw::compare_and_swap(key, expected, new)
}

/// Returns the value under `key` parsed from JSON, if any.
///
/// A stored value that is not JSON for `T` means the plugin wrote it with another shape:
/// a plugin bug, reported as [`ScenarioError::Refused`] with code `stored_value_invalid`.
///
/// ```no_run
/// use lifecircle_sdk::store;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Note {
///     text: String,
/// }
///
/// let note: Option<Note> = store::get_json("note/c-7f3a")?;
/// # let _ = note;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ScenarioError> {
    get(key).map(|bytes| parse_stored(key, &bytes)).transpose()
}

/// The JSON records an index points to: `index_keys` hold the ids of records (as text, such
/// as a customer's `orders/<pseudonym>/<id>` entries holding `<id>`), `record_key` gives each
/// id's record key, and the records that exist are returned in the index's order. Two reads
/// in all, however long the page: one for the index entries, one for the records.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let (keys, next) = store::page("orders/c-7f3a/", None, 20);
/// let orders: Vec<serde_json::Value> = store::follow_json(&keys, |id| format!("order/{id}"))?;
/// # let _ = (orders, next);
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn follow_json<T: DeserializeOwned, K: AsRef<str>>(
    index_keys: &[K],
    record_key: impl Fn(&str) -> String,
) -> Result<Vec<T>, ScenarioError> {
    let record_keys: Vec<String> = get_many(index_keys)
        .into_iter()
        .flatten()
        .filter_map(|bytes| String::from_utf8(bytes).ok())
        .map(|id| record_key(&id))
        .collect();
    Ok(get_json_many(&record_keys)?.into_iter().flatten().collect())
}

/// Returns the values under `keys` parsed from JSON, in the same order (`None`: absent), with
/// one read for all of them as [`get_many`]. A value that is not JSON for `T` is reported as
/// [`get_json`] reports it.
///
/// ```no_run
/// use lifecircle_sdk::store;
///
/// let (keys, next) = store::page("orders/c-7f3a/", None, 20);
/// let orders: Vec<serde_json::Value> =
///     store::get_json_many(&keys)?.into_iter().flatten().collect();
/// # let _ = (orders, next);
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn get_json_many<T: DeserializeOwned, K: AsRef<str>>(
    keys: &[K],
) -> Result<Vec<Option<T>>, ScenarioError> {
    keys.iter()
        .zip(get_many(keys))
        .map(|(key, value)| {
            value
                .map(|bytes| parse_stored(key.as_ref(), &bytes))
                .transpose()
        })
        .collect()
}

/// Stores `value` as JSON under `key`, replacing what was there.
///
/// Serialization fails only for values JSON cannot express: a plugin bug, reported as
/// [`ScenarioError::Refused`] with code `stored_value_unserializable`.
///
/// ```no_run
/// use lifecircle_sdk::store;
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Note<'a> {
///     text: &'a str,
/// }
///
/// store::set_json("note/c-7f3a", &Note { text: "Buy milk" })?;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), ScenarioError> {
    let bytes = serialize_for_store(key, value)?;
    set(key, &bytes);
    Ok(())
}

fn parse_stored<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ScenarioError> {
    serde_json::from_slice(bytes).map_err(|error| {
        ScenarioError::refused(
            "stored_value_invalid",
            format!("the value stored under `{key}` is not valid: {error}"),
        )
    })
}

fn serialize_for_store<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
) -> Result<Vec<u8>, ScenarioError> {
    serde_json::to_vec(value).map_err(|error| {
        ScenarioError::refused(
            "stored_value_unserializable",
            format!("the value for `{key}` cannot be stored as JSON: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Note {
        text: String,
    }

    #[test]
    fn parse_stored_reads_json_of_the_expected_shape() {
        let note: Note = parse_stored("note/c-1", br#"{"text":"hi"}"#).expect("valid note");
        assert_eq!(note.text, "hi");
    }

    #[test]
    fn parse_stored_reports_another_shape_as_refused_naming_the_key() {
        let error = parse_stored::<Note>("note/c-1", b"42").expect_err("should be an error");
        assert_eq!(error.code(), Some("stored_value_invalid"));
        assert!(error.message().is_some_and(|m| m.contains("note/c-1")));
    }

    #[test]
    fn serialize_for_store_reports_a_value_json_cannot_express() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), 3);
        let error = serialize_for_store("k", &map).expect_err("should be an error");
        assert_eq!(error.code(), Some("stored_value_unserializable"));
    }

    #[test]
    fn increment_error_display_names_the_current_value() {
        assert_eq!(
            IncrementError::OutOfBounds { current: -3 }.to_string(),
            "the counter would leave its bounds (it is -3)"
        );
        assert_eq!(
            IncrementError::NotACounter.to_string(),
            "the key holds a value that is not a counter"
        );
    }
}
