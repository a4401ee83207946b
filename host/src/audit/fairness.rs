//! Verifiable draws: one secret seed per plugin, region and local day, whose SHA-256
//! (the commitment) is published before the day starts and the seed itself after it ends.
//!
//! The region is the one whose enablement row runs the plugin (a plugin enabled for `cn-fj`
//! draws from the `cn-fj` seed in every city below it), so the seeds a day needs are known in
//! advance: a background task commits today's and the next days' seeds for every deployment.
//! A call finds its seed in memory; a seed missing there is created or read in one statement
//! pair that every host agrees on (`INSERT … ON CONFLICT DO NOTHING`, then `SELECT`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::calendar::{Calendar, Date};
use crate::db::Db;
use crate::registry::Registry;
use crate::with_conn;

/// The seed of one plugin, region and day.
#[derive(Debug)]
pub struct DaySeed {
    /// The plugin id.
    pub plugin_id: String,
    /// The enablement row's region.
    pub region: String,
    /// The local day.
    pub day: Date,
    /// The secret seed.
    pub seed: [u8; 32],
    /// SHA-256 of the seed, hex: published from the start.
    pub commitment: String,
}

/// A published commitment, with its seed once the day is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Commitment {
    /// The plugin id.
    pub plugin: String,
    /// The region whose enablement runs the plugin.
    pub region: String,
    /// The local day, `YYYY-MM-DD`.
    pub day: String,
    /// SHA-256 of the seed, hex.
    pub commitment: String,
    /// When the commitment was first stored, ms since the Unix epoch: before `starts_at_ms`
    /// for a seed committed in advance.
    pub published_at_ms: i64,
    /// When the day starts (local midnight), ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// When the day ends and the seed is revealed.
    pub ends_at_ms: i64,
    /// The seed, hex; `null` until the day has ended.
    pub seed: Option<String>,
}

/// The seeds, as known to this host.
pub struct Fairness {
    db: Db,
    calendar: Arc<Calendar>,
    known: Mutex<HashMap<(String, String, Date), Arc<DaySeed>>>,
}

/// Seeds kept in memory at most; past it, seeds of days before yesterday are dropped.
const KNOWN_MAX: usize = 4096;

impl Fairness {
    /// The seeds in `db`, with days from `calendar`.
    pub fn new(db: Db, calendar: Arc<Calendar>) -> Self {
        Self {
            db,
            calendar,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The seed of `plugin_id` in `region` on the day of `now_ms`, committing it now if no
    /// host has yet.
    pub async fn seed(
        &self,
        plugin_id: &str,
        region: &str,
        now_ms: i64,
    ) -> Result<Arc<DaySeed>, sqlx::Error> {
        self.seed_of(plugin_id, region, self.calendar.day_of(now_ms), now_ms)
            .await
    }

    /// The seed of `plugin_id` in `region` on `day`, committing it at `now_ms` if no host
    /// has yet.
    async fn seed_of(
        &self,
        plugin_id: &str,
        region: &str,
        day: Date,
        now_ms: i64,
    ) -> Result<Arc<DaySeed>, sqlx::Error> {
        let key = (plugin_id.to_owned(), region.to_owned(), day);
        if let Some(seed) = self.lock().get(&key) {
            return Ok(seed.clone());
        }
        let seed = Arc::new(self.commit(plugin_id, region, day, now_ms).await?);
        let mut known = self.lock();
        if known.len() >= KNOWN_MAX {
            known.retain(|(_, _, kept), _| kept.days() + 1 >= day.days());
        }
        Ok(known.entry(key).or_insert(seed).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, Date), Arc<DaySeed>>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a fresh seed for the day unless one is stored, and returns the stored one.
    async fn commit(
        &self,
        plugin_id: &str,
        region: &str,
        day: Date,
        now_ms: i64,
    ) -> Result<DaySeed, sqlx::Error> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e.to_string())))?;
        let day_text = day.to_string();
        let mut connection = self.db.write.acquire().await?;
        let seed: String = with_conn!(connection.conn(), c => {
            sqlx::query(
                "INSERT INTO fairness_seeds (plugin_id, region, day, seed, commitment, \
                 published_at_ms, starts_at_ms, ends_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (plugin_id, region, day) DO NOTHING",
            )
            .bind(plugin_id)
            .bind(region)
            .bind(&day_text)
            .bind(hex::encode(fresh))
            .bind(hex::encode(Sha256::digest(fresh)))
            .bind(now_ms)
            .bind(self.calendar.start_of(day))
            .bind(self.calendar.start_of(day.next()))
            .execute(&mut *c)
            .await?;
            sqlx::query_scalar(
                "SELECT seed FROM fairness_seeds WHERE plugin_id = $1 AND region = $2 AND day = $3",
            )
            .bind(plugin_id)
            .bind(region)
            .bind(&day_text)
            .fetch_one(&mut *c)
            .await?
        });
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&seed, &mut bytes)
            .map_err(|e| sqlx::Error::Decode(format!("fairness seed: {e}").into()))?;
        Ok(DaySeed {
            plugin_id: plugin_id.to_owned(),
            region: region.to_owned(),
            day,
            seed: bytes,
            commitment: hex::encode(Sha256::digest(bytes)),
        })
    }

    /// Commits the seeds of today and the `days_ahead` days after it for every deployment
    /// `registry` has. Returns how many seeds it checked.
    pub async fn commit_ahead(
        &self,
        registry: &Registry,
        days_ahead: u32,
    ) -> Result<usize, sqlx::Error> {
        let now_ms = registry.clock.now_ms();
        let mut checked = 0;
        let pairs: Vec<(String, String)> = registry
            .snapshot()
            .deployments()
            .map(|d| (d.plugin.manifest.id.clone(), d.region.clone()))
            .collect();
        for (plugin_id, region) in pairs {
            for ahead in 0..=i64::from(days_ahead) {
                let day = Date::from_days(self.calendar.day_of(now_ms).days() + ahead);
                self.seed_of(&plugin_id, &region, day, now_ms).await?;
                checked += 1;
            }
        }
        Ok(checked)
    }

    /// Runs [`Fairness::commit_ahead`] now and every `interval`.
    pub fn start_committing(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        days_ahead: u32,
        interval: Duration,
    ) {
        let fairness = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(fairness) = fairness.upgrade() else {
                    return;
                };
                if let Err(error) = fairness.commit_ahead(&registry, days_ahead).await {
                    tracing::warn!(%error, "could not commit the coming days' draw seeds; retrying");
                }
            }
        });
    }

    /// Published commitments from day `from` to day `to` (inclusive), of one plugin and
    /// region when given, at most `limit`, with seeds revealed for days over at `now_ms`.
    pub async fn commitments(
        &self,
        filter: &CommitmentFilter<'_>,
        now_ms: i64,
    ) -> Result<Vec<Commitment>, sqlx::Error> {
        let mut connection = self.db.read.acquire().await?;
        let rows: Vec<CommitmentRow> = with_conn!(connection.conn(), c => {
            sqlx::query_as(
                "SELECT plugin_id, region, day, seed, commitment, published_at_ms, \
                 starts_at_ms, ends_at_ms FROM fairness_seeds \
                 WHERE day >= $1 AND day <= $2 AND ($3 IS NULL OR plugin_id = $3) \
                 AND ($4 IS NULL OR region = $4) \
                 ORDER BY day, plugin_id, region LIMIT $5",
            )
            .bind(filter.from.to_string())
            .bind(filter.to.to_string())
            .bind(filter.plugin)
            .bind(filter.region)
            .bind(filter.limit)
            .fetch_all(&mut *c)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| Commitment {
                plugin: row.plugin_id,
                region: row.region,
                day: row.day,
                commitment: row.commitment,
                published_at_ms: row.published_at_ms,
                starts_at_ms: row.starts_at_ms,
                ends_at_ms: row.ends_at_ms,
                seed: (now_ms >= row.ends_at_ms).then_some(row.seed),
            })
            .collect())
    }

    /// The commitment of one plugin, region and day, with its seed if the day is over.
    pub async fn commitment(
        &self,
        plugin_id: &str,
        region: &str,
        day: &str,
        now_ms: i64,
    ) -> Result<Option<Commitment>, sqlx::Error> {
        let Some(day) = Date::parse(day) else {
            return Ok(None);
        };
        let filter = CommitmentFilter {
            from: day,
            to: day,
            plugin: Some(plugin_id),
            region: Some(region),
            limit: 1,
        };
        Ok(self.commitments(&filter, now_ms).await?.pop())
    }
}

/// One row of `fairness_seeds`.
#[derive(sqlx::FromRow)]
struct CommitmentRow {
    plugin_id: String,
    region: String,
    day: String,
    seed: String,
    commitment: String,
    published_at_ms: i64,
    starts_at_ms: i64,
    ends_at_ms: i64,
}

/// Which commitments to list.
pub struct CommitmentFilter<'a> {
    /// The first day.
    pub from: Date,
    /// The last day.
    pub to: Date,
    /// One plugin only.
    pub plugin: Option<&'a str>,
    /// One region only.
    pub region: Option<&'a str>,
    /// Rows at most.
    pub limit: i64,
}
