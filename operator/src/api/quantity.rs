//! Exact scalar types of the API: durations such as "15s" or "30d" and decimals such as
//! "99.95". They are stored as the user wrote them, so a manifest round-trips byte for byte,
//! and parsed on demand. No IO.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Regular expression the API server enforces on every duration field.
///
/// Go's `time.ParseDuration` units are kept (`ms`, `s`, `m`, `h`); `d` and `w` (7 days) are
/// added because SLO windows are naturally written in days or weeks ("30d", "4w", as Prometheus
/// and Pyrra write them). Fractions are refused: "1.5h" is written "1h30m", which keeps
/// comparisons exact.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d|w))+$";

/// Regular expression for non-negative decimals written as strings ("0.95", "99.95").
pub const DECIMAL_PATTERN: &str = "^[0-9]+(\\.[0-9]+)?$";

/// The longest duration or decimal string accepted; keeps CEL cost estimates small.
const MAX_SCALAR_LENGTH: u32 = 32;

/// A span of time written the Kubernetes way, e.g. "15s", "2m", "1h30m", "30d", "4w".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// Why a duration or decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text does not match [`DURATION_PATTERN`].
    #[error(
        "invalid duration {0:?}: expected a number and a unit (ms, s, m, h, d, w), e.g. \"15s\", \"1h30m\" or \"4w\""
    )]
    Duration(String),
    /// The text does not match [`DECIMAL_PATTERN`].
    #[error("invalid decimal {0:?}: expected digits with an optional fraction, e.g. \"0.95\"")]
    Decimal(String),
}

impl Duration {
    /// The parsed length.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text as written by the user.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a duration from a literal known to be valid (defaults, tests).
    ///
    /// # Panics
    /// When `text` is not a valid duration; only call it with literals.
    pub fn from_static(text: &'static str) -> Self {
        text.parse().expect("static duration literal is valid")
    }
}

impl FromStr for Duration {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseError::Duration(text.to_owned());
        if text.is_empty() || text.len() > MAX_SCALAR_LENGTH as usize {
            return Err(invalid());
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(invalid());
            }
            let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let (unit_millis, unit_length) = if rest.starts_with("ms") {
                (1, 2)
            } else {
                match rest.as_bytes().first() {
                    Some(b's') => (1_000, 1),
                    Some(b'm') => (60_000, 1),
                    Some(b'h') => (3_600_000, 1),
                    Some(b'd') => (86_400_000, 1),
                    Some(b'w') => (7 * 86_400_000, 1),
                    _ => return Err(invalid()),
                }
            };
            rest = &rest[unit_length..];
            let millis = amount.checked_mul(unit_millis).ok_or_else(invalid)?;
            total = total
                .checked_add(std::time::Duration::from_millis(millis))
                .ok_or_else(invalid)?;
        }
        Ok(Self {
            text: text.to_owned(),
            value: total,
        })
    }
}

impl TryFrom<String> for Duration {
    type Error = ParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Duration> for String {
    fn from(duration: Duration) -> Self {
        duration.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": MAX_SCALAR_LENGTH,
        })
    }
}

/// A non-negative decimal kept as the exact text the user wrote ("0.95", "99.95").
///
/// Ratios and percentages are strings in the API so that "99.95" never turns into
/// 99.94999999999999 on its way through YAML, JSON and etcd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Decimal {
    text: String,
    value: f64,
}

impl Decimal {
    /// The value as a float, for arithmetic.
    pub fn get(&self) -> f64 {
        self.value
    }

    /// The text as written by the user.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a decimal from a literal known to be valid (defaults, tests).
    ///
    /// # Panics
    /// When `text` is not a valid decimal; only call it with literals.
    pub fn from_static(text: &'static str) -> Self {
        text.parse().expect("static decimal literal is valid")
    }
}

impl FromStr for Decimal {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseError::Decimal(text.to_owned());
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if text.len() > MAX_SCALAR_LENGTH as usize
            || !all_digits(whole)
            || fraction.is_some_and(|fraction| !all_digits(fraction))
        {
            return Err(invalid());
        }
        let value: f64 = text.parse().map_err(|_| invalid())?;
        Ok(Self {
            text: text.to_owned(),
            value,
        })
    }
}

impl TryFrom<String> for Decimal {
    type Error = ParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Decimal> for String {
    fn from(decimal: Decimal) -> Self {
        decimal.text
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl JsonSchema for Decimal {
    fn schema_name() -> Cow<'static, str> {
        "Decimal".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DECIMAL_PATTERN,
            "maxLength": MAX_SCALAR_LENGTH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_every_unit_and_compound_forms() {
        let cases = [
            ("250ms", 250),
            ("15s", 15_000),
            ("2m", 120_000),
            ("1h30m", 5_400_000),
            ("30d", 2_592_000_000),
            ("1d2h", 93_600_000),
            ("4w", 2_419_200_000),
            ("1w2d", 777_600_000),
        ];
        for (text, millis) in cases {
            let duration: Duration = text.parse().unwrap();
            assert_eq!(duration.get().as_millis(), millis, "{text}");
            assert_eq!(duration.to_string(), text);
        }
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "15",
            "s",
            "1.5h",
            "-1s",
            "15 s",
            "1.5w",
            "w",
            "4W",
            "10sm",
            "99999999999999999999d",
        ] {
            assert!(
                text.parse::<Duration>().is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn decimals_keep_their_exact_text() {
        let decimal: Decimal = "99.950".parse().unwrap();
        assert_eq!(decimal.as_str(), "99.950");
        assert!((decimal.get() - 99.95).abs() < 1e-12);
        let json = serde_json::to_string(&decimal).unwrap();
        assert_eq!(json, "\"99.950\"");
        let back: Decimal = serde_json::from_str(&json).unwrap();
        assert_eq!(back, decimal);
    }

    #[test]
    fn malformed_decimals_are_refused() {
        for text in ["", ".5", "5.", "-1", "1e3", "NaN", "inf", "0,5", "1.2.3"] {
            assert!(
                text.parse::<Decimal>().is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn duration_pattern_agrees_with_the_parser_on_samples() {
        // The API server applies DURATION_PATTERN (the CRD schema); the parser must accept
        // exactly the strings it accepts.
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        let samples = [
            "1s", "10m", "1h30m", "30d", "250ms", "1d1h1m1s", "4w", "1w2d", "2w12h", "", "15", "s",
            "w", "1.5h", "1.5w", "-1s", "15 s", "4W", "1y", "10sm",
        ];
        for text in samples {
            assert_eq!(
                pattern.is_match(text),
                text.parse::<Duration>().is_ok(),
                "{text:?}: the schema pattern and the parser disagree"
            );
        }
        assert!(
            pattern.is_match("4w"),
            "weeks are accepted by the API server"
        );
    }

    #[test]
    fn a_window_of_four_weeks_is_twenty_eight_days() {
        let weeks: Duration = "4w".parse().unwrap();
        let days: Duration = "28d".parse().unwrap();
        assert_eq!(weeks.get(), days.get());
        assert_eq!(weeks.as_str(), "4w", "the text is kept as written");
    }
}
