//! Percent-decoding, the one way imdsguard reads `%XX` in a request target.
//!
//! Rules, the same for every function here:
//!
//! - `%` followed by two ASCII hexadecimal digits (either case) is the byte they spell. Nothing else
//!   is an escape: not `%+1` (which `u8::from_str_radix` would accept), not a `%` before a
//!   multi-byte UTF-8 character.
//! - A `%` that does not start an escape (`%`, `%4` at the end, `%zz`) is malformed. The lenient
//!   decoder keeps it as the text `%` and reads on from the next byte, so `%%41` gives `%A`; the
//!   strict one refuses the whole text.
//! - `+` stays `+`. Decoding it as a space is HTML form encoding: neither the request paths nor the
//!   query values the callers look at are form-encoded, and no caller decoded `+` before this
//!   crate existed.
//! - `%00` decodes to U+0000, kept in the output; callers that forward text must refuse it
//!   themselves (the proxy refuses every escaped control byte in a path).
//! - The decoded bytes become text with invalid UTF-8 sequences replaced by U+FFFD: the results
//!   are for matching and display, never forwarded, so a lossy result cannot corrupt a request.

use std::borrow::Cow;

/// A `%` that does not start a two-digit escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed percent-escape at byte {offset}")]
pub struct BadEscape {
    /// Where the `%` is, in bytes from the start of the text.
    pub offset: usize,
}

/// One byte of a percent-encoded text, as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A byte that stands for itself.
    Literal(u8),
    /// A byte written as `%XX`; `offset` is where its `%` is.
    Escaped { offset: usize, byte: u8 },
    /// A `%` that starts no escape; the bytes after it come as pieces of their own.
    Malformed { offset: usize },
}

/// The pieces of `s`, in order. For callers that judge escapes rather than decode them (the
/// proxy refuses some escaped bytes in a path but not in the query).
pub fn pieces(s: &str) -> Pieces<'_> {
    Pieces {
        bytes: s.as_bytes(),
        at: 0,
    }
}

/// See [`pieces`].
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        let offset = self.at;
        let b = *self.bytes.get(offset)?;
        if b != b'%' {
            self.at += 1;
            return Some(Piece::Literal(b));
        }
        let digits = self
            .bytes
            .get(offset + 1)
            .and_then(|&h| hex_value(h))
            .zip(self.bytes.get(offset + 2).and_then(|&l| hex_value(l)));
        match digits {
            Some((hi, lo)) => {
                self.at += 3;
                Some(Piece::Escaped {
                    offset,
                    byte: hi << 4 | lo,
                })
            }
            None => {
                self.at += 1;
                Some(Piece::Malformed { offset })
            }
        }
    }
}

/// Decodes `s`, keeping malformed escapes as they are written. For reading what a request asks
/// for: a metadata service that gets `%zz` still routes the request, so the reader must not give
/// up on it (the UI, the IMDS emulator).
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    // Lenient decoding never fails; the fallback only satisfies the type.
    decode(s, false).unwrap_or(Cow::Borrowed(s))
}

/// Decodes `s`, refusing it if any escape is malformed. For validators that must not guess what
/// a malformed text means (Hubble's URL filters reject such a URL).
pub fn percent_decode_strict(s: &str) -> Result<Cow<'_, str>, BadEscape> {
    decode(s, true)
}

fn decode(s: &str, strict: bool) -> Result<Cow<'_, str>, BadEscape> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    for piece in pieces(s) {
        match piece {
            Piece::Literal(b) => out.push(b),
            Piece::Escaped { byte, .. } => out.push(byte),
            Piece::Malformed { offset } if strict => return Err(BadEscape { offset }),
            Piece::Malformed { .. } => out.push(b'%'),
        }
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_escapes_of_either_case() {
        assert_eq!(percent_decode("a%2Fb%2fc"), "a/b/c");
        assert_eq!(percent_decode("%3F%3f"), "??");
        assert_eq!(percent_decode_strict("a%20b").as_deref(), Ok("a b"));
        assert_eq!(
            percent_decode("https%3A%2F%2Fvault.azure.net"),
            "https://vault.azure.net"
        );
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        assert!(matches!(percent_decode("/metadata"), Cow::Borrowed(_)));
        assert!(matches!(percent_decode_strict(""), Ok(Cow::Borrowed(""))));
    }

    #[test]
    fn malformed_escapes_stay_in_the_lenient_decoder() {
        for (input, want) in [
            ("%", "%"),
            ("%4", "%4"),
            ("a%2", "a%2"),
            ("%zz", "%zz"),
            ("a%zz%41", "a%zzA"),
            ("%%41", "%A"),
            ("%4%41", "%4A"),
            ("%+1", "%+1"),
            ("%-1", "%-1"),
            ("% 1", "% 1"),
            ("%é", "%é"),
            ("%4é", "%4é"),
        ] {
            assert_eq!(percent_decode(input), want, "{input:?}");
        }
    }

    #[test]
    fn malformed_escapes_are_refused_by_the_strict_decoder() {
        for (input, offset) in [
            ("%", 0),
            ("%4", 0),
            ("ab%zz", 2),
            ("%41%", 3),
            ("%+1", 0),
            ("%é", 0),
        ] {
            assert_eq!(
                percent_decode_strict(input),
                Err(BadEscape { offset }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn plus_is_not_a_space() {
        assert_eq!(percent_decode("a+b%2B"), "a+b+");
        assert_eq!(percent_decode_strict("a+b").as_deref(), Ok("a+b"));
    }

    #[test]
    fn nul_and_control_bytes_are_decoded() {
        assert_eq!(percent_decode("a%00b"), "a\0b");
        assert_eq!(percent_decode_strict("%0d%0A").as_deref(), Ok("\r\n"));
    }

    #[test]
    fn utf8_literal_and_escaped() {
        // Multi-byte characters pass through; escaped UTF-8 sequences come back together.
        assert_eq!(percent_decode("é/%C3%A9"), "é/é");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
        // A broken sequence becomes U+FFFD rather than failing.
        assert_eq!(percent_decode("%C3"), "\u{fffd}");
        assert_eq!(percent_decode("%ff%fe"), "\u{fffd}\u{fffd}");
        assert_eq!(percent_decode_strict("%C3x").as_deref(), Ok("\u{fffd}x"));
    }

    #[test]
    fn pieces_say_how_each_byte_was_written() {
        let got: Vec<Piece> = pieces("a%2F%z").collect();
        assert_eq!(
            got,
            [
                Piece::Literal(b'a'),
                Piece::Escaped {
                    offset: 1,
                    byte: b'/'
                },
                Piece::Malformed { offset: 4 },
                Piece::Literal(b'z'),
            ]
        );
        assert_eq!(pieces("").count(), 0);
    }

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=255u8 {
            let text = format!("%{b:02X}");
            let decoded: Vec<Piece> = pieces(&text).collect();
            assert_eq!(decoded, [Piece::Escaped { offset: 0, byte: b }]);
        }
    }
}
