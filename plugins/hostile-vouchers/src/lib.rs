//! Hostile plugin proving the **vouchers** rules.
//!
//! - Action `mint` issues a voucher `{"recipient", "label", "days"}`: asking for longer than
//!   `vouchers.validity_days_max` proves that limit (the refusal is passed on); a look-alike
//!   of another scenario's prize (`coupon:tea-10` for `merchant-coupons`) proves the recipient
//!   only honours issuers it trusts.
//! - Action `open` opens `{"voucher": text}`, a voucher meant for another plugin: proves a
//!   plugin cannot read or use another's vouchers.

use std::time::Duration;

use lifecircle_sdk::{Request, Response, Scenario, ScenarioError, vouchers};
use serde::Deserialize;

struct HostileVouchers;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    recipient: String,
    label: String,
    days: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    voucher: String,
}

impl Scenario for HostileVouchers {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "mint" => {
                let MintBody {
                    recipient,
                    label,
                    days,
                } = request.json()?;
                let valid_for = Duration::from_secs(days.saturating_mul(86_400));
                let voucher = vouchers::issue(&recipient, &label, valid_for)?;
                Response::json(&serde_json::json!({ "voucher": voucher }))
            }
            "open" => {
                let OpenBody { voucher } = request.json()?;
                let opened = vouchers::open(&voucher)?;
                Response::json(
                    &serde_json::json!({ "issuer": opened.issuer, "label": opened.label }),
                )
            }
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(HostileVouchers);
