//! The value parsers of the command line's arguments.

use std::time::Duration;

/// A number of seconds, fractions allowed: `2`, `0.5`.
pub(super) fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a number of seconds"))
}

/// A size in bytes: `512K`, `10M`, `2G` (powers of 1024), or a plain number of bytes.
pub(super) fn size(s: &str) -> Result<u64, String> {
    let upper = s.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &upper[digits.len()..] {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size such as 512K, 10M or 2G")),
    };
    let n: f64 = digits.parse().map_err(|_| format!("{s:?} is not a size such as 512K, 10M or 2G"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("{s:?} must be more than 0"));
    }
    Ok((n * unit as f64) as u64)
}

/// `KEY=VAL`, with a non-empty key.
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not KEY=VAL")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size("512K"), Ok(512 * 1024));
        assert_eq!(super::size("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(super::size("1.5g"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(super::size("4096"), Ok(4096));
        assert!(super::size("0").is_err() && super::size("10X").is_err() && super::size("M").is_err());
    }
}
