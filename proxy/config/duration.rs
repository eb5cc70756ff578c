//! Duration strings: a whole number followed by `ms`, `s`, `m` or `h` (`500ms`, `5s`, `2m`).

use std::time::Duration;

use super::limits::MAX_DURATION;

/// Parses `text`; the error explains the accepted syntax.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let syntax = || {
        format!(
            "`{text}` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(syntax)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| syntax())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(syntax()),
    };
    if d.is_zero() {
        return Err(format!("`{text}`: a timeout must be greater than zero"));
    }
    if d > MAX_DURATION {
        return Err(format!("`{text}` is longer than the 24h maximum"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "1.5s",
            "-1s",
            "5sec",
            "99999999999999999999s",
        ] {
            assert!(
                parse_duration(bad)
                    .unwrap_err()
                    .contains("is not a duration"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("0s").unwrap_err(),
            "`0s`: a timeout must be greater than zero"
        );
        assert_eq!(
            parse_duration("25h").unwrap_err(),
            "`25h` is longer than the 24h maximum"
        );
    }
}
