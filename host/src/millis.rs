//! Durations as people write them (`250ms`, `10s`, `2m`, `1h`): in flags, in configuration
//! files (where a bare number still reads as milliseconds) and in messages.
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes a duration as people write it (`250ms`, `10s`), the way configuration files show it.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&show(*d))
}

/// Reads a duration written with its unit (`"10s"`), or as a whole number of milliseconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Millis(u64),
        Text(String),
    }
    match Written::deserialize(d) {
        Ok(Written::Millis(ms)) => Ok(Duration::from_millis(ms)),
        Ok(Written::Text(t)) => parse(&t).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(
            "expected a duration: a whole number and a unit, as in \"250ms\", \"10s\", \"2m\" or \"1h\"",
        )),
    }
}

/// Parses a duration with its unit: `250ms`, `10s`, `2m`, `1h` or `30d` (whole numbers).
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{s}` is not a duration: write a whole number and a unit, as in 250ms, 10s, 2m, 1h or 30d"
        )
    };
    let at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// Shows a duration in the largest unit that keeps it whole (`1500ms`, `10s`, `2m`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_written() {
        for (text, ms) in [
            ("250ms", 250),
            ("10s", 10_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("30d", 2_592_000_000),
            ("0s", 0),
        ] {
            assert_eq!(
                super::parse(text),
                Ok(std::time::Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "3w"] {
            assert!(super::parse(bad).is_err(), "{bad}");
        }
        for (ms, shown) in [
            (1500, "1500ms"),
            (10_000, "10s"),
            (120_000, "2m"),
            (0, "0s"),
        ] {
            assert_eq!(super::show(std::time::Duration::from_millis(ms)), shown);
        }
    }
}
