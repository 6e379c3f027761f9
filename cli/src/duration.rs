//! Durations on the command line: `500ms`, `30s`, `2m`, `1h`, and sums such as `1m30s`.
//!
//! A bare number is refused rather than guessed at: `--ttl 30` could mean seconds or
//! milliseconds, and a lock held a thousand times too long or too short is a bad guess.

use std::time::Duration;

/// Parses `<number><unit>` terms, summed: units `ms`, `s`, `m`, `h`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: write it as 500ms, 30s, 2m or 1h".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: write it as 500ms, 30s, 2m or 1h"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let letters = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (unit, after) = after.split_at(letters);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}`: {number} is too large"))?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" if after.is_empty() => {
                return Err(format!(
                    "`{text}` has no unit: write {number}s or {number}ms"
                ))
            }
            "" => {
                return Err(format!(
                    "`{text}` is not a duration: write it as 500ms, 30s, 2m or 1h"
                ))
            }
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}`; use ms, s, m or h"
                ))
            }
        };
        let ms = number
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("`{text}` is too long"))?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        rest = after;
    }
    Ok(total)
}

/// The inverse for messages: whole milliseconds, seconds or minutes where exact.
pub(crate) fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn sums() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refusals_say_what_to_write() {
        for bad in ["", "30", "s", "1.5s", "10 s", "3d", "-1s", "1s2"] {
            let err = parse(bad).expect_err(bad);
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(parse("30").unwrap_err().contains("30s"));
        assert!(parse("3d").unwrap_err().contains("unknown unit"));
        assert!(parse("99999999999999999999s").is_err());
        assert!(parse("18446744073709551615h").is_err());
    }

    #[test]
    fn show_round_trips() {
        for text in ["500ms", "30s", "2m", "1500ms", "0s"] {
            let d = parse(text).expect(text);
            assert_eq!(parse(&show(d)), Ok(d));
        }
        assert_eq!(show(Duration::from_secs(90)), "90s");
    }
}
