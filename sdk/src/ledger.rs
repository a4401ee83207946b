//! The shared points ledger, scoped by the host to the calling customer and to this plugin's
//! budget and sink in the call's region.
//!
//! No function takes an account or a customer id: a plugin can only touch the calling
//! customer's points and its own budget. A call without a customer (a partner, the scheduler)
//! gets [`LedgerError::NotACustomer`] from every function.
//!
//! Writes are part of the call, like [`store`](crate::store) writes: they land together with
//! them, and only if [`Scenario::handle`](crate::Scenario::handle) returns `Ok`. Returning an
//! `Err`, panicking or running past a limit leaves no posting. Reads during the call see the
//! call's own writes. The host checks again when the call commits; if another call got there
//! first (it spent the points, emptied the budget), the whole call fails with HTTP 409 and the
//! ledger's code, and nothing lands.
//!
//! Every write takes an idempotency key, unique per plugin and kept forever: the same key with
//! the same request returns the first result (the same id); the same key with a different
//! request is [`LedgerError::ExistsWithDifferentAmount`]. Derive keys from the request's own
//! [`idempotency_key`](crate::Request::idempotency_key) or from what makes the write unique
//! (`checkin:<pseudonym>:<day>`). The host passes the client's key through unchanged, and two
//! customers may well send the same one, so put the customer's pseudonym in the key too.
//!
//! [`LedgerError`] converts into [`ScenarioError`], so a handler can use `?` on every
//! function here.
//!
//! Import: list `"ledger"` under `[capabilities] interfaces` in `plugin.toml`. Points awarded
//! by the plugin expire after its manifest's `points_validity_days`.
//!
//! ```no_run
//! use lifecircle_sdk::{Request, ScenarioError, ledger};
//!
//! fn check_in(request: &Request, day: i64) -> Result<String, ScenarioError> {
//!     let pseudonym = request.require_customer()?;
//!     let key = format!("checkin:{pseudonym}:{day}");
//!     Ok(ledger::award(10, &key, "daily check-in")?)
//! }
//! # let _ = check_in;
//! ```

use std::fmt;

use serde::Serialize;

use crate::__private::bindings::lifecircle::scenario::ledger as raw;
use crate::ScenarioError;

/// Points of the customer that expire together.
///
/// ```
/// use lifecircle_sdk::ledger::Lot;
///
/// let lot = Lot { expires_at_ms: 1_700_000_000_000, points: 10 };
/// assert_eq!(
///     serde_json::to_string(&lot)?,
///     r#"{"expires_at_ms":1700000000000,"points":10}"#
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lot {
    /// When they expire, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    /// How many points.
    pub points: i64,
}

impl Lot {
    fn from_raw(raw: raw::Lot) -> Self {
        let raw::Lot {
            expires_at_ms,
            points,
        } = raw;
        Self {
            expires_at_ms,
            points,
        }
    }
}

/// The customer's points, including the call's own writes.
///
/// It serializes with snake_case field names, so a plugin can answer with it as is.
///
/// ```
/// use lifecircle_sdk::ledger::{Balance, Lot};
///
/// let balance = Balance {
///     total: 30,
///     available: 25,
///     held: 5,
///     expiring: vec![Lot { expires_at_ms: 1_700_000_000_000, points: 30 }],
/// };
/// assert_eq!(balance.total, balance.available + balance.held);
/// # let _ = serde_json::to_string(&balance)?;
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Every point the customer holds.
    pub total: i64,
    /// Points that can be spent or held now.
    pub available: i64,
    /// Points reserved by open holds.
    pub held: i64,
    /// Unexpired points, earliest expiry first.
    pub expiring: Vec<Lot>,
}

impl Balance {
    fn from_raw(raw: raw::PointsBalance) -> Self {
        let raw::PointsBalance {
            total,
            available,
            held,
            expiring,
        } = raw;
        Self {
            total,
            available,
            held,
            expiring: expiring.into_iter().map(Lot::from_raw).collect(),
        }
    }
}

/// One entry of the customer's history.
///
/// ```
/// use lifecircle_sdk::ledger::Posting;
///
/// let posting = Posting {
///     id: "p-1".to_owned(),
///     at_ms: 1_700_000_000_000,
///     kind: "award".to_owned(),
///     points: 10,
///     scenario: Some("points-demo".to_owned()),
///     memo: "daily check-in".to_owned(),
/// };
/// assert!(posting.points > 0, "an award is received");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Posting {
    /// The posting id.
    pub id: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `award`, `spend`, `capture`, `reverse` or `expire`.
    ///
    /// A string, as in the WIT, so a kind added by a later host does not break a plugin.
    pub kind: String,
    /// Points from the customer's point of view: positive received, negative given.
    pub points: i64,
    /// The scenario (plugin id) that made it, if any.
    pub scenario: Option<String>,
    /// The note the plugin gave.
    pub memo: String,
}

impl Posting {
    fn from_raw(raw: raw::Posting) -> Self {
        let raw::Posting {
            id,
            at_ms,
            kind,
            points,
            scenario,
            memo,
        } = raw;
        Self {
            id,
            at_ms,
            kind,
            points,
            scenario,
            memo,
        }
    }
}

/// Why the ledger refused; each case names the broken rule.
///
/// It converts into [`ScenarioError`] (so `?` works in a handler) by this mapping. The
/// `scenario_code` the app sees is [`code`](Self::code), except for `NotACustomer`, which
/// answers like [`Request::require_customer`](crate::Request::require_customer):
///
/// | Case | [`ScenarioError`] | `scenario_code` |
/// |------|-------------------|-----------------|
/// | `NotACustomer` | `Refused` (422) | `customer_required` |
/// | `PointsInsufficient` | `Refused` (422) | `points_insufficient` |
/// | `BudgetExhausted` | `Refused` (422) | `budget_exhausted` |
/// | `ExistsWithDifferentAmount` | `Conflict` (409) | `exists_with_different_amount` |
/// | `HoldAlreadyResolved` | `Conflict` (409) | `hold_already_resolved` |
/// | `AlreadyReversed` | `Conflict` (409) | `already_reversed` |
/// | `AmountMustBePositive` | `InvalidInput` (400) | `amount_must_be_positive` |
/// | `HoldNotFound` | `InvalidInput` (400) | `hold_not_found` |
/// | `CaptureExceedsHold` | `InvalidInput` (400) | `capture_exceeds_hold` |
/// | `PostingNotFound` | `InvalidInput` (400) | `posting_not_found` |
/// | `NotReversible` | `InvalidInput` (400) | `not_reversible` |
///
/// The message is the [`Display`](fmt::Display) text, except for `BudgetExhausted`: what is
/// left of the bank's budget is not the customer's business, so its message omits it.
/// Match on the error first where a plugin wants another answer.
///
/// ```
/// use lifecircle_sdk::ScenarioError;
/// use lifecircle_sdk::ledger::LedgerError;
///
/// let error = LedgerError::PointsInsufficient { available: 3 };
/// assert_eq!(error.code(), "points_insufficient");
/// assert_eq!(error.to_string(), "only 3 points are available");
///
/// let error = ScenarioError::from(error);
/// assert!(matches!(error, ScenarioError::Refused { .. }));
/// assert_eq!(error.code(), Some("points_insufficient"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerError {
    /// The call has no customer (a partner or the scheduler without one).
    NotACustomer,
    /// Points are positive whole numbers.
    AmountMustBePositive,
    /// The customer has fewer available points than asked.
    PointsInsufficient {
        /// How many points are available now.
        available: i64,
    },
    /// The plugin's budget in this region cannot cover the award.
    BudgetExhausted {
        /// How many points are left in the budget.
        remaining: i64,
    },
    /// The idempotency key was used before for a different request.
    ExistsWithDifferentAmount,
    /// No such hold of this plugin.
    HoldNotFound,
    /// The hold was already captured, released, or has expired.
    HoldAlreadyResolved,
    /// A capture larger than the hold.
    CaptureExceedsHold {
        /// How many points the hold holds.
        held: i64,
    },
    /// No such posting of this plugin.
    PostingNotFound,
    /// The posting was reversed before.
    AlreadyReversed,
    /// Only awards, spends and captures can be reversed.
    NotReversible,
}

impl LedgerError {
    /// The stable snake_case name of the broken rule, the same as the host's ledger code.
    ///
    /// ```
    /// use lifecircle_sdk::ledger::LedgerError;
    ///
    /// assert_eq!(LedgerError::HoldNotFound.code(), "hold_not_found");
    /// assert_eq!(LedgerError::CaptureExceedsHold { held: 5 }.code(), "capture_exceeds_hold");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotACustomer => "not_a_customer",
            Self::AmountMustBePositive => "amount_must_be_positive",
            Self::PointsInsufficient { .. } => "points_insufficient",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::ExistsWithDifferentAmount => "exists_with_different_amount",
            Self::HoldNotFound => "hold_not_found",
            Self::HoldAlreadyResolved => "hold_already_resolved",
            Self::CaptureExceedsHold { .. } => "capture_exceeds_hold",
            Self::PostingNotFound => "posting_not_found",
            Self::AlreadyReversed => "already_reversed",
            Self::NotReversible => "not_reversible",
        }
    }

    fn from_raw(raw: raw::LedgerError) -> Self {
        match raw {
            raw::LedgerError::NotACustomer => Self::NotACustomer,
            raw::LedgerError::AmountMustBePositive => Self::AmountMustBePositive,
            raw::LedgerError::PointsInsufficient(available) => {
                Self::PointsInsufficient { available }
            }
            raw::LedgerError::BudgetExhausted(remaining) => Self::BudgetExhausted { remaining },
            raw::LedgerError::ExistsWithDifferentAmount => Self::ExistsWithDifferentAmount,
            raw::LedgerError::HoldNotFound => Self::HoldNotFound,
            raw::LedgerError::HoldAlreadyResolved => Self::HoldAlreadyResolved,
            raw::LedgerError::CaptureExceedsHold(held) => Self::CaptureExceedsHold { held },
            raw::LedgerError::PostingNotFound => Self::PostingNotFound,
            raw::LedgerError::AlreadyReversed => Self::AlreadyReversed,
            raw::LedgerError::NotReversible => Self::NotReversible,
        }
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotACustomer => formatter.write_str("the call has no customer"),
            Self::AmountMustBePositive => {
                formatter.write_str("the amount must be a positive number of points")
            }
            Self::PointsInsufficient { available } => {
                write!(formatter, "only {available} points are available")
            }
            Self::BudgetExhausted { remaining } => {
                write!(formatter, "the budget has only {remaining} points left")
            }
            Self::ExistsWithDifferentAmount => {
                formatter.write_str("the idempotency key was already used for a different request")
            }
            Self::HoldNotFound => formatter.write_str("no such hold"),
            Self::HoldAlreadyResolved => {
                formatter.write_str("the hold was already captured, released or has expired")
            }
            Self::CaptureExceedsHold { held } => {
                write!(formatter, "the capture exceeds the hold of {held} points")
            }
            Self::PostingNotFound => formatter.write_str("no such posting"),
            Self::AlreadyReversed => formatter.write_str("the posting was already reversed"),
            Self::NotReversible => {
                formatter.write_str("only awards, spends and captures can be reversed")
            }
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<LedgerError> for ScenarioError {
    /// Maps a ledger refusal to the HTTP error the app sees; see [`LedgerError`] for the table.
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::NotACustomer => ScenarioError::customer_required(),
            LedgerError::BudgetExhausted { .. } => {
                ScenarioError::refused(error.code(), "this scenario has no points left to give")
            }
            LedgerError::PointsInsufficient { .. } => {
                ScenarioError::refused(error.code(), error.to_string())
            }
            LedgerError::ExistsWithDifferentAmount
            | LedgerError::HoldAlreadyResolved
            | LedgerError::AlreadyReversed => {
                ScenarioError::conflict(error.code(), error.to_string())
            }
            LedgerError::AmountMustBePositive
            | LedgerError::HoldNotFound
            | LedgerError::CaptureExceedsHold { .. }
            | LedgerError::PostingNotFound
            | LedgerError::NotReversible => {
                ScenarioError::invalid_input(error.code(), error.to_string())
            }
        }
    }
}

/// Returns the customer's balance, including the call's own writes.
///
/// ```no_run
/// use lifecircle_sdk::{Response, ledger};
///
/// let balance = ledger::balance()?;
/// let response = Response::json(&balance)?;
/// # let _ = response;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn balance() -> Result<Balance, LedgerError> {
    raw::balance()
        .map(Balance::from_raw)
        .map_err(LedgerError::from_raw)
}

/// Returns the customer's postings, newest first, strictly before the posting `before` when
/// given, at most `limit` of them (the host caps `limit`).
///
/// To page, pass the id of the last posting of one page as `before` of the next; a page
/// shorter than asked for can still be followed by more if the host capped it, so stop on an
/// empty page.
///
/// ```no_run
/// use lifecircle_sdk::ledger;
///
/// let newest = ledger::history(None, 20)?;
/// if let Some(last) = newest.last() {
///     let older = ledger::history(Some(&last.id), 20)?;
///     # let _ = older;
/// }
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn history(before: Option<&str>, limit: u32) -> Result<Vec<Posting>, LedgerError> {
    raw::history(before, limit)
        .map(|postings| postings.into_iter().map(Posting::from_raw).collect())
        .map_err(LedgerError::from_raw)
}

/// Gives `points` from this plugin's budget to the customer and returns the posting id.
///
/// They expire after the plugin's points validity (its manifest's `points_validity_days`,
/// within the bank's maximum). `memo` is shown in the customer's history.
///
/// ```no_run
/// use lifecircle_sdk::ledger;
///
/// let pseudonym = "c-7f3a";
/// let posting = ledger::award(10, &format!("checkin:{pseudonym}:19700"), "daily check-in")?;
/// # let _ = posting;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn award(points: i64, idempotency_key: &str, memo: &str) -> Result<String, LedgerError> {
    raw::award(points, idempotency_key, memo).map_err(LedgerError::from_raw)
}

/// Takes `points` of the customer's available points (earliest-expiring first) into this
/// plugin's sink and returns the posting id. `memo` is shown in the customer's history.
///
/// ```no_run
/// use lifecircle_sdk::ledger::{self, LedgerError};
/// use lifecircle_sdk::ScenarioError;
///
/// match ledger::spend(50, "redeem:c-7f3a:k-1", "cinema ticket") {
///     Ok(posting) => println!("spent in {posting}"),
///     Err(LedgerError::PointsInsufficient { available }) => {
///         return Err(ScenarioError::refused(
///             "points_insufficient",
///             format!("A ticket costs 50 points; you have {available}."),
///         ));
///     }
///     Err(error) => return Err(error.into()),
/// }
/// # Ok::<(), ScenarioError>(())
/// ```
pub fn spend(points: i64, idempotency_key: &str, memo: &str) -> Result<String, LedgerError> {
    raw::spend(points, idempotency_key, memo).map_err(LedgerError::from_raw)
}

/// Reserves `points` for up to `seconds` (the host caps it) and returns the hold id.
///
/// The points stop counting as available at once. Finish the hold with [`capture`] or
/// [`release`]; one left alone expires and its points are available again. A hold reserves
/// points, not the lots they are in: points that expire while held lapse, and a later
/// capture can take only what the customer still has.
///
/// ```no_run
/// use lifecircle_sdk::ledger;
///
/// let hold = ledger::hold(30, 600, "reserve:c-7f3a:k-1")?;
/// # let _ = hold;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn hold(points: i64, seconds: u32, idempotency_key: &str) -> Result<String, LedgerError> {
    raw::hold(points, seconds, idempotency_key).map_err(LedgerError::from_raw)
}

/// Spends `points` (at most the held amount) of the hold `hold`, releases the rest, and
/// returns the posting id.
///
/// ```no_run
/// use lifecircle_sdk::ledger;
///
/// let posting = ledger::capture("h-1", 25, "confirm:c-7f3a:k-2")?;
/// # let _ = posting;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn capture(hold: &str, points: i64, idempotency_key: &str) -> Result<String, LedgerError> {
    raw::capture(hold, points, idempotency_key).map_err(LedgerError::from_raw)
}

/// Releases the hold `hold`: its points are available again.
///
/// ```no_run
/// use lifecircle_sdk::ledger;
///
/// ledger::release("h-1", "cancel:c-7f3a:k-3")?;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn release(hold: &str, idempotency_key: &str) -> Result<(), LedgerError> {
    raw::release(hold, idempotency_key).map_err(LedgerError::from_raw)
}

/// Reverses an award, a spend or a capture of this plugin and returns the reversal's id.
///
/// A spend's points go back to the lots they came from; an award is clawed back from what the
/// customer has available, and what cannot be is recorded as owed.
///
/// ```no_run
/// use lifecircle_sdk::ledger;
///
/// let reversal = ledger::reverse("p-1", "refund:c-7f3a:k-4")?;
/// # let _ = reversal;
/// # Ok::<(), lifecircle_sdk::ScenarioError>(())
/// ```
pub fn reverse(posting: &str, idempotency_key: &str) -> Result<String, LedgerError> {
    raw::reverse(posting, idempotency_key).map_err(LedgerError::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case with a representative payload, for the exhaustive tests below.
    const EVERY_ERROR: [LedgerError; 11] = [
        LedgerError::NotACustomer,
        LedgerError::AmountMustBePositive,
        LedgerError::PointsInsufficient { available: 3 },
        LedgerError::BudgetExhausted { remaining: 7 },
        LedgerError::ExistsWithDifferentAmount,
        LedgerError::HoldNotFound,
        LedgerError::HoldAlreadyResolved,
        LedgerError::CaptureExceedsHold { held: 5 },
        LedgerError::PostingNotFound,
        LedgerError::AlreadyReversed,
        LedgerError::NotReversible,
    ];

    /// The `ScenarioError` case's name and code, for comparing against a table.
    fn mapped(error: LedgerError) -> (&'static str, String) {
        let error = ScenarioError::from(error);
        let case = match error {
            ScenarioError::InvalidInput { .. } => "invalid_input",
            ScenarioError::Refused { .. } => "refused",
            ScenarioError::Conflict { .. } => "conflict",
            ScenarioError::UnknownAction => "unknown_action",
        };
        (case, error.code().unwrap_or_default().to_owned())
    }

    #[test]
    fn codes_name_the_broken_rule_in_snake_case() {
        let codes: Vec<&str> = EVERY_ERROR.iter().map(LedgerError::code).collect();
        assert_eq!(
            codes,
            [
                "not_a_customer",
                "amount_must_be_positive",
                "points_insufficient",
                "budget_exhausted",
                "exists_with_different_amount",
                "hold_not_found",
                "hold_already_resolved",
                "capture_exceeds_hold",
                "posting_not_found",
                "already_reversed",
                "not_reversible",
            ]
        );
    }

    #[test]
    fn each_error_maps_to_the_scenario_error_its_table_row_names() {
        let expected = [
            ("refused", "customer_required"),
            ("invalid_input", "amount_must_be_positive"),
            ("refused", "points_insufficient"),
            ("refused", "budget_exhausted"),
            ("conflict", "exists_with_different_amount"),
            ("invalid_input", "hold_not_found"),
            ("conflict", "hold_already_resolved"),
            ("invalid_input", "capture_exceeds_hold"),
            ("invalid_input", "posting_not_found"),
            ("conflict", "already_reversed"),
            ("invalid_input", "not_reversible"),
        ];
        for (error, (case, code)) in EVERY_ERROR.into_iter().zip(expected) {
            assert_eq!(mapped(error), (case, code.to_owned()), "{error:?}");
        }
    }

    #[test]
    fn not_a_customer_maps_to_the_same_error_as_require_customer() {
        let request = crate::Request::new("spin", crate::Caller::Scheduler, "null");
        let expected = request.require_customer().expect_err("the scheduler");
        assert_eq!(ScenarioError::from(LedgerError::NotACustomer), expected);
    }

    #[test]
    fn budget_exhausted_keeps_the_remaining_budget_out_of_the_message() {
        let error = ScenarioError::from(LedgerError::BudgetExhausted { remaining: 1234 });
        let message = error.message().expect("refused has a message");
        assert!(!message.contains("1234"), "{message}");
    }

    #[test]
    fn other_messages_are_the_display_text() {
        for error in EVERY_ERROR {
            if matches!(
                error,
                LedgerError::NotACustomer | LedgerError::BudgetExhausted { .. }
            ) {
                continue;
            }
            let message = error.to_string();
            assert_eq!(ScenarioError::from(error).message(), Some(message.as_str()));
        }
    }

    #[test]
    fn display_names_the_amounts_a_case_carries() {
        assert_eq!(
            LedgerError::PointsInsufficient { available: 3 }.to_string(),
            "only 3 points are available"
        );
        assert_eq!(
            LedgerError::BudgetExhausted { remaining: 7 }.to_string(),
            "the budget has only 7 points left"
        );
        assert_eq!(
            LedgerError::CaptureExceedsHold { held: 5 }.to_string(),
            "the capture exceeds the hold of 5 points"
        );
    }

    #[test]
    fn from_raw_keeps_the_case_and_its_amount() {
        let raw_errors = [
            raw::LedgerError::NotACustomer,
            raw::LedgerError::AmountMustBePositive,
            raw::LedgerError::PointsInsufficient(3),
            raw::LedgerError::BudgetExhausted(7),
            raw::LedgerError::ExistsWithDifferentAmount,
            raw::LedgerError::HoldNotFound,
            raw::LedgerError::HoldAlreadyResolved,
            raw::LedgerError::CaptureExceedsHold(5),
            raw::LedgerError::PostingNotFound,
            raw::LedgerError::AlreadyReversed,
            raw::LedgerError::NotReversible,
        ];
        let converted: Vec<LedgerError> =
            raw_errors.into_iter().map(LedgerError::from_raw).collect();
        assert_eq!(converted, EVERY_ERROR);
    }

    #[test]
    fn balance_from_raw_keeps_every_field_and_the_lot_order() {
        let balance = Balance::from_raw(raw::PointsBalance {
            total: 30,
            available: 25,
            held: 5,
            expiring: vec![
                raw::Lot {
                    expires_at_ms: 1_000,
                    points: 10,
                },
                raw::Lot {
                    expires_at_ms: 2_000,
                    points: 20,
                },
            ],
        });
        assert_eq!(
            balance,
            Balance {
                total: 30,
                available: 25,
                held: 5,
                expiring: vec![
                    Lot {
                        expires_at_ms: 1_000,
                        points: 10,
                    },
                    Lot {
                        expires_at_ms: 2_000,
                        points: 20,
                    },
                ],
            }
        );
    }

    #[test]
    fn posting_from_raw_keeps_every_field() {
        let posting = Posting::from_raw(raw::Posting {
            id: "p-1".to_owned(),
            at_ms: 1_000,
            kind: "spend".to_owned(),
            points: -50,
            scenario: Some("points-demo".to_owned()),
            memo: "cinema ticket".to_owned(),
        });
        assert_eq!(
            posting,
            Posting {
                id: "p-1".to_owned(),
                at_ms: 1_000,
                kind: "spend".to_owned(),
                points: -50,
                scenario: Some("points-demo".to_owned()),
                memo: "cinema ticket".to_owned(),
            }
        );
    }

    #[test]
    fn balance_serializes_with_snake_case_fields() {
        let balance = Balance {
            total: 30,
            available: 25,
            held: 5,
            expiring: vec![Lot {
                expires_at_ms: 1_700_000_000_000,
                points: 30,
            }],
        };
        assert_eq!(
            serde_json::to_value(&balance).expect("a balance always serializes"),
            serde_json::json!({
                "total": 30,
                "available": 25,
                "held": 5,
                "expiring": [{ "expires_at_ms": 1_700_000_000_000_i64, "points": 30 }],
            })
        );
    }

    #[test]
    fn posting_serializes_a_missing_scenario_as_null() {
        let posting = Posting {
            id: "p-2".to_owned(),
            at_ms: 5,
            kind: "expire".to_owned(),
            points: -10,
            scenario: None,
            memo: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&posting).expect("a posting always serializes"),
            serde_json::json!({
                "id": "p-2",
                "at_ms": 5,
                "kind": "expire",
                "points": -10,
                "scenario": null,
                "memo": "",
            })
        );
    }
}
