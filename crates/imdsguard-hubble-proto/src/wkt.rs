//! `google.protobuf.Timestamp` with Go protojson's text form (`2006-01-02T15:04:05.999999999Z`, with
//! 0, 3, 6 or 9 fractional digits, always UTC), which Hubble's JSON output and input use.

use serde::de::Error as _;
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// A UTC calendar time, for printers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl Timestamp {
    pub fn new(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    }

    /// Valid per the protobuf spec: nanos in range, year 1–9999.
    pub fn is_valid(&self) -> bool {
        (0..1_000_000_000).contains(&self.nanos)
            && (-62_135_596_800..=253_402_300_799).contains(&self.seconds)
    }

    pub fn civil(&self) -> Civil {
        let days = self.seconds.div_euclid(86_400);
        let secs = self.seconds.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            nanos: self.nanos.max(0) as u32,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// Seconds since the epoch of a civil UTC time.
    pub fn from_civil(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        nanos: u32,
    ) -> Timestamp {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Timestamp {
            seconds: days * 86_400
                + i64::from(hour) * 3600
                + i64::from(minute) * 60
                + i64::from(second),
            nanos: nanos as i32,
        }
    }

    /// Parses RFC 3339 (`Z` or a numeric offset, any number of fractional digits).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        // Digits only (no sign), folded by hand: flow readers parse one timestamp per line.
        let digits = |d: &[u8]| -> Option<u32> {
            d.iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let num = |r: std::ops::Range<usize>| digits(b.get(r)?);
        let (year, month, day) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut i = 19;
        let mut nanos: u32 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let frac = &s[start..i];
            if frac.is_empty() {
                return None;
            }
            let kept = &frac.as_bytes()[..frac.len().min(9)];
            nanos = digits(kept)? * 10u32.pow(9 - kept.len() as u32);
        }
        let offset: i64 = match &s[i..] {
            "Z" | "z" => 0,
            tz if tz.len() == 6
                && (tz.starts_with('+') || tz.starts_with('-'))
                && &tz[3..4] == ":" =>
            {
                let h: i64 = tz[1..3].parse().ok()?;
                let m: i64 = tz[4..6].parse().ok()?;
                let v = h * 3600 + m * 60;
                if tz.starts_with('-') { -v } else { v }
            }
            _ => return None,
        };
        let mut t = Timestamp::from_civil(year, month, day, hour, minute, second, nanos);
        t.seconds -= offset;
        Some(t)
    }
}

impl fmt::Display for Timestamp {
    /// Go protojson: UTC, `Z`, and 0, 3, 6 or 9 fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.civil();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )?;
        let n = c.nanos;
        if n == 0 {
        } else if n.is_multiple_of(1_000_000) {
            write!(f, ".{:03}", n / 1_000_000)?;
        } else if n.is_multiple_of(1_000) {
            write!(f, ".{:06}", n / 1_000)?;
        } else {
            write!(f, ".{n:09}")?;
        }
        f.write_str("Z")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.is_valid() {
            return Err(serde::ser::Error::custom("timestamp out of range"));
        }
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| D::Error::custom(format!("invalid RFC 3339 timestamp {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_protojson_text() {
        assert_eq!(
            Timestamp::new(1234, 567_800_000).to_string(),
            "1970-01-01T00:20:34.567800Z"
        );
        assert_eq!(Timestamp::new(1234, 0).to_string(), "1970-01-01T00:20:34Z");
        assert_eq!(
            Timestamp::new(1234, 500_000_000).to_string(),
            "1970-01-01T00:20:34.500Z"
        );
        assert_eq!(
            Timestamp::new(1752616179, 668_000_001).to_string(),
            "2025-07-15T21:49:39.668000001Z"
        );
    }

    #[test]
    fn parse_round_trip() {
        for t in [
            Timestamp::new(1234, 567_800_000),
            Timestamp::new(1_752_616_179, 1),
            Timestamp::new(0, 0),
            Timestamp::new(-86_401, 5),
        ] {
            assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t), "{t}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T01:00:00+01:00"),
            Some(Timestamp::new(0, 0))
        );
        assert_eq!(Timestamp::parse_rfc3339("nope"), None);
    }

    #[test]
    fn weekday() {
        assert_eq!(Timestamp::new(0, 0).civil().weekday, 4); // Thursday
    }
}
