//! Durations as writ writes them: `15m`, `1h30m`, `500ms`, `2d`. The one
//! parser behind the policy language's duration literals and the command
//! line's `--request-timeout`-style options. (`humantime` would read
//! `15m` as fifteen minutes too, but also `15min`, `15 minutes` and
//! fractions, which the language does not have.)

/// Why a duration was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Not digits followed by a unit (`10x`, `s`, ``).
    Syntax,
    /// More than `u64::MAX` seconds.
    Overflow,
}

/// Milliseconds in `text`: one or more `<digits><unit>` with units `ms`,
/// `s`, `m`, `h` and `d`, or bare digits (seconds).
pub(crate) fn parse_millis(text: &str) -> Result<u128, DurationError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DurationError::Syntax);
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return digits(text).and_then(|n| n.checked_mul(1000).ok_or(DurationError::Overflow));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or(DurationError::Syntax)?;
        if split == 0 {
            return Err(DurationError::Syntax);
        }
        let number = digits(&rest[..split])?;
        let after = &rest[split..];
        let (unit, len) = if after.starts_with("ms") {
            (1, 2)
        } else {
            let unit = match after.as_bytes()[0] {
                b's' => 1000,
                b'm' => 60_000,
                b'h' => 3_600_000,
                b'd' => 86_400_000,
                _ => return Err(DurationError::Syntax),
            };
            (unit, 1)
        };
        total = number
            .checked_mul(unit)
            .and_then(|n| total.checked_add(n))
            .ok_or(DurationError::Overflow)?;
        rest = &after[len..];
    }
    if total / 1000 > u128::from(u64::MAX) {
        return Err(DurationError::Overflow);
    }
    Ok(total)
}

/// Whole seconds in `text` (see [`parse_millis`]).
pub(crate) fn parse_seconds(text: &str) -> Result<u64, DurationError> {
    let millis = parse_millis(text)?;
    u64::try_from(millis / 1000).map_err(|_| DurationError::Overflow)
}

fn digits(text: &str) -> Result<u128, DurationError> {
    text.parse::<u128>().map_err(|_| DurationError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up() {
        assert_eq!(parse_seconds("1h30m"), Ok(5400));
        assert_eq!(parse_seconds("2d"), Ok(172_800));
        assert_eq!(parse_seconds("10"), Ok(10));
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("1s500ms"), Ok(1500));
        assert_eq!(parse_millis("0s"), Ok(0));
    }

    #[test]
    fn mistakes_and_overflow() {
        for bad in ["", "s", "10x", "1h30", "1.5s", "-1s", " 1s"] {
            assert_eq!(parse_millis(bad), Err(DurationError::Syntax), "{bad:?}");
        }
        assert_eq!(parse_seconds(&format!("{}s", u64::MAX)), Ok(u64::MAX));
        assert_eq!(
            parse_seconds(&format!("{}s1s", u64::MAX)),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_seconds("99999999999999999999d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(parse_seconds(&"9".repeat(60)), Err(DurationError::Overflow));
    }
}
