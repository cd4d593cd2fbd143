//! The API's query parameters: dates, day ranges and limits, read from what a client sent and
//! checked, with a message that says what to write when they do not read. Pure, so that any
//! text can be thrown at them (the fuzz target `api_params`, and the property tests below).

use crate::calendar;

/// Days since the epoch of `YYYY-MM-DD` (a real date, in that one spelling, only).
pub fn parse_day(v: &str) -> Option<i64> {
    let mut parts = v.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    if !(y.bytes().chain(m.bytes()).chain(d.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let days = calendar::days_from_civil(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    (day_name(days) == v).then_some(days)
}

/// `YYYY-MM-DD` of a day since the epoch.
pub fn day_name(days: i64) -> String {
    calendar::date_of_millis(days.saturating_mul(86_400_000))
}

/// Days since the epoch of the date parameter `name` (`default` when there is none).
pub fn date(name: &str, value: Option<&str>, default: i64) -> Result<i64, String> {
    match value {
        None => Ok(default),
        Some(v) => parse_day(v).ok_or_else(|| {
            format!("{name}={v:?} is not a date: write YYYY-MM-DD, e.g. 2026-11-25")
        }),
    }
}

/// `from` and `to` (days since the epoch, inclusive), by default the 7 days to `today`; at
/// most `max_days` of them.
pub fn day_range(
    from: Option<&str>,
    to: Option<&str>,
    today: i64,
    max_days: i64,
) -> Result<(i64, i64), String> {
    let to = date("to", to, today)?;
    let from = date("from", from, to - 6)?;
    if from > to {
        return Err(format!(
            "from ({}) is after to ({})",
            day_name(from),
            day_name(to)
        ));
    }
    if to - from >= max_days {
        return Err(format!(
            "the range spans {} days; ask for at most {max_days} at a time",
            to - from + 1
        ));
    }
    Ok((from, to))
}

/// A `limit` parameter: a whole number from 1 to `max` (`default` when there is none).
pub fn limit(value: Option<&str>, default: usize, max: usize) -> Result<usize, String> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("limit={v:?}: give a whole number from 1 to {max}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_real_dates_in_one_spelling_are_days() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(
            parse_day("2026-11-25").map(day_name).as_deref(),
            Some("2026-11-25")
        );
        for bad in [
            "2026-02-30",
            "2026-1-05",
            "26-11-25",
            "2026-11-25T00",
            "today",
            "",
            "+202-11-25",
            "2026-+1-05",
            "9999-99-99",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_default_to_a_week_and_say_what_is_wrong() {
        assert_eq!(day_range(None, None, 100, 366), Ok((94, 100)));
        assert_eq!(day_range(None, Some("1970-01-11"), 100, 366), Ok((4, 10)));
        let after = day_range(Some("1970-01-03"), Some("1970-01-02"), 100, 366).unwrap_err();
        assert!(after.contains("is after"), "{after}");
        let long = day_range(Some("1970-01-01"), Some("1971-01-02"), 1000, 366).unwrap_err();
        assert!(long.contains("at most 366"), "{long}");
        assert_eq!(limit(None, 5, 100), Ok(5));
        assert_eq!(limit(Some("100"), 5, 100), Ok(100));
        for bad in ["0", "101", "-1", "ten", "", "1e3", "18446744073709551616"] {
            assert!(limit(Some(bad), 5, 100).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Any text: no panic; a day read is the text's own spelling; a range read is ordered
        /// and within its bound; a limit read is within its bounds.
        #[test]
        fn any_text_reads_or_says_why(a in ".{0,24}", b in ".{0,24}", today in -1_000_000i64..1_000_000) {
            if let Some(d) = parse_day(&a) {
                prop_assert_eq!(day_name(d), a.clone());
            }
            if let Ok((from, to)) = day_range(Some(&a), Some(&b), today, 366) {
                prop_assert!(from <= to && to - from < 366);
            }
            if let Ok(n) = limit(Some(&a), 5, 100) {
                prop_assert!((1..=100).contains(&n));
            }
        }

        /// Every real date in the four-digit years reads back to its day.
        #[test]
        fn every_day_of_four_digit_years_reads(days in -719_162i64..2_932_896) {
            prop_assert_eq!(parse_day(&day_name(days)), Some(days));
        }
    }
}
