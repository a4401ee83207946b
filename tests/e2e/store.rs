//! The store's half of a commit batch, on each database backend: every call's operations are
//! re-checked against what the calls before it in the batch did, and a call whose
//! `compare-and-swap` or `increment` no longer holds is undone whole while the others land.

use std::sync::Arc;

use lifecircle::store::{ApplyError, Op, Scope, Staged, WriteSet};
use lifecircle::with_conn;
use lifecircle_tests::{TestDb, on_each_backend};

fn writes(scope: &Arc<Scope>, ops: Vec<Op>) -> WriteSet {
    WriteSet {
        scope: Some(scope.clone()),
        ops,
        keys_max: 3,
        ..WriteSet::default()
    }
}

async fn value(db: &TestDb, key: &[u8]) -> Option<Vec<u8>> {
    let mut connection = db.pool.acquire().await.expect("connection");
    with_conn!(connection.conn(), c => {
        sqlx::query_scalar("SELECT value FROM store_entries WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *c)
            .await
            .expect("select")
    })
}

on_each_backend! {
    async fn a_batch_undoes_a_call_whose_checks_no_longer_hold_and_keeps_the_others() {
        let db = TestDb::open().await;
        let scope = Arc::new(Scope { plugin_id: "hello".into(), region: "cn".into() });
        let put = |key: &[u8], value: &[u8]| Op::Put { key: key.to_vec(), value: value.to_vec() };
        let swap = |new: &[u8]| Op::CompareAndSwap {
            key: b"owner".to_vec(),
            expected: None,
            new: Some(new.to_vec()),
        };
        let increment = |delta| Op::Increment { key: b"stock".to_vec(), delta, min: 0, max: 5 };
        let calls = [
            // Takes the empty `owner` key and the stock.
            writes(&scope, vec![swap(b"a"), increment(4)]),
            // Saw `owner` empty too, but `a` took it first: undone, its `note` included.
            writes(&scope, vec![put(b"note", b"b was here"), swap(b"b")]),
            // Would take the stock past its bound: undone.
            writes(&scope, vec![increment(2)]),
            // Fits: a third key is the limit.
            writes(&scope, vec![increment(1), put(b"extra", b"1")]),
            // A fourth key is one too many.
            writes(&scope, vec![put(b"fourth", b"1")]),
        ];
        let mut transaction = db.pool.begin().await.expect("transaction");
        let mut conn = transaction.conn();
        let all: Vec<&WriteSet> = calls.iter().collect();
        let mut staged = Staged::load(&mut conn, &all).await.expect("load");
        let mut results = Vec::new();
        for call in &calls {
            let mark = staged.mark();
            let result = staged.apply(call);
            if result.is_err() {
                staged.undo_to(mark);
            }
            results.push(result);
        }
        staged.flush(&mut conn).await.expect("flush");
        transaction.commit().await.expect("commit");
        assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
        assert!(matches!(&results[1], Err(ApplyError::Conflict { key }) if key == "owner"), "{results:?}");
        assert!(matches!(&results[2], Err(ApplyError::Conflict { key }) if key == "stock"), "{results:?}");
        assert!(matches!(results[4], Err(ApplyError::KeyLimit(3))), "{results:?}");
        assert_eq!(value(&db, b"owner").await.as_deref(), Some(&b"a"[..]));
        assert_eq!(value(&db, b"stock").await.as_deref(), Some(&b"5"[..]));
        assert_eq!(value(&db, b"extra").await.as_deref(), Some(&b"1"[..]));
        assert_eq!(value(&db, b"note").await, None);
        assert_eq!(value(&db, b"fourth").await, None);
        db.close().await;
    }
}
