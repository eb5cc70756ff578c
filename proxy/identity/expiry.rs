//! Managed-identity `expires_on` (protocol.md §4): Unix seconds as a string, or ISO-8601.
//! A number at or above [`ABSOLUTE_EXPIRY_THRESHOLD`] is an absolute time; a smaller one is a
//! lifetime in seconds from now.

use std::time::{Duration, SystemTime};

use time::error::ParseFromDescription;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::parsing::Parsed;
use time::{PrimitiveDateTime, UtcOffset};

/// 2001-01-01T00:00:00Z. Numbers below it cannot be a token's absolute expiry, so they are read
/// as relative lifetimes, as MSAL does.
pub(crate) const ABSOLUTE_EXPIRY_THRESHOLD: u64 = 978_307_200;

/// The accepted ISO-8601 form: `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction][Z|z|±HH:MM|±HHMM]`. The
/// fraction keeps nanoseconds and drops further digits (.NET writes 7).
const ISO_8601: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year range:standard]-[month]-[day][first [T][t][ ]][hour]:[minute]:[second]\
     [optional [.[subsecond digits:1+]]]\
     [optional [[first [Z][z][[offset_hour sign:mandatory]:[offset_minute]]\
     [[offset_hour sign:mandatory][offset_minute]]]]]"
);

/// Largest offset from UTC accepted, in whole hours: real zones span −12 to +14; `time` itself
/// would take up to 25.
const MAX_OFFSET_HOURS: i8 = 23;

/// Earliest year accepted: a token cannot expire before the Unix epoch.
const MIN_YEAR: i32 = 1970;

/// Why an `expires_on` value was refused (the message is shown after the field name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ExpiryError(String);

/// Parses `expires_on`: digits (absolute or relative, see module docs) or an ISO-8601 date-time.
pub(crate) fn parse_expires_on(value: &str, now: SystemTime) -> Result<SystemTime, ExpiryError> {
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
pub(crate) fn from_seconds(secs: u64, now: SystemTime) -> Result<SystemTime, ExpiryError> {
    let base = if secs >= ABSOLUTE_EXPIRY_THRESHOLD {
        SystemTime::UNIX_EPOCH
    } else {
        now
    };
    base.checked_add(Duration::from_secs(secs))
        .ok_or_else(|| ExpiryError("is too large to be a time".into()))
}

/// Parses an ISO-8601 date-time of the `ISO_8601` form. Without an offset the time is taken as
/// UTC (IMDS and App Service report UTC).
pub(crate) fn parse_iso8601(text: &str) -> Result<SystemTime, ExpiryError> {
    let bad = || {
        ExpiryError(format!(
            "is neither Unix seconds nor an ISO-8601 date-time (\"{}\")",
            short(text)
        ))
    };
    let invalid = || ExpiryError(format!("is not a valid date-time (\"{}\")", short(text)));
    // `time` takes a sign before the year; the accepted form has none.
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let mut parsed = Parsed::new();
    let rest = parsed
        .parse_items(text.as_bytes(), ISO_8601)
        .map_err(|e| match e {
            // Four digits are always a year, and an offset out of range is a malformed suffix;
            // any other component out of range is an impossible date or time.
            ParseFromDescription::InvalidComponent(name)
                if name != "year" && !name.starts_with("offset") =>
            {
                invalid()
            }
            _ => bad(),
        })?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let local = PrimitiveDateTime::try_from(parsed).map_err(|_| invalid())?;
    if local.year() < MIN_YEAR {
        return Err(invalid());
    }
    let offset = match parsed.offset_hour() {
        None => UtcOffset::UTC,
        Some(_) => UtcOffset::try_from(parsed).map_err(|_| bad())?,
    };
    if offset.whole_hours().abs() > MAX_OFFSET_HOURS {
        return Err(bad());
    }
    let utc = local.assume_offset(offset);
    let secs =
        u64::try_from(utc.unix_timestamp()).map_err(|_| ExpiryError("is before 1970".into()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::new(secs, utc.nanosecond()))
}

fn short(text: &str) -> String {
    crate::identity::response_json::sanitized(text, 40)
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
            "+2018-11-08T19:23:34Z",
            "2018-11-08T19:23:60Z",
            "2018-11-08T19:23:34+01:60",
            "2018-11-08T19:23:34+0100x",
        ] {
            assert!(parse_expires_on(text, at(0)).is_err(), "{text}");
        }
        let message = |text| parse_iso8601(text).unwrap_err().to_string();
        assert_eq!(
            message("2019-02-29T00:00:00Z"),
            "is not a valid date-time (\"2019-02-29T00:00:00Z\")"
        );
        assert_eq!(
            message("tomorrow"),
            "is neither Unix seconds nor an ISO-8601 date-time (\"tomorrow\")"
        );
        assert_eq!(
            parse_iso8601("1970-01-01T00:00:00+01:00")
                .unwrap_err()
                .to_string(),
            "is before 1970"
        );
    }
}
