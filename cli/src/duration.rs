//! Durations as people write them on the command line: `90s`, `30m`, `24h`, `7d` (a number and
//! one unit; a bare number is seconds).

use std::time::Duration;

/// Parses a duration, for clap's `value_parser`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: write a number and a unit, like 30m, 24h or 7d")
    })?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}`; use s, m, h or d (30m, 24h, 7d)"
            ));
        }
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_and_a_unit_or_seconds() {
        let cases = [
            ("90s", Ok(90)),
            ("90", Ok(90)),
            ("30m", Ok(1_800)),
            ("24h", Ok(86_400)),
            ("7d", Ok(604_800)),
            (" 1h ", Ok(3_600)),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse(text).map(|d| d.as_secs()),
                expected.map_err(|_: ()| String::new()),
                "{text}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_an_example() {
        for text in ["", "h", "1w", "1.5h", "-1h", "99999999999999999999d"] {
            let error = parse(text).expect_err(text);
            assert!(!error.is_empty(), "{text}");
        }
        assert!(parse("1w").unwrap_err().contains("24h"));
    }
}
