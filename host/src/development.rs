//! Development mode's data: what `lifecircle serve` with a plugin directory seeds so that the
//! reference scenarios work out of the box, once per database. Budgets for every development
//! plugin, a few customers with sandbox bank accounts and welcome points, and the partners the
//! reference plugins' development settings name (merchant tills, a fulfilment partner) with
//! keys derived from a secret of this database, so they are the same at every start.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AppState;
use crate::config::Connector;
use crate::identity::{customers, partners};
use crate::ledger::{self, ADMIN_SCOPE, Operation, Request};
use crate::payments::sandbox;

/// Points each development plugin's budget gets.
pub const BUDGET_POINTS: i64 = 1_000_000;

/// The development customers.
pub const CUSTOMERS: [&str; 2] = ["demo-customer", "demo-customer-2"];

/// Points each development customer starts with, from the points mall's budget (when the mall
/// runs), so the mall can be tried at once.
pub const WELCOME_POINTS: i64 = 1_500;

/// The partners the reference plugins' development settings name: (partner, plugin, name).
const PARTNERS: [(&str, &str, &str); 4] = [
    ("tea-house", "merchant-coupons", "Minnan Tea House (till)"),
    ("noodle-bar", "merchant-coupons", "Shacha Noodle Bar (till)"),
    ("cafe-chain", "points-mall", "Cafe chain (vouchers)"),
    ("gift-logistics", "points-mall", "Gift logistics (delivery)"),
];

/// A development partner and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerKey {
    /// The partner id.
    pub partner: &'static str,
    /// The plugin it calls.
    pub plugin: &'static str,
    /// Its API key.
    pub key: String,
}

/// Seeds development data in `region` for the plugins `running` there; safe to run at every
/// start (each step is idempotent). Returns the development partners' keys.
///
/// The budgets are seeded whenever the host serves a plugin directory. Customers, welcome
/// points and partner keys only when customer tokens are signed with the development secret
/// (no token key configured): a host that trusts the bank's tokens gets no demo customers and
/// no partner keys anyone could read off its output.
pub async fn seed(
    state: &AppState,
    region: &str,
    running: &[&str],
) -> anyhow::Result<Vec<PartnerKey>> {
    let now_ms = ledger::now_ms();
    let partner_secret = state.db.secret("development-partners").await?;
    let mut transaction = state.db.write.begin().await?;
    let mut conn = transaction.conn();
    for plugin in running {
        let key = format!("dev-seed/{plugin}/{region}");
        let fund = Operation::Fund {
            amount: BUDGET_POINTS,
        };
        apply(&mut conn, &key, "development budget", plugin, region, &fund).await?;
    }
    let people = state.development_secret;
    for customer in CUSTOMERS.into_iter().filter(|_| people) {
        customers::enroll(&mut conn, customer, region, "standard", now_ms).await?;
        if state.config.payments.connector == Connector::Sandbox {
            let payments = &state.config.payments;
            let currency = payments.currencies.first().map_or("CNY", String::as_str);
            let opening = payments.sandbox_opening_balance_minor;
            sandbox::open(&mut conn, customer, currency, opening, now_ms).await?;
        }
        if running.contains(&"points-mall") {
            let welcome = Operation::Award {
                customer: customer.to_owned(),
                amount: WELCOME_POINTS,
                expires_at_ms: now_ms + 365 * 86_400_000,
            };
            let key = format!("dev-welcome/{customer}/{region}");
            apply(
                &mut conn,
                &key,
                "welcome points",
                "points-mall",
                region,
                &welcome,
            )
            .await?;
        }
    }
    let mut keys = Vec::new();
    for (partner, plugin, name) in PARTNERS {
        if !people || !running.contains(&plugin) {
            continue;
        }
        let existing = partners::get(&mut conn, partner).await?;
        let mut plugins = existing.map(|p| p.plugins).unwrap_or_default();
        if !plugins.iter().any(|p| p == plugin) {
            plugins.push(plugin.to_owned());
        }
        let record = partners::Partner {
            id: partner.to_owned(),
            name: name.to_owned(),
            plugins,
        };
        partners::put(&mut conn, &record, now_ms).await?;
        let key = partner_key(&partner_secret, partner);
        partners::add_key(&mut conn, partner, "development", &key, now_ms).await?;
        // A key named "development" made another way keeps its place: then this one is not
        // the partner's, and is not shown.
        let is_theirs = partners::find(&mut conn, &key)
            .await?
            .is_some_and(|found| found.id == partner);
        if !is_theirs {
            continue;
        }
        keys.push(PartnerKey {
            partner,
            plugin,
            key,
        });
    }
    transaction.commit().await?;
    Ok(keys)
}

async fn apply(
    conn: &mut crate::db::Conn<'_>,
    key: &str,
    memo: &str,
    plugin: &str,
    region: &str,
    operation: &Operation,
) -> anyhow::Result<()> {
    let request = Request {
        scope: ADMIN_SCOPE,
        key,
        now_ms: ledger::now_ms(),
        memo,
        id: None,
    };
    ledger::apply(conn, &request, plugin, region, operation)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(())
}

/// The development key of `partner`: the same at every start on one database.
fn partner_key(secret: &[u8], partner: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(partner.as_bytes());
    format!(
        "lcp_dev_{}",
        hex::encode(&mac.finalize().into_bytes()[..16])
    )
}
