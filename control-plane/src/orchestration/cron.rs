//! Standard crontab schedules (five fields: minute, hour, day of month,
//! month, day of week; `*`, lists, ranges, steps, month and weekday names,
//! `@hourly`-style shortcuts) evaluated in a time zone. Like Vixie cron, a
//! restricted day of month and day of week match when either matches.

use jiff::{Timestamp, Zoned, tz::TimeZone};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(text: &str, names: &[&str], offset: u32) -> Option<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return Some(n);
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
        .map(|i| i as u32 + offset)
}

fn field(
    text: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| format!("{name}: `/{s}` is not a step"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a =
                value(a, names, offset).ok_or_else(|| format!("{name}: `{a}` is not a value"))?;
            let b =
                value(b, names, offset).ok_or_else(|| format!("{name}: `{b}` is not a value"))?;
            (a, b)
        } else {
            let v = value(range, names, offset)
                .ok_or_else(|| format!("{name}: `{range}` is not a value"))?;
            (v, if part.contains('/') { max } else { v })
        };
        // Sunday may be written 7.
        let hi = if name == "day of week" && hi == 7 {
            7
        } else {
            hi
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{name}: `{range}` is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok(set)
}

impl Schedule {
    /// Parses five fields or a shortcut (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields: a crontab schedule has five (minute hour day-of-month month day-of-week)",
                fields.len()
            ));
        }
        let mut weekdays = field(fields[4], "day of week", 0, 7, &DAYS, 0)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Schedule {
            minutes: field(fields[0], "minute", 0, 59, &[], 0)?,
            hours: field(fields[1], "hour", 0, 23, &[], 0)?,
            days: field(fields[2], "day of month", 1, 31, &[], 0)?,
            months: field(fields[3], "month", 1, 12, &MONTHS, 1)?,
            weekdays,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
        })
    }

    fn matches(&self, t: &Zoned) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().to_sunday_zero_offset() as usize];
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }

    /// The first firing strictly after `after`, in `tz` (within five years).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone());
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::Span::new().minutes(1))
            .ok()?;
        for _ in 0..(5 * 366 * 24 * 60) {
            if self.matches(&t) {
                return Some(t.timestamp());
            }
            t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
        }
        None
    }
}

/// The time zone with this IANA name, if known.
pub fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crontab_syntax_and_refuses_the_rest() {
        for ok in [
            "*/5 * * * *",
            "0 9-17 * * mon-fri",
            "30 2 1,15 * *",
            "@daily",
            "0 0 * jan,jul sun",
            "0 0 * * 7",
        ] {
            Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, says) in [
            ("61 * * * *", "minute"),
            ("* * *", "five"),
            ("0 0 32 * *", "day of month"),
            ("*/0 * * * *", "step"),
            ("0 0 * * funday", "day of week"),
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
        let after: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        assert_eq!(
            s.next_after(after, &berlin).unwrap().to_string(),
            "2026-11-30T08:00:00Z"
        );
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        let t: Timestamp = "2026-11-28T10:02:30Z".parse().unwrap();
        assert_eq!(
            every5.next_after(t, &TimeZone::UTC).unwrap().to_string(),
            "2026-11-28T10:05:00Z"
        );
        assert!(zone("Mars/Olympus").is_none());
    }
}
