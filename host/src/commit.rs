//! The commit writer: the one task that writes invocation results to the database.
//!
//! Calls send it their buffered writes and audit record. It takes whatever has queued up,
//! applies each call's writes in memory against what the batch locked and read (undoing a call
//! whose writes no longer hold, so one call's conflict does not undo another's), writes the
//! result with a few multi-row statements per table, and commits the whole batch with one
//! fsync. Under load many calls share a
//! commit; alone, a call commits at once. A call with writes is answered only after its batch
//! is on disk; a read-only call's audit record is queued without waiting.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::audit::{self, InvocationRecord};
use crate::db::Db;
use crate::error::ErrorCode;
use crate::jobs::{self, JobConflict, JobWrites, NewJob, StagedJobs};
use crate::ledger::{
    Batch, BufferedOperation, LedgerError, Operation, Request as LedgerRequest, Write,
};
use crate::metrics::Metrics;
use crate::store::{ApplyError, Staged, WriteSet};

/// Calls committed in one transaction at most.
const BATCH_MAX: usize = 512;

/// Commits queued before senders wait.
const QUEUE_MAX: usize = 8192;

/// Why a call's writes did not land.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    /// Another call changed what this call's writes depended on.
    #[error("another call changed {0} first; nothing was written, retry the request")]
    Conflict(String),
    /// The writes would pass the plugin's key limit.
    #[error("the plugin would keep more than {0} store keys")]
    KeyLimit(u64),
    /// A ledger rule no longer held when the call committed.
    #[error("{message}; nothing was written, retry the request")]
    Ledger {
        /// The rule's code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
    /// The call's jobs would pass the plugin's limit of pending jobs.
    #[error("the plugin would have more than {0} pending jobs")]
    JobLimit(u64),
    /// The job the call ran was taken over by another host (its lease ran out).
    #[error("another host took over this job; its writes were not kept")]
    JobLeaseLost,
    /// The database failed; nothing of the batch was written.
    #[error("the database is unavailable")]
    Unavailable,
}

impl CommitError {
    /// The error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommitError::Conflict(_) => ErrorCode::StoreConflict,
            CommitError::KeyLimit(_) => ErrorCode::PluginStoreKeyLimit,
            CommitError::Ledger { code, .. } => *code,
            CommitError::JobLimit(_) => ErrorCode::PluginJobLimit,
            CommitError::JobLeaseLost => ErrorCode::StoreConflict,
            CommitError::Unavailable => ErrorCode::Internal,
        }
    }
}

struct Commit {
    writes: WriteSet,
    /// `None` for a flush marker and for the host's own jobs.
    record: Option<InvocationRecord>,
    done: Option<oneshot::Sender<Result<(), CommitError>>>,
}

/// A handle to the commit writer.
#[derive(Clone)]
pub struct Committer {
    sender: mpsc::Sender<Commit>,
}

impl Committer {
    /// Starts the writer on `db`, on [`crate::db::writer_runtime`], counting its batches in
    /// `metrics`. It stops when every handle is dropped.
    pub fn start(db: Db, metrics: Arc<Metrics>) -> Committer {
        let (sender, receiver) = mpsc::channel(QUEUE_MAX);
        crate::db::writer_runtime().spawn(run(db, receiver, metrics));
        Committer { sender }
    }

    /// Commits `writes` with `record` and waits until they are on disk. The record's outcome
    /// is replaced by the commit's error code if the writes fail.
    pub async fn commit(
        &self,
        writes: WriteSet,
        record: InvocationRecord,
    ) -> Result<(), CommitError> {
        self.commit_and_wait(writes, Some(record)).await
    }

    /// Commits `job`, scheduled by the host rather than by a call, and waits until it is on
    /// disk. It does not count against its plugin's limit of pending jobs.
    pub async fn commit_host_job(&self, job: NewJob) -> Result<(), CommitError> {
        let writes = WriteSet {
            jobs: JobWrites {
                new: vec![job],
                pending_max: u64::MAX,
                ..JobWrites::default()
            },
            ..WriteSet::default()
        };
        self.commit_and_wait(writes, None).await
    }

    /// Queues `record` of a call that wrote nothing, without waiting for the disk.
    pub async fn record(&self, record: InvocationRecord) {
        let commit = Commit {
            writes: WriteSet::default(),
            record: Some(record),
            done: None,
        };
        if self.sender.send(commit).await.is_err() {
            tracing::error!("commit writer stopped; an invocation record is lost");
        }
    }

    /// Waits until everything queued before this call is on disk (used at shutdown, so
    /// queued invocation records are not lost).
    pub async fn flush(&self) -> Result<(), CommitError> {
        self.commit_and_wait(WriteSet::default(), None).await
    }

    /// Queues `writes` (and `record`) and waits until their batch is on disk.
    async fn commit_and_wait(
        &self,
        writes: WriteSet,
        record: Option<InvocationRecord>,
    ) -> Result<(), CommitError> {
        let (done, answer) = oneshot::channel();
        self.sender
            .send(Commit {
                writes,
                record,
                done: Some(done),
            })
            .await
            .map_err(|_| CommitError::Unavailable)?;
        answer.await.unwrap_or(Err(CommitError::Unavailable))
    }
}

/// How often a batch is written before its calls fail: again after losing a race.
const WRITE_ATTEMPTS: usize = 3;

/// Whether `error` means another writer (a second replica on PostgreSQL) committed first what
/// this batch read as absent, or the two deadlocked: written again, the batch reads what the
/// other wrote, and only a call that truly conflicts with it fails, by its rule.
fn lost_a_race(error: &sqlx::Error) -> bool {
    // unique_violation, serialization_failure, deadlock_detected.
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("23505" | "40001" | "40P01")))
}

async fn run(db: Db, mut receiver: mpsc::Receiver<Commit>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while receiver.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let started = std::time::Instant::now();
        let mut written = write_batch(&db, &batch).await;
        for _ in 1..WRITE_ATTEMPTS {
            match &written {
                Err(error) if lost_a_race(error) => {
                    tracing::warn!(%error, calls = batch.len(), "another writer got there first; the batch is written again");
                    written = write_batch(&db, &batch).await;
                }
                _ => break,
            }
        }
        let elapsed = started.elapsed();
        let calls = batch
            .iter()
            .filter(|commit| commit.record.is_some())
            .count();
        // Counted before the calls are answered, so a caller that waited sees its batch.
        metrics.commit.record(calls, elapsed, written.is_ok());
        tracing::debug!(
            calls,
            elapsed_us = elapsed.as_micros() as u64,
            "batch written"
        );
        match written {
            Ok(results) => {
                for (commit, result) in batch.drain(..).zip(results) {
                    if let Some(done) = commit.done {
                        let _ = done.send(result);
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, calls = batch.len(), "commit failed; the batch was rolled back");
                for commit in batch.drain(..) {
                    if let Some(done) = commit.done {
                        let _ = done.send(Err(CommitError::Unavailable));
                    }
                }
            }
        }
        // Between batches nothing else writes: the moment to start a long WAL over.
        let restarting = std::time::Instant::now();
        db.restart_wal_if_due().await;
        metrics.commit.add_busy(restarting.elapsed());
    }
}

/// Writes a batch in one transaction; returns each call's result, or the database error
/// that rolled the whole batch back.
///
/// The calls' store and ledger writes are applied in memory, call after call, against what the
/// batch locked and read up front; a call whose writes no longer hold is undone before the
/// next one runs. What the others did is then written with a few statements per table.
async fn write_batch(
    db: &Db,
    batch: &[Commit],
) -> Result<Vec<Result<(), CommitError>>, sqlx::Error> {
    let mut transaction = db.write.begin().await?;
    let mut connection = transaction.conn();
    let requests: Vec<Vec<(LedgerRequest<'_>, &str, &BufferedOperation)>> = batch
        .iter()
        .map(|commit| ledger_requests(&commit.writes))
        .collect();
    let calls: Vec<Vec<Write<'_>>> = batch
        .iter()
        .zip(&requests)
        .map(|(commit, requests)| {
            let scope = commit.writes.scope.as_deref();
            requests
                .iter()
                .map(|(request, _, buffered)| Write {
                    request: request.clone(),
                    plugin_id: scope.map_or("", |s| &s.plugin_id),
                    region: scope.map_or("", |s| &s.region),
                    operation: &buffered.operation,
                })
                .collect()
        })
        .collect();
    let writes: Vec<&WriteSet> = batch.iter().map(|commit| &commit.writes).collect();
    let mut store = Staged::load(&mut connection, &writes).await?;
    let flat: Vec<&Write<'_>> = calls.iter().flatten().collect();
    let mut ledger = Batch::load(&mut connection, &flat).await?;
    let job_writes: Vec<&JobWrites> = batch.iter().map(|commit| &commit.writes.jobs).collect();
    let mut jobs = StagedJobs::load(&mut connection, &job_writes).await?;
    let mut results = Vec::with_capacity(batch.len());
    for ((commit, call), requests) in batch.iter().zip(&calls).zip(&requests) {
        let marks = (store.mark(), ledger.mark());
        let result = apply_call(&mut store, &mut ledger, &commit.writes, call, requests)
            .and_then(|()| jobs.apply(&commit.writes.jobs).map_err(ApplyError::Jobs));
        if let Err(error) = &result {
            store.undo_to(marks.0);
            ledger.undo_to(marks.1);
            if let ApplyError::Database(error) = error {
                tracing::error!(%error, "commit failed");
                return Err(sqlx::Error::Protocol(error.to_string()));
            }
        }
        results.push(result.map_err(commit_error));
    }
    store.flush(&mut connection).await?;
    ledger.flush(&mut connection).await?;
    let committed_jobs: Vec<&JobWrites> = job_writes
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|(writes, _)| *writes)
        .collect();
    jobs::flush(&mut connection, &committed_jobs, crate::ledger::now_ms()).await?;
    let events: Vec<&crate::events::NewEvent> = batch
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .flat_map(|(commit, _)| commit.writes.events.iter())
        .collect();
    crate::events::insert_all(&mut connection, &events).await?;
    drop(events);
    drop(committed_jobs);
    drop(job_writes);
    drop(calls);
    drop(requests);
    // A call whose writes did not land is recorded with the commit's error and no ledger
    // writes (on copies: a batch written again starts from the records as they came).
    let failed: Vec<Option<InvocationRecord>> = batch
        .iter()
        .zip(&results)
        .map(|(commit, result)| match (&commit.record, result) {
            (Some(record), Err(error)) => {
                let mut record = record.clone();
                record.outcome = error.code().as_str();
                record.ledger_writes.clear();
                Some(record)
            }
            _ => None,
        })
        .collect();
    let records: Vec<&InvocationRecord> = batch
        .iter()
        .zip(&failed)
        .filter_map(|(commit, failed)| failed.as_ref().or(commit.record.as_ref()))
        .collect();
    audit::insert_all(&mut connection, &records).await?;
    transaction.commit().await?;
    Ok(results)
}

/// The ledger request of each of a call's buffered ledger writes, with the id the plugin was
/// told (for a release, the hold's).
fn ledger_requests(writes: &WriteSet) -> Vec<(LedgerRequest<'_>, &str, &BufferedOperation)> {
    let plugin_id = writes.scope.as_deref().map_or("", |s| s.plugin_id.as_str());
    writes
        .ledger
        .iter()
        .map(|buffered| {
            let expected = match &buffered.operation {
                Operation::Release { hold } => hold.as_str(),
                _ => buffered.id.as_str(),
            };
            let request = LedgerRequest {
                scope: plugin_id,
                key: &buffered.key,
                now_ms: writes.now_ms,
                memo: &buffered.memo,
                id: Some(&buffered.id),
            };
            (request, expected, buffered)
        })
        .collect()
}

/// Applies one call's store and ledger writes; each ledger write must create what the plugin
/// was told it created.
fn apply_call(
    store: &mut Staged,
    ledger: &mut Batch,
    writes: &WriteSet,
    call: &[Write<'_>],
    requests: &[(LedgerRequest<'_>, &str, &BufferedOperation)],
) -> Result<(), ApplyError> {
    store.apply(writes)?;
    for (write, (_, expected, buffered)) in call.iter().zip(requests) {
        match ledger.apply(write) {
            Ok(created) if created == *expected => {}
            Ok(_) => return Err(ApplyError::KeyTaken(buffered.key.clone())),
            Err(LedgerError::Database(error)) => return Err(ApplyError::Database(error)),
            Err(rule) => return Err(ApplyError::Ledger(rule)),
        }
    }
    Ok(())
}

/// What a call learns when its writes no longer hold at commit.
fn commit_error(error: ApplyError) -> CommitError {
    match error {
        ApplyError::Conflict { key } => CommitError::Conflict(format!("store key {key:?}")),
        ApplyError::KeyLimit(max) => CommitError::KeyLimit(max),
        ApplyError::Ledger(rule) => CommitError::Ledger {
            code: match rule {
                LedgerError::PointsInsufficient { .. } => ErrorCode::PointsInsufficient,
                LedgerError::BudgetExhausted { .. } => ErrorCode::BudgetExhausted,
                _ => ErrorCode::LedgerConflict,
            },
            message: format!("when the call committed: {rule}"),
        },
        ApplyError::KeyTaken(key) => CommitError::Ledger {
            code: ErrorCode::LedgerConflict,
            message: format!("idempotency key {key:?} was used by another call first"),
        },
        ApplyError::Jobs(JobConflict::Limit(max)) => CommitError::JobLimit(max),
        ApplyError::Jobs(JobConflict::LeaseLost) => CommitError::JobLeaseLost,
        ApplyError::Database(error) => {
            tracing::error!(%error, "commit failed");
            CommitError::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqliteConfig;

    fn record(id: usize) -> InvocationRecord {
        InvocationRecord {
            id: format!("wal-{id:08}"),
            started_at_ms: 0,
            plugin_id: "p".into(),
            plugin_version: "1".into(),
            plugin_digest: String::new(),
            config_digest: String::new(),
            region: "cn".into(),
            caller_kind: "customer",
            caller: String::new(),
            // About 4 KB a record, so the log grows fast.
            action: "x".repeat(4000),
            input_digest: String::new(),
            outcome: "ok",
            fuel_consumed: 0,
            duration_us: 0,
            seed_commitment: String::new(),
            seed_region: String::new(),
            seed_day: String::new(),
            draws: Vec::new(),
            ledger_writes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_write_ahead_log_stays_bounded_under_sustained_writes_and_reads() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("wal.db");
        let limit = 1 << 20;
        let sqlite = SqliteConfig {
            wal_bytes_max: limit,
        };
        let db = Db::open_with(&format!("sqlite://{}", path.display()), &sqlite)
            .await
            .expect("the database opens");
        let committer = Committer::start(db.clone(), Arc::default());
        let wal = dir.path().join("wal.db-wal");
        let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        // A reader that always has a read going, as a serving host does.
        let reader = {
            let db = db.clone();
            let writing = writing.clone();
            tokio::spawn(async move {
                while writing.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut connection = db.read.acquire().await.expect("a reader");
                    crate::with_conn!(connection.conn(), c => {
                        let _: Option<String> = sqlx::query_scalar("SELECT id FROM invocations ORDER BY id DESC LIMIT 1")
                            .fetch_optional(&mut *c)
                            .await
                            .expect("the read");
                    });
                }
            })
        };
        // Sixteen writers without a pause for three seconds.
        let started = std::time::Instant::now();
        let seconds = std::time::Duration::from_secs(3);
        let writers: Vec<_> = (0..16)
            .map(|writer| {
                let committer = committer.clone();
                tokio::spawn(async move {
                    let mut written = 0;
                    while started.elapsed() < seconds {
                        committer
                            .commit(WriteSet::default(), record(writer * 1_000_000 + written))
                            .await
                            .expect("the record is committed");
                        written += 1;
                    }
                    written
                })
            })
            .collect();
        let mut largest = 0;
        while started.elapsed() < seconds {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut records = 0;
        for writer in writers {
            records += writer.await.expect("a writer ends");
        }
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        reader.await.expect("the reader ends");
        // The log may pass its limit by what one batch writes before the writer restarts it:
        // with sixteen writers, well under a megabyte.
        let written = records as u64 * 4096;
        let bound = limit + (4 << 20);
        assert!(
            written > 2 * bound,
            "only {written} bytes were written in {seconds:?}: too few to tell"
        );
        assert!(
            largest < bound,
            "the WAL reached {largest} bytes with a limit of {limit} ({written} bytes written)"
        );
        db.close().await;
    }
}
