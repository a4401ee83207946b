//! Daily check-in: the reference scenario for the points ledger.
//!
//! A customer checks in once per UTC day for points and spends them on a reward, directly or
//! through a hold. Every action is for customers only; partners and the scheduler are refused
//! with `customer_required` before the plugin touches anything.
//!
//! | Action | Body | Answer | Idempotency-Key |
//! |--------|------|--------|-----------------|
//! | `check-in` | ignored | `{"posting": id, "points": n, "day": d}` | not needed |
//! | `redeem` | `{"points": n, "reward": "..."}` | `{"posting": id, "balance": {...}}` | required |
//! | `balance` | ignored | `{"total", "available", "held", "expiring": [...]}` | not needed |
//! | `history` | `{"before"?: id, "limit"?: n}` or nothing | `{"postings": [...]}` | not needed |
//! | `reserve` | `{"points": n, "seconds": s}` | `{"hold": id}` | required |
//! | `confirm` | `{"hold": id, "points": n}` | `{"posting": id}` | required |
//! | `cancel` | `{"hold": id}` | `{}` | required |
//! | `refund` | `{"posting": id}` | `{"reversal": id}` | required |
//! | `award-then-fail` | ignored | refused `demo_failure`, after awarding 5 | not needed |
//! | `award-then-panic` | ignored | a trap, after awarding 5 | not needed |
//!
//! Ledger refusals reach the app through the SDK's mapping (`points_insufficient` and
//! `budget_exhausted` are HTTP 422, `exists_with_different_amount` 409, and so on).
//!
//! Every ledger write has an idempotency key, so a retried call does not act twice. A
//! check-in's key is the customer and the day, so a second check-in the same day answers the
//! first one's posting. The other writes derive theirs from the client's `Idempotency-Key`,
//! prefixed with the action and the customer's pseudonym: ledger keys are unique per plugin,
//! and two customers' apps may well send the same key.
//!
//! `award-then-fail` and `award-then-panic` exist for the host's tests: they prove that a
//! call which returns an error or traps leaves no posting.

use lifecircle_sdk::ledger::{self, Balance, Posting};
use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, clock, config};
use serde::{Deserialize, Serialize};

/// Points for a check-in when the region's settings have none.
const CHECKIN_POINTS_DEFAULT: i64 = 10;

/// The memo of a check-in's award, shown in the customer's history.
const CHECKIN_MEMO: &str = "daily check-in";

/// A UTC day; day numbers count whole days since 1970-01-01.
const SECONDS_PER_DAY: i64 = 86_400;

/// The longest reward name, in characters: bounds the memo a client can make the ledger keep
/// forever.
const REWARD_CHARACTERS_MAX: usize = 80;

/// Postings per `history` page when the body does not say; the host caps what a body asks.
const HISTORY_LIMIT_DEFAULT: u32 = 20;

/// What `award-then-fail` and `award-then-panic` award before failing.
const DEMO_AWARD_POINTS: i64 = 5;

struct PointsDemo;

/// An action: the request and the calling customer's pseudonym, to the answer.
type Action = fn(&Request, &str) -> Result<Response, ScenarioError>;

impl Scenario for PointsDemo {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        let action: Action = match request.action() {
            "check-in" => check_in,
            "redeem" => redeem,
            "balance" => balance,
            "history" => history,
            "reserve" => reserve,
            "confirm" => confirm,
            "cancel" => cancel,
            "refund" => refund,
            "churn" => churn,
            "award-then-fail" => award_then_fail,
            "award-then-panic" => award_then_panic,
            _ => return Err(ScenarioError::unknown_action()),
        };
        // Every action is about the caller's own points: refuse a partner or the scheduler
        // here, with the same answer for every action, before any host call.
        let pseudonym = request.require_customer()?;
        action(&request, pseudonym)
    }
}

lifecircle_sdk::export!(PointsDemo);

#[derive(Serialize)]
struct CheckInAnswer {
    posting: String,
    points: i64,
    day: i64,
}

/// Awards the day's points once per customer and UTC day; the ledger answers a repeat with
/// the first posting.
fn check_in(_request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let points = checkin_points(config::get("checkin_points")?)?;
    let day = day_number(clock::unix_seconds());
    let posting = ledger::award(points, &checkin_key(pseudonym, day), CHECKIN_MEMO)?;
    Response::json(&CheckInAnswer {
        posting,
        points,
        day,
    })
}

/// The points a check-in awards: the setting, or the default when it is unset.
///
/// A setting below one point is the bank's configuration error, not the client's, so it is
/// refused as `config_invalid` rather than reaching the ledger as an invalid amount.
fn checkin_points(setting: Option<i64>) -> Result<i64, ScenarioError> {
    let points = setting.unwrap_or(CHECKIN_POINTS_DEFAULT);
    if points < 1 {
        return Err(ScenarioError::refused(
            "config_invalid",
            format!("the setting `checkin_points` must be at least 1, not {points}"),
        ));
    }
    Ok(points)
}

/// The UTC day of `unix_seconds`, counted from 1970-01-01 (day 0).
fn day_number(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(SECONDS_PER_DAY)
}

/// The ledger key of a customer's check-in on `day`: one award per customer and day.
fn checkin_key(pseudonym: &str, day: i64) -> String {
    format!("checkin:{pseudonym}:{day}")
}

/// The ledger key of a write that `action` derives from the client's idempotency key.
fn client_ledger_key(action: &str, pseudonym: &str, client_key: &str) -> String {
    format!("{action}:{pseudonym}:{client_key}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    points: i64,
    reward: String,
}

#[derive(Serialize)]
struct RedeemAnswer {
    posting: String,
    balance: Balance,
}

/// Spends points on a reward, named in the customer's history, and answers the new balance.
fn redeem(request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let client_key = request.require_idempotency_key()?;
    let RedeemBody { points, reward } = request.json()?;
    validate_reward(&reward)?;
    let key = client_ledger_key("redeem", pseudonym, client_key);
    let posting = ledger::spend(points, &key, &reward)?;
    Response::json(&RedeemAnswer {
        posting,
        balance: ledger::balance()?,
    })
}

#[derive(Serialize)]
struct ChurnAnswer {
    spent: String,
    awarded: String,
}

/// Spends one point and awards one back from the budget in the same call: the ledger-writing
/// call the host's benchmark measures (two postings, one hot budget account).
fn churn(request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let client_key = request.require_idempotency_key()?;
    let spent = ledger::spend(
        1,
        &client_ledger_key("churn-spend", pseudonym, client_key),
        "churn",
    )?;
    let awarded = ledger::award(
        1,
        &client_ledger_key("churn-award", pseudonym, client_key),
        "churn",
    )?;
    Response::json(&ChurnAnswer { spent, awarded })
}

/// A reward names what the points were spent on: 1 to [`REWARD_CHARACTERS_MAX`] characters.
fn validate_reward(reward: &str) -> Result<(), ScenarioError> {
    if reward.trim().is_empty() {
        return Err(ScenarioError::invalid_input(
            "reward_required",
            "name the reward the points are spent on",
        ));
    }
    if reward.chars().count() > REWARD_CHARACTERS_MAX {
        return Err(ScenarioError::invalid_input(
            "reward_too_long",
            format!("a reward has at most {REWARD_CHARACTERS_MAX} characters"),
        ));
    }
    Ok(())
}

fn balance(_request: &Request, _pseudonym: &str) -> Result<Response, ScenarioError> {
    Response::json(&ledger::balance()?)
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HistoryBody {
    before: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct HistoryAnswer {
    postings: Vec<Posting>,
}

/// One page of the customer's postings, newest first; page with the last id as `before`.
fn history(request: &Request, _pseudonym: &str) -> Result<Response, ScenarioError> {
    // A request without a body (`null`) asks for the newest page.
    let HistoryBody { before, limit } = request.json::<Option<HistoryBody>>()?.unwrap_or_default();
    let postings = ledger::history(before.as_deref(), limit.unwrap_or(HISTORY_LIMIT_DEFAULT))?;
    Response::json(&HistoryAnswer { postings })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    points: i64,
    seconds: u32,
}

#[derive(Serialize)]
struct ReserveAnswer {
    hold: String,
}

/// Holds points for up to `seconds` (the host caps it), to be confirmed or cancelled.
fn reserve(request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let client_key = request.require_idempotency_key()?;
    let ReserveBody { points, seconds } = request.json()?;
    let key = client_ledger_key("reserve", pseudonym, client_key);
    let hold = ledger::hold(points, seconds, &key)?;
    Response::json(&ReserveAnswer { hold })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    hold: String,
    points: i64,
}

#[derive(Serialize)]
struct PostingAnswer {
    posting: String,
}

/// Spends `points` of a hold and releases the rest.
fn confirm(request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let client_key = request.require_idempotency_key()?;
    let ConfirmBody { hold, points } = request.json()?;
    let key = client_ledger_key("confirm", pseudonym, client_key);
    let posting = ledger::capture(&hold, points, &key)?;
    Response::json(&PostingAnswer { posting })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    hold: String,
}

/// Releases a hold: its points are available again.
fn cancel(request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let client_key = request.require_idempotency_key()?;
    let CancelBody { hold } = request.json()?;
    let key = client_ledger_key("cancel", pseudonym, client_key);
    ledger::release(&hold, &key)?;
    Ok(Response::empty())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    posting: String,
}

#[derive(Serialize)]
struct RefundAnswer {
    reversal: String,
}

/// Reverses a posting of this scenario: a spend's points come back, an award's go.
fn refund(request: &Request, pseudonym: &str) -> Result<Response, ScenarioError> {
    let client_key = request.require_idempotency_key()?;
    let RefundBody { posting } = request.json()?;
    let key = client_ledger_key("refund", pseudonym, client_key);
    let reversal = ledger::reverse(&posting, &key)?;
    Response::json(&RefundAnswer { reversal })
}

/// Awards [`DEMO_AWARD_POINTS`] under a key new to every call, so only the host's rollback
/// (not the ledger's idempotency) can explain a missing posting afterwards.
fn award_for_demo(request: &Request, action: &str) -> Result<(), ScenarioError> {
    let key = format!("{action}:{}", request.request_id());
    ledger::award(DEMO_AWARD_POINTS, &key, action)?;
    Ok(())
}

fn award_then_fail(request: &Request, _pseudonym: &str) -> Result<Response, ScenarioError> {
    award_for_demo(request, "award-then-fail")?;
    Err(ScenarioError::refused(
        "demo_failure",
        "Awarded, then failed on purpose: the award must not be kept.",
    ))
}

fn award_then_panic(request: &Request, _pseudonym: &str) -> Result<Response, ScenarioError> {
    award_for_demo(request, "award-then-panic")?;
    panic!("awarded, then panicked on purpose: the award must not be kept");
}

#[cfg(test)]
mod tests {
    use lifecircle_sdk::Caller;

    use super::*;

    /// Every action the plugin answers.
    const ACTIONS: [&str; 10] = [
        "check-in",
        "redeem",
        "balance",
        "history",
        "reserve",
        "confirm",
        "cancel",
        "refund",
        "award-then-fail",
        "award-then-panic",
    ];

    /// The actions whose ledger key comes from the client's `Idempotency-Key`.
    const CLIENT_KEYED_ACTIONS: [&str; 5] = ["redeem", "reserve", "confirm", "cancel", "refund"];

    fn customer(action: &str, body: &str) -> Request {
        let caller = Caller::Customer {
            pseudonym: "c-1".to_owned(),
        };
        Request::new(action, caller, body)
    }

    #[test]
    fn every_action_refuses_a_partner_and_the_scheduler_before_any_host_call() {
        let partner = Caller::Partner {
            partner_id: "till-9".to_owned(),
        };
        for caller in [partner, Caller::Scheduler] {
            for action in ACTIONS {
                let request =
                    Request::new(action, caller.clone(), "null").with_idempotency_key("k");
                let error = PointsDemo::handle(request).expect_err("not a customer");
                assert_eq!(error.code(), Some("customer_required"), "{action}");
            }
        }
    }

    #[test]
    fn an_unknown_action_is_reported_as_such_whoever_calls() {
        let customer = Caller::Customer {
            pseudonym: "c-1".to_owned(),
        };
        for caller in [customer, Caller::Scheduler] {
            let error =
                PointsDemo::handle(Request::new("nope", caller, "null")).expect_err("unknown");
            assert_eq!(error, ScenarioError::unknown_action());
        }
    }

    #[test]
    fn client_keyed_actions_refuse_a_call_without_an_idempotency_key() {
        let body = serde_json::json!({ "points": 1, "reward": "pen", "hold": "h", "posting": "p" });
        for action in CLIENT_KEYED_ACTIONS {
            let error =
                PointsDemo::handle(customer(action, &body.to_string())).expect_err("no key");
            assert!(
                matches!(error, ScenarioError::InvalidInput { .. }),
                "{action}"
            );
            assert_eq!(error.code(), Some("idempotency_key_required"), "{action}");
        }
    }

    #[test]
    fn client_keyed_actions_refuse_a_body_of_another_shape() {
        for action in CLIENT_KEYED_ACTIONS {
            let request = customer(action, r#"{"unexpected": true}"#).with_idempotency_key("k");
            let error = PointsDemo::handle(request).expect_err("bad body");
            assert_eq!(error.code(), Some("invalid_body"), "{action}");
        }
    }

    #[test]
    fn redeem_refuses_a_reward_that_is_too_long_before_spending() {
        let reward = "x".repeat(REWARD_CHARACTERS_MAX + 1);
        let body = serde_json::json!({ "points": 5, "reward": reward });
        let request = customer("redeem", &body.to_string()).with_idempotency_key("k");
        let error = PointsDemo::handle(request).expect_err("too long");
        assert_eq!(error.code(), Some("reward_too_long"));
    }

    #[test]
    fn a_reward_is_measured_in_characters_not_bytes() {
        let reward = "积".repeat(REWARD_CHARACTERS_MAX);
        assert!(reward.len() > REWARD_CHARACTERS_MAX);
        assert_eq!(validate_reward(&reward), Ok(()));
    }

    #[test]
    fn a_blank_reward_is_refused() {
        for reward in ["", "   "] {
            let error = validate_reward(reward).expect_err("blank");
            assert_eq!(error.code(), Some("reward_required"));
        }
    }

    #[test]
    fn history_refuses_a_body_of_another_shape() {
        let error =
            PointsDemo::handle(customer("history", r#"{"limit": -1}"#)).expect_err("bad limit");
        assert_eq!(error.code(), Some("invalid_body"));
    }

    #[test]
    fn history_reads_an_empty_body_as_the_newest_page() {
        let body: Option<HistoryBody> = serde_json::from_str("null").expect("null is allowed");
        let HistoryBody { before, limit } = body.unwrap_or_default();
        assert_eq!((before, limit), (None, None));
    }

    #[test]
    fn checkin_points_default_to_ten_and_must_be_positive() {
        assert_eq!(checkin_points(None), Ok(CHECKIN_POINTS_DEFAULT));
        assert_eq!(checkin_points(Some(25)), Ok(25));
        for setting in [0, -5] {
            let error = checkin_points(Some(setting)).expect_err("not positive");
            assert!(matches!(error, ScenarioError::Refused { .. }));
            assert_eq!(error.code(), Some("config_invalid"));
        }
    }

    #[test]
    fn a_day_runs_from_midnight_to_midnight_utc() {
        assert_eq!(day_number(0), 0);
        assert_eq!(day_number(SECONDS_PER_DAY - 1), 0);
        assert_eq!(day_number(SECONDS_PER_DAY), 1);
        assert_eq!(day_number(1_700_000_000), 19_675);
        assert_eq!(
            day_number(-1),
            -1,
            "before 1970 is an earlier day, not day 0"
        );
    }

    #[test]
    fn keys_name_the_action_and_the_customer() {
        assert_eq!(checkin_key("c-1", 19_675), "checkin:c-1:19675");
        assert_eq!(client_ledger_key("redeem", "c-1", "k-1"), "redeem:c-1:k-1");
        assert_ne!(
            client_ledger_key("redeem", "c-1", "k-1"),
            client_ledger_key("redeem", "c-2", "k-1"),
            "two customers sending the same key must not collide"
        );
    }
}
