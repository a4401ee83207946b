//! The reference scenario plugin: one small action per host capability.
//!
//! | Action | Body | Answer | Uses |
//! |--------|------|--------|------|
//! | `echo` | any JSON | `{"echo": <body>}` | nothing (the benchmark hot path) |
//! | `greet` | ignored | `{"message": "Hello, <name>!", "region": ...}` | config, log |
//! | `count` | ignored | `{"count": n}` | store (customers only) |
//! | `count-then-fail` | ignored | refused `demo_failure`, after counting | store |
//! | `count-then-panic` | ignored | a trap, after counting | store |
//! | `draw` | `{"sides": 1..=1000000}` | `{"number": 1..=sides, "sides": sides}`; emits `draw.made` | random, events |
//! | `time` | ignored | `{"seconds": ..., "nanoseconds": ...}` | clock |
//! | `profile` | ignored | the granted `{"region", "tier", "tags"}`, `null` if not a customer | identity |
//! | `note-set` | `{"text": "..."}` | `{"text": "..."}` | store (customers only) |
//! | `note-get` | ignored | `{"text": "..."}` or `{"text": null}` | store (customers only) |
//! | `note-replace` | `{"expected": "..."/null, "text": "..."/null}` | `{"replaced": bool}` | store |
//! | `remind` | `{"after_seconds"?: n, "working_days"?: n, "fail_attempts"?: n}` | `{"job": id}` | jobs |
//! | `remind-then-fail` | as `remind` | refused `demo_failure`, after scheduling | jobs |
//! | `cancel-reminder` | `{"job": id}` | `{"cancelled": bool}` | jobs |
//! | `reminders` | ignored | `{"reminded": n}`: reminder jobs run for the customer | store |
//! | `fetch` | `{"url": "...", "method"?: "GET", "body"?: "..."}` | `{"status": n, "body": "..."}` | outbound |
//! | `pay-bill` | `{"fen": n, "biller_url": "..."}`, `Idempotency-Key` required | `{"outcome": "paid" / "refunded" / "declined" / "pending", "payment": {...}, "refund"?: {...}}` | payments, outbound |
//! | `refund` | `{"payment": id, "fen": n}`, `Idempotency-Key` required | `{"payment": {...}}` | payments |
//! | `payment` | `{"payment": id}` | `{"payment": {...}}`, asking the bank again if pending | payments |
//! | `prize` | `{"fen": n}`, `Idempotency-Key` required | `{"payment": {...}}`: a cash prize paid out | payments |
//!
//! `pay-bill` is a bill payment in miniature: it debits the customer, asks the biller at
//! `biller_url` to confirm (`POST {"payment": id, "fen": n}`), and refunds the debit when the
//! biller does not confirm. A retry with the same `Idempotency-Key` pays, confirms and refunds
//! at most once.
//!
//! A `remind` job (scheduled once per `Idempotency-Key`, or per request without one) adds one
//! to the customer's `reminded` count when it runs; with `fail_attempts: n` its first `n`
//! attempts fail on purpose, so the host's retries can be seen.
//!
//! `count-then-fail` and `count-then-panic` exist for the host's tests: they prove that a
//! call which returns an error or traps leaves nothing in the store.

use lifecircle_sdk::events;
use lifecircle_sdk::identity;
use lifecircle_sdk::jobs::{self, When};
use lifecircle_sdk::outbound::HttpRequest;
use lifecircle_sdk::payments::{self, Money, Payment, Status};
use lifecircle_sdk::store::{self, Bounds, IncrementError};
use lifecircle_sdk::{
    Caller, Job, Request, Response, Scenario, ScenarioError, clock, config, random,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The greeting used when the region's settings have none.
const GREETING_DEFAULT: &str = "Hello";

/// The most sides a die in `draw` may have: bounds what a client can ask the host to draw.
const SIDES_MAX: u64 = 1_000_000;

/// The longest note, in characters: bounds what a client can make the plugin store.
const NOTE_CHARACTERS_MAX: usize = 280;

struct Hello;

impl Scenario for Hello {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "echo" => echo(&request),
            "greet" => greet(&request),
            "count" => Response::json(&CountAnswer {
                count: count(&request)?,
            }),
            "count-then-fail" => {
                count(&request)?;
                Err(ScenarioError::refused(
                    "demo_failure",
                    "Counted, then failed on purpose: the count must not be kept.",
                ))
            }
            "count-then-panic" => {
                count(&request)?;
                panic!("counted, then panicked on purpose: the count must not be kept");
            }
            "draw" => draw(&request),
            "time" => time(),
            "profile" => profile(),
            "note-set" => note_set(&request),
            "note-get" => note_get(&request),
            "note-replace" => note_replace(&request),
            "remind" => remind(&request),
            "remind-then-fail" => {
                remind(&request)?;
                Err(ScenarioError::refused(
                    "demo_failure",
                    "Scheduled, then failed on purpose: the job must not be kept.",
                ))
            }
            "cancel-reminder" => cancel_reminder(&request),
            "reminders" => reminders(&request),
            "fetch" => fetch(&request),
            "pay-bill" => pay_bill(&request),
            "refund" => refund(&request),
            "payment" => payment(&request),
            "prize" => prize(&request),
            _ => Err(ScenarioError::unknown_action()),
        }
    }

    fn on_job(job: Job) -> Result<(), ScenarioError> {
        match job.name() {
            "remind" => {
                let Reminder { fail_attempts } = job.json()?;
                if job.attempt() <= fail_attempts {
                    return Err(ScenarioError::refused(
                        "reminder_failed_on_purpose",
                        format!("attempt {} of a reminder failed on purpose", job.attempt()),
                    ));
                }
                let key = format!("reminded/{}", job.customer_pseudonym().unwrap_or("-"));
                store::increment(&key, 1, Bounds::NON_NEGATIVE).map_err(|_| {
                    ScenarioError::conflict(
                        "reminders_not_counted",
                        "The reminder count is broken.",
                    )
                })?;
                Ok(())
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(Hello);

#[derive(Serialize)]
struct EchoAnswer<'a> {
    echo: &'a RawValue,
}

/// Answers what the plugin may know of the caller: the granted profile fields (`null` for a
/// partner or the scheduler).
fn profile() -> Result<Response, ScenarioError> {
    Response::json(&identity::profile())
}

/// Answers the body back. `RawValue` checks the JSON without building a tree of it.
fn echo(request: &Request) -> Result<Response, ScenarioError> {
    let body: Box<RawValue> = request.json()?;
    Response::json(&EchoAnswer { echo: &body })
}

#[derive(Serialize)]
struct GreetAnswer<'a> {
    message: String,
    region: &'a str,
}

fn greet(request: &Request) -> Result<Response, ScenarioError> {
    let greeting: String = config::get("greeting")?.unwrap_or_else(|| GREETING_DEFAULT.to_owned());
    let (kind, name) = match request.caller() {
        Caller::Customer { pseudonym } => ("customer", pseudonym.as_str()),
        Caller::Partner { partner_id } => ("partner", partner_id.as_str()),
        Caller::Scheduler => ("scheduler", "scheduler"),
        _ => ("caller", "caller"),
    };
    // The pseudonym stays out of the log: the log names the kind of caller only.
    lifecircle_sdk::info!("greeted a {kind} in {}", request.region());
    Response::json(&GreetAnswer {
        message: format!("{greeting}, {name}!"),
        region: request.region(),
    })
}

#[derive(Serialize)]
struct CountAnswer {
    count: i64,
}

/// Adds one to the calling customer's counter and returns the new count.
fn count(request: &Request) -> Result<i64, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = format!("count/{pseudonym}");
    store::increment(&key, 1, Bounds::NON_NEGATIVE).map_err(|error| match error {
        IncrementError::OutOfBounds { .. } => {
            ScenarioError::refused("count_at_maximum", "The count cannot grow any further.")
        }
        IncrementError::NotACounter => {
            ScenarioError::conflict("count_not_a_counter", "The count is not a number.")
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrawBody {
    sides: u64,
}

#[derive(Serialize)]
struct DrawAnswer {
    number: u64,
    sides: u64,
}

fn draw(request: &Request) -> Result<Response, ScenarioError> {
    let DrawBody { sides } = request.json()?;
    if !(1..=SIDES_MAX).contains(&sides) {
        return Err(ScenarioError::invalid_input(
            "sides_out_of_range",
            format!("sides must be from 1 to {SIDES_MAX}"),
        ));
    }
    let number = random::below(sides) + 1;
    events::emit("draw.made", &DrawAnswer { number, sides })?;
    Response::json(&DrawAnswer { number, sides })
}

#[derive(Serialize)]
struct TimeAnswer {
    seconds: i64,
    nanoseconds: u32,
}

fn time() -> Result<Response, ScenarioError> {
    let now = clock::now();
    Response::json(&TimeAnswer {
        seconds: now.seconds,
        nanoseconds: now.nanoseconds,
    })
}

/// A customer's note, as stored (JSON) and as answered.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    text: String,
}

impl Note {
    fn validated(text: String) -> Result<Self, ScenarioError> {
        if text.chars().count() > NOTE_CHARACTERS_MAX {
            return Err(ScenarioError::invalid_input(
                "note_too_long",
                format!("a note has at most {NOTE_CHARACTERS_MAX} characters"),
            ));
        }
        Ok(Self { text })
    }

    fn key(pseudonym: &str) -> String {
        format!("note/{pseudonym}")
    }

    /// The bytes `store::set_json` writes for this note, for `compare_and_swap`.
    fn encoded(&self) -> Result<Vec<u8>, ScenarioError> {
        serde_json::to_vec(self)
            .map_err(|error| ScenarioError::refused("note_unserializable", error.to_string()))
    }
}

fn note_set(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let Note { text } = request.json()?;
    let note = Note::validated(text)?;
    store::set_json(&Note::key(pseudonym), &note)?;
    Response::json(&note)
}

#[derive(Serialize)]
struct NoteGetAnswer {
    text: Option<String>,
}

fn note_get(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let note: Option<Note> = store::get_json(&Note::key(pseudonym))?;
    Response::json(&NoteGetAnswer {
        text: note.map(|note| note.text),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteReplaceBody {
    expected: Option<String>,
    text: Option<String>,
}

#[derive(Serialize)]
struct NoteReplaceAnswer {
    replaced: bool,
}

/// Replaces the note only if it still reads `expected` (`null`: no note); `text: null`
/// deletes it.
fn note_replace(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let NoteReplaceBody { expected, text } = request.json()?;
    let expected = expected.map(|text| Note { text }.encoded()).transpose()?;
    let new = text
        .map(|text| Note::validated(text)?.encoded())
        .transpose()?;
    let replaced =
        store::compare_and_swap(&Note::key(pseudonym), expected.as_deref(), new.as_deref());
    Response::json(&NoteReplaceAnswer { replaced })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(action: &str, body: &str) -> Request {
        let caller = Caller::Customer {
            pseudonym: "c-1".to_owned(),
        };
        Request::new(action, caller, body)
    }

    #[test]
    fn echo_answers_the_body_back_unchanged() {
        let response = Hello::handle(customer("echo", r#"{"a": [1, 2.5, "x"]}"#))
            .expect("echo accepts any JSON");
        assert_eq!(response.body_text(), r#"{"echo":{"a": [1, 2.5, "x"]}}"#);
    }

    #[test]
    fn echo_answers_null_for_an_empty_body() {
        let response = Hello::handle(customer("echo", "null")).expect("null is JSON");
        assert_eq!(response.body_text(), r#"{"echo":null}"#);
    }

    #[test]
    fn draw_refuses_sides_out_of_range_before_drawing() {
        for body in [r#"{"sides": 0}"#, r#"{"sides": 1000001}"#] {
            let error = Hello::handle(customer("draw", body)).expect_err("out of range");
            assert_eq!(error.code(), Some("sides_out_of_range"));
        }
    }

    #[test]
    fn draw_refuses_a_body_without_sides() {
        let error = Hello::handle(customer("draw", "{}")).expect_err("no sides");
        assert_eq!(error.code(), Some("invalid_body"));
    }

    #[test]
    fn count_refuses_a_partner_before_touching_the_store() {
        let caller = Caller::Partner {
            partner_id: "till-9".to_owned(),
        };
        let error = Hello::handle(Request::new("count", caller, "null")).expect_err("partner");
        assert_eq!(error.code(), Some("customer_required"));
    }

    #[test]
    fn note_set_refuses_a_note_that_is_too_long() {
        let body = serde_json::json!({ "text": "x".repeat(NOTE_CHARACTERS_MAX + 1) });
        let error = Hello::handle(customer("note-set", &body.to_string())).expect_err("too long");
        assert_eq!(error.code(), Some("note_too_long"));
    }

    #[test]
    fn an_unknown_action_is_reported_as_such() {
        let error = Hello::handle(customer("nope", "null")).expect_err("unknown");
        assert_eq!(error, ScenarioError::unknown_action());
    }
}

/// The most seconds a reminder may wait: bounds how far ahead a client can make it schedule.
const REMIND_SECONDS_MAX: u64 = 30 * 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemindBody {
    after_seconds: Option<u64>,
    working_days: Option<u32>,
    #[serde(default)]
    fail_attempts: u32,
}

#[derive(Serialize, Deserialize)]
struct Reminder {
    fail_attempts: u32,
}

#[derive(Serialize)]
struct JobAnswer {
    job: String,
}

/// Schedules a reminder for the calling customer.
fn remind(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let body: RemindBody = request.json()?;
    let when = match (body.after_seconds, body.working_days) {
        (Some(seconds), None) if seconds <= REMIND_SECONDS_MAX => When::AfterSeconds(seconds),
        (None, Some(days)) if days <= 30 => When::AfterWorkingDays(days),
        (None, None) => When::AfterSeconds(0),
        _ => {
            return Err(ScenarioError::invalid_input(
                "when_invalid",
                "give after_seconds (at most 30 days) or working_days (at most 30), not both",
            ));
        }
    };
    let key = format!(
        "remind/{pseudonym}/{}",
        request.idempotency_key().unwrap_or(request.request_id())
    );
    let reminder = Reminder {
        fail_attempts: body.fail_attempts,
    };
    let job = jobs::schedule("remind", &reminder, when, &key)?;
    Response::json(&JobAnswer { job })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    job: String,
}

#[derive(Serialize)]
struct CancelAnswer {
    cancelled: bool,
}

fn cancel_reminder(request: &Request) -> Result<Response, ScenarioError> {
    request.require_customer()?;
    let CancelBody { job } = request.json()?;
    Response::json(&CancelAnswer {
        cancelled: jobs::cancel(&job),
    })
}

#[derive(Serialize)]
struct RemindersAnswer {
    reminded: i64,
}

fn reminders(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let reminded = store::counter(&format!("reminded/{pseudonym}"));
    Response::json(&RemindersAnswer { reminded })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchBody {
    url: String,
    #[serde(default = "get")]
    method: String,
    body: Option<String>,
}

fn get() -> String {
    "GET".to_owned()
}

#[derive(Serialize)]
struct FetchAnswer {
    status: u16,
    body: String,
}

/// Fetches a URL on the plugin's allow-list; a refused or failed request is a refusal whose
/// code names why (`outbound_host_not_allowed`, `outbound_timeout`, ...).
fn fetch(request: &Request) -> Result<Response, ScenarioError> {
    let FetchBody { url, method, body } = request.json()?;
    let mut outgoing = HttpRequest::new(&method, &url);
    if let Some(body) = body {
        outgoing = outgoing
            .header("content-type", "application/json")
            .body(body);
    }
    let response = outgoing.send()?;
    Response::json(&FetchAnswer {
        status: response.status,
        body: response.text(),
    })
}

#[derive(Serialize)]
struct PaymentView {
    id: String,
    status: &'static str,
    fen: i64,
    reason: Option<String>,
}

impl From<&Payment> for PaymentView {
    fn from(payment: &Payment) -> Self {
        Self {
            id: payment.id.clone(),
            status: match payment.status {
                Status::Succeeded => "succeeded",
                Status::Failed => "failed",
                Status::Pending => "pending",
            },
            fen: payment.amount.minor_units,
            reason: payment.reason.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBillBody {
    fen: i64,
    biller_url: String,
}

#[derive(Serialize)]
struct PayBillAnswer {
    outcome: &'static str,
    payment: PaymentView,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund: Option<PaymentView>,
}

fn pay_bill(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let PayBillBody { fen, biller_url } = request.json()?;
    let debit = payments::debit(Money::cny(fen), &format!("bill/{pseudonym}/{key}"), "bill")?;
    let answer = |outcome, refund: Option<&Payment>| {
        Response::json(&PayBillAnswer {
            outcome,
            payment: PaymentView::from(&debit),
            refund: refund.map(PaymentView::from),
        })
    };
    match debit.status {
        Status::Failed => return answer("declined", None),
        Status::Pending => return answer("pending", None),
        Status::Succeeded => {}
    }
    let confirmed = HttpRequest::post(&biller_url)
        .header("idempotency-key", &debit.id)
        .json(&serde_json::json!({"payment": debit.id, "fen": fen}))
        .send()
        .is_ok_and(|response| response.is_success());
    if confirmed {
        return answer("paid", None);
    }
    let refund = payments::refund(
        &debit.id,
        Money::cny(fen),
        &format!("bill-refund/{pseudonym}/{key}"),
        "bill not confirmed by the biller",
    )?;
    answer("refunded", Some(&refund))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    payment: String,
    fen: i64,
}

#[derive(Serialize)]
struct PaymentAnswer {
    payment: PaymentView,
}

fn refund(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let RefundBody { payment, fen } = request.json()?;
    let refund = payments::refund(
        &payment,
        Money::cny(fen),
        &format!("refund/{pseudonym}/{key}"),
        "refund",
    )?;
    Response::json(&PaymentAnswer {
        payment: PaymentView::from(&refund),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    payment: String,
}

fn payment(request: &Request) -> Result<Response, ScenarioError> {
    request.require_customer()?;
    let PaymentBody { payment } = request.json()?;
    let found = payments::status(&payment)?;
    Response::json(&PaymentAnswer {
        payment: PaymentView::from(&found),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrizeBody {
    fen: i64,
}

/// Pays the customer a cash prize.
fn prize(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let PrizeBody { fen } = request.json()?;
    let paid = payments::payout(
        Money::cny(fen),
        &format!("prize/{pseudonym}/{key}"),
        "prize",
    )?;
    Response::json(&PaymentAnswer {
        payment: PaymentView::from(&paid),
    })
}
