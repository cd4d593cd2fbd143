//! Dates of the proleptic Gregorian calendar in UTC, from and to days and milliseconds since
//! the epoch (H. Hinnant's algorithms): what the CDC's Debezium types and the lake's date
//! columns need, without a time-zone database.

/// Days since 1970-01-01 of a date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` (UTC) of epoch milliseconds.
pub fn date_of_millis(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of epoch milliseconds: sorts as the time does, and reads
/// as a timestamp in Spark SQL and DataFusion alike.
pub fn datetime_of_millis(ms: i64) -> String {
    let of_day = ms.rem_euclid(86_400_000);
    format!(
        "{} {:02}:{:02}:{:02}.{:03}",
        date_of_millis(ms),
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

/// `2026-11-25T10:00:00[.123]Z` in epoch milliseconds.
pub fn millis_of_iso(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if !(0..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':');
    let (hh, mm, ss): (i64, i64, i64) = (
        h.next()?.parse().ok()?,
        h.next()?.parse().ok()?,
        h.next()?.parse().ok()?,
    );
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32)
    };
    let days = days_from_civil(y, m, day);
    if !(0..24).contains(&hh) || !(0..60).contains(&mm) || !(0..61).contains(&ss) {
        return None;
    }
    days.checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss)?
        .checked_mul(1000)?
        .checked_add(ms)
}

/// The hour of the day (UTC, 0–23) of epoch milliseconds.
pub fn hour_of_millis(ms: i64) -> i32 {
    (ms.rem_euclid(86_400_000) / 3_600_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps_parse_to_millis() {
        assert_eq!(millis_of_iso("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            millis_of_iso("2026-11-25T10:00:00.123Z"),
            Some(1_795_600_800_123)
        );
        assert_eq!(millis_of_iso("not a time"), None);
        assert_eq!(millis_of_iso("2026-11-25T99999999999999:00:00Z"), None);
        assert_eq!(millis_of_iso("99999999999999999-11-25T10:00:00Z"), None);
    }

    #[test]
    fn datetimes_of_millis_are_utc_with_millis() {
        assert_eq!(datetime_of_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            datetime_of_millis(1_795_600_800_123),
            "2026-11-25 10:00:00.123"
        );
        assert_eq!(datetime_of_millis(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-719_468, -1, 0, 1, 11_016, 20_417, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(date_of_millis(1_795_600_800_123), "2026-11-25");
        assert_eq!(hour_of_millis(1_795_600_800_123), 10);
        assert_eq!(date_of_millis(-1), "1969-12-31");
        assert_eq!(hour_of_millis(-1), 23);
    }
}
