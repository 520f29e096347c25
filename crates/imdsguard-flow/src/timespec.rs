//! `--since` / `--until` values as `hubble observe` reads them (`hubtime.FromString`): a Go duration
//! before now (`3s`, `4m`, `1h43m`, `500ms`), or an absolute time in one of Go's layouts.

use imdsguard_hubble_proto::wkt::Timestamp;

/// Parses a Go duration (`1h2m3.5s`, `500ms`, `10us`) into nanoseconds.
pub fn parse_duration(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * unit;
    }
    let ns = total as i128;
    Some(if neg { -ns } else { ns })
}

/// A `--since`/`--until` value relative to `now`.
pub fn parse(s: &str, now: Timestamp) -> Option<Timestamp> {
    if let Some(d) = parse_duration(s) {
        let now_ns = i128::from(now.seconds) * 1_000_000_000 + i128::from(now.nanos);
        let t = now_ns - d;
        return Some(Timestamp::new(
            t.div_euclid(1_000_000_000) as i64,
            t.rem_euclid(1_000_000_000) as i32,
        ));
    }
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Some(t);
    }
    // 2006-01-02, 2006-01-02T15Z07:00, 2006-01-02T15:04Z07:00 (and numeric offsets).
    let date = s.get(..10)?;
    let (y, m, d) = (
        date.get(..4)?.parse().ok()?,
        date.get(5..7)?.parse().ok()?,
        date.get(8..10)?.parse().ok()?,
    );
    if s.len() == 10 {
        return Some(Timestamp::from_civil(y, m, d, 0, 0, 0, 0));
    }
    let rest = s.get(10..)?.strip_prefix('T')?;
    let (clock, tz) = match rest.find(['Z', '+', '-']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return None,
    };
    let mut parts = clock.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let min: u32 = parts.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
    let full = format!("{date}T{h:02}:{min:02}:00{tz}");
    Timestamp::parse_rfc3339(&full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Some(3_000_000_000));
        assert_eq!(
            parse_duration("1h43m"),
            Some((3600 + 43 * 60) * 1_000_000_000)
        );
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("3d"), None);
        assert_eq!(parse_duration("2024-01-01"), None);
    }

    #[test]
    fn absolute_and_relative() {
        let now = Timestamp::new(10_000, 0);
        assert_eq!(parse("4s", now), Some(Timestamp::new(9_996, 0)));
        assert_eq!(parse("1970-01-01", now), Some(Timestamp::new(0, 0)));
        assert_eq!(parse("1970-01-01T01Z", now), Some(Timestamp::new(3600, 0)));
        assert_eq!(
            parse("1970-01-01T01:02+01:00", now),
            Some(Timestamp::new(120, 0))
        );
        assert_eq!(
            parse("1970-01-01T00:00:01.5Z", now),
            Some(Timestamp::new(1, 500_000_000))
        );
        assert_eq!(parse("yesterday", now), None);
    }
}
