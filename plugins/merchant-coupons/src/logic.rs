//! The pure parts of the coupons scenario: campaigns, coupons, discounts and codes. No host
//! calls, so they are unit-tested natively.

use lifecircle_sdk::ScenarioError;
use serde::{Deserialize, Serialize};

/// A campaign, as the region's settings give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// Its id, unique in the region.
    pub id: String,
    /// The partner id of the merchant whose till redeems its coupons.
    pub merchant: String,
    /// What customers read.
    pub title: String,
    /// What customers read in Chinese.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_zh: Option<String>,
    /// The discount.
    pub discount: Discount,
    /// The least a customer must spend for the coupon to apply, in fen.
    #[serde(default)]
    pub min_spend_fen: i64,
    /// Coupons the campaign issues at most.
    pub stock: i64,
    /// Of `stock`, the coupons kept for prizes won in other scenarios (vouchers): ordinary
    /// claims take at most `stock - prize_stock`.
    #[serde(default)]
    pub prize_stock: i64,
    /// Coupons one customer may claim at most.
    pub per_customer_limit: i64,
    /// Days a coupon stays valid after it is claimed.
    pub valid_days: u32,
    /// Claims from this time on (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at_ms: Option<i64>,
    /// Claims before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<i64>,
    /// Points a claim costs (0: free).
    #[serde(default)]
    pub price_points: i64,
}

impl Campaign {
    /// Checks what the settings schema cannot: a discount's kind has its amounts.
    pub fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |message: String| Err(ScenarioError::refused("config_invalid", message));
        match &self.discount {
            Discount {
                kind: DiscountKind::Fixed,
                fen: Some(fen),
                ..
            } if *fen > 0 => {}
            Discount {
                kind: DiscountKind::Percent,
                percent: Some(percent),
                ..
            } if (1..=100).contains(percent) => {}
            _ => {
                return invalid(format!(
                    "campaign {:?}: a fixed discount needs `fen`, a percent discount `percent` \
                     (1 to 100)",
                    self.id
                ));
            }
        }
        if self.stock < 0
            || !(0..=self.stock).contains(&self.prize_stock)
            || self.per_customer_limit < 1
            || self.price_points < 0
        {
            return invalid(format!(
                "campaign {:?}: stock and price_points are not negative, prize_stock is 0 to \
                 stock, per_customer_limit at least 1",
                self.id
            ));
        }
        Ok(())
    }

    /// The coupons ordinary claims may take: the stock less what is kept for prizes.
    pub fn open_stock(&self) -> i64 {
        self.stock - self.prize_stock
    }

    /// Whether claims are open at `now_ms`.
    pub fn open_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms.is_none_or(|start| now_ms >= start)
            && self.ends_at_ms.is_none_or(|end| now_ms < end)
    }
}

/// How much a coupon takes off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// `fixed` or `percent`.
    pub kind: DiscountKind,
    /// A fixed discount, in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fen: Option<i64>,
    /// A percent discount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// The most a percent discount takes off, in fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_fen: Option<i64>,
}

/// The kind of a discount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscountKind {
    /// A fixed amount off.
    Fixed,
    /// A share of the spend off, optionally capped.
    Percent,
}

/// Where a coupon stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Claimed, not used.
    Issued,
    /// Used at the till.
    Redeemed,
    /// Not used in time.
    Expired,
}

/// A claimed coupon, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Its code.
    pub code: String,
    /// The campaign.
    pub campaign: String,
    /// The merchant whose till redeems it.
    pub merchant: String,
    /// The campaign's title.
    pub title: String,
    /// The customer's pseudonym.
    pub owner: String,
    /// Where it stands.
    pub status: Status,
    /// When it was claimed.
    pub claimed_at_ms: i64,
    /// When it expires.
    pub expires_at_ms: i64,
    /// The least spend it applies to.
    pub min_spend_fen: i64,
    /// What it takes off.
    pub discount: Discount,
    /// When it was redeemed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed_at_ms: Option<i64>,
    /// What it took off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_fen: Option<i64>,
}

impl Coupon {
    /// Its status at `now_ms`: an issued coupon past its expiry is expired, even before the
    /// expiry job has run.
    pub fn status_at(&self, now_ms: i64) -> Status {
        match self.status {
            Status::Issued if now_ms >= self.expires_at_ms => Status::Expired,
            status => status,
        }
    }

    /// What it takes off a spend of `spend_fen`: never more than the spend.
    pub fn discount_for(&self, spend_fen: i64) -> i64 {
        let spend = spend_fen.max(0);
        let off = match self.discount.kind {
            DiscountKind::Fixed => self.discount.fen.unwrap_or(0),
            DiscountKind::Percent => {
                let share = spend * self.discount.percent.unwrap_or(0) / 100;
                self.discount.cap_fen.map_or(share, |cap| share.min(cap))
            }
        };
        off.clamp(0, spend)
    }
}

/// Crockford's base32: no I, L, O or U, so a code read aloud at the till is not misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 12-character code from the low 60 bits of `random`.
pub fn format_code(random: u64) -> String {
    (0..12)
        .map(|i| ALPHABET[((random >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// A code as typed at the till: uppercase, without spaces or dashes, with the letters Crockford
/// reads as digits (`O` → 0, `I`/`L` → 1).
pub fn normalize_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coupon(discount: Discount) -> Coupon {
        Coupon {
            code: "C".into(),
            campaign: "c".into(),
            merchant: "m".into(),
            title: "t".into(),
            owner: "o".into(),
            status: Status::Issued,
            claimed_at_ms: 0,
            expires_at_ms: 1_000,
            min_spend_fen: 0,
            discount,
            redeemed_at_ms: None,
            discount_fen: None,
        }
    }

    #[test]
    fn discounts_never_exceed_the_spend_or_the_cap() {
        let fixed = coupon(Discount {
            kind: DiscountKind::Fixed,
            fen: Some(1000),
            percent: None,
            cap_fen: None,
        });
        assert_eq!(fixed.discount_for(5000), 1000);
        assert_eq!(fixed.discount_for(600), 600);
        let percent = coupon(Discount {
            kind: DiscountKind::Percent,
            fen: None,
            percent: Some(20),
            cap_fen: Some(1500),
        });
        assert_eq!(percent.discount_for(5000), 1000);
        assert_eq!(percent.discount_for(50_000), 1500);
        assert_eq!(percent.discount_for(-5), 0);
    }

    #[test]
    fn an_issued_coupon_past_its_time_is_expired() {
        let issued = coupon(Discount {
            kind: DiscountKind::Fixed,
            fen: Some(1),
            percent: None,
            cap_fen: None,
        });
        assert_eq!(issued.status_at(999), Status::Issued);
        assert_eq!(issued.status_at(1_000), Status::Expired);
        let redeemed = Coupon {
            status: Status::Redeemed,
            ..issued
        };
        assert_eq!(redeemed.status_at(5_000), Status::Redeemed);
    }

    #[test]
    fn codes_are_twelve_unambiguous_characters_and_read_back() {
        let code = format_code(u64::MAX);
        assert_eq!(code.len(), 12);
        assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(format_code(1), format_code(2));
        assert_eq!(normalize_code("ab1o-il2 z"), "AB1011 2Z".replace(' ', ""));
    }

    #[test]
    fn a_discount_must_have_its_amount() {
        let mut campaign = Campaign {
            id: "c".into(),
            merchant: "m".into(),
            title: "t".into(),
            title_zh: None,
            discount: Discount {
                kind: DiscountKind::Percent,
                fen: Some(100),
                percent: None,
                cap_fen: None,
            },
            min_spend_fen: 0,
            stock: 1,
            prize_stock: 0,
            per_customer_limit: 1,
            valid_days: 1,
            starts_at_ms: None,
            ends_at_ms: None,
            price_points: 0,
        };
        assert!(campaign.check().is_err());
        campaign.discount.percent = Some(10);
        assert!(campaign.check().is_ok());
        campaign.prize_stock = 2;
        assert!(
            campaign.check().is_err(),
            "more kept for prizes than the stock"
        );
        campaign.prize_stock = 1;
        assert!(campaign.check().is_ok());
        assert_eq!(campaign.open_stock(), 0);
    }
}
