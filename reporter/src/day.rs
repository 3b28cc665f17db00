//! Calendar days (UTC) as counted by the raw-events partitions: days since 1970-01-01.
//! Pure functions; no clock is read here except by [`today`].

use std::time::{SystemTime, UNIX_EPOCH};

pub const NS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// The day (since the Unix epoch, UTC) of a Unix-nanosecond time.
pub fn of_unix_ns(ns: u64) -> i32 {
    // u64 ns / 86400e9 ≤ 213_503 days: fits in i32.
    (ns / NS_PER_DAY) as i32
}

/// Today's day number from the wall clock.
pub fn today() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i32
}

/// (year, month, day) of a day number (proleptic Gregorian; H. Hinnant's `civil_from_days`).
pub fn civil(days: i32) -> (i32, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

/// Name of the raw-events partition holding `days`: `events_YYYYMMDD`.
pub fn partition_name(days: i32) -> String {
    let (y, m, d) = civil(days);
    format!("events_{y:04}{m:02}{d:02}")
}

/// Inverse of [`partition_name`] for names this module made; `None` for anything else.
pub fn parse_partition_name(name: &str) -> Option<i32> {
    let digits = name.strip_prefix("events_")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = digits[..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..].parse().ok()?;
    let days = days_from_civil(y, m, d);
    (civil(days) == (y, m, d)).then_some(days)
}

/// Day number of a (year, month, day).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y as i64 - 1 } else { y as i64 };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(partition_name(20_418), "events_20251126");
    }

    #[test]
    fn round_trips() {
        for d in (-1000..80_000).step_by(7) {
            let (y, m, dd) = civil(d);
            assert_eq!(days_from_civil(y, m, dd), d);
            assert_eq!(
                parse_partition_name(&partition_name(d)),
                Some(d).filter(|_| y >= 0)
            );
        }
        assert_eq!(parse_partition_name("events_20250231"), None);
        assert_eq!(parse_partition_name("events_default"), None);
        assert_eq!(parse_partition_name("rollups"), None);
    }

    #[test]
    fn day_of_ns() {
        assert_eq!(of_unix_ns(0), 0);
        assert_eq!(of_unix_ns(NS_PER_DAY - 1), 0);
        assert_eq!(of_unix_ns(NS_PER_DAY), 1);
    }
}
