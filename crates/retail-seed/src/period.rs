//! Reporting periods as agents write them (`2026`, `2026-03`, `2026-Q1`, `last_N_days`, a date
//! range, `all`), shared by every server so one composite tool can pass the same `period` to all
//! of them and add the results up.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

/// A half-open range of timestamps, `[from, to)`, in the stored text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The period as the caller wrote it (`all` when absent).
    pub label: String,
    /// First timestamp included.
    pub from: String,
    /// First timestamp excluded.
    pub to: String,
}

/// The forms accepted, for error messages and tool descriptions.
pub const PERIOD_FORMS: &str = "`all`, `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days`, or `YYYY-MM-DD..YYYY-MM-DD` (end exclusive)";

impl Period {
    /// Every timestamp.
    pub fn all() -> Self {
        Self {
            label: "all".into(),
            from: "0000".into(),
            to: "9999".into(),
        }
    }

    /// Parses a period; the error names the input and lists the accepted forms.
    ///
    /// `last_N_days` counts back from the wall clock, as the SQL server does, so the same period
    /// covers the same days on both servers.
    pub fn parse(input: Option<&str>) -> Result<Self, String> {
        Self::parse_at(input, Utc::now())
    }

    /// Like [`Period::parse`], with `now` for `last_N_days`.
    pub fn parse_at(input: Option<&str>, now: DateTime<Utc>) -> Result<Self, String> {
        let Some(raw) = input.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::all());
        };
        let bad = || format!("`{raw}` is not a period; use {PERIOD_FORMS}");
        let range = |from: NaiveDate, to: NaiveDate| Self {
            label: raw.to_owned(),
            from: day(from),
            to: day(to),
        };
        if raw.eq_ignore_ascii_case("all") {
            return Ok(Self::all());
        }
        if let Some(days) = raw
            .strip_prefix("last_")
            .and_then(|r| r.strip_suffix("_days"))
        {
            let n: i64 = days.parse().map_err(|_| bad())?;
            if !(1..=3650).contains(&n) {
                return Err(format!("`{raw}`: N must be between 1 and 3650"));
            }
            return Ok(Self {
                label: raw.to_owned(),
                from: crate::timestamp(now - Duration::days(n)),
                to: crate::timestamp(now + Duration::seconds(1)),
            });
        }
        if let Some((a, b)) = raw.split_once("..") {
            let from = NaiveDate::parse_from_str(a, "%Y-%m-%d").map_err(|_| bad())?;
            let to = NaiveDate::parse_from_str(b, "%Y-%m-%d").map_err(|_| bad())?;
            if to <= from {
                return Err(format!("`{raw}`: the end must be after the start"));
            }
            return Ok(range(from, to));
        }
        if let Some((year, quarter)) = raw
            .split_once('-')
            .filter(|(_, q)| q.starts_with(['Q', 'q']))
        {
            let year: i32 = year.parse().map_err(|_| bad())?;
            let q: u32 = quarter.get(1..).unwrap_or("").parse().map_err(|_| bad())?;
            if !(1..=4).contains(&q) {
                return Err(bad());
            }
            let from = NaiveDate::from_ymd_opt(year, (q - 1) * 3 + 1, 1).ok_or_else(bad)?;
            return Ok(range(from, add_months(from, 3).ok_or_else(bad)?));
        }
        if raw.len() == 7 {
            let from =
                NaiveDate::parse_from_str(&format!("{raw}-01"), "%Y-%m-%d").map_err(|_| bad())?;
            return Ok(range(from, add_months(from, 1).ok_or_else(bad)?));
        }
        if raw.len() == 4 {
            let year: i32 = raw.parse().map_err(|_| bad())?;
            let from = NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(bad)?;
            let to = NaiveDate::from_ymd_opt(year + 1, 1, 1).ok_or_else(bad)?;
            return Ok(range(from, to));
        }
        Err(bad())
    }
}

fn day(d: NaiveDate) -> String {
    format!("{}T00:00:00Z", d.format("%Y-%m-%d"))
}

fn add_months(d: NaiveDate, months: u32) -> Option<NaiveDate> {
    let total = d.month0() + months;
    NaiveDate::from_ymd_opt(d.year() + (total / 12) as i32, total % 12 + 1, 1)
}

/// Parses `YYYY-MM-DD` (or a full timestamp) into the stored timestamp form.
pub fn parse_since(input: &str) -> Result<String, String> {
    let date = input.get(..10).unwrap_or(input);
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(day)
        .map_err(|_| format!("`{input}` is not a date (YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let m = Period::parse(Some("2026-03")).expect("month");
        assert_eq!(
            (m.from.as_str(), m.to.as_str()),
            ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
        );
        let q = Period::parse(Some("2025-Q4")).expect("quarter");
        assert_eq!(
            (q.from.as_str(), q.to.as_str()),
            ("2025-10-01T00:00:00Z", "2026-01-01T00:00:00Z")
        );
        let y = Period::parse(Some("2026")).expect("year");
        assert_eq!(y.to, "2027-01-01T00:00:00Z");
        let r = Period::parse(Some("2026-01-15..2026-02-01")).expect("range");
        assert_eq!(r.from, "2026-01-15T00:00:00Z");
        assert_eq!(Period::parse(None).expect("none"), Period::all());
        assert_eq!(Period::parse(Some("ALL")).expect("all"), Period::all());
        let now = DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let last = Period::parse_at(Some("last_30_days"), now).expect("last days");
        assert_eq!(last.from, "2026-05-11T12:00:00Z");
        assert_eq!(last.to, "2026-06-10T12:00:01Z");
    }

    #[test]
    fn rejected_forms_name_the_input() {
        for bad in [
            "2026-13",
            "2026-Q5",
            "2026-Q",
            "yesterday",
            "2026-02-01..2026-01-01",
            "20x6",
            "last_0_days",
            "last_x_days",
        ] {
            let err = Period::parse(Some(bad)).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }
}
