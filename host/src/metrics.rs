//! Prometheus metrics of plugin invocations (counts by outcome, a latency histogram and fuel,
//! per plugin) and of the commit writer. Counters are atomics, so recording costs no lock on
//! the request path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ErrorCode;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One plugin's counters.
pub struct PluginMetrics {
    /// Index 0 is `ok`, index `i + 1` is `ErrorCode::ALL[i]`.
    outcomes: [AtomicU64; ErrorCode::ALL.len() + 1],
    /// Cumulative counts per bucket (the last one is +Inf).
    buckets: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    duration_micros_total: AtomicU64,
    fuel_total: AtomicU64,
}

impl PluginMetrics {
    fn new() -> Self {
        Self {
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_micros_total: AtomicU64::new(0),
            fuel_total: AtomicU64::new(0),
        }
    }

    /// Records one invocation.
    pub fn record(&self, outcome: Option<ErrorCode>, elapsed: Duration, fuel: u64) {
        let index = match outcome {
            None => 0,
            Some(code) => 1 + ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0),
        };
        self.outcomes[index].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS_SECONDS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_micros_total
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.fuel_total.fetch_add(fuel, Ordering::Relaxed);
    }
}

/// The commit writer's counters. Every write goes through the one writer, so the share of
/// time it is busy says how close the host is to the most it can commit: near 100%, more
/// load only makes calls wait longer.
#[derive(Default)]
pub struct CommitMetrics {
    committed: AtomicU64,
    rolled_back: AtomicU64,
    calls: AtomicU64,
    busy_micros: AtomicU64,
}

/// What the commit writer has done since the host started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitTotals {
    /// Transactions written, committed or rolled back.
    pub batches: u64,
    /// Invocations they carried (with writes or only their audit record).
    pub calls: u64,
    /// Time spent writing them, and keeping SQLite's write-ahead log bounded between them.
    pub busy: Duration,
}

impl CommitMetrics {
    /// Records one transaction of `calls` invocations that took `elapsed`.
    pub fn record(&self, calls: usize, elapsed: Duration, committed: bool) {
        let counter = if committed {
            &self.committed
        } else {
            &self.rolled_back
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(calls as u64, Ordering::Relaxed);
        self.add_busy(elapsed);
    }

    /// Adds `elapsed` the writer spent between transactions (keeping the WAL bounded).
    pub fn add_busy(&self, elapsed: Duration) {
        self.busy_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn totals(&self) -> CommitTotals {
        CommitTotals {
            batches: self.committed.load(Ordering::Relaxed)
                + self.rolled_back.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            busy: Duration::from_micros(self.busy_micros.load(Ordering::Relaxed)),
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP lifecircle_commit_batches_total Transactions the commit writer wrote, by result.\n");
        out.push_str("# TYPE lifecircle_commit_batches_total counter\n");
        for (result, counter) in [
            ("committed", &self.committed),
            ("rolled_back", &self.rolled_back),
        ] {
            let count = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "lifecircle_commit_batches_total{{result=\"{result}\"}} {count}"
            );
        }
        out.push_str("# HELP lifecircle_commit_calls_total Invocations the commit writer wrote, with their writes or only their audit record.\n");
        out.push_str("# TYPE lifecircle_commit_calls_total counter\n");
        let calls = self.calls.load(Ordering::Relaxed);
        let _ = writeln!(out, "lifecircle_commit_calls_total {calls}");
        out.push_str("# HELP lifecircle_commit_busy_seconds_total Time the commit writer spent writing; a rate near 1 means it is the ceiling.\n");
        out.push_str("# TYPE lifecircle_commit_busy_seconds_total counter\n");
        let busy = self.busy_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "lifecircle_commit_busy_seconds_total {busy}");
    }
}

/// All plugins' metrics, and the commit writer's. A plugin's counters are created when a
/// version of it is first loaded and handed to it, so recording a call takes no lock.
#[derive(Default)]
pub struct Metrics {
    plugins: std::sync::RwLock<BTreeMap<String, Arc<PluginMetrics>>>,
    /// The commit writer's counters.
    pub commit: CommitMetrics,
}

impl Metrics {
    /// The counters of `plugin_id`, created on first use.
    pub fn plugin(&self, plugin_id: &str) -> Arc<PluginMetrics> {
        let mut plugins = self
            .plugins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plugins
            .entry(plugin_id.to_owned())
            .or_insert_with(|| Arc::new(PluginMetrics::new()))
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let plugins = self
            .plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut out = String::new();
        out.push_str("# HELP lifecircle_invocations_total Plugin invocations by outcome.\n");
        out.push_str("# TYPE lifecircle_invocations_total counter\n");
        for (plugin, metrics) in &plugins {
            for (index, count) in metrics.outcomes.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let outcome = if index == 0 {
                    "ok"
                } else {
                    ErrorCode::ALL[index - 1].as_str()
                };
                let _ = writeln!(
                    out,
                    "lifecircle_invocations_total{{plugin=\"{plugin}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP lifecircle_invocation_duration_seconds Plugin invocation latency, instantiation included.\n");
        out.push_str("# TYPE lifecircle_invocation_duration_seconds histogram\n");
        for (plugin, metrics) in &plugins {
            let mut cumulative = 0;
            for (index, count) in metrics.buckets.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let upper = BUCKETS_SECONDS
                    .get(index)
                    .map_or("+Inf".to_owned(), |u| u.to_string());
                let _ = writeln!(
                    out,
                    "lifecircle_invocation_duration_seconds_bucket{{plugin=\"{plugin}\",le=\"{upper}\"}} {cumulative}"
                );
            }
            let sum = metrics.duration_micros_total.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "lifecircle_invocation_duration_seconds_sum{{plugin=\"{plugin}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "lifecircle_invocation_duration_seconds_count{{plugin=\"{plugin}\"}} {cumulative}"
            );
        }
        out.push_str("# HELP lifecircle_fuel_consumed_total Fuel (instructions) consumed by plugin invocations.\n");
        out.push_str("# TYPE lifecircle_fuel_consumed_total counter\n");
        for (plugin, metrics) in &plugins {
            let fuel = metrics.fuel_total.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "lifecircle_fuel_consumed_total{{plugin=\"{plugin}\"}} {fuel}"
            );
        }
        self.commit.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_outcomes_and_fills_buckets_cumulatively() {
        let metrics = Metrics::default();
        let hello = metrics.plugin("hello");
        hello.record(None, Duration::from_micros(50), 100);
        hello.record(
            Some(ErrorCode::PluginFuelExhausted),
            Duration::from_millis(700),
            900,
        );
        let text = metrics.render();
        assert!(
            text.contains("lifecircle_invocations_total{plugin=\"hello\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outcome=\"plugin_fuel_exhausted\"} 1"),
            "{text}"
        );
        assert!(text.contains("le=\"0.0001\"} 1"), "{text}");
        assert!(text.contains("le=\"1\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(
            text.contains("lifecircle_fuel_consumed_total{plugin=\"hello\"} 1000"),
            "{text}"
        );
    }

    #[test]
    fn commit_counters_add_up_batches_calls_and_busy_time() {
        let metrics = Metrics::default();
        metrics.commit.record(16, Duration::from_millis(3), true);
        metrics.commit.record(2, Duration::from_micros(500), false);
        assert_eq!(
            metrics.commit.totals(),
            CommitTotals {
                batches: 2,
                calls: 18,
                busy: Duration::from_micros(3500),
            }
        );
        let text = metrics.render();
        assert!(
            text.contains("lifecircle_commit_batches_total{result=\"committed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lifecircle_commit_batches_total{result=\"rolled_back\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lifecircle_commit_calls_total 18\n"),
            "{text}"
        );
        assert!(
            text.contains("lifecircle_commit_busy_seconds_total 0.0035\n"),
            "{text}"
        );
    }
}
