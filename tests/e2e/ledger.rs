//! The points ledger on each database backend: concurrent transactions against one account,
//! idempotency, lots and expiry, holds and reversals. After every test the invariants are
//! checked from scratch: balances sum to zero, no customer or budget is negative, every
//! balance equals its postings and every customer's balance equals its lots.

use lifecircle::db::Pool;
use lifecircle::ledger::{self, ADMIN_SCOPE, Batch, LedgerError, Operation, Request, Write};
use lifecircle_tests::{Backend, TestDb, on_each_backend};

const PLUGIN: &str = "points-demo";
const REGION: &str = "cn-fj";
const T0: i64 = 1_800_000_000_000;
const FAR: i64 = T0 + 365 * 24 * 3600 * 1000;

/// One ledger operation, run in its own transaction.
enum Op<'a> {
    Fund(i64),
    Award {
        customer: &'a str,
        amount: i64,
        expires_at_ms: i64,
    },
    Spend {
        customer: &'a str,
        amount: i64,
    },
    Hold {
        customer: &'a str,
        amount: i64,
        expires_at_ms: i64,
    },
    Capture {
        hold: &'a str,
        amount: i64,
    },
    Release {
        hold: &'a str,
    },
    Reverse {
        posting: &'a str,
    },
}

/// Runs `op` with idempotency key `key` at `now_ms` in a transaction committed only if it
/// succeeds.
async fn run(pool: &Pool, key: &str, now_ms: i64, op: Op<'_>) -> Result<String, LedgerError> {
    let mut transaction = pool.begin().await?;
    let scope = if matches!(op, Op::Fund(_)) {
        ADMIN_SCOPE
    } else {
        PLUGIN
    };
    let request = Request {
        scope,
        key,
        now_ms,
        memo: "test",
        id: None,
    };
    let operation = match op {
        Op::Fund(amount) => Operation::Fund { amount },
        Op::Award {
            customer,
            amount,
            expires_at_ms,
        } => Operation::Award {
            customer: customer.into(),
            amount,
            expires_at_ms,
        },
        Op::Spend { customer, amount } => Operation::Spend {
            customer: customer.into(),
            amount,
        },
        Op::Hold {
            customer,
            amount,
            expires_at_ms,
        } => Operation::Hold {
            customer: customer.into(),
            amount,
            expires_at_ms,
        },
        Op::Capture { hold, amount } => Operation::Capture {
            hold: hold.into(),
            amount,
        },
        Op::Release { hold } => Operation::Release { hold: hold.into() },
        Op::Reverse { posting } => Operation::Reverse {
            posting: posting.into(),
        },
    };
    let result = ledger::apply(
        &mut transaction.conn(),
        &request,
        PLUGIN,
        REGION,
        &operation,
    )
    .await;
    if result.is_ok() {
        transaction.commit().await?;
    }
    result
}

async fn balance(pool: &Pool, customer: &str, now_ms: i64) -> ledger::Balance {
    let mut connection = pool.acquire().await.expect("connection");
    ledger::balance(&mut connection.conn(), customer, now_ms)
        .await
        .expect("balance")
}

async fn budget(pool: &Pool) -> i64 {
    let mut connection = pool.acquire().await.expect("connection");
    let account = ledger::Account::Budget {
        plugin_id: PLUGIN.into(),
        region: REGION.into(),
    };
    ledger::account_balance(&mut connection.conn(), &account)
        .await
        .expect("balance")
}

/// The stored status of `hold`.
async fn hold_status(pool: &Pool, hold: &str) -> String {
    let mut connection = pool.acquire().await.expect("connection");
    let state = ledger::hold_state(&mut connection.conn(), PLUGIN, hold)
        .await
        .expect("read")
        .expect("the hold");
    state.status
}

async fn assert_invariants(pool: &Pool) {
    let mut connection = pool.acquire().await.expect("connection");
    let broken = ledger::audit_invariants(&mut connection.conn())
        .await
        .expect("audit");
    assert!(broken.is_empty(), "ledger invariants broken: {broken:?}");
}

on_each_backend! {
    async fn two_hundred_concurrent_spends_of_one_against_a_balance_of_a_hundred() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "award", T0, Op::Award { customer: "alice", amount: 100, expires_at_ms: FAR })
            .await
            .expect("award");
        let spends = (0..200).map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                run(&pool, &format!("spend-{i}"), T0, Op::Spend { customer: "alice", amount: 1 }).await
            })
        });
        let results: Vec<_> = futures::future::join_all(spends)
            .await
            .into_iter()
            .map(|joined| joined.expect("task"))
            .collect();
        let succeeded = results.iter().filter(|r| r.is_ok()).count();
        let insufficient = results
            .iter()
            .filter(|r| matches!(r, Err(LedgerError::PointsInsufficient { .. })))
            .count();
        assert_eq!((succeeded, insufficient), (100, 100), "{:?}", results.iter().find(|r| r.is_err()));
        let after = balance(&db.pool, "alice", T0).await;
        assert_eq!((after.total, after.available), (0, 0));
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn two_hundred_concurrent_awards_of_ten_from_a_budget_of_a_thousand() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(1_000)).await.expect("fund");
        let awards = (0..200).map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let customer = format!("customer-{}", i % 7);
                run(
                    &pool,
                    &format!("award-{i}"),
                    T0,
                    Op::Award { customer: &customer, amount: 10, expires_at_ms: FAR },
                )
                .await
            })
        });
        let results: Vec<_> = futures::future::join_all(awards)
            .await
            .into_iter()
            .map(|joined| joined.expect("task"))
            .collect();
        let succeeded = results.iter().filter(|r| r.is_ok()).count();
        let exhausted = results
            .iter()
            .filter(|r| matches!(r, Err(LedgerError::BudgetExhausted { .. })))
            .count();
        assert_eq!((succeeded, exhausted), (100, 100));
        assert_eq!(budget(&db.pool).await, 0);
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn a_retried_write_posts_once_and_the_same_key_for_another_amount_is_refused() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        assert_eq!(
            run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("retried fund"),
            run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("retried fund")
        );
        assert_eq!(budget(&db.pool).await, 100);

        let award = Op::Award { customer: "alice", amount: 30, expires_at_ms: FAR };
        let first = run(&db.pool, "k1", T0, award).await.expect("award");
        let again = run(&db.pool, "k1", T0, Op::Award { customer: "alice", amount: 30, expires_at_ms: FAR })
            .await
            .expect("retry");
        assert_eq!(first, again);
        assert_eq!(balance(&db.pool, "alice", T0).await.total, 30);

        let different = run(&db.pool, "k1", T0, Op::Award { customer: "alice", amount: 31, expires_at_ms: FAR }).await;
        assert!(matches!(different, Err(LedgerError::ExistsWithDifferentAmount(_))), "{different:?}");
        let other_target = run(&db.pool, "k1", T0, Op::Award { customer: "bob", amount: 30, expires_at_ms: FAR }).await;
        assert!(matches!(other_target, Err(LedgerError::ExistsWithDifferentAmount(_))), "{other_target:?}");
        let other_operation = run(&db.pool, "k1", T0, Op::Spend { customer: "alice", amount: 30 }).await;
        assert!(matches!(other_operation, Err(LedgerError::ExistsWithDifferentAmount(_))), "{other_operation:?}");

        let spend = run(&db.pool, "s1", T0, Op::Spend { customer: "alice", amount: 5 }).await.expect("spend");
        assert_eq!(run(&db.pool, "s1", T0, Op::Spend { customer: "alice", amount: 5 }).await.expect("retry"), spend);
        assert_eq!(balance(&db.pool, "alice", T0).await.total, 25);
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn concurrent_retries_of_one_key_post_once() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(1_000)).await.expect("fund");
        let retries = (0..20).map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                run(&pool, "same-key", T0, Op::Award { customer: "alice", amount: 10, expires_at_ms: FAR }).await
            })
        });
        let results: Vec<_> = futures::future::join_all(retries)
            .await
            .into_iter()
            .map(|joined| joined.expect("task").expect("a retry gets the first result"))
            .collect();
        assert!(results.iter().all(|posting| *posting == results[0]));
        assert_eq!(balance(&db.pool, "alice", T0).await.total, 10);
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn lots_are_spent_earliest_expiring_first() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "late", T0, Op::Award { customer: "alice", amount: 10, expires_at_ms: T0 + 100_000 }).await.expect("award");
        run(&db.pool, "soon", T0, Op::Award { customer: "alice", amount: 10, expires_at_ms: T0 + 50_000 }).await.expect("award");
        run(&db.pool, "spend", T0, Op::Spend { customer: "alice", amount: 15 }).await.expect("spend");
        let after = balance(&db.pool, "alice", T0).await;
        assert_eq!(after.expiring, vec![(T0 + 100_000, 5)]);
        assert_eq!((after.total, after.available, after.held), (5, 5, 0));
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn expired_lots_cannot_be_spent_and_the_sweep_moves_only_their_remainders_once() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "short", T0, Op::Award { customer: "alice", amount: 10, expires_at_ms: T0 + 10_000 }).await.expect("award");
        run(&db.pool, "long", T0, Op::Award { customer: "alice", amount: 10, expires_at_ms: FAR }).await.expect("award");
        run(&db.pool, "spend", T0, Op::Spend { customer: "alice", amount: 4 }).await.expect("spend");
        let later = T0 + 20_000;
        let at_later = balance(&db.pool, "alice", later).await;
        assert_eq!((at_later.total, at_later.available), (16, 10));
        let too_much = run(&db.pool, "spend-expired", later, Op::Spend { customer: "alice", amount: 11 }).await;
        assert!(matches!(too_much, Err(LedgerError::PointsInsufficient { available: 10, requested: 11 })), "{too_much:?}");

        let mut connection = db.pool.acquire().await.expect("connection");
        assert_eq!(ledger::sweep_expired(&mut connection.conn(), later, 100).await.expect("sweep"), 1);
        assert_eq!(ledger::sweep_expired(&mut connection.conn(), later, 100).await.expect("sweep"), 0);
        let expired = ledger::account_balance(&mut connection.conn(), &ledger::Account::Expired)
            .await
            .expect("expired");
        drop(connection);
        assert_eq!(expired, 6);
        assert_eq!(balance(&db.pool, "alice", later).await.total, 10);
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn holds_reserve_points_and_resolve_at_most_once() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "award", T0, Op::Award { customer: "alice", amount: 100, expires_at_ms: FAR }).await.expect("award");
        let hold = run(&db.pool, "h1", T0, Op::Hold { customer: "alice", amount: 60, expires_at_ms: T0 + 60_000 }).await.expect("hold");
        let held = balance(&db.pool, "alice", T0).await;
        assert_eq!((held.total, held.available, held.held), (100, 40, 60));
        let blocked = run(&db.pool, "s1", T0, Op::Spend { customer: "alice", amount: 50 }).await;
        assert!(matches!(blocked, Err(LedgerError::PointsInsufficient { available: 40, .. })), "{blocked:?}");

        let too_much = run(&db.pool, "c0", T0, Op::Capture { hold: &hold, amount: 61 }).await;
        assert!(matches!(too_much, Err(LedgerError::CaptureExceedsHold { held: 60, requested: 61 })), "{too_much:?}");
        let capture = run(&db.pool, "c1", T0, Op::Capture { hold: &hold, amount: 30 }).await.expect("partial capture");
        assert_eq!(run(&db.pool, "c1", T0, Op::Capture { hold: &hold, amount: 30 }).await.expect("retry"), capture);
        let captured = balance(&db.pool, "alice", T0).await;
        assert_eq!((captured.total, captured.available, captured.held), (70, 70, 0));
        let twice = run(&db.pool, "c2", T0, Op::Capture { hold: &hold, amount: 1 }).await;
        assert!(matches!(twice, Err(LedgerError::HoldAlreadyResolved(ref s)) if s == "captured"), "{twice:?}");

        let second = run(&db.pool, "h2", T0, Op::Hold { customer: "alice", amount: 20, expires_at_ms: T0 + 60_000 }).await.expect("hold");
        assert_eq!(balance(&db.pool, "alice", T0).await.available, 50);
        run(&db.pool, "r1", T0, Op::Release { hold: &second }).await.expect("release");
        assert_eq!(balance(&db.pool, "alice", T0).await.available, 70);
        let released = run(&db.pool, "r2", T0, Op::Release { hold: &second }).await;
        assert!(matches!(released, Err(LedgerError::HoldAlreadyResolved(ref s)) if s == "released"), "{released:?}");

        let short = run(&db.pool, "h3", T0, Op::Hold { customer: "alice", amount: 70, expires_at_ms: T0 + 5_000 }).await.expect("hold");
        assert_eq!(balance(&db.pool, "alice", T0).await.available, 0);
        // Once expired, the hold no longer counts and can no longer be captured.
        assert_eq!(balance(&db.pool, "alice", T0 + 10_000).await.available, 70);
        let late = run(&db.pool, "c3", T0 + 10_000, Op::Capture { hold: &short, amount: 1 }).await;
        assert!(matches!(late, Err(LedgerError::HoldAlreadyResolved(ref s)) if s == "expired"), "{late:?}");
        let unknown = run(&db.pool, "c4", T0, Op::Capture { hold: "no-such-hold", amount: 1 }).await;
        assert!(matches!(unknown, Err(LedgerError::HoldNotFound)), "{unknown:?}");
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn a_capture_committing_while_the_sweep_expires_its_hold_is_recorded_as_captured() {
        // SQLite has one writer: the sweep cannot run while the capture's transaction is open.
        if Backend::current() == Backend::Sqlite {
            return;
        }
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "award", T0, Op::Award { customer: "alice", amount: 100, expires_at_ms: FAR }).await.expect("award");
        let expires = T0 + 5_000;
        let hold = run(&db.pool, "h1", T0, Op::Hold { customer: "alice", amount: 60, expires_at_ms: expires }).await.expect("hold");

        // A call made just before the hold expires commits its capture just after: the
        // batch reads the hold open (at the call's time), then the sweep marks it expired.
        let capture = Operation::Capture { hold: hold.clone(), amount: 40 };
        let write = Write {
            request: Request { scope: PLUGIN, key: "c1", now_ms: expires - 1, memo: "late", id: None },
            plugin_id: PLUGIN,
            region: REGION,
            operation: &capture,
        };
        let mut transaction = db.pool.begin().await.expect("transaction");
        let posting = {
            let mut conn = transaction.conn();
            let mut batch = Batch::load(&mut conn, &[&write]).await.expect("load");
            let posting = batch.apply(&write).expect("the hold is open at the call's time");
            let mut sweeper = db.pool.acquire().await.expect("connection");
            ledger::sweep_expired(&mut sweeper.conn(), expires + 1, 500).await.expect("sweep");
            batch.flush(&mut conn).await.expect("flush");
            posting
        };
        transaction.commit().await.expect("commit");

        assert_eq!(hold_status(&db.pool, &hold).await, "captured", "the capture that took the points names the hold");
        let after = balance(&db.pool, "alice", expires + 1).await;
        assert_eq!((after.total, after.available, after.held), (60, 60, 0), "{posting}");
        let again = run(&db.pool, "r1", expires + 1, Op::Release { hold: &hold }).await;
        assert!(matches!(again, Err(LedgerError::HoldAlreadyResolved(ref s)) if s == "captured"), "{again:?}");
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn a_sweep_whose_clock_runs_ahead_does_not_close_a_hold_before_its_time() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "award", T0, Op::Award { customer: "alice", amount: 100, expires_at_ms: FAR }).await.expect("award");
        let expires = T0 + 5_000;
        let hold = run(&db.pool, "h1", T0, Op::Hold { customer: "alice", amount: 60, expires_at_ms: expires }).await.expect("hold");
        // Another host's sweep, a second ahead, labels the hold expired.
        let mut sweeper = db.pool.acquire().await.expect("connection");
        ledger::sweep_expired(&mut sweeper.conn(), expires + 1_000, 500).await.expect("sweep");
        drop(sweeper);
        // For a call made before the hold lapsed it still holds, and can be captured.
        assert_eq!(balance(&db.pool, "alice", expires - 1).await.held, 60);
        run(&db.pool, "c1", expires - 1, Op::Capture { hold: &hold, amount: 10 }).await.expect("capture before the lapse");
        assert_eq!(hold_status(&db.pool, &hold).await, "captured");
        assert_eq!(balance(&db.pool, "alice", expires + 1_000).await.total, 90);
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn a_hold_reserves_points_not_their_lots_so_points_lapsing_while_held_are_gone() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "soon", T0, Op::Award { customer: "alice", amount: 60, expires_at_ms: T0 + 10_000 }).await.expect("award");
        run(&db.pool, "later", T0, Op::Award { customer: "alice", amount: 30, expires_at_ms: FAR }).await.expect("award");
        let hold = run(&db.pool, "h1", T0, Op::Hold { customer: "alice", amount: 80, expires_at_ms: T0 + 60_000 }).await.expect("hold");
        // The 60 lapse while held: what is left is 30, and the capture can take only that.
        let after = balance(&db.pool, "alice", T0 + 20_000).await;
        assert_eq!((after.available, after.held), (0, 80), "{after:?}");
        let capture = run(&db.pool, "c1", T0 + 20_000, Op::Capture { hold: &hold, amount: 80 }).await;
        assert!(matches!(capture, Err(LedgerError::PointsInsufficient { available: 30, requested: 80 })), "{capture:?}");
        run(&db.pool, "c2", T0 + 20_000, Op::Capture { hold: &hold, amount: 30 }).await.expect("what is left");
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn reversing_a_spend_returns_the_points_to_their_lots_once() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        run(&db.pool, "award", T0, Op::Award { customer: "alice", amount: 10, expires_at_ms: T0 + 99_000 }).await.expect("award");
        let spend = run(&db.pool, "spend", T0, Op::Spend { customer: "alice", amount: 7 }).await.expect("spend");
        let reversal = run(&db.pool, "rev", T0, Op::Reverse { posting: &spend }).await.expect("reverse");
        assert_eq!(run(&db.pool, "rev", T0, Op::Reverse { posting: &spend }).await.expect("retry"), reversal);
        let again = run(&db.pool, "rev-2", T0, Op::Reverse { posting: &spend }).await;
        assert!(matches!(again, Err(LedgerError::AlreadyReversed)), "{again:?}");
        let after = balance(&db.pool, "alice", T0).await;
        assert_eq!(after.expiring, vec![(T0 + 99_000, 10)], "same lot, same expiry");
        let not_ours = run(&db.pool, "rev-3", T0, Op::Reverse { posting: "no-such-posting" }).await;
        assert!(matches!(not_ours, Err(LedgerError::PostingNotFound)), "{not_ours:?}");
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn reversing_an_award_claws_back_what_is_available_and_restores_the_budget() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        let award = run(&db.pool, "award", T0, Op::Award { customer: "alice", amount: 20, expires_at_ms: FAR }).await.expect("award");
        run(&db.pool, "spend", T0, Op::Spend { customer: "alice", amount: 15 }).await.expect("spend");
        assert_eq!(budget(&db.pool).await, 80);
        run(&db.pool, "rev", T0, Op::Reverse { posting: &award }).await.expect("reverse");
        // 5 were still available: clawed back to the budget; 15 are owed.
        assert_eq!(balance(&db.pool, "alice", T0).await.total, 0);
        assert_eq!(budget(&db.pool).await, 85);
        let mut connection = db.pool.acquire().await.expect("connection");
        let (clawed, owed): (i64, i64) = lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_as("SELECT clawed, owed FROM ledger_clawbacks WHERE original_posting = $1")
                .bind(&award)
                .fetch_one(&mut *c)
                .await
                .expect("clawback recorded")
        });
        drop(connection);
        assert_eq!((clawed, owed), (5, 15));
        let again = run(&db.pool, "rev-2", T0, Op::Reverse { posting: &award }).await;
        assert!(matches!(again, Err(LedgerError::AlreadyReversed)), "{again:?}");
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn amounts_must_be_positive() {
        let db = TestDb::open().await;
        for amount in [0, -5] {
            let result = run(&db.pool, "fund", T0, Op::Fund(amount)).await;
            assert!(matches!(result, Err(LedgerError::AmountMustBePositive)), "{result:?}");
        }
        let spend = run(&db.pool, "s", T0, Op::Spend { customer: "alice", amount: 0 }).await;
        assert!(matches!(spend, Err(LedgerError::AmountMustBePositive)), "{spend:?}");
        assert_invariants(&db.pool).await;
        db.close().await;
    }

    async fn a_batch_undoes_a_call_that_breaks_a_rule_and_keeps_the_calls_around_it() {
        let db = TestDb::open().await;
        run(&db.pool, "fund", T0, Op::Fund(100)).await.expect("fund");
        let award = Op::Award { customer: "alice", amount: 10, expires_at_ms: FAR };
        run(&db.pool, "a1", T0, award).await.expect("award");
        // Three calls in one batch; the second awards 50 and then spends more than alice has.
        let spend = |amount| Operation::Spend { customer: "alice".into(), amount };
        let award_50 = Operation::Award { customer: "alice".into(), amount: 50, expires_at_ms: FAR };
        let calls: Vec<Vec<(&str, Operation)>> = vec![
            vec![("first", spend(4))],
            vec![("second-award", award_50), ("second-spend", spend(70))],
            vec![("third", spend(6))],
        ];
        let writes: Vec<Vec<Write<'_>>> = calls
            .iter()
            .map(|call| {
                call.iter()
                    .map(|(key, operation)| Write {
                        request: Request { scope: PLUGIN, key, now_ms: T0, memo: "batch", id: None },
                        plugin_id: PLUGIN,
                        region: REGION,
                        operation,
                    })
                    .collect()
            })
            .collect();
        let mut transaction = db.pool.begin().await.expect("transaction");
        let mut conn = transaction.conn();
        let flat: Vec<&Write<'_>> = writes.iter().flatten().collect();
        let mut batch = Batch::load(&mut conn, &flat).await.expect("load");
        let mut results = Vec::new();
        for call in &writes {
            let mark = batch.mark();
            let result: Result<Vec<String>, LedgerError> = call.iter().map(|w| batch.apply(w)).collect();
            if result.is_err() {
                batch.undo_to(mark);
            }
            results.push(result);
        }
        batch.flush(&mut conn).await.expect("flush");
        transaction.commit().await.expect("commit");
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(LedgerError::PointsInsufficient { available: 56, requested: 70 })),
            "{results:?}"
        );
        // The second call's award is gone: its points, its lot, its budget and its key.
        let after = balance(&db.pool, "alice", T0).await;
        assert_eq!((after.total, after.available, after.expiring.len()), (0, 0, 0));
        assert_eq!(budget(&db.pool).await, 90);
        let retry = Op::Award { customer: "alice", amount: 5, expires_at_ms: FAR };
        run(&db.pool, "second-award", T0, retry).await.expect("the undone key is free");
        assert_invariants(&db.pool).await;
        db.close().await;
    }
}
