//! The bank's calendar: local days (draw days start and end at local midnight) and working
//! days (a prize paid "after five working days" skips weekends and the region's holidays).
//!
//! Dates are counted as days since 1970-01-01 and converted to and from `YYYY-MM-DD` with
//! the proleptic Gregorian rules; local time is UTC plus one fixed offset, which is how a
//! bank in one time zone without daylight saving (China Standard Time, UTC+8) keeps its books.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// A calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i64);

impl Date {
    /// The date `days` days after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        Date(days)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        self.0
    }

    /// Parses `YYYY-MM-DD`; `None` unless it is a real date.
    pub fn parse(text: &str) -> Option<Date> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            part.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date(days_from_civil(year, month, day)))
    }

    /// Year, month (1–12) and day (1–31).
    pub fn civil(self) -> (i64, i64, i64) {
        // Howard Hinnant's `civil_from_days`.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// The day of the week.
    pub fn weekday(self) -> Weekday {
        // 1970-01-01 was a Thursday.
        Weekday::ALL[(self.0 + 3).rem_euclid(7) as usize]
    }

    /// The next day.
    pub fn next(self) -> Date {
        Date(self.0 + 1)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];
}

/// The bank's calendar, as configured in `[calendar]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// The bank's local time as minutes east of UTC (480: China Standard Time). Days (for
    /// draw seeds and working days) start at local midnight.
    #[serde(default = "default_utc_offset_minutes")]
    pub utc_offset_minutes: i32,
    /// The days of the week that are not working days.
    #[serde(default = "default_weekend")]
    pub weekend: Vec<Weekday>,
    /// Public holidays (`YYYY-MM-DD`) by region; a region's holidays apply to the regions
    /// below it too (`cn` for the whole country, `cn-fj` for one province).
    #[serde(default)]
    pub holidays: BTreeMap<String, Vec<String>>,
    /// Weekend days that are working days all the same (make-up days after a long holiday),
    /// by region like `holidays`.
    #[serde(default)]
    pub working_weekends: BTreeMap<String, Vec<String>>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        Self {
            utc_offset_minutes: default_utc_offset_minutes(),
            weekend: default_weekend(),
            holidays: BTreeMap::new(),
            working_weekends: BTreeMap::new(),
        }
    }
}

fn default_utc_offset_minutes() -> i32 {
    480
}
fn default_weekend() -> Vec<Weekday> {
    vec![Weekday::Saturday, Weekday::Sunday]
}

/// The working-day calendar, checked and ready to answer.
#[derive(Debug, Clone)]
pub struct Calendar {
    offset_ms: i64,
    weekend: Vec<Weekday>,
    holidays: BTreeMap<String, BTreeSet<Date>>,
    working_weekends: BTreeMap<String, BTreeSet<Date>>,
}

/// The longest stretch of non-working days `add_working_days` crosses before it gives up
/// (a calendar that makes every day a holiday would otherwise never end).
const NON_WORKING_RUN_MAX: i64 = 366;

impl Calendar {
    /// Checks `config`: the offset within ±18 hours, every date real.
    pub fn new(config: &CalendarConfig) -> Result<Calendar, String> {
        if config.utc_offset_minutes.abs() > 18 * 60 {
            return Err(format!(
                "calendar.utc_offset_minutes must be within ±1080 (±18 hours), not {}",
                config.utc_offset_minutes
            ));
        }
        let dates = |key: &str, by_region: &BTreeMap<String, Vec<String>>| {
            let mut parsed = BTreeMap::new();
            for (region, days) in by_region {
                let mut set = BTreeSet::new();
                for day in days {
                    let date = Date::parse(day).ok_or_else(|| {
                        format!("calendar.{key}.{region}: {day:?} is not a date (YYYY-MM-DD)")
                    })?;
                    set.insert(date);
                }
                parsed.insert(region.clone(), set);
            }
            Ok::<_, String>(parsed)
        };
        Ok(Calendar {
            offset_ms: i64::from(config.utc_offset_minutes) * 60_000,
            weekend: config.weekend.clone(),
            holidays: dates("holidays", &config.holidays)?,
            working_weekends: dates("working_weekends", &config.working_weekends)?,
        })
    }

    /// The local day that contains `ms` (milliseconds since the Unix epoch).
    pub fn day_of(&self, ms: i64) -> Date {
        Date((ms + self.offset_ms).div_euclid(DAY_MS))
    }

    /// When `day` starts (local midnight), in milliseconds since the Unix epoch.
    pub fn start_of(&self, day: Date) -> i64 {
        day.0 * DAY_MS - self.offset_ms
    }

    /// Whether `day` is a working day in `region`: not a weekend day unless a make-up working
    /// day, and not a holiday of the region or any region above it.
    pub fn is_working_day(&self, region: &str, day: Date) -> bool {
        let listed = |sets: &BTreeMap<String, BTreeSet<Date>>| {
            crate::registry::regions::ancestry(region)
                .any(|r| sets.get(r).is_some_and(|days| days.contains(&day)))
        };
        if listed(&self.holidays) {
            return false;
        }
        !self.weekend.contains(&day.weekday()) || listed(&self.working_weekends)
    }

    /// The time `days` working days after `ms` in `region`: the same local time of day on
    /// the `days`-th working day after the day of `ms`. `None` if the calendar has no working
    /// day for a year.
    pub fn add_working_days(&self, region: &str, ms: i64, days: u32) -> Option<i64> {
        let start = self.day_of(ms);
        let time_of_day = ms - self.start_of(start);
        let mut day = start;
        for _ in 0..days {
            let mut skipped = 0;
            day = day.next();
            while !self.is_working_day(region, day) {
                skipped += 1;
                if skipped > NON_WORKING_RUN_MAX {
                    return None;
                }
                day = day.next();
            }
        }
        Some(self.start_of(day) + time_of_day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calendar(toml_text: &str) -> Calendar {
        let config: CalendarConfig = toml::from_str(toml_text).expect("valid calendar");
        Calendar::new(&config).expect("valid calendar")
    }

    #[test]
    fn dates_round_trip_and_know_their_weekday() {
        for text in ["1970-01-01", "2000-02-29", "2026-12-01", "2100-12-31"] {
            assert_eq!(Date::parse(text).expect(text).to_string(), text);
        }
        assert_eq!(Date::parse("1970-01-02").map(Date::days), Some(1));
        assert_eq!(
            Date::parse("2026-12-01").map(Date::weekday),
            Some(Weekday::Tuesday)
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "2026-12-00",
            "+026-12-01",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_start_at_local_midnight() {
        let calendar = calendar("utc_offset_minutes = 480");
        let day = Date::parse("2026-12-01").expect("date");
        // 2026-12-01T00:00+08:00 is 2026-11-30T16:00Z.
        let start = calendar.start_of(day);
        assert_eq!(calendar.day_of(start), day);
        assert_eq!(calendar.day_of(start - 1), Date(day.0 - 1));
        assert_eq!(start % DAY_MS, 16 * 3_600_000);
    }

    #[test]
    fn working_days_skip_weekends_and_the_regions_holidays() {
        let calendar = calendar(
            r#"
            utc_offset_minutes = 0
            [holidays]
            cn = ["2026-10-01", "2026-10-02"]
            cn-fj = ["2026-10-05"]
            [working_weekends]
            cn = ["2026-10-10"]
            "#,
        );
        let at = |date: &str, hour: i64| {
            calendar.start_of(Date::parse(date).expect("date")) + hour * 3_600_000
        };
        // Friday 2026-09-25 + 1 working day = Monday 2026-09-28, same time of day.
        assert_eq!(
            calendar.add_working_days("cn", at("2026-09-25", 15), 1),
            Some(at("2026-09-28", 15))
        );
        // Wednesday 2026-09-30 + 2: Thu and Fri are national holidays, the weekend is off,
        // Monday 10-05 is a holiday in Fujian only.
        assert_eq!(
            calendar.add_working_days("cn-fj-xm", at("2026-09-30", 9), 2),
            Some(at("2026-10-07", 9))
        );
        assert_eq!(
            calendar.add_working_days("cn-gd", at("2026-09-30", 9), 2),
            Some(at("2026-10-06", 9))
        );
        // Saturday 2026-10-10 is a make-up working day.
        assert_eq!(
            calendar.add_working_days("cn", at("2026-10-09", 9), 1),
            Some(at("2026-10-10", 9))
        );
        // Zero working days is the same instant.
        assert_eq!(
            calendar.add_working_days("cn", at("2026-10-03", 9), 0),
            Some(at("2026-10-03", 9))
        );
    }

    #[test]
    fn a_calendar_without_working_days_gives_up_instead_of_looping() {
        let calendar = calendar(
            r#"weekend = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]"#,
        );
        assert_eq!(calendar.add_working_days("cn", 0, 1), None);
    }

    #[test]
    fn bad_dates_and_offsets_are_refused_by_name() {
        let config: CalendarConfig =
            toml::from_str("[holidays]\ncn = [\"2026-02-30\"]").expect("parses");
        let error = Calendar::new(&config).expect_err("not a date");
        assert!(error.contains("calendar.holidays.cn"), "{error}");
        let config: CalendarConfig = toml::from_str("utc_offset_minutes = 2000").expect("parses");
        assert!(Calendar::new(&config).is_err());
    }
}
