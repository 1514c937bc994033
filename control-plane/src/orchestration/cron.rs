//! Crontab schedules evaluated in a time zone, on the `croner` crate.
//!
//! Five fields (minute, hour, day of month, month, day of week) with `*`,
//! lists, ranges, steps (`*/15`, `10-50/20`, and the older `5/15`), month and
//! weekday names, `7` for Sunday, `L`, `W` and `#`, and the `@hourly`-style
//! shortcuts. Like Vixie cron, a restricted day of month and day of week
//! match when either matches. Around a daylight-saving change a fixed-time
//! schedule fires once: a local time skipped by the change fires at the
//! first minute after it, a local time that happens twice fires the first
//! time only; interval schedules (`*/30 * * * *`) fire in both halves of a
//! repeated hour, every 30 minutes of real time.
//!
//! The one thing written here is the error text: croner says what is wrong
//! with a value, this module also says which field holds it.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::{Timestamp, tz::TimeZone};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
}

/// The field names, in order.
const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        // `5/15` meant `5-59/15` before croner: schedules saved then keep working.
        .sloppy_ranges(true)
        .build()
}

impl Schedule {
    /// Parses five fields or a shortcut (`@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`). A schedule that can never fire (`0 0 31 2 *`)
    /// is refused too.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let parser = parser();
        if !text.starts_with('@') {
            let fields: Vec<&str> = text.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(format!(
                    "`{text}` has {} fields: a crontab schedule has five (minute hour day-of-month month day-of-week)",
                    fields.len()
                ));
            }
            // Name the field at fault: each one alone, the others `*`.
            for (i, field) in fields.iter().enumerate() {
                let mut alone = ["*"; 5];
                alone[i] = field;
                if let Err(e) = parser.parse(&alone.join(" ")) {
                    return Err(format!("{}: `{field}`: {}", FIELDS[i], reason(&e)));
                }
            }
        }
        let cron = parser
            .parse(text)
            .map_err(|e| format!("`{text}`: {}", reason(&e)))?;
        let schedule = Schedule { cron };
        // Leap days come at least every eight years; nothing later is a schedule.
        let from = Timestamp::UNIX_EPOCH;
        if schedule.next_after(from, &TimeZone::UTC).is_none() {
            return Err(format!("`{text}` never fires (no such date)"));
        }
        Ok(schedule)
    }

    /// The first firing strictly after `after`, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|z| z.timestamp())
    }
}

/// croner's message, without its category prefix, as a sentence fragment.
fn reason(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    match e {
        CronError::ComponentError(m) | CronError::InvalidPattern(m) => {
            m.trim_end_matches('.').to_lowercase()
        }
        CronError::IllegalCharacters(_) => "not a number or a name".to_owned(),
        CronError::EmptyPattern => "empty".to_owned(),
        other => other.to_string(),
    }
}

/// The time zone with this IANA name, if known.
pub fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(s: &Schedule, after: &str, tz: &TimeZone) -> String {
        s.next_after(after.parse().unwrap(), tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn parses_crontab_syntax_and_refuses_the_rest() {
        for ok in [
            "*/5 * * * *",
            "0 9-17 * * mon-fri",
            "30 2 1,15 * *",
            "@daily",
            "@hourly",
            "@weekly",
            "@monthly",
            "@yearly",
            "0 0 * jan,jul sun",
            "0 0 * * 7",
            "5/15 * * * *",
            "0 0 L * *",
            "0 18 * * 5L",
            "0 9 15W * *",
            "0 9 * * 1#1",
        ] {
            Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, says) in [
            ("61 * * * *", "minute: `61`"),
            ("* * *", "five"),
            ("0 0 32 * *", "day of month: `32`"),
            ("*/0 * * * *", "step"),
            ("0 0 * * funday", "day of week: `funday`"),
            ("0 0 * 13 *", "month: `13`"),
            ("0 0 31 2 *", "never fires"),
            ("0 0 * * * *", "five"),
            ("", "five"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn next_firings_follow_the_time_zone() {
        let berlin = zone("Europe/Berlin").unwrap();
        let s = Schedule::parse("0 9 * * mon-fri").unwrap();
        // Saturday 2026-11-28 10:00 UTC → Monday 09:00 Berlin = 08:00 UTC.
        assert_eq!(
            next(&s, "2026-11-28T10:00:00Z", &berlin),
            "2026-11-30T08:00:00Z"
        );
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            next(&every5, "2026-11-28T10:02:30Z", &TimeZone::UTC),
            "2026-11-28T10:05:00Z"
        );
        // Either restricted day matches (Vixie): the 1st or any Monday.
        let either = Schedule::parse("0 0 1 * mon").unwrap();
        assert_eq!(
            next(&either, "2026-12-01T12:00:00Z", &TimeZone::UTC),
            "2026-12-07T00:00:00Z"
        );
        let leap = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            next(&leap, "2026-03-01T00:00:00Z", &TimeZone::UTC),
            "2028-02-29T00:00:00Z"
        );
        let first_monday = Schedule::parse("0 9 * * 1#1").unwrap();
        assert_eq!(
            next(&first_monday, "2026-12-08T00:00:00Z", &TimeZone::UTC),
            "2027-01-04T09:00:00Z"
        );
        assert!(zone("Mars/Olympus").is_none());
    }

    #[test]
    fn daylight_saving_changes_neither_skip_nor_repeat_a_daily_firing() {
        let berlin = zone("Europe/Berlin").unwrap();
        let at_0230 = Schedule::parse("30 2 * * *").unwrap();
        // 2026-03-29: 02:00 → 03:00. The skipped 02:30 fires at 03:00 local (01:00 UTC).
        assert_eq!(
            next(&at_0230, "2026-03-28T12:00:00Z", &berlin),
            "2026-03-29T01:00:00Z"
        );
        // 2026-10-25: 03:00 → 02:00. 02:30 happens twice; it fires the first time only.
        let first = next(&at_0230, "2026-10-24T12:00:00Z", &berlin);
        assert_eq!(first, "2026-10-25T00:30:00Z");
        assert_eq!(
            next(&at_0230, &first, &berlin),
            "2026-10-26T01:30:00Z",
            "the second 02:30 of the 25th does not fire"
        );
        // An interval schedule keeps its real-time interval through the repeated hour.
        let half_hourly = Schedule::parse("*/30 * * * *").unwrap();
        let mut t = "2026-10-25T00:10:00Z".to_owned();
        let mut seen = Vec::new();
        for _ in 0..4 {
            t = next(&half_hourly, &t, &berlin);
            seen.push(t.clone());
        }
        assert_eq!(
            seen,
            [
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }
}
