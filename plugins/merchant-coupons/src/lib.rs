//! Merchant coupons (商圈惠有福): customers claim discount coupons of local merchants; the
//! merchant's till verifies and redeems them. Written against `lifecircle-sdk` only.
//!
//! | Action | Caller | Body | Answer |
//! |--------|--------|------|--------|
//! | `campaigns` | customer | — | `{"campaigns": [...]}`: the region's campaigns, stock left, claimed by the caller |
//! | `claim` | customer, `Idempotency-Key` | `{"campaign": id, "voucher"?: text}` | `{"coupon": {...}}` with its code |
//! | `my-coupons` | customer | `{"after"?: cursor}` | `{"coupons": [...], "next": cursor or null}` |
//! | `verify` | partner (the merchant) | `{"code": "...", "spend_fen"?: n}` | `{"coupon": {...}, "redeemable": bool, "discount_fen"?: n}` |
//! | `redeem` | partner (the merchant), `Idempotency-Key` | `{"code": "...", "spend_fen": n}` | `{"code", "discount_fen", "pay_fen"}` |
//!
//! Guarantees:
//! - A campaign never issues more than its `stock`, and a customer never holds more than
//!   `per_customer_limit` of it, however many claims race: both are bounded store counters,
//!   checked again when each call commits.
//! - Codes are 12 characters of Crockford base32 (60 bits) from the host's CSPRNG (WASI
//!   random), unique (stored with compare-and-swap), unguessable.
//! - A coupon is redeemed at most once, only by its merchant, only within its validity and
//!   above its minimum spend: the redemption swaps the coupon's stored record, so of racing
//!   redemptions one lands. A retried claim or redemption (same `Idempotency-Key`) answers the
//!   first result.
//! - A claim with a points price spends the points in the same commit as the coupon.
//! - A claim with a voucher (a prize won in another scenario, signed by the host) is honoured
//!   once, free, from the campaign's `prize_stock`, if its issuer is in `voucher_issuers`.
//! - Unused coupons expire through a job scheduled at claim time.

mod logic;

use lifecircle_sdk::jobs::{self, When};
use lifecircle_sdk::store::{self, Bounds, IncrementError};
use lifecircle_sdk::{
    Caller, Job, Request, Response, Scenario, ScenarioError, clock, config, events, ledger,
    vouchers,
};
use serde::{Deserialize, Serialize};

pub use logic::{Campaign, Coupon, Discount, Status, format_code};

/// Coupons one `my-coupons` page lists.
const PAGE: u32 = 50;

struct MerchantCoupons;

impl Scenario for MerchantCoupons {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "campaigns" => campaigns(&request),
            "claim" => claim(&request),
            "my-coupons" => my_coupons(&request),
            "verify" => verify(&request),
            "redeem" => redeem(&request),
            _ => Err(ScenarioError::unknown_action()),
        }
    }

    fn on_job(job: Job) -> Result<(), ScenarioError> {
        match job.name() {
            "expire" => {
                let ExpireJob { code } = job.json()?;
                expire(&code)
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(MerchantCoupons);

fn now_ms() -> i64 {
    clock::now().unix_milliseconds() as i64
}

fn campaigns_config() -> Result<Vec<Campaign>, ScenarioError> {
    let campaigns: Vec<Campaign> = config::get("campaigns")?.unwrap_or_default();
    for campaign in &campaigns {
        campaign.check()?;
    }
    Ok(campaigns)
}

fn find_campaign(id: &str) -> Result<Campaign, ScenarioError> {
    campaigns_config()?
        .into_iter()
        .find(|campaign| campaign.id == id)
        .ok_or_else(|| {
            ScenarioError::invalid_input("campaign_not_found", format!("no campaign {id:?} here"))
        })
}

#[derive(Serialize)]
struct CampaignView<'a> {
    #[serde(flatten)]
    campaign: &'a Campaign,
    left: i64,
    prizes_left: i64,
    claimed_by_you: i64,
    open: bool,
}

fn campaigns(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let now = now_ms();
    let campaigns = campaigns_config()?;
    let views: Vec<CampaignView<'_>> = campaigns
        .iter()
        .map(|campaign| CampaignView {
            campaign,
            left: left(campaign, &stock_key(&campaign.id), campaign.open_stock()),
            prizes_left: left(
                campaign,
                &prize_stock_key(&campaign.id),
                campaign.prize_stock,
            ),
            claimed_by_you: store::counter(&claimed_key(&campaign.id, pseudonym)),
            open: campaign.open_at(now),
        })
        .collect();
    Response::json(&serde_json::json!({ "campaigns": views }))
}

/// What is left of the `share` of `campaign`'s stock counted under `key`: never more than is
/// left of the whole stock.
fn left(campaign: &Campaign, key: &str, share: i64) -> i64 {
    let whole = campaign.stock - store::counter(&issued_key(&campaign.id));
    (share - store::counter(key)).min(whole).max(0)
}

fn stock_key(campaign: &str) -> String {
    format!("stock/{campaign}")
}

fn prize_stock_key(campaign: &str) -> String {
    format!("prize-stock/{campaign}")
}

fn issued_key(campaign: &str) -> String {
    format!("issued/{campaign}")
}

fn claimed_key(campaign: &str, pseudonym: &str) -> String {
    format!("claimed/{campaign}/{pseudonym}")
}

fn coupon_key(code: &str) -> String {
    format!("coupon/{code}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    campaign: String,
    /// A voucher for a coupon of the campaign, won in another scenario.
    voucher: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ExpireJob {
    code: String,
}

#[derive(Serialize)]
struct CouponAnswer<'a> {
    coupon: &'a Coupon,
}

fn claim(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let ClaimBody { campaign, voucher } = request.json()?;
    let claim_key = format!("claim-key/{pseudonym}/{key}");
    // One read for every key the claim may look at that it can name now; the reads below
    // are answered from it.
    store::get_many(&[
        claim_key.clone(),
        stock_key(&campaign),
        prize_stock_key(&campaign),
        issued_key(&campaign),
        claimed_key(&campaign, pseudonym),
    ]);
    if let Some(coupon) = stored_coupon(&claim_key)? {
        return Response::json(&CouponAnswer { coupon: &coupon });
    }
    let campaign = find_campaign(&campaign)?;
    let now = now_ms();
    let prize = voucher.is_some();
    let (coupon, fresh) = match voucher {
        Some(text) => claim_with_voucher(&campaign, &text, pseudonym, now)?,
        None => (claim_bought(&campaign, pseudonym, key, now)?, true),
    };
    if !store::compare_and_swap(&claim_key, None, Some(coupon.code.as_bytes())) {
        return Err(ScenarioError::conflict(
            "claim_in_progress",
            "this claim is being made by another request; retry",
        ));
    }
    if fresh {
        let points = if prize { 0 } else { campaign.price_points };
        events::emit(
            "coupon.claimed",
            &serde_json::json!({"campaign": campaign.id, "points": points, "prize": prize}),
        )?;
    }
    Response::json(&CouponAnswer { coupon: &coupon })
}

/// The coupon whose code is kept under `key`, if any.
fn stored_coupon(key: &str) -> Result<Option<Coupon>, ScenarioError> {
    match store::get(key).and_then(|bytes| String::from_utf8(bytes).ok()) {
        Some(code) => Ok(Some(load(&code)?.ok_or_else(|| missing(&code))?)),
        None => Ok(None),
    }
}

/// An ordinary claim: within the campaign's window, from its open stock, within the
/// customer's limit, for its points price.
fn claim_bought(
    campaign: &Campaign,
    pseudonym: &str,
    key: &str,
    now: i64,
) -> Result<Coupon, ScenarioError> {
    if !campaign.open_at(now) {
        return Err(ScenarioError::refused(
            "campaign_closed",
            "this campaign is not open for claims now",
        ));
    }
    take(
        &stock_key(&campaign.id),
        campaign.open_stock(),
        "all coupons of this campaign are taken",
    )?;
    let limit = Bounds {
        min: 0,
        max: campaign.per_customer_limit,
    };
    store::increment(&claimed_key(&campaign.id, pseudonym), 1, limit).map_err(
        |error| match error {
            IncrementError::OutOfBounds { .. } => ScenarioError::refused(
                "limit_reached",
                format!(
                    "you hold the most coupons of this campaign you may ({})",
                    campaign.per_customer_limit
                ),
            ),
            IncrementError::NotACounter => broken("claimed"),
        },
    )?;
    if campaign.price_points > 0 {
        ledger::spend(
            campaign.price_points,
            &format!("claim/{pseudonym}/{key}"),
            &format!("coupon {}", campaign.id),
        )?;
    }
    issue(campaign, pseudonym, now)
}

/// A prize claim: a voucher another scenario issued (a wheel's coupon prize) for this
/// campaign, honoured once, from the stock kept for prizes, free and outside the customer's
/// limit and the campaign's window (the voucher's own validity counts). The coupon, and
/// whether this claim issued it (`false`: an earlier claim honoured the voucher).
fn claim_with_voucher(
    campaign: &Campaign,
    text: &str,
    pseudonym: &str,
    now: i64,
) -> Result<(Coupon, bool), ScenarioError> {
    let voucher = vouchers::open(text)?;
    let issuers: Vec<String> = config::get("voucher_issuers")?.unwrap_or_default();
    if !issuers.contains(&voucher.issuer) || voucher.label != format!("coupon:{}", campaign.id) {
        return Err(ScenarioError::invalid_input(
            "voucher_not_accepted",
            format!("this voucher is not for a coupon of {:?}", campaign.id),
        ));
    }
    let used_key = format!("voucher/{}", voucher.id);
    if let Some(coupon) = stored_coupon(&used_key)? {
        return Ok((coupon, false));
    }
    take(
        &prize_stock_key(&campaign.id),
        campaign.prize_stock,
        "the coupons this campaign keeps for prizes are all taken",
    )?;
    let coupon = issue(campaign, pseudonym, now)?;
    if !store::compare_and_swap(&used_key, None, Some(coupon.code.as_bytes())) {
        return Err(ScenarioError::conflict(
            "claim_in_progress",
            "this voucher is being claimed by another request; retry",
        ));
    }
    Ok((coupon, true))
}

/// Takes one from the bounded counter `key`: never beyond `stock`, checked again at commit.
fn take(key: &str, stock: i64, sold_out: &str) -> Result<(), ScenarioError> {
    store::increment(key, 1, Bounds { min: 0, max: stock }).map_err(|error| match error {
        IncrementError::OutOfBounds { .. } => ScenarioError::conflict("sold_out", sold_out),
        IncrementError::NotACounter => broken("stock"),
    })?;
    Ok(())
}

/// Issues a coupon of `campaign` to `pseudonym` with a fresh code, lists it among theirs and
/// schedules its expiry. Every coupon, bought or won, counts against the campaign's `stock`,
/// whatever its `prize_stock` was when the others were issued.
fn issue(campaign: &Campaign, pseudonym: &str, now: i64) -> Result<Coupon, ScenarioError> {
    take(
        &issued_key(&campaign.id),
        campaign.stock,
        "all coupons of this campaign are taken",
    )?;
    let expires_at_ms = now + i64::from(campaign.valid_days) * 86_400_000;
    let mut coupon = None;
    for _ in 0..3 {
        let code = format_code(secure_u64()?);
        let candidate = Coupon {
            code: code.clone(),
            campaign: campaign.id.clone(),
            merchant: campaign.merchant.clone(),
            title: campaign.title.clone(),
            owner: pseudonym.to_owned(),
            status: Status::Issued,
            claimed_at_ms: now,
            expires_at_ms,
            min_spend_fen: campaign.min_spend_fen,
            discount: campaign.discount.clone(),
            redeemed_at_ms: None,
            discount_fen: None,
        };
        let bytes = serde_json::to_vec(&candidate).map_err(|_| broken("coupon"))?;
        if store::compare_and_swap(&coupon_key(&code), None, Some(&bytes)) {
            coupon = Some(candidate);
            break;
        }
    }
    let coupon = coupon.ok_or_else(|| {
        ScenarioError::conflict("code_collision", "could not draw a free code; retry")
    })?;
    store::set(
        &format!(
            "mine/{pseudonym}/{:013}-{}",
            coupon.claimed_at_ms, coupon.code
        ),
        coupon.code.as_bytes(),
    );
    let expire = ExpireJob {
        code: coupon.code.clone(),
    };
    jobs::schedule(
        "expire",
        &expire,
        When::AtMs(expires_at_ms),
        &format!("expire/{}", coupon.code),
    )?;
    Ok(coupon)
}

/// 64 bits from the host's CSPRNG (WASI random).
fn secure_u64() -> Result<u64, ScenarioError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|_| ScenarioError::refused("random_unavailable", "no secure randomness"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn load(code: &str) -> Result<Option<Coupon>, ScenarioError> {
    store::get_json(&coupon_key(code))
}

fn missing(code: &str) -> ScenarioError {
    ScenarioError::refused("coupon_not_found", format!("no coupon {code:?} here"))
}

fn broken(what: &str) -> ScenarioError {
    ScenarioError::conflict("data_broken", format!("the stored {what} is not readable"))
}

fn my_coupons(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let after = request.page_after()?;
    let prefix = format!("mine/{pseudonym}/");
    let (keys, next) = store::page(&prefix, after.as_deref(), PAGE);
    let now = now_ms();
    let mut coupons: Vec<Coupon> = store::follow_json(&keys, coupon_key)?;
    for coupon in &mut coupons {
        coupon.status = coupon.status_at(now);
    }
    Response::json(&serde_json::json!({ "coupons": coupons, "next": next }))
}

fn merchant(request: &Request) -> Result<&str, ScenarioError> {
    match request.caller() {
        Caller::Partner { partner_id } => Ok(partner_id),
        _ => Err(ScenarioError::refused(
            "merchant_required",
            "coupons are verified and redeemed by the merchant's till (the partner API)",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    code: String,
    spend_fen: Option<i64>,
}

fn verify(request: &Request) -> Result<Response, ScenarioError> {
    let merchant = merchant(request)?;
    let VerifyBody { code, spend_fen } = request.json()?;
    let code = logic::normalize_code(&code);
    let coupon = load(&code)?
        .filter(|coupon| coupon.merchant == merchant)
        .ok_or_else(|| missing(&code))?;
    let now = now_ms();
    let redeemable = coupon.status_at(now) == Status::Issued;
    let discount_fen = spend_fen.map(|spend| coupon.discount_for(spend));
    Response::json(&serde_json::json!({
        "coupon": coupon,
        "redeemable": redeemable,
        "discount_fen": discount_fen,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    code: String,
    spend_fen: i64,
}

#[derive(Serialize, Deserialize)]
struct Redemption {
    code: String,
    discount_fen: i64,
    pay_fen: i64,
}

fn redeem(request: &Request) -> Result<Response, ScenarioError> {
    let merchant = merchant(request)?;
    let key = request.require_idempotency_key()?;
    let RedeemBody { code, spend_fen } = request.json()?;
    let code = logic::normalize_code(&code);
    let redeem_key = format!("redeem-key/{merchant}/{key}");
    if let Some(earlier) = store::get_json::<Redemption>(&redeem_key)? {
        // A retry answers the first redemption; the key sent with another coupon or spend is
        // a till's mistake, and answering the first would tell it the wrong coupon was taken.
        if earlier.code != code || earlier.discount_fen + earlier.pay_fen != spend_fen {
            return Err(ScenarioError::conflict(
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key redeemed coupon {} for a spend of {} fen; send a new \
                     key for another redemption",
                    earlier.code,
                    earlier.discount_fen + earlier.pay_fen
                ),
            ));
        }
        return Response::json(&earlier);
    }
    let stored = store::get(&coupon_key(&code)).ok_or_else(|| missing(&code))?;
    let coupon: Coupon = serde_json::from_slice(&stored).map_err(|_| broken("coupon"))?;
    if coupon.merchant != merchant {
        return Err(missing(&code));
    }
    let now = now_ms();
    match coupon.status_at(now) {
        Status::Issued => {}
        Status::Redeemed => {
            return Err(ScenarioError::conflict(
                "already_redeemed",
                "this coupon was redeemed before",
            ));
        }
        Status::Expired => {
            return Err(ScenarioError::refused("expired", "this coupon has expired"));
        }
    }
    if spend_fen < coupon.min_spend_fen {
        return Err(ScenarioError::refused(
            "below_min_spend",
            format!(
                "this coupon needs a spend of at least {} fen",
                coupon.min_spend_fen
            ),
        ));
    }
    let discount_fen = coupon.discount_for(spend_fen);
    let redeemed = Coupon {
        status: Status::Redeemed,
        redeemed_at_ms: Some(now),
        discount_fen: Some(discount_fen),
        ..coupon
    };
    let bytes = serde_json::to_vec(&redeemed).map_err(|_| broken("coupon"))?;
    if !store::compare_and_swap(&coupon_key(&code), Some(&stored), Some(&bytes)) {
        return Err(ScenarioError::conflict(
            "already_redeemed",
            "this coupon was redeemed meanwhile",
        ));
    }
    let redemption = Redemption {
        code,
        discount_fen,
        pay_fen: spend_fen - discount_fen,
    };
    store::set_json(&redeem_key, &redemption)?;
    events::emit(
        "coupon.redeemed",
        &serde_json::json!({"campaign": redeemed.campaign, "discount_fen": discount_fen}),
    )?;
    Response::json(&redemption)
}

/// Marks an unused coupon expired once its time has come (a retried job finds it done).
fn expire(code: &str) -> Result<(), ScenarioError> {
    let Some(stored) = store::get(&coupon_key(code)) else {
        return Ok(());
    };
    let coupon: Coupon = serde_json::from_slice(&stored).map_err(|_| broken("coupon"))?;
    if coupon.status != Status::Issued || now_ms() < coupon.expires_at_ms {
        return Ok(());
    }
    let expired = Coupon {
        status: Status::Expired,
        ..coupon
    };
    let bytes = serde_json::to_vec(&expired).map_err(|_| broken("coupon"))?;
    // A redemption that got there first wins; then there is nothing to expire.
    store::compare_and_swap(&coupon_key(code), Some(&stored), Some(&bytes));
    Ok(())
}
