//! Money in the calling customer's bank account: debits (a bill payment), refunds and payouts
//! (a cash prize), through the bank's core-banking system.
//!
//! No function takes an account: a plugin can only pay with the customer its call (or job) is
//! for. Amounts are whole minor units (fen for CNY) with a currency the bank accepts.
//!
//! Payments are external effects: they happen when made, even if the call fails afterwards,
//! and nothing undoes them but a refund. Every payment takes an idempotency key, unique per
//! plugin: the same key with the same request answers the first payment (as it stands now),
//! so derive keys from the request's own idempotency key and a retried request pays once.
//! When the bank does not answer in time a payment is [`Status::Pending`]; [`status`] asks
//! again.
//!
//! Import: list `"payments"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::payments::{self, Money, Status};
//!
//! let bill = payments::debit(Money::cny(4250), "bill:c-7f3a:2026-11", "water bill 2026-11")
//!     .expect("a valid payment request");
//! if bill.status == Status::Failed {
//!     // bill.reason is `insufficient_funds`, `account_not_found`, ...
//! }
//! ```

use std::fmt;

use crate::__private::bindings::lifecircle::scenario::payments as raw;
use crate::ScenarioError;

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Whole minor units: fen for CNY (12.50 yuan is 1250).
    pub minor_units: i64,
    /// ISO 4217 code, such as `CNY`.
    pub currency: String,
}

impl Money {
    /// An amount in Chinese yuan, in fen.
    ///
    /// ```
    /// use lifecircle_sdk::payments::Money;
    ///
    /// assert_eq!(Money::cny(1250).currency, "CNY");
    /// ```
    pub fn cny(fen: i64) -> Self {
        Self {
            minor_units: fen,
            currency: "CNY".to_owned(),
        }
    }

    fn into_raw(self) -> raw::Money {
        raw::Money {
            minor_units: self.minor_units,
            currency: self.currency,
        }
    }
}

/// What a payment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Takes money from the customer.
    Debit,
    /// Gives back (part of) a debit.
    Refund,
    /// Gives the customer money.
    Payout,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Succeeded,
    /// Declined by the bank; nothing moved.
    Failed,
    /// Not known yet: ask again with [`status`].
    Pending,
}

/// A payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: Kind,
    /// How much.
    pub amount: Money,
    /// Where it stands.
    pub status: Status,
    /// For a refund: the debit it refunds.
    pub refunds: Option<String>,
    /// Why it failed: `insufficient_funds`, `account_not_found`, `currency_mismatch`, or the
    /// bank's own reason.
    pub reason: Option<String>,
}

impl Payment {
    fn from_raw(raw: raw::Payment) -> Self {
        Self {
            id: raw.id,
            kind: match raw.kind {
                raw::PaymentKind::Debit => Kind::Debit,
                raw::PaymentKind::Refund => Kind::Refund,
                raw::PaymentKind::Payout => Kind::Payout,
            },
            amount: Money {
                minor_units: raw.amount.minor_units,
                currency: raw.amount.currency,
            },
            status: match raw.status {
                raw::PaymentStatus::Succeeded => Status::Succeeded,
                raw::PaymentStatus::Failed => Status::Failed,
                raw::PaymentStatus::Pending => Status::Pending,
            },
            refunds: raw.refunds,
            reason: raw.reason,
        }
    }
}

/// Why a payment request was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentError {
    /// The call is not for a customer.
    NotACustomer,
    /// Amounts are positive.
    AmountMustBePositive,
    /// Above the bank's limit for one payment.
    AmountTooLarge {
        /// The limit in minor units.
        max_minor_units: i64,
    },
    /// The bank does not take this currency here.
    CurrencyNotSupported {
        /// The currency.
        currency: String,
    },
    /// The idempotency key was used before for another payment.
    ExistsWithDifferentRequest,
    /// No such payment of this plugin for this customer.
    PaymentNotFound,
    /// Only a succeeded debit can be refunded.
    NotRefundable,
    /// The refund is more than what is left of the debit.
    RefundExceedsPayment {
        /// What is left, in minor units.
        left_minor_units: i64,
    },
    /// The call has made as many payments as the bank allows.
    TooManyPayments {
        /// The limit.
        max: u32,
    },
}

impl PaymentError {
    fn from_raw(raw: raw::PaymentError) -> Self {
        match raw {
            raw::PaymentError::NotACustomer => Self::NotACustomer,
            raw::PaymentError::AmountMustBePositive => Self::AmountMustBePositive,
            raw::PaymentError::AmountTooLarge(max_minor_units) => {
                Self::AmountTooLarge { max_minor_units }
            }
            raw::PaymentError::CurrencyNotSupported(currency) => {
                Self::CurrencyNotSupported { currency }
            }
            raw::PaymentError::ExistsWithDifferentRequest => Self::ExistsWithDifferentRequest,
            raw::PaymentError::PaymentNotFound => Self::PaymentNotFound,
            raw::PaymentError::NotRefundable => Self::NotRefundable,
            raw::PaymentError::RefundExceedsPayment(left_minor_units) => {
                Self::RefundExceedsPayment { left_minor_units }
            }
            raw::PaymentError::TooManyPayments(max) => Self::TooManyPayments { max },
        }
    }

    /// A stable snake_case name of the case, for error codes.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotACustomer => "customer_required",
            Self::AmountMustBePositive => "amount_must_be_positive",
            Self::AmountTooLarge { .. } => "amount_too_large",
            Self::CurrencyNotSupported { .. } => "currency_not_supported",
            Self::ExistsWithDifferentRequest => "payment_key_reused",
            Self::PaymentNotFound => "payment_not_found",
            Self::NotRefundable => "payment_not_refundable",
            Self::RefundExceedsPayment { .. } => "refund_exceeds_payment",
            Self::TooManyPayments { .. } => "too_many_payments",
        }
    }
}

impl fmt::Display for PaymentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotACustomer => write!(f, "only a customer's call can make payments"),
            Self::AmountMustBePositive => write!(f, "amounts are positive"),
            Self::AmountTooLarge { max_minor_units } => {
                write!(f, "one payment is at most {max_minor_units} minor units")
            }
            Self::CurrencyNotSupported { currency } => {
                write!(f, "payments in {currency} are not accepted here")
            }
            Self::ExistsWithDifferentRequest => {
                write!(
                    f,
                    "the payment's idempotency key was used for another payment"
                )
            }
            Self::PaymentNotFound => write!(f, "no such payment"),
            Self::NotRefundable => write!(f, "only a succeeded debit can be refunded"),
            Self::RefundExceedsPayment { left_minor_units } => write!(
                f,
                "the refund is more than the {left_minor_units} minor units left of the payment"
            ),
            Self::TooManyPayments { max } => write!(f, "a call may make at most {max} payments"),
        }
    }
}

impl std::error::Error for PaymentError {}

/// `?` turns a [`PaymentError`] into an error whose code is [`PaymentError::code`]: a
/// conflict (409) for a reused key or an over-refund, a refusal (422) otherwise.
impl From<PaymentError> for ScenarioError {
    fn from(error: PaymentError) -> Self {
        match error {
            PaymentError::ExistsWithDifferentRequest
            | PaymentError::RefundExceedsPayment { .. } => {
                ScenarioError::conflict(error.code(), error.to_string())
            }
            _ => ScenarioError::refused(error.code(), error.to_string()),
        }
    }
}

fn answer(result: Result<raw::Payment, raw::PaymentError>) -> Result<Payment, PaymentError> {
    result
        .map(Payment::from_raw)
        .map_err(PaymentError::from_raw)
}

/// Debits `amount` from the customer's account.
pub fn debit(amount: Money, idempotency_key: &str, memo: &str) -> Result<Payment, PaymentError> {
    answer(raw::debit(&amount.into_raw(), idempotency_key, memo))
}

/// Refunds `amount` of the succeeded debit `payment` to the customer.
pub fn refund(
    payment: &str,
    amount: Money,
    idempotency_key: &str,
    memo: &str,
) -> Result<Payment, PaymentError> {
    answer(raw::refund(
        payment,
        &amount.into_raw(),
        idempotency_key,
        memo,
    ))
}

/// Pays `amount` to the customer's account (a cash prize).
pub fn payout(amount: Money, idempotency_key: &str, memo: &str) -> Result<Payment, PaymentError> {
    answer(raw::payout(&amount.into_raw(), idempotency_key, memo))
}

/// A payment of this plugin for this customer, asking the bank again if it is pending.
pub fn status(payment: &str) -> Result<Payment, PaymentError> {
    answer(raw::status(payment))
}
