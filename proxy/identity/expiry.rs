//! Managed-identity `expires_on` (protocol.md §4): Unix seconds as a string, or ISO-8601.
//! A number at or above [`ABSOLUTE_EXPIRY_THRESHOLD`] is an absolute time; a smaller one is a
//! lifetime in seconds from now.

use std::time::{Duration, SystemTime};

/// 2001-01-01T00:00:00Z. Numbers below it cannot be a token's absolute expiry, so they are read
/// as relative lifetimes, as MSAL does.
pub const ABSOLUTE_EXPIRY_THRESHOLD: u64 = 978_307_200;

/// Largest year accepted in an ISO-8601 time; keeps the arithmetic far from overflow.
const MAX_YEAR: i64 = 9999;

/// Why an `expires_on` value was refused (the message is shown after the field name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpiryError(String);

/// Parses `expires_on`: digits (absolute or relative, see module docs) or an ISO-8601 date-time.
pub fn parse_expires_on(value: &str, now: SystemTime) -> Result<SystemTime, ExpiryError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ExpiryError("is empty".into()));
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value
            .parse()
            .map_err(|_| ExpiryError("is too large to be a time".into()))?;
        return from_seconds(secs, now);
    }
    parse_iso8601(value)
}

/// A numeric `expires_on`: absolute Unix seconds at or above the threshold, else seconds from now.
pub fn from_seconds(secs: u64, now: SystemTime) -> Result<SystemTime, ExpiryError> {
    let base = if secs >= ABSOLUTE_EXPIRY_THRESHOLD {
        SystemTime::UNIX_EPOCH
    } else {
        now
    };
    base.checked_add(Duration::from_secs(secs))
        .ok_or_else(|| ExpiryError("is too large to be a time".into()))
}

/// Parses `YYYY-MM-DD(T| )HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`. Without an offset the time is
/// taken as UTC (IMDS and App Service report UTC).
pub fn parse_iso8601(text: &str) -> Result<SystemTime, ExpiryError> {
    let bad = || {
        ExpiryError(format!(
            "is neither Unix seconds nor an ISO-8601 date-time (\"{}\")",
            short(text)
        ))
    };
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, ExpiryError> {
        let part = &b[range];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=MAX_YEAR).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(ExpiryError(format!(
            "is not a valid date-time (\"{}\")",
            short(text)
        )));
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let digits = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        // Keep nanosecond precision; further digits (.NET writes 7) are dropped.
        for (d, power) in after_dot[..digits].iter().zip((0..9u32).rev()) {
            nanos += u32::from(d - b'0') * 10u32.pow(power);
        }
        rest = &after_dot[digits..];
    }
    let offset_secs: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return Err(bad());
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return Err(bad()),
    };
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let utc = local - offset_secs;
    let utc = u64::try_from(utc).map_err(|_| ExpiryError("is before 1970".into()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::new(utc, nanos))
}

fn short(text: &str) -> String {
    crate::identity::response_json::sanitized(text, 40)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn numeric_values_are_absolute_or_relative() {
        let now = at(1_800_000_000);
        assert_eq!(
            parse_expires_on("1541705014", now).unwrap(),
            at(1_541_705_014)
        );
        assert_eq!(parse_expires_on("978307200", now).unwrap(), at(978_307_200));
        assert_eq!(
            parse_expires_on("978307199", now).unwrap(),
            at(1_800_000_000 + 978_307_199)
        );
        assert_eq!(parse_expires_on("3599", now).unwrap(), at(1_800_003_599));
        assert!(parse_expires_on("99999999999999999999999", now).is_err());
        assert!(parse_expires_on("", now).is_err());
    }

    #[test]
    fn iso8601_forms() {
        let now = at(0);
        let t = 1_541_705_014; // 2018-11-08T19:23:34Z
        for text in [
            "2018-11-08T19:23:34Z",
            "2018-11-08T19:23:34z",
            "2018-11-08 19:23:34Z",
            "2018-11-08T19:23:34",
            "2018-11-08T19:23:34+00:00",
            "2018-11-08T20:23:34+01:00",
            "2018-11-08T18:53:34-0030",
        ] {
            assert_eq!(parse_expires_on(text, now).unwrap(), at(t), "{text}");
        }
        assert_eq!(
            parse_expires_on("2018-11-08T19:23:34.1234567Z", now).unwrap(),
            at(t) + Duration::from_nanos(123_456_700)
        );
        assert_eq!(
            parse_iso8601("2000-02-29T00:00:00Z").unwrap(),
            at(951_782_400)
        );
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z").unwrap(), at(0));
    }

    #[test]
    fn malformed_times_are_refused() {
        for text in [
            "tomorrow",
            "2018-11-08",
            "2018-13-08T19:23:34Z",
            "2019-02-29T00:00:00Z",
            "2018-11-08T24:00:00Z",
            "2018-11-08T19:23:34.Z",
            "2018-11-08T19:23:34+25:00",
            "2018-11-08T19:23:34 UTC",
            "1969-12-31T23:59:59Z",
            "2018-1a-08T19:23:34Z",
            "-1",
            "1.5",
        ] {
            assert!(parse_expires_on(text, at(0)).is_err(), "{text}");
        }
        assert_eq!(
            parse_iso8601("1970-01-01T00:00:00+01:00")
                .unwrap_err()
                .to_string(),
            "is before 1970"
        );
    }
}
