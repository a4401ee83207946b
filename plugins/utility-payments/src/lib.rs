//! Utility bill payments (民生缴费). Written against `lifecircle-sdk` only.
//!
//! | Action | Caller | Body | Answer |
//! |--------|--------|------|--------|
//! | `billers` | customer | — | `{"billers": [...]}` |
//! | `inquire` | customer | `{"biller": id, "account": "..."}` | `{"due_fen": n, "period": "..."}` or `{"no_bill": true}` |
//! | `pay` | customer, `Idempotency-Key` | `{"biller": id, "account": "...", "fen": n}` | `{"receipt": {...}}` |
//! | `receipts` | customer | `{"after"?: cursor}` | `{"receipts": [...], "next": cursor or null}` |
//!
//! `pay` debits the customer through `payments` (keyed by the request's `Idempotency-Key`),
//! then asks the biller to confirm. A receipt ends `paid` (the biller confirmed; the points
//! for paying are awarded then, once) or `refunded` (the biller refused or never got it; the
//! debit is refunded, once). When the biller's answer is unknown (a timeout, a lost
//! connection, a 5xx, or `pending`) the receipt is `pending` and a job polls the biller's
//! status until it is final, then settles or refunds: an unknown answer is never refunded, as
//! the biller may have the payment. A refund the bank has not done yet leaves the receipt
//! `refunding`, polled by the same job until the bank has (a refund the bank declines is asked
//! again). A debit the bank declines makes a `declined` receipt; one the bank has not answered
//! waits as `pending` for the same job. No money is lost: every debit ends paid or refunded,
//! or, after `poll_max` polls, waits for the bank's operators, who are warned in the log. (A
//! `pay` that fails after its debit is run again by the host, under the same key, until it
//! keeps its receipt: see the README.)

use lifecircle_sdk::jobs::{self, When};
use lifecircle_sdk::outbound::{HttpRequest, HttpResponse, OutboundError};
use lifecircle_sdk::payments::{self, Money, Payment, Status as PaymentStatus};
use lifecircle_sdk::store;
use lifecircle_sdk::{
    Job, Request, Response, Scenario, ScenarioError, clock, config, events, ledger,
};
use serde::{Deserialize, Serialize};

/// Receipts one `receipts` page lists.
const PAGE: u32 = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Biller {
    id: String,
    kind: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_zh: Option<String>,
    api_url: String,
    min_fen: i64,
    max_fen: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReceiptStatus {
    Paid,
    Refunded,
    Refunding,
    Declined,
    Pending,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    id: String,
    biller: String,
    account: String,
    fen: i64,
    status: ReceiptStatus,
    at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    biller_receipt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refund: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default)]
    points: i64,
    /// Refunds asked for so far (a declined one is asked again, under a new key).
    #[serde(default, skip_serializing_if = "is_zero")]
    refund_attempts: u32,
    /// The store key the receipt lives under.
    key: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct PollJob {
    receipt: String,
    round: u32,
}

struct UtilityPayments;

impl Scenario for UtilityPayments {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "billers" => billers(),
            "inquire" => inquire(&request),
            "pay" => pay(&request),
            "receipts" => receipts(&request),
            _ => Err(ScenarioError::unknown_action()),
        }
    }

    fn on_job(job: Job) -> Result<(), ScenarioError> {
        match job.name() {
            "poll" => {
                let PollJob { receipt, round } = job.json()?;
                poll(&receipt, round)
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(UtilityPayments);

fn all_billers() -> Result<Vec<Biller>, ScenarioError> {
    Ok(config::get("billers")?.unwrap_or_default())
}

fn biller(id: &str) -> Result<Biller, ScenarioError> {
    all_billers()?
        .into_iter()
        .find(|biller| biller.id == id)
        .ok_or_else(|| {
            ScenarioError::invalid_input("biller_not_found", format!("no biller {id:?} here"))
        })
}

fn billers() -> Result<Response, ScenarioError> {
    Response::json(&serde_json::json!({ "billers": all_billers()? }))
}

fn check_account(account: &str) -> Result<(), ScenarioError> {
    let valid = (1..=32).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ScenarioError::invalid_input(
            "account_invalid",
            "an account number is 1 to 32 letters, digits or '-'",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InquireBody {
    biller: String,
    account: String,
}

#[derive(Deserialize)]
struct Due {
    due_fen: i64,
    period: String,
}

fn inquire(request: &Request) -> Result<Response, ScenarioError> {
    request.require_customer()?;
    let InquireBody { biller, account } = request.json()?;
    check_account(&account)?;
    let biller = self::biller(&biller)?;
    let answer = HttpRequest::post(&format!("{}/inquire", biller.api_url))
        .json(&serde_json::json!({ "account": account }))
        .send()?;
    if answer.status == 404 {
        return Response::json(&serde_json::json!({ "no_bill": true }));
    }
    if !answer.is_success() {
        return Err(ScenarioError::refused(
            "biller_unavailable",
            "the biller cannot answer now; try again later",
        ));
    }
    let Due { due_fen, period } = answer.json()?;
    Response::json(&serde_json::json!({ "due_fen": due_fen, "period": period }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    biller: String,
    account: String,
    fen: i64,
}

#[derive(Serialize)]
struct ReceiptAnswer<'a> {
    receipt: &'a Receipt,
}

fn now_ms() -> i64 {
    clock::now().unix_milliseconds() as i64
}

fn pay(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let PayBody {
        biller,
        account,
        fen,
    } = request.json()?;
    check_account(&account)?;
    let by_key = format!("pay-key/{pseudonym}/{key}");
    if let Some(receipt_key) = store::get(&by_key).and_then(|b| String::from_utf8(b).ok())
        && let Some(receipt) = store::get_json::<Receipt>(&receipt_key)?
    {
        return Response::json(&ReceiptAnswer { receipt: &receipt });
    }
    let biller = self::biller(&biller)?;
    if fen < biller.min_fen || fen > biller.max_fen {
        return Err(ScenarioError::invalid_input(
            "amount_out_of_range",
            format!(
                "{} takes {} to {} fen at once",
                biller.name, biller.min_fen, biller.max_fen
            ),
        ));
    }
    let at_ms = now_ms();
    let id = request.request_id().to_owned();
    let receipt_key = format!("receipts/{pseudonym}/{at_ms:013}-{id}");
    let debit = payments::debit(
        Money::cny(fen),
        &format!("bill/{pseudonym}/{key}"),
        &format!("{} {}", biller.name, account),
    )?;
    let mut receipt = Receipt {
        id,
        biller: biller.id.clone(),
        account,
        fen,
        status: ReceiptStatus::Pending,
        at_ms,
        payment: Some(debit.id.clone()),
        biller_receipt: None,
        refund: None,
        reason: None,
        points: 0,
        refund_attempts: 0,
        key: receipt_key.clone(),
    };
    match debit.status {
        PaymentStatus::Failed => {
            receipt.status = ReceiptStatus::Declined;
            receipt.reason = debit.reason.clone();
        }
        PaymentStatus::Pending => {
            receipt.reason = Some("waiting for the bank".into());
            schedule_poll(&receipt, 1)?;
        }
        PaymentStatus::Succeeded => {
            if confirm(&biller, &mut receipt)? == Next::PollAgain {
                schedule_poll(&receipt, 1)?;
            }
        }
    }
    store::set_json(&receipt_key, &receipt)?;
    store::set(&by_key, receipt_key.as_bytes());
    Response::json(&ReceiptAnswer { receipt: &receipt })
}

/// Whether a receipt is final, or waits for the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Done,
    PollAgain,
}

/// What the biller's answer says about a payment.
#[derive(Debug, PartialEq, Eq)]
enum BillerAnswer {
    /// It has the payment; carries its receipt number.
    Confirmed(Option<String>),
    /// It refused the payment, or certainly never got it: the debit is refunded.
    Refused,
    /// Asked for the payment's status, it does not know the payment.
    NotFound,
    /// Unknown: no answer, an answer cut short, or one that is not final. Ask again later;
    /// refunding now could refund a payment the biller has taken.
    Unknown,
}

impl BillerAnswer {
    /// The answer to `POST /pay`. Only then does a host refusal or a client error mean the
    /// biller has not taken the payment: it was never sent, or refused as sent.
    fn to_payment(answer: Result<HttpResponse, OutboundError>) -> Self {
        let response = match answer {
            Ok(response) => response,
            // Refused by the host before anything was sent.
            Err(
                OutboundError::HostNotAllowed { .. }
                | OutboundError::InvalidRequest { .. }
                | OutboundError::TooManyRequests { .. },
            ) => return BillerAnswer::Refused,
            // Sent, perhaps: a timeout, a connection lost mid-way, a reply too large to read.
            Err(_) => return BillerAnswer::Unknown,
        };
        match Self::stated(&response) {
            BillerAnswer::Unknown
                if (400..500).contains(&response.status)
                    && ![408, 429].contains(&response.status) =>
            {
                // A client error the biller answered itself: it did not take the payment. A
                // timeout or too many requests may be retried; a 5xx may come from a proxy in
                // front of a biller that has the payment.
                BillerAnswer::Refused
            }
            answer => answer,
        }
    }

    /// The answer to `GET /payments/{payment}`, asked of a payment the biller may have: only
    /// its own word (`confirmed`, `failed`, or 404 for a payment it never saw) settles it;
    /// anything else (the host refusing the request, a 403, a 5xx) is asked again later.
    fn to_status(answer: Result<HttpResponse, OutboundError>) -> Self {
        answer.map_or(BillerAnswer::Unknown, |response| Self::stated(&response))
    }

    /// What the biller's answer says in its own words, whatever the HTTP status.
    fn stated(response: &HttpResponse) -> Self {
        let body: serde_json::Value = response.json().unwrap_or_default();
        match body["status"].as_str() {
            Some("confirmed") => {
                BillerAnswer::Confirmed(body["receipt"].as_str().map(str::to_owned))
            }
            Some("failed") => BillerAnswer::Refused,
            _ if response.status == 404 => BillerAnswer::NotFound,
            _ => BillerAnswer::Unknown,
        }
    }
}

/// Asks the biller to take the receipt's (succeeded) debit and settles by the answer.
fn confirm(biller: &Biller, receipt: &mut Receipt) -> Result<Next, ScenarioError> {
    let payment = receipt.payment.clone().unwrap_or_default();
    let answer = HttpRequest::post(&format!("{}/pay", biller.api_url))
        .header("idempotency-key", &payment)
        .json(&serde_json::json!({
            "payment": payment,
            "account": receipt.account,
            "fen": receipt.fen,
        }))
        .send();
    match BillerAnswer::to_payment(answer) {
        // Not found, answered to a payment: the endpoint is wrong, so it was not taken.
        BillerAnswer::Refused | BillerAnswer::NotFound => {
            refund(receipt, "the biller did not accept the payment")
        }
        answer => settle_by(answer, receipt),
    }
}

/// Settles the receipt by a final answer; an unknown one waits for the next poll.
fn settle_by(answer: BillerAnswer, receipt: &mut Receipt) -> Result<Next, ScenarioError> {
    match answer {
        BillerAnswer::Confirmed(biller_receipt) => {
            receipt.biller_receipt = biller_receipt;
            settle(receipt)?;
            Ok(Next::Done)
        }
        BillerAnswer::Refused => refund(receipt, "the biller refused the payment"),
        BillerAnswer::NotFound | BillerAnswer::Unknown => {
            receipt.reason = Some("the biller has not confirmed the payment yet".into());
            Ok(Next::PollAgain)
        }
    }
}

/// The biller confirmed: the receipt is paid, the points for paying awarded (once).
fn settle(receipt: &mut Receipt) -> Result<(), ScenarioError> {
    let points: i64 = config::get("points_per_payment")?.unwrap_or(0);
    if points > 0 {
        let payment = receipt.payment.clone().unwrap_or_default();
        match ledger::award(points, &format!("points/{payment}"), "bill payment") {
            Ok(_) => receipt.points = points,
            // An empty budget does not undo a paid bill; the receipt says no points came.
            Err(ledger::LedgerError::BudgetExhausted { .. }) => receipt.points = 0,
            Err(error) => return Err(error.into()),
        }
    }
    receipt.status = ReceiptStatus::Paid;
    receipt.reason = None;
    events::emit(
        "bill.paid",
        &serde_json::json!({"biller": receipt.biller, "fen": receipt.fen, "points": receipt.points}),
    )?;
    Ok(())
}

/// The biller refused or never got the payment: the debit is refunded. The receipt is
/// `refunded` only once the bank has done it; until then it is `refunding` and polled. A
/// refund the bank declines is asked again, under a new key, at the next poll.
fn refund(receipt: &mut Receipt, why: &str) -> Result<Next, ScenarioError> {
    let payment = receipt.payment.clone().unwrap_or_default();
    // The first attempt's key is the one earlier versions used, so none is refunded twice.
    let key = match receipt.refund_attempts {
        0 => format!("refund/{payment}"),
        attempt => format!("refund/{payment}/{attempt}"),
    };
    let refund = payments::refund(&payment, Money::cny(receipt.fen), &key, why)?;
    receipt.refund_attempts += 1;
    receipt.refund = Some(refund.id.clone());
    receipt.status = ReceiptStatus::Refunding;
    receipt.reason = Some(why.to_owned());
    refund_outcome(receipt, &refund)
}

/// Where the receipt stands after the bank's answer about its refund.
fn refund_outcome(receipt: &mut Receipt, refund: &Payment) -> Result<Next, ScenarioError> {
    match refund.status {
        PaymentStatus::Succeeded => {
            receipt.status = ReceiptStatus::Refunded;
            events::emit(
                "bill.refunded",
                &serde_json::json!({"biller": receipt.biller, "fen": receipt.fen}),
            )?;
            Ok(Next::Done)
        }
        PaymentStatus::Pending => Ok(Next::PollAgain),
        PaymentStatus::Failed => {
            lifecircle_sdk::warn!(
                "the bank declined refund {} of receipt {} ({}); it is asked again",
                refund.id,
                receipt.id,
                refund.reason.as_deref().unwrap_or("no reason given")
            );
            Ok(Next::PollAgain)
        }
    }
}

fn schedule_poll(receipt: &Receipt, round: u32) -> Result<(), ScenarioError> {
    let seconds: u64 = config::get("poll_seconds")?.unwrap_or(60);
    let job = PollJob {
        receipt: receipt.key.clone(),
        round,
    };
    // One key per round: keys are kept, so each round needs its own.
    jobs::schedule(
        "poll",
        &job,
        When::AfterSeconds(seconds),
        &format!("poll/{}/{round}", receipt.id),
    )?;
    Ok(())
}

/// One poll of an unsettled receipt. A pending one: its debit first, then the biller. A
/// refunding one: its refund, asked again if the bank declined it. Reschedules itself while
/// the receipt is not final, up to `poll_max` rounds (then the receipt waits for the bank's
/// operators, as it is).
fn poll(receipt_key: &str, round: u32) -> Result<(), ScenarioError> {
    let Some(mut receipt) = store::get_json::<Receipt>(receipt_key)? else {
        return Ok(());
    };
    let next = match receipt.status {
        ReceiptStatus::Pending => poll_pending(&mut receipt)?,
        ReceiptStatus::Refunding => {
            let refund = payments::status(receipt.refund.as_deref().unwrap_or_default())?;
            match refund.status {
                PaymentStatus::Failed => refund_again(&mut receipt)?,
                _ => refund_outcome(&mut receipt, &refund)?,
            }
        }
        ReceiptStatus::Paid | ReceiptStatus::Refunded | ReceiptStatus::Declined => return Ok(()),
    };
    if next == Next::PollAgain {
        again(&receipt, round)?;
    }
    store::set_json(receipt_key, &receipt)?;
    Ok(())
}

/// A new attempt at a refund the bank declined.
fn refund_again(receipt: &mut Receipt) -> Result<Next, ScenarioError> {
    let why = receipt
        .reason
        .clone()
        .unwrap_or_else(|| "the biller did not accept the payment".into());
    refund(receipt, &why)
}

fn poll_pending(receipt: &mut Receipt) -> Result<Next, ScenarioError> {
    let biller = biller(&receipt.biller)?;
    let payment = receipt.payment.clone().unwrap_or_default();
    let debit = payments::status(&payment)?;
    match debit.status {
        PaymentStatus::Failed => {
            receipt.status = ReceiptStatus::Declined;
            receipt.reason = debit.reason;
            Ok(Next::Done)
        }
        PaymentStatus::Pending => Ok(Next::PollAgain),
        PaymentStatus::Succeeded => {
            let answer = HttpRequest::get(&format!("{}/payments/{payment}", biller.api_url)).send();
            match BillerAnswer::to_status(answer) {
                // The biller never got it (the first request was lost, or the debit was
                // pending until now): ask it now.
                BillerAnswer::NotFound => confirm(&biller, receipt),
                answer => settle_by(answer, receipt),
            }
        }
    }
}

fn again(receipt: &Receipt, round: u32) -> Result<(), ScenarioError> {
    let max: u32 = config::get("poll_max")?.unwrap_or(20);
    if round < max {
        schedule_poll(receipt, round + 1)?;
    } else {
        lifecircle_sdk::warn!(
            "receipt {} still {:?} after {round} polls; the bank's operators must settle it",
            receipt.id,
            receipt.status
        );
    }
    Ok(())
}

fn receipts(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let after = request.page_after()?;
    let (keys, next) = store::page(&format!("receipts/{pseudonym}/"), after.as_deref(), PAGE);
    let receipts: Vec<Receipt> = store::get_json_many(&keys)?.into_iter().flatten().collect();
    Response::json(&serde_json::json!({ "receipts": receipts, "next": next }))
}
