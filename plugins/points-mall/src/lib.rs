//! Points mall (积分商城): customers spend points on vouchers and gifts. Written against
//! `lifecircle-sdk` only.
//!
//! | Action | Caller | Body | Answer |
//! |--------|--------|------|--------|
//! | `catalog` | customer | — | `{"items": [{...item, "left": n, "redeemed_by_you": n}]}` |
//! | `redeem` | customer, `Idempotency-Key` | `{"item": id, "address"?: "..."}` | `{"order": {...}}` (a virtual item's code included) |
//! | `orders` | customer | `{"after"?: cursor}` | `{"orders": [...], "next": cursor or null}` |
//! | `cancel` | customer, `Idempotency-Key` | `{"order": id}` | `{"order": {...}}`, points back |
//! | `fulfil` | partner (the item's), `Idempotency-Key` | `{"order": id, "tracking"?: "..."}` | `{"order": {...}}` |
//!
//! Guarantees:
//! - A redemption holds the points, takes the stock and the customer's allowance (bounded
//!   store counters, checked again at commit), then captures the hold; if any step fails the
//!   hold is released and, the call failing, nothing of it lands. Of two customers racing for
//!   the last item one gets it; the other keeps its points.
//! - A physical order can be cancelled until its partner fulfils it: the capture is reversed
//!   (the points go back to the lots they came from, with their expiry) and the stock and
//!   allowance are given back. Order, reversal and stock change land together.
//! - A virtual item is fulfilled at once with a code from the host's CSPRNG; it cannot be
//!   cancelled.
//! - Every write is idempotent by the request's `Idempotency-Key`.

use lifecircle_sdk::store::{self, Bounds, IncrementError};
use lifecircle_sdk::{
    Caller, Request, Response, Scenario, ScenarioError, clock, config, events, ledger,
};
use serde::{Deserialize, Serialize};

/// Orders one `orders` page lists.
const PAGE: u32 = 50;

/// How long a redemption holds the points before it captures them (within the call).
const HOLD_SECONDS: u32 = 60;

/// An item of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    id: String,
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title_zh: Option<String>,
    price_points: i64,
    stock: i64,
    per_customer_limit: i64,
    kind: Kind,
    partner: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Virtual,
    Physical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OrderStatus {
    /// A physical item waits for its partner.
    AwaitingFulfilment,
    /// Delivered (a virtual item at once).
    Fulfilled,
    /// Cancelled, points back.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    id: String,
    item: String,
    title: String,
    owner: String,
    points: i64,
    capture: String,
    status: OrderStatus,
    partner: String,
    created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reversal: Option<String>,
}

struct PointsMall;

impl Scenario for PointsMall {
    fn handle(request: Request) -> Result<Response, ScenarioError> {
        match request.action() {
            "catalog" => catalog(&request),
            "redeem" => redeem(&request),
            "orders" => orders(&request),
            "cancel" => cancel(&request),
            "fulfil" => fulfil(&request),
            _ => Err(ScenarioError::unknown_action()),
        }
    }
}

lifecircle_sdk::export!(PointsMall);

fn now_ms() -> i64 {
    clock::now().unix_milliseconds() as i64
}

fn items() -> Result<Vec<Item>, ScenarioError> {
    Ok(config::get("items")?.unwrap_or_default())
}

fn sold_key(item: &str) -> String {
    format!("sold/{item}")
}

fn bought_key(item: &str, pseudonym: &str) -> String {
    format!("bought/{item}/{pseudonym}")
}

fn order_key(id: &str) -> String {
    format!("order/{id}")
}

fn broken(what: &str) -> ScenarioError {
    ScenarioError::conflict("data_broken", format!("the stored {what} is not readable"))
}

#[derive(Serialize)]
struct ItemView<'a> {
    #[serde(flatten)]
    item: &'a Item,
    left: i64,
    redeemed_by_you: i64,
}

fn catalog(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let items = items()?;
    let views: Vec<ItemView<'_>> = items
        .iter()
        .map(|item| ItemView {
            item,
            left: (item.stock - store::counter(&sold_key(&item.id))).max(0),
            redeemed_by_you: store::counter(&bought_key(&item.id, pseudonym)),
        })
        .collect();
    Response::json(&serde_json::json!({ "items": views }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    item: String,
    address: Option<String>,
}

#[derive(Serialize)]
struct OrderAnswer<'a> {
    order: &'a Order,
}

fn redeem(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let RedeemBody { item, address } = request.json()?;
    let order_by_key = format!("order-key/{pseudonym}/{key}");
    if let Some(id) = store::get(&order_by_key).and_then(|bytes| String::from_utf8(bytes).ok()) {
        let order: Order = store::get_json(&order_key(&id))?.ok_or_else(|| broken("order"))?;
        return Response::json(&OrderAnswer { order: &order });
    }
    let item = items()?
        .into_iter()
        .find(|candidate| candidate.id == item)
        .ok_or_else(|| {
            ScenarioError::invalid_input("item_not_found", format!("no item {item:?} here"))
        })?;
    if item.kind == Kind::Physical
        && address
            .as_deref()
            .is_none_or(|a| a.trim().is_empty() || a.len() > 500)
    {
        return Err(ScenarioError::invalid_input(
            "address_required",
            "a physical item needs a delivery address (at most 500 bytes)",
        ));
    }
    // Hold the points first: a customer without them is told so before any stock moves.
    let hold = ledger::hold(
        item.price_points,
        HOLD_SECONDS,
        &format!("hold/{pseudonym}/{key}"),
    )?;
    let taken = take(&item, pseudonym);
    if let Err(refusal) = taken {
        ledger::release(&hold, &format!("release/{pseudonym}/{key}"))?;
        return Err(refusal);
    }
    let capture = ledger::capture(
        &hold,
        item.price_points,
        &format!("capture/{pseudonym}/{key}"),
    )?;
    let id = format!("{:016x}", secure_u64()?);
    let code = (item.kind == Kind::Virtual).then(|| format!("{:016X}", secure_u64().unwrap_or(0)));
    let order = Order {
        id: id.clone(),
        item: item.id.clone(),
        title: item.title.clone(),
        owner: pseudonym.to_owned(),
        points: item.price_points,
        capture,
        status: match item.kind {
            Kind::Virtual => OrderStatus::Fulfilled,
            Kind::Physical => OrderStatus::AwaitingFulfilment,
        },
        partner: item.partner.clone(),
        created_at_ms: now_ms(),
        code,
        address,
        tracking: None,
        reversal: None,
    };
    let bytes = serde_json::to_vec(&order).map_err(|_| broken("order"))?;
    if !store::compare_and_swap(&order_key(&id), None, Some(&bytes)) {
        return Err(ScenarioError::conflict("order_collision", "retry"));
    }
    store::set(
        &format!("orders/{pseudonym}/{:013}-{id}", order.created_at_ms),
        id.as_bytes(),
    );
    if !store::compare_and_swap(&order_by_key, None, Some(id.as_bytes())) {
        return Err(ScenarioError::conflict(
            "redeem_in_progress",
            "this redemption is being made by another request; retry",
        ));
    }
    events::emit(
        "mall.redeemed",
        &serde_json::json!({"item": item.id, "points": item.price_points}),
    )?;
    Response::json(&OrderAnswer { order: &order })
}

/// Takes one of `item`'s stock and one of the customer's allowance.
fn take(item: &Item, pseudonym: &str) -> Result<(), ScenarioError> {
    let stock = Bounds {
        min: 0,
        max: item.stock,
    };
    store::increment(&sold_key(&item.id), 1, stock).map_err(|error| match error {
        IncrementError::OutOfBounds { .. } => {
            ScenarioError::conflict("sold_out", "this item is sold out")
        }
        IncrementError::NotACounter => broken("stock"),
    })?;
    let allowance = Bounds {
        min: 0,
        max: item.per_customer_limit,
    };
    store::increment(&bought_key(&item.id, pseudonym), 1, allowance).map_err(
        |error| match error {
            IncrementError::OutOfBounds { .. } => ScenarioError::refused(
                "limit_reached",
                format!(
                    "you have redeemed this item as often as you may ({})",
                    item.per_customer_limit
                ),
            ),
            IncrementError::NotACounter => broken("allowance"),
        },
    )?;
    Ok(())
}

/// 64 bits from the host's CSPRNG (WASI random).
fn secure_u64() -> Result<u64, ScenarioError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|_| ScenarioError::refused("random_unavailable", "no secure randomness"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn orders(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let after = request.page_after()?;
    let (keys, next) = store::page(&format!("orders/{pseudonym}/"), after.as_deref(), PAGE);
    let orders: Vec<Order> = store::follow_json(&keys, order_key)?;
    Response::json(&serde_json::json!({ "orders": orders, "next": next }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    order: String,
}

fn cancel(request: &Request) -> Result<Response, ScenarioError> {
    let pseudonym = request.require_customer()?;
    let key = request.require_idempotency_key()?;
    let CancelBody { order: id } = request.json()?;
    let stored = store::get(&order_key(&id)).ok_or_else(|| not_found(&id))?;
    let order: Order = serde_json::from_slice(&stored).map_err(|_| broken("order"))?;
    if order.owner != pseudonym {
        return Err(not_found(&id));
    }
    match order.status {
        OrderStatus::AwaitingFulfilment => {}
        OrderStatus::Cancelled => return Response::json(&OrderAnswer { order: &order }),
        OrderStatus::Fulfilled => {
            return Err(ScenarioError::conflict(
                "already_fulfilled",
                "this order is fulfilled and can no longer be cancelled",
            ));
        }
    }
    let reversal = ledger::reverse(&order.capture, &format!("cancel/{pseudonym}/{key}"))?;
    let back = Bounds {
        min: 0,
        max: i64::MAX,
    };
    store::increment(&sold_key(&order.item), -1, back).map_err(|_| broken("stock"))?;
    store::increment(&bought_key(&order.item, pseudonym), -1, back)
        .map_err(|_| broken("allowance"))?;
    let cancelled = Order {
        status: OrderStatus::Cancelled,
        reversal: Some(reversal),
        ..order
    };
    let bytes = serde_json::to_vec(&cancelled).map_err(|_| broken("order"))?;
    if !store::compare_and_swap(&order_key(&id), Some(&stored), Some(&bytes)) {
        return Err(ScenarioError::conflict(
            "order_changed",
            "the order changed meanwhile (fulfilled or cancelled); look again",
        ));
    }
    events::emit(
        "mall.cancelled",
        &serde_json::json!({"item": cancelled.item, "points": cancelled.points}),
    )?;
    Response::json(&OrderAnswer { order: &cancelled })
}

fn not_found(id: &str) -> ScenarioError {
    ScenarioError::refused("order_not_found", format!("no order {id:?} of yours"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FulfilBody {
    order: String,
    tracking: Option<String>,
}

fn fulfil(request: &Request) -> Result<Response, ScenarioError> {
    let Caller::Partner { partner_id } = request.caller() else {
        return Err(ScenarioError::refused(
            "partner_required",
            "orders are fulfilled by the item's partner (the partner API)",
        ));
    };
    request.require_idempotency_key()?;
    let FulfilBody {
        order: id,
        tracking,
    } = request.json()?;
    let stored = store::get(&order_key(&id)).ok_or_else(|| not_found(&id))?;
    let order: Order = serde_json::from_slice(&stored).map_err(|_| broken("order"))?;
    if &order.partner != partner_id {
        return Err(not_found(&id));
    }
    match order.status {
        OrderStatus::AwaitingFulfilment => {}
        OrderStatus::Fulfilled => return Response::json(&OrderAnswer { order: &order }),
        OrderStatus::Cancelled => {
            return Err(ScenarioError::conflict(
                "order_cancelled",
                "the customer cancelled this order",
            ));
        }
    }
    let fulfilled = Order {
        status: OrderStatus::Fulfilled,
        tracking,
        ..order
    };
    let bytes = serde_json::to_vec(&fulfilled).map_err(|_| broken("order"))?;
    if !store::compare_and_swap(&order_key(&id), Some(&stored), Some(&bytes)) {
        return Err(ScenarioError::conflict(
            "order_changed",
            "the order changed meanwhile; look again",
        ));
    }
    Response::json(&OrderAnswer { order: &fulfilled })
}
