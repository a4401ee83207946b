//! Spin-wheel lottery (网点智惠转盘). Written against `lifecircle-sdk` only.
//!
//! | Action | Caller | Body | Answer |
//! |--------|--------|------|--------|
//! | `wheel` | customer | — | `{"prizes": [...], "spins_today", "free_left", "cost_points", "daily_limit"}` |
//! | `spin` | customer, `Idempotency-Key` | — | `{"prize": {...}, "outcome": "won" / "thanks", "reason"?, "paid_with": "free" / "points", "draw": request id}` |
//! | `my-prizes` | customer | `{"after"?: cursor}` | `{"prizes": [...], "next": cursor or null}` |
//!
//! The draw: the prizes still in stock (and, when the guarantee is due, without `thanks`) are
//! picked by weight with one `random.below` of the host's verifiable randomness, so every spin
//! can be checked with `lifecircle verify-draw --invocation <draw>`.
//!
//! Documented fallbacks: a prize whose stock is gone is not on the wheel for the draw; when no
//! prize is left the spin answers `thanks`. A points prize the campaign's budget cannot cover
//! becomes `thanks` with reason `budget_exhausted` (never over-awarded), and its stock is not
//! taken. A cash prize is paid through `payments` by a job `payout_working_days` working days
//! after the spin, run again every `payout_poll_seconds` (a payout the bank declined is asked
//! again) until the bank confirms, up to `payout_polls_max` runs. A coupon prize is a voucher, signed by the
//! host, that the coupons scenario honours once with a coupon of the prize's campaign.

use lifecircle_sdk::jobs::{self, When};
use lifecircle_sdk::payments::{self, Money, Status as PaymentStatus};
use lifecircle_sdk::store::{self, Bounds, IncrementError};
use lifecircle_sdk::{
    Job, Request, Response, Scenario, ScenarioError, clock, config, events, ledger, random,
    vouchers,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Prizes one `my-prizes` page lists.
const PAGE: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Prize {
    id: String,
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title_zh: Option<String>,
    kind: Kind,
    #[serde(default)]
    amount: i64,
    weight: u64,
    /// `None`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stock: Option<i64>,
    /// A coupon prize's campaign in the coupons scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Points,
    Cash,
    Coupon,
    Thanks,
}

#[derive(Debug, Clone, Deserialize)]
struct Wheel {
    #[serde(default)]
    free_spins_per_day: i64,
    #[serde(default)]
    cost_points: i64,
    #[serde(default = "one")]
    daily_limit: i64,
    #[serde(default)]
    guarantee_after: i64,
    #[serde(default)]
    payout_working_days: u32,
    #[serde(default)]
    utc_offset_minutes: i64,
    /// The scenario that honours coupon prizes' vouchers.
    #[serde(default = "coupons_plugin")]
    coupons_plugin: String,
    /// Days a coupon prize's voucher can be claimed.
    #[serde(default = "thirty")]
    coupon_claim_days: u64,
    prizes: Vec<Prize>,
}

fn coupons_plugin() -> String {
    "merchant-coupons".into()
}

fn thirty() -> u64 {
    30
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> i64 {
    1
}

/// A spin's result, as kept for the customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Won {
    draw: String,
    prize: String,
    title: String,
    kind: Kind,
    amount: i64,
    at_ms: i64,
    outcome: &'static str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    paid_with: &'static str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payout_job: Option<String>,
    /// A coupon prize: the campaign, and the voucher to claim it with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voucher: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CashJob {
    draw: String,
    fen: i64,
    /// Payouts the bank declined so far: the next is asked under a new key.
    #[serde(default, skip_serializing_if = "is_zero")]
    declined: u32,
    /// Runs of the job so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    round: u32,
}

struct SpinWheel;

impl Scenario for SpinWheel {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "wheel" => wheel(&request),
            "spin" => spin(&request),
            "my-prizes" => my_prizes(&request),
            _ => Err(ScenarioError::unknown_action()),
        }
    }

    fn on_job(job: Job) -> Result<(), ScenarioError> {
        match job.name() {
            "pay-cash" => pay_cash(job.json()?),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(SpinWheel);

/// One run of a cash prize's payout job. Keyed by the draw, so every run asks for the same
/// payout (a pending one is asked about again); one the bank declines is asked again under
/// a new key. Until the bank confirms, the job schedules its next run (each with a key of its
/// own), every `payout_poll_seconds`, up to `payout_polls_max` runs; then the bank's operators
/// are warned in the log.
fn pay_cash(mut cash: CashJob) -> Result<(), ScenarioError> {
    let key = match cash.declined {
        0 => format!("cash/{}", cash.draw),
        attempt => format!("cash/{}/{attempt}", cash.draw),
    };
    let paid = payments::payout(Money::cny(cash.fen), &key, "red packet")?;
    match paid.status {
        PaymentStatus::Succeeded => return Ok(()),
        PaymentStatus::Pending => {}
        PaymentStatus::Failed => {
            lifecircle_sdk::warn!(
                "the bank declined payout {} of draw {} ({}); it is asked again",
                paid.id,
                cash.draw,
                paid.reason.as_deref().unwrap_or("no reason given")
            );
            cash.declined += 1;
        }
    }
    let seconds: u64 = config::get("payout_poll_seconds")?.unwrap_or(600);
    let max: u32 = config::get("payout_polls_max")?.unwrap_or(144);
    cash.round += 1;
    if cash.round >= max {
        lifecircle_sdk::warn!(
            "the cash prize of draw {} is still unpaid after {} runs; the bank's operators must pay it",
            cash.draw,
            cash.round
        );
        return Ok(());
    }
    let key = format!("cash/{}/run/{}", cash.draw, cash.round);
    jobs::schedule("pay-cash", &cash, When::AfterSeconds(seconds), &key)?;
    Ok(())
}

fn settings() -> Result<Wheel, ScenarioError> {
    let wheel: Wheel = config::get_all()?;
    wheel.check()?;
    Ok(wheel)
}

impl Wheel {
    /// Checks what the settings schema cannot. A coupon prize's voucher label and recipient
    /// are checked here, before any draw: a prize that cannot be issued must not cost the
    /// customer a spin, nor give them a second draw.
    fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |message: &str| Err(ScenarioError::refused("config_invalid", message));
        let prizes = &self.prizes;
        if prizes
            .iter()
            .any(|p| matches!(p.kind, Kind::Points | Kind::Cash) && p.amount < 1)
        {
            return invalid("every points or cash prize needs an amount of at least 1");
        }
        if prizes
            .iter()
            .any(|p| (p.kind == Kind::Coupon) != p.campaign.is_some())
        {
            return invalid("coupon prizes, and only they, name a `campaign`");
        }
        let label_char =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        let campaign_ok = |c: &str| (1..=57).contains(&c.len()) && c.bytes().all(label_char);
        if prizes
            .iter()
            .filter_map(|p| p.campaign.as_deref())
            .any(|c| !campaign_ok(c))
        {
            return invalid(
                "a coupon prize's campaign is 1 to 57 letters, digits, '-', '_', '.' or ':'",
            );
        }
        let plugin = &self.coupons_plugin;
        let plugin_ok = (1..=64).contains(&plugin.len())
            && !plugin.starts_with('-')
            && plugin
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plugin_ok {
            return invalid("`coupons_plugin` is a plugin id: lowercase letters, digits and '-'");
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    clock::now().unix_milliseconds() as i64
}

/// The bank's local day of `ms`.
fn day_of(ms: i64, offset_minutes: i64) -> i64 {
    (ms + offset_minutes * 60_000).div_euclid(86_400_000)
}

fn won_key(prize: &str) -> String {
    format!("won/{prize}")
}

fn left(prize: &Prize) -> Option<i64> {
    prize
        .stock
        .map(|stock| (stock - store::counter(&won_key(&prize.id))).max(0))
}

fn broken(what: &str) -> ScenarioError {
    ScenarioError::conflict("data_broken", format!("the stored {what} is not readable"))
}

#[derive(Serialize)]
struct PrizeView<'a> {
    #[serde(flatten)]
    prize: &'a Prize,
    left: Option<i64>,
}

fn wheel(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let wheel = settings()?;
    let spins = store::counter(&format!(
        "spins/{pseudonym}/{}",
        day_of(now_ms(), wheel.utc_offset_minutes)
    ));
    let prizes: Vec<PrizeView<'_>> = wheel
        .prizes
        .iter()
        .map(|prize| PrizeView {
            prize,
            left: left(prize),
        })
        .collect();
    Response::json(&serde_json::json!({
        "prizes": prizes,
        "spins_today": spins,
        "free_left": (wheel.free_spins_per_day - spins).max(0),
        "cost_points": wheel.cost_points,
        "daily_limit": wheel.daily_limit,
    }))
}

fn spin(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let by_key = format!("spin-key/{pseudonym}/{key}");
    let now = now_ms();
    let wheel = settings();
    let spins_key = |wheel: &Wheel| {
        let day = day_of(now, wheel.utc_offset_minutes);
        format!("spins/{pseudonym}/{day}")
    };
    let misses_key = format!("misses/{pseudonym}");
    // One read for every key the spin may look at; the reads below are answered from it.
    if let Ok(wheel) = &wheel {
        let mut keys = vec![by_key.clone(), spins_key(wheel), misses_key.clone()];
        keys.extend(
            wheel
                .prizes
                .iter()
                .filter(|prize| prize.stock.is_some())
                .map(|prize| won_key(&prize.id)),
        );
        store::get_many(&keys);
    }
    if let Some(earlier) = store::get_json::<serde_json::Value>(&by_key)? {
        return Response::json(&earlier);
    }
    let wheel = wheel?;
    let limit = Bounds {
        min: 0,
        max: wheel.daily_limit,
    };
    let spins = store::increment(&spins_key(&wheel), 1, limit).map_err(|error| match error {
        IncrementError::OutOfBounds { .. } => ScenarioError::refused(
            "daily_limit_reached",
            format!("you have spun {} times today", wheel.daily_limit),
        ),
        IncrementError::NotACounter => broken("spins"),
    })?;
    let paid_with = if spins <= wheel.free_spins_per_day {
        "free"
    } else {
        ledger::spend(
            wheel.cost_points,
            &format!("spin/{pseudonym}/{key}"),
            "wheel spin",
        )?;
        "points"
    };

    // The draw: prizes with stock left; when the guarantee is due, only winning ones.
    let misses = store::counter(&misses_key);
    let guaranteed = wheel.guarantee_after > 0 && misses >= wheel.guarantee_after;
    let candidates: Vec<&Prize> = wheel
        .prizes
        .iter()
        .filter(|prize| prize.weight > 0 && left(prize) != Some(0))
        .filter(|prize| !guaranteed || prize.kind != Kind::Thanks)
        .collect();
    let weights: Vec<u64> = candidates.iter().map(|prize| prize.weight).collect();
    let picked = random::pick_weighted(&weights).map(|index| candidates[index]);
    let thanks = wheel.prizes.iter().find(|prize| prize.kind == Kind::Thanks);
    let (mut prize, mut reason) = match (picked, thanks) {
        (Some(prize), _) => (prize.clone(), None),
        (None, Some(thanks)) => (thanks.clone(), Some("no prize left".to_owned())),
        (None, None) => (thanks_prize(), Some("no prize left".to_owned())),
    };

    let mut payout_job = None;
    let mut voucher = None;
    match prize.kind {
        Kind::Thanks => {}
        Kind::Points => {
            match ledger::award(
                prize.amount,
                &format!("prize/{pseudonym}/{key}"),
                &prize.title,
            ) {
                Ok(_) => take_stock(&prize)?,
                Err(ledger::LedgerError::BudgetExhausted { .. }) => {
                    prize = thanks.cloned().unwrap_or_else(thanks_prize);
                    reason = Some("budget_exhausted".into());
                }
                Err(error) => return Err(error.into()),
            }
        }
        Kind::Cash => {
            take_stock(&prize)?;
            let job = CashJob {
                draw: request.request_id().to_owned(),
                fen: prize.amount,
                declined: 0,
                round: 0,
            };
            payout_job = Some(jobs::schedule(
                "pay-cash",
                &job,
                When::AfterWorkingDays(wheel.payout_working_days),
                &format!("cash/{}", request.request_id()),
            )?);
        }
        Kind::Coupon => {
            take_stock(&prize)?;
            let campaign = prize.campaign.as_deref().unwrap_or_default();
            let valid_for = Duration::from_secs(wheel.coupon_claim_days.saturating_mul(86_400));
            let label = format!("coupon:{campaign}");
            let issued = vouchers::issue(&wheel.coupons_plugin, &label, valid_for);
            voucher = Some(issued.map_err(|error| {
                ScenarioError::refused(
                    "config_invalid",
                    format!("the wheel's coupon prize cannot be issued: {error}"),
                )
            })?);
        }
    }
    let outcome = if prize.kind == Kind::Thanks {
        store::increment(&misses_key, 1, Bounds::NON_NEGATIVE).map_err(|_| broken("misses"))?;
        "thanks"
    } else {
        store::set(&misses_key, b"0");
        "won"
    };
    let won = Won {
        draw: request.request_id().to_owned(),
        prize: prize.id.clone(),
        title: prize.title.clone(),
        kind: prize.kind,
        amount: prize.amount,
        at_ms: now,
        outcome,
        reason,
        paid_with,
        payout_job,
        campaign: prize.campaign.clone(),
        voucher,
    };
    store::set_json(&format!("prizes/{pseudonym}/{now:013}-{key}"), &won)?;
    store::set_json(&by_key, &won)?;
    events::emit(
        "spin.drawn",
        &serde_json::json!({"prize": won.prize, "outcome": outcome, "guaranteed": guaranteed}),
    )?;
    Response::json(&won)
}

fn thanks_prize() -> Prize {
    Prize {
        id: "thanks".into(),
        title: "Thank you for playing".into(),
        title_zh: Some("谢谢参与".into()),
        kind: Kind::Thanks,
        amount: 0,
        weight: 0,
        stock: None,
        campaign: None,
    }
}

/// Takes one of `prize`'s stock; bounded, and checked again at commit, so a prize is never
/// given beyond its stock however many spins race.
fn take_stock(prize: &Prize) -> Result<(), ScenarioError> {
    let Some(stock) = prize.stock else {
        return Ok(());
    };
    let bounds = Bounds { min: 0, max: stock };
    store::increment(&won_key(&prize.id), 1, bounds).map_err(|error| match error {
        IncrementError::OutOfBounds { .. } => {
            ScenarioError::conflict("prize_gone", "that prize was just taken; spin again")
        }
        IncrementError::NotACounter => broken("stock"),
    })?;
    Ok(())
}

fn my_prizes(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let after = request.page_after()?;
    let (keys, next) = store::page(&format!("prizes/{pseudonym}/"), after.as_deref(), PAGE);
    let prizes: Vec<serde_json::Value> =
        store::get_json_many(&keys)?.into_iter().flatten().collect();
    Response::json(&serde_json::json!({ "prizes": prizes, "next": next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel(prizes: serde_json::Value, extra: serde_json::Value) -> Wheel {
        let mut settings = serde_json::json!({ "prizes": prizes });
        if let (Some(settings), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
            settings.extend(extra.clone());
        }
        serde_json::from_value(settings).expect("settings")
    }

    #[test]
    fn a_coupon_prize_that_could_not_be_issued_is_refused_before_any_draw() {
        let coupon = |campaign: &str| {
            serde_json::json!([{"id": "c", "title": "C", "kind": "coupon", "campaign": campaign,
                                "weight": 1}])
        };
        let none = serde_json::json!({});
        assert!(wheel(coupon("tea-10"), none.clone()).check().is_ok());
        assert!(wheel(coupon("tea 10"), none.clone()).check().is_err());
        assert!(
            wheel(coupon(&"x".repeat(58)), none.clone())
                .check()
                .is_err()
        );
        let elsewhere = serde_json::json!({"coupons_plugin": "Merchant Coupons"});
        assert!(wheel(coupon("tea-10"), elsewhere).check().is_err());
        let no_campaign = serde_json::json!([{"id": "c", "title": "C", "kind": "coupon",
                                              "weight": 1}]);
        assert!(wheel(no_campaign, none.clone()).check().is_err());
        let points = serde_json::json!([{"id": "p", "title": "P", "kind": "points", "weight": 1}]);
        assert!(
            wheel(points, none).check().is_err(),
            "a points prize needs an amount"
        );
    }

    #[test]
    fn local_days_start_at_local_midnight() {
        // 2026-11-30T16:00Z is midnight in UTC+8.
        let midnight = 1_796_054_400_000;
        assert_eq!(day_of(midnight, 480), day_of(midnight - 1, 480) + 1);
        assert_eq!(day_of(midnight, 0), day_of(midnight - 1, 0));
    }
}
