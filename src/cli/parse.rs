//! The value parsers of the command line's arguments.

use std::time::Duration;

/// A duration: a plain number of seconds, fractions allowed (`60`, `0.5`: what scripts have
/// always passed), or a humantime duration (`90s`, `2m`, `1h30m`).
pub(super) fn seconds(s: &str) -> Result<Duration, String> {
    let invalid = || format!("{s:?} is not a duration such as 30 (seconds), 0.5, 90s, 2m or 1h30m");
    match s.trim().parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| invalid()),
        Err(_) => humantime::parse_duration(s).map_err(|_| invalid()),
    }
}

/// A size in bytes: `512K`, `10M`, `1.5G` (powers of 1024, whatever the case; `KiB`, `MB` and
/// the like too), or a plain number of bytes; more than 0.
pub(super) fn size(s: &str) -> Result<u64, String> {
    // Binary: `10M` has always meant 10 MiB here, as it does for `ulimit` and most tools'
    // size flags, not parse-size's default 10 000 000.
    const SIZE: parse_size::Config = parse_size::Config::new().with_binary();
    match SIZE.parse_size(s) {
        Ok(0) => Err(format!("{s:?} must be more than 0")),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(format!("{s:?} is not a size such as 512K, 10M or 2G")),
    }
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
    use std::time::Duration;

    use super::{seconds, size};

    #[test]
    fn sizes() {
        assert_eq!(size("512K"), Ok(512 * 1024));
        assert_eq!(size("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(size("2G"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(size("1.5g"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(size("4096"), Ok(4096));
        for bad in ["0", "0K", "10X", "M", "", "-1", "1.5.2M", "ten"] {
            assert!(size(bad).is_err(), "{bad:?} was taken as a size");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(seconds("60"), Ok(Duration::from_secs(60)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(seconds("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(seconds("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(seconds("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(seconds("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["-1", "", "soon", "10x", "inf", "NaN", "1e400"] {
            assert!(seconds(bad).is_err(), "{bad:?} was taken as a duration");
        }
    }
}
