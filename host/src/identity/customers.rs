//! The customers the bank knows: region, tier, tags and status per bank customer number, with
//! the history of every tag change.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::db::Conn;
use crate::{execute_rows, select_in, with_conn};

/// Whether a customer may use scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// May use scenarios.
    Active,
    /// Refused with 403 `customer_frozen` until an admin unfreezes them.
    Frozen,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Frozen => "frozen",
        }
    }

    /// The status a stored or given name means.
    pub fn parse(name: &str) -> Option<Status> {
        match name {
            "active" => Some(Status::Active),
            "frozen" => Some(Status::Frozen),
            _ => None,
        }
    }
}

/// A customer as the identity service knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The bank's customer number. Never shown to plugins.
    pub customer_number: String,
    /// The customer's region.
    pub region: String,
    /// The customer's tier (`""`: none).
    pub tier: String,
    /// The customer's tags, sorted, without duplicates.
    pub tags: Vec<String>,
    /// Whether they may use scenarios.
    pub status: Status,
    /// When the customer was first known, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// When the profile last changed.
    pub updated_at_ms: i64,
}

/// Longest tier.
pub const TIER_BYTES_MAX: usize = 32;
/// Longest tag.
pub const TAG_BYTES_MAX: usize = 64;
/// Most tags one customer can carry.
pub const TAGS_MAX: usize = 256;

/// Checks a tier: at most [`TIER_BYTES_MAX`] bytes of letters, digits, `_` or `-`.
pub fn check_tier(tier: &str) -> Result<(), String> {
    if tier.len() > TIER_BYTES_MAX
        || !tier
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "a tier is at most {TIER_BYTES_MAX} bytes of letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

/// Checks and normalizes tags: each 1 to [`TAG_BYTES_MAX`] bytes without control characters
/// or `|` (the CSV separator), at most [`TAGS_MAX`]; returned sorted without duplicates.
pub fn normalize_tags<I: IntoIterator<Item = String>>(tags: I) -> Result<Vec<String>, String> {
    let mut set = BTreeSet::new();
    for tag in tags {
        let tag = tag.trim().to_owned();
        if tag.is_empty()
            || tag.len() > TAG_BYTES_MAX
            || tag.chars().any(|c| c.is_control() || c == '|')
        {
            return Err(format!(
                "each tag is 1 to {TAG_BYTES_MAX} bytes without control characters or '|': {tag:?}"
            ));
        }
        set.insert(tag);
    }
    if set.len() > TAGS_MAX {
        return Err(format!("a customer has at most {TAGS_MAX} tags"));
    }
    Ok(set.into_iter().collect())
}

type Row = (String, String, String, String, String, i64, i64);

fn profile_from_row(
    (customer_number, region, tier, tags, status, created_at_ms, updated_at_ms): Row,
) -> Profile {
    Profile {
        customer_number,
        region,
        tier,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        status: Status::parse(&status).unwrap_or(Status::Frozen),
        created_at_ms,
        updated_at_ms,
    }
}

const COLUMNS: &str =
    "SELECT id, region, tier, tags, status, created_at_ms, updated_at_ms FROM customers";

/// The customer with bank customer number `id`, if known.
pub async fn get(conn: &mut Conn<'_>, id: &str) -> Result<Option<Profile>, sqlx::Error> {
    let row: Option<Row> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(&format!("{COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(row.map(profile_from_row))
}

/// The known customers among `ids`.
pub async fn get_many(
    conn: &mut Conn<'_>,
    ids: &[String],
) -> Result<HashMap<String, Profile>, sqlx::Error> {
    let rows = select_in!(conn, Row, format!("{COLUMNS} WHERE id IN ("), ids);
    let found = rows
        .into_iter()
        .map(profile_from_row)
        .map(|p| (p.customer_number.clone(), p))
        .collect();
    Ok(found)
}

/// Enrolls a customer the identity service did not know, from their token's claims; returns
/// the profile as stored (the existing one if another request enrolled them first).
pub async fn enroll(
    conn: &mut Conn<'_>,
    id: &str,
    region: &str,
    tier: &str,
    now_ms: i64,
) -> Result<Profile, sqlx::Error> {
    with_conn!(conn.reborrow(), c => {
        sqlx::query(
            "INSERT INTO customers (id, region, tier, tags, status, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, '[]', 'active', $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(region)
        .bind(tier)
        .bind(now_ms)
        .execute(&mut *c)
        .await?;
    });
    get(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// One customer's new state, and what it was (`None`: a new customer).
pub struct Saved<'a> {
    /// Before.
    pub before: Option<&'a Profile>,
    /// After.
    pub after: &'a Profile,
}

/// Stores new and changed profiles, many per statement, and records each tag change with
/// `source` (who made it).
pub async fn save(
    conn: &mut Conn<'_>,
    rows: &[Saved<'_>],
    source: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    execute_rows!(
        conn,
        rows,
        "INSERT INTO customers (id, region, tier, tags, status, created_at_ms, updated_at_ms) ",
        |row, Saved { after: p, .. }| row
            .push_bind(&p.customer_number)
            .push_bind(&p.region)
            .push_bind(&p.tier)
            .push_bind(serde_json::to_string(&p.tags).unwrap_or_else(|_| "[]".into()))
            .push_bind(p.status.as_str())
            .push_bind(p.created_at_ms)
            .push_bind(p.updated_at_ms),
        " ON CONFLICT (id) DO UPDATE SET region = excluded.region, tier = excluded.tier, \
                 tags = excluded.tags, status = excluded.status, updated_at_ms = excluded.updated_at_ms",
    );
    let changes: Vec<(&str, String, String)> = rows
        .iter()
        .filter_map(|saved| {
            let before: BTreeSet<&String> = saved
                .before
                .map(|b| b.tags.iter().collect())
                .unwrap_or_default();
            let after: BTreeSet<&String> = saved.after.tags.iter().collect();
            let added: Vec<&&String> = after.difference(&before).collect();
            let removed: Vec<&&String> = before.difference(&after).collect();
            if added.is_empty() && removed.is_empty() {
                return None;
            }
            Some((
                saved.after.customer_number.as_str(),
                serde_json::to_string(&added).unwrap_or_default(),
                serde_json::to_string(&removed).unwrap_or_default(),
            ))
        })
        .collect();
    execute_rows!(
        conn,
        &changes,
        "INSERT INTO customer_tag_changes (customer_id, changed_at_ms, added, removed, source) ",
        |row, (id, added, removed)| row
            .push_bind(*id)
            .push_bind(now_ms)
            .push_bind(added)
            .push_bind(removed)
            .push_bind(source),
    );
    Ok(())
}

/// One change of a customer's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagChange {
    /// When, ms since the Unix epoch.
    pub changed_at_ms: i64,
    /// Tags added.
    pub added: Vec<String>,
    /// Tags removed.
    pub removed: Vec<String>,
    /// Who changed them (`import:<admin>`, an admin's name, `enroll`).
    pub source: String,
}

/// The latest `limit` tag changes of customer `id`, newest first.
pub async fn tag_history(
    conn: &mut Conn<'_>,
    id: &str,
    limit: i64,
) -> Result<Vec<TagChange>, sqlx::Error> {
    let rows: Vec<(i64, String, String, String)> = with_conn!(conn.reborrow(), c => {
        sqlx::query_as(
            "SELECT changed_at_ms, added, removed, source FROM customer_tag_changes \
             WHERE customer_id = $1 ORDER BY changed_at_ms DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(changed_at_ms, added, removed, source)| TagChange {
            changed_at_ms,
            added: serde_json::from_str(&added).unwrap_or_default(),
            removed: serde_json::from_str(&removed).unwrap_or_default(),
            source,
        })
        .collect())
}

/// Recently read profiles, so a customer's every request does not read the database. An entry
/// lives `ttl` (a freeze or a region change made on another host takes effect within it; on
/// this host at once, as changes evict their customers). At most `entries` are kept; when
/// full, the cache starts over, which bounds its memory without bookkeeping.
pub struct Cache {
    ttl: std::time::Duration,
    entries: usize,
    map: std::sync::Mutex<HashMap<String, (Profile, std::time::Instant)>>,
}

impl Cache {
    /// A cache keeping up to `entries` profiles for `ttl` each (`ttl` zero: no caching).
    pub fn new(ttl: std::time::Duration, entries: usize) -> Cache {
        Cache {
            ttl,
            entries,
            map: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Profile, std::time::Instant)>> {
        // A panic while holding the lock cannot leave a profile half-written: recover.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The profile of `id` read less than `ttl` before `now`.
    pub fn get(&self, id: &str, now: std::time::Instant) -> Option<Profile> {
        let map = self.map();
        let (profile, read_at) = map.get(id)?;
        (now.saturating_duration_since(*read_at) < self.ttl).then(|| profile.clone())
    }

    /// Keeps `profile`, read at `now`.
    pub fn put(&self, profile: &Profile, now: std::time::Instant) {
        if self.ttl.is_zero() || self.entries == 0 {
            return;
        }
        let mut map = self.map();
        if map.len() >= self.entries {
            map.clear();
        }
        map.insert(profile.customer_number.clone(), (profile.clone(), now));
    }

    /// Forgets `id` (its profile changed).
    pub fn evict(&self, id: &str) {
        self.map().remove(id);
    }

    /// Forgets every profile (many changed, as in an import).
    pub fn clear(&self) {
        self.map().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn profile(id: &str) -> Profile {
        Profile {
            customer_number: id.into(),
            region: "cn".into(),
            tier: String::new(),
            tags: Vec::new(),
            status: Status::Active,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn the_cache_keeps_a_profile_for_its_ttl_within_its_size_and_forgets_on_change() {
        let t0 = Instant::now();
        let cache = Cache::new(Duration::from_secs(1), 2);
        cache.put(&profile("a"), t0);
        assert_eq!(
            cache.get("a", t0 + Duration::from_millis(999)),
            Some(profile("a"))
        );
        assert_eq!(cache.get("a", t0 + Duration::from_secs(1)), None);
        cache.evict("a");
        assert_eq!(cache.get("a", t0), None);
        cache.put(&profile("a"), t0);
        cache.put(&profile("b"), t0);
        cache.put(&profile("c"), t0);
        assert_eq!(
            (cache.get("a", t0), cache.get("c", t0)),
            (None, Some(profile("c")))
        );
        let off = Cache::new(Duration::ZERO, 10);
        off.put(&profile("a"), t0);
        assert_eq!(off.get("a", t0), None);
    }

    #[test]
    fn tags_are_trimmed_sorted_and_deduplicated_within_bounds() {
        let tags = normalize_tags(["vip ".to_owned(), "a".to_owned(), "vip".to_owned()]);
        assert_eq!(tags, Ok(vec!["a".to_owned(), "vip".to_owned()]));
        assert!(normalize_tags(["a|b".to_owned()]).is_err());
        assert!(normalize_tags([String::new()]).is_err());
        assert!(normalize_tags((0..=TAGS_MAX).map(|i| i.to_string())).is_err());
    }
}
