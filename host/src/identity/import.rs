//! Bulk import of customers from JSON Lines or CSV, streamed: the file is read a chunk at a
//! time and written a few hundred customers per transaction, so a file of any length imports
//! in constant memory. Each line is an idempotent upsert (importing the same file twice
//! changes nothing the second time); a bad line is reported with its number, field and reason
//! while the good lines land.
//!
//! JSON Lines: one object per line with `customer_number` and `region` (required), `tier`,
//! `tags` (an array of strings) and `status` (`active` or `frozen`). CSV: a header line naming
//! the same columns in any order, then one customer per line; fields may be quoted (`"a,b"`,
//! `""` for a quote); tags are separated by `|`. A line states the whole profile: a missing
//! tier, tags or status means none, none and active.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::customers::{self, Profile, Saved, Status, check_tier, normalize_tags};
use super::{CUSTOMER_ID_BYTES_MAX, is_region, region_within};
use crate::audit::admin::{self as admin_audit, Change};
use crate::db::Pool;

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// A header line, then comma-separated fields.
    Csv,
}

impl Format {
    /// The format a name (`jsonl`, `ndjson`, `csv`) or a file extension means.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The bounds of one import.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Longest line; a longer one is rejected (and skipped to its end).
    pub line_bytes_max: usize,
    /// Bad lines listed in the report; the rest are only counted.
    pub errors_listed_max: usize,
}

/// A bad line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// 1-based line number in the file.
    pub line: u64,
    /// The field at fault (`""`: the line as a whole).
    pub field: String,
    /// What is wrong, and so what to fix.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Non-empty lines read (the CSV header included).
    pub lines: u64,
    /// New customers.
    pub inserted: u64,
    /// Known customers whose profile changed.
    pub updated: u64,
    /// Known customers already exactly as the line says.
    pub unchanged: u64,
    /// Bad lines.
    pub rejected: u64,
    /// The first bad lines.
    pub errors: Vec<LineError>,
    /// Bad lines beyond those listed.
    pub errors_not_listed: u64,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The CSV header is unusable, so no line can be read.
    #[error("{0}")]
    Header(String),
    /// The database failed; the batches before this one were imported.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One good line.
#[derive(Debug, Clone)]
struct Record {
    line: u64,
    customer_number: String,
    region: String,
    tier: String,
    tags: Vec<String>,
    status: Status,
}

/// Customers written per transaction.
const BATCH: usize = 500;

const FIELDS: [&str; 5] = ["customer_number", "region", "tier", "tags", "status"];

/// An import in progress: feed it the file's bytes in any chunks, then finish it.
pub struct Importer {
    db: Pool,
    format: Format,
    actor: String,
    scope: Option<String>,
    limits: ImportLimits,
    /// CSV: the field each column holds.
    header: Option<Vec<usize>>,
    pending: Vec<Record>,
    summary: Summary,
    partial: Vec<u8>,
    overlong: bool,
    line: u64,
}

impl Importer {
    /// An import into `db` (the writer pool) by `actor`, limited to regions within `scope`
    /// when given.
    pub fn new(
        db: Pool,
        format: Format,
        actor: &str,
        scope: Option<&str>,
        limits: ImportLimits,
    ) -> Self {
        Importer {
            db,
            format,
            actor: actor.to_owned(),
            scope: scope.map(str::to_owned),
            limits,
            header: None,
            pending: Vec::with_capacity(BATCH),
            summary: Summary::default(),
            partial: Vec::new(),
            overlong: false,
            line: 0,
        }
    }

    /// What the import has done so far (for progress).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Reads the next bytes of the file.
    pub async fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ImportError> {
        while !bytes.is_empty() {
            let (content, rest, complete) = match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if !self.overlong {
                if self.partial.len() + content.len() > self.limits.line_bytes_max {
                    self.overlong = true;
                    self.partial.clear();
                } else {
                    self.partial.extend_from_slice(content);
                }
            }
            if complete {
                self.end_line().await?;
            }
        }
        Ok(())
    }

    /// Reads the last line and writes what is pending; returns the summary.
    pub async fn finish(mut self) -> Result<Summary, ImportError> {
        if !self.partial.is_empty() || self.overlong {
            self.end_line().await?;
        }
        self.flush().await?;
        let summary = self.summary.clone();
        let mut transaction = self.db.begin().await?;
        let change = Change {
            actor: &self.actor,
            action: "customers.import",
            target: "customers".into(),
            region: self.scope.as_deref(),
            before: None,
            after: Some(serde_json::json!({
                "lines": summary.lines,
                "inserted": summary.inserted,
                "updated": summary.updated,
                "unchanged": summary.unchanged,
                "rejected": summary.rejected,
            })),
        };
        admin_audit::record(&mut transaction.conn(), &change, crate::ledger::now_ms()).await?;
        transaction.commit().await?;
        Ok(summary)
    }

    fn reject(&mut self, line: u64, field: &str, reason: String) {
        self.summary.rejected += 1;
        if self.summary.errors.len() < self.limits.errors_listed_max {
            self.summary.errors.push(LineError {
                line,
                field: field.to_owned(),
                reason,
            });
        } else {
            self.summary.errors_not_listed += 1;
        }
    }

    async fn end_line(&mut self) -> Result<(), ImportError> {
        self.line += 1;
        let line = self.line;
        let bytes = std::mem::take(&mut self.partial);
        if std::mem::take(&mut self.overlong) {
            self.summary.lines += 1;
            let max = self.limits.line_bytes_max;
            self.reject(line, "", format!("the line is longer than {max} bytes"));
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            self.summary.lines += 1;
            self.reject(line, "", "the line is not UTF-8".into());
            return Ok(());
        };
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return Ok(());
        }
        self.summary.lines += 1;
        let fields = match self.format {
            Format::JsonLines => json_fields(text),
            Format::Csv => match &self.header {
                None => {
                    self.header = Some(csv_header(text)?);
                    return Ok(());
                }
                Some(header) => csv_fields(text, header),
            },
        };
        match fields.and_then(|fields| record(line, fields)) {
            Ok(record) => {
                self.pending.push(record);
                if self.pending.len() >= BATCH {
                    self.flush().await?;
                }
            }
            Err((field, reason)) => self.reject(line, field, reason),
        }
        Ok(())
    }

    /// Writes the pending customers in one transaction.
    async fn flush(&mut self) -> Result<(), ImportError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let now_ms = crate::ledger::now_ms();
        let mut transaction = self.db.begin().await?;
        let mut conn = transaction.conn();
        let ids: Vec<String> = records.iter().map(|r| r.customer_number.clone()).collect();
        let stored = customers::get_many(&mut conn, &ids).await?;
        let mut current: HashMap<String, Profile> = stored.clone();
        let mut order: Vec<String> = Vec::new();
        for record in records {
            let known = current.get(&record.customer_number);
            if let Some(scope) = &self.scope {
                if !region_within(&record.region, scope) {
                    self.reject(
                        record.line,
                        "region",
                        format!("{} is outside your region {scope}", record.region),
                    );
                    continue;
                }
                if let Some(known) = known
                    && !region_within(&known.region, scope)
                {
                    // Which region is not said: a branch learns no more of other regions'
                    // customers than that it cannot import this one.
                    let reason = format!(
                        "this customer is outside your region {scope}; head office can move \
                         them"
                    );
                    self.reject(record.line, "customer_number", reason);
                    continue;
                }
            }
            let after = Profile {
                customer_number: record.customer_number.clone(),
                region: record.region,
                tier: record.tier,
                tags: record.tags,
                status: record.status,
                created_at_ms: known.map_or(now_ms, |k| k.created_at_ms),
                updated_at_ms: now_ms,
            };
            match known {
                None => self.summary.inserted += 1,
                Some(known) if same_profile(known, &after) => {
                    self.summary.unchanged += 1;
                    continue;
                }
                Some(_) => self.summary.updated += 1,
            }
            if !order.contains(&after.customer_number) {
                order.push(after.customer_number.clone());
            }
            current.insert(after.customer_number.clone(), after);
        }
        let saved: Vec<Saved<'_>> = order
            .iter()
            .filter_map(|id| {
                Some(Saved {
                    before: stored.get(id),
                    after: current.get(id)?,
                })
            })
            .collect();
        let source = format!("import:{}", self.actor);
        customers::save(&mut conn, &saved, &source, now_ms).await?;
        transaction.commit().await?;
        Ok(())
    }
}

fn same_profile(a: &Profile, b: &Profile) -> bool {
    a.region == b.region && a.tier == b.tier && a.tags == b.tags && a.status == b.status
}

type Fields = Vec<(&'static str, Value)>;
type Refusal = (&'static str, String);

fn json_fields(text: &str) -> Result<Fields, Refusal> {
    let object: Map<String, Value> =
        serde_json::from_str(text).map_err(|error| ("", format!("not a JSON object: {error}")))?;
    object
        .into_iter()
        .map(|(name, value)| match FIELDS.iter().find(|f| **f == name) {
            Some(field) => Ok((*field, value)),
            None => Err((
                "",
                format!(
                    "unknown field {name:?}; the fields are {}",
                    FIELDS.join(", ")
                ),
            )),
        })
        .collect()
}

/// The field of each CSV column.
fn csv_header(text: &str) -> Result<Vec<usize>, ImportError> {
    let names = split_csv(text).map_err(ImportError::Header)?;
    let mut columns = Vec::with_capacity(names.len());
    for name in &names {
        let name = name.trim();
        let index = FIELDS.iter().position(|f| *f == name).ok_or_else(|| {
            ImportError::Header(format!(
                "line 1: unknown column {name:?}; the columns are {}",
                FIELDS.join(", ")
            ))
        })?;
        if columns.contains(&index) {
            return Err(ImportError::Header(format!(
                "line 1: column {name:?} appears twice"
            )));
        }
        columns.push(index);
    }
    for required in [0, 1] {
        if !columns.contains(&required) {
            return Err(ImportError::Header(format!(
                "line 1: the header needs a {:?} column",
                FIELDS[required]
            )));
        }
    }
    Ok(columns)
}

fn csv_fields(text: &str, header: &[usize]) -> Result<Fields, Refusal> {
    let values = split_csv(text).map_err(|reason| ("", reason))?;
    if values.len() != header.len() {
        return Err((
            "",
            format!(
                "{} fields, but the header has {}",
                values.len(),
                header.len()
            ),
        ));
    }
    Ok(header
        .iter()
        .zip(values)
        .filter(|(_, value)| !value.is_empty())
        .map(|(column, value)| {
            let field = FIELDS[*column];
            let value = if field == "tags" {
                Value::Array(
                    value
                        .split('|')
                        .map(|t| Value::String(t.to_owned()))
                        .collect(),
                )
            } else {
                Value::String(value)
            };
            (field, value)
        })
        .collect())
}

/// The fields of one CSV line: comma-separated, optionally quoted, `""` a quote in quotes.
fn split_csv(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (false, c) if was_quoted => {
                return Err(format!("{c:?} after a closing quote"));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

fn string(field: &'static str, value: Value) -> Result<String, Refusal> {
    match value {
        Value::String(text) => Ok(text),
        other => Err((field, format!("must be a string, not {other}"))),
    }
}

fn record(line: u64, fields: Fields) -> Result<Record, Refusal> {
    let mut customer_number = None;
    let mut region = None;
    let mut tier = String::new();
    let mut tags = Vec::new();
    let mut status = Status::Active;
    for (field, value) in fields {
        match field {
            "customer_number" => {
                let id = string(field, value)?;
                if id.is_empty() || id.len() > CUSTOMER_ID_BYTES_MAX {
                    return Err((field, format!("must be 1 to {CUSTOMER_ID_BYTES_MAX} bytes")));
                }
                customer_number = Some(id);
            }
            "region" => {
                let name = string(field, value)?;
                if !is_region(&name) {
                    return Err((
                        field,
                        format!(
                            "{name:?} is not a region: 1 to 64 lowercase letters, digits or '-'"
                        ),
                    ));
                }
                region = Some(name);
            }
            "tier" => {
                tier = string(field, value)?;
                check_tier(&tier).map_err(|reason| (field, reason))?;
            }
            "tags" => {
                let Value::Array(items) = value else {
                    return Err((field, "must be an array of strings".into()));
                };
                let items = items
                    .into_iter()
                    .map(|item| string(field, item))
                    .collect::<Result<Vec<_>, _>>()?;
                tags = normalize_tags(items).map_err(|reason| (field, reason))?;
            }
            "status" => {
                let name = string(field, value)?;
                status = Status::parse(&name).ok_or((
                    field,
                    format!("{name:?} is neither \"active\" nor \"frozen\""),
                ))?;
            }
            _ => unreachable!("fields are checked against FIELDS"),
        }
    }
    Ok(Record {
        line,
        customer_number: customer_number.ok_or(("customer_number", "is required".to_owned()))?,
        region: region.ok_or(("region", "is required".to_owned()))?,
        tier,
        tags,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_be_quoted() {
        assert_eq!(
            split_csv(r#"a,"b,c","d""e",,f"#).expect("valid"),
            ["a", "b,c", "d\"e", "", "f"]
        );
        assert!(split_csv(r#"a,"b"#).is_err());
        assert!(split_csv(r#"a,b"c"#).is_err());
        assert!(split_csv(r#""a"b,c"#).is_err());
    }

    #[test]
    fn a_line_names_the_field_at_fault() {
        let fields = json_fields(r#"{"customer_number": "1", "region": "CN"}"#).expect("json");
        assert_eq!(
            record(1, fields).map(|_| ()).expect_err("refused").0,
            "region"
        );
        let fields = json_fields(r#"{"region": "cn"}"#).expect("json");
        assert_eq!(
            record(1, fields).map(|_| ()).expect_err("refused"),
            ("customer_number", "is required".into())
        );
        assert_eq!(
            json_fields(r#"{"nickname": 1}"#)
                .map(|_| ())
                .expect_err("refused")
                .0,
            ""
        );
        let header = csv_header("region,customer_number,tags").expect("header");
        let fields = csv_fields("cn-fj,42,vip|young", &header).expect("fields");
        let record = record(2, fields).expect("valid");
        assert_eq!(
            (record.customer_number.as_str(), record.tags),
            ("42", vec!["vip".into(), "young".into()])
        );
        assert!(csv_header("region,nickname").is_err());
    }
}
