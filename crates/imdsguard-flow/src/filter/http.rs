//! HTTP criteria: status codes and their prefixes, methods, and the path of a URL as Go's
//! `url.ParseRequestURI` finds it (so `http_path` matches what Hubble matches).

use imdsguard_metadata::percent::{Piece, pieces};
use imdsguard_metadata::percent_decode_strict;
use std::borrow::Cow;

use crate::flow::{Flow, Http, layer7};

/// The flow's HTTP record, if it is an HTTP L7 flow.
pub(super) fn http(f: &Flow) -> Option<&Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Http(h) => Some(h),
        _ => None,
    }
}

/// `^[1-5][0-9]{2}$`
pub(super) fn is_status_full(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1].is_ascii_digit() && b[2].is_ascii_digit()
}

/// `^[1-5][0-9]?\+$` → the digits before `+`.
pub(super) fn status_prefix(s: &str) -> Option<&str> {
    let p = s.strip_suffix('+')?;
    let b = p.as_bytes();
    let ok = match b.len() {
        1 => (b'1'..=b'5').contains(&b[0]),
        2 => (b'1'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
        _ => false,
    };
    ok.then_some(p)
}

/// `fmt.Sprintf("%03d", code)` into `buf`.
pub(super) fn format_status(code: u32, buf: &mut [u8; 10]) -> &str {
    let mut digits = [b'0'; 10];
    let (mut n, mut len) = (code, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = len.max(3);
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// Go's `strings.EqualFold` (simple case folding; ASCII fast path).
pub(super) fn equal_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// The (unescaped) path of `raw` as Go's `url.ParseRequestURI` returns it; `None` when Go
/// rejects the URL. Borrows unless the path has `%` escapes.
pub(super) fn request_uri_path(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() || raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    if raw == "*" {
        return Some(Cow::Borrowed("*"));
    }
    let (scheme, rest) = split_scheme(raw)?;
    let rest = if rest.ends_with('?') && rest.bytes().filter(|b| *b == b'?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(a, _)| a)
    };
    if !rest.starts_with('/') {
        // Rootless paths with a scheme are opaque (empty Path); without one Go errors.
        return (!scheme.is_empty()).then_some(Cow::Borrowed(""));
    }
    let mut path = rest;
    if !scheme.is_empty()
        && let Some(after) = rest.strip_prefix("//")
    {
        let (authority, p) = after
            .find('/')
            .map_or((after, ""), |i| (&after[..i], &after[i..]));
        if !valid_authority(authority) {
            return None;
        }
        path = p;
    }
    unescape_path(path)
}

fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return None,
            b':' => return Some((&raw[..i], &raw[i + 1..])),
            _ => return Some(("", raw)),
        }
    }
    Some(("", raw))
}

/// `shouldEscape(c, encodeHost)` for ASCII bytes.
fn host_byte_needs_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c))
}

fn valid_host_chars(host: &str) -> bool {
    pieces(host).all(|p| match p {
        // Go accepts an escaped non-ASCII byte, and `%25` (a zone's `%`), and nothing else.
        Piece::Escaped { byte, .. } => byte >= 0x80 || byte == b'%',
        Piece::Malformed { .. } => false,
        Piece::Literal(c) => c >= 0x80 || !host_byte_needs_escape(c),
    })
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_authority(authority: &str) -> bool {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host_ok = if host.starts_with('[') {
        match host.rfind(']') {
            None => false,
            Some(i) => {
                valid_optional_port(&host[i + 1..])
                    && match host[..i].find("%25") {
                        // The zone is permissive; validate the address part.
                        Some(z) => valid_host_chars(&host[..z]),
                        None => valid_host_chars(host),
                    }
            }
        }
    } else {
        host.rfind(':')
            .is_none_or(|i| valid_optional_port(&host[i..]))
            && valid_host_chars(host)
    };
    let user_ok = userinfo.is_none_or(|u| {
        u.chars()
            .all(|r| r.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(r))
            && unescape_path(u).is_some()
    });
    host_ok && user_ok
}

/// Go's `unescape(s, encodePath)` as `ParseRequestURI` applies it: `None` on a bad `%` escape.
/// Decoded bytes that are not UTF-8 become U+FFFD, since the regexes match `str`s.
fn unescape_path(s: &str) -> Option<Cow<'_, str>> {
    percent_decode_strict(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn http_filters() {
        check(
            FlowFilter {
                http_status_code: s(&["404", "5+", "20+"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/", 404), true),
                (http_flow("GET", "/", 403), false),
                (http_flow("GET", "/", 503), true),
                (http_flow("GET", "/", 201), true),
                (http_flow("GET", "/", 210), false),
                (http_flow("GET", "/", 0), false),
                (Flow::default(), false),
            ],
        );
        // Codes are zero-padded to three digits before prefix matching, like Hubble.
        check(
            FlowFilter {
                http_status_code: s(&["1+"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/", 1000), true),
                (http_flow("GET", "/", 10), false),
            ],
        );
        for bad in ["40", "600", "4++", "+", "404 "] {
            assert_eq!(
                build_err(FlowFilter {
                    http_status_code: s(&[bad]),
                    ..ff()
                }),
                FilterError::InvalidHttpStatus { value: bad.into() }
            );
        }
        check(
            FlowFilter {
                http_method: s(&["get", "Post"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/", 200), true),
                (http_flow("POST", "/", 200), true),
                (http_flow("PUT", "/", 200), false),
                (http_flow("", "/", 200), false),
            ],
        );
        check(
            FlowFilter {
                http_path: s(&[r"^/api/v\d+/"]),
                ..ff()
            },
            &[
                (
                    http_flow("GET", "http://svc.ns:8080/api/v1/users?x=1", 200),
                    true,
                ),
                (http_flow("GET", "/api/v2/x", 200), true),
                (http_flow("GET", "http://svc/%61pi/v1/x", 200), true),
                (http_flow("GET", "http://svc/other/api/v1/", 200), false),
                (http_flow("GET", "api/v1/", 200), false),
                (http_flow("GET", "http://svc/api/v1/%zz", 200), false),
                (http_flow("GET", "http://sv c/api/v1/", 200), false),
                (http_flow("GET", "", 200), false),
            ],
        );
        // Go's \d is ASCII only.
        check(
            FlowFilter {
                http_path: s(&[r"^/\d$"]),
                ..ff()
            },
            &[
                (http_flow("GET", "/5", 200), true),
                (http_flow("GET", "/%D9%A5", 200), false),
            ],
        );
        check(
            FlowFilter {
                http_url: s(&[r"http://.*cilium\.io/page/\d+"]),
                ..ff()
            },
            &[
                (http_flow("GET", "http://docs.cilium.io/page/12", 200), true),
                (http_flow("GET", "http://docs.cilium.io/page/x", 200), false),
            ],
        );
        check(
            FlowFilter {
                http_header: vec![HttpHeader {
                    key: "x-a".into(),
                    value: "1".into(),
                }],
                ..ff()
            },
            &[(http_flow("GET", "/", 200), true), (Flow::default(), false)],
        );
        check(
            FlowFilter {
                http_header: vec![HttpHeader {
                    key: "x-a".into(),
                    value: "2".into(),
                }],
                ..ff()
            },
            &[(http_flow("GET", "/", 200), false)],
        );
        // HTTP filters are valid with an l7 event type, rejected with only other types.
        let l7 = EventTypeFilter {
            r#type: 129,
            ..Default::default()
        };
        let trace = EventTypeFilter {
            r#type: 4,
            ..Default::default()
        };
        assert!(
            FlowFilters::new(
                &[FlowFilter {
                    http_method: s(&["get"]),
                    event_type: vec![trace, l7],
                    ..ff()
                }],
                &[]
            )
            .is_ok()
        );
        for (f, what) in [
            (
                FlowFilter {
                    http_status_code: s(&["200"]),
                    ..ff()
                },
                "status code",
            ),
            (
                FlowFilter {
                    http_method: s(&["get"]),
                    ..ff()
                },
                "method",
            ),
            (
                FlowFilter {
                    http_path: s(&["/"]),
                    ..ff()
                },
                "path",
            ),
            (
                FlowFilter {
                    http_url: s(&["x"]),
                    ..ff()
                },
                "url",
            ),
            (
                FlowFilter {
                    http_header: vec![HttpHeader::default()],
                    ..ff()
                },
                "headers",
            ),
        ] {
            let err = build_err(FlowFilter {
                event_type: vec![trace],
                ..f
            });
            assert_eq!(err, FilterError::HttpRequiresL7 { what });
        }
        assert_eq!(
            FilterError::HttpRequiresL7 { what: "method" }.to_string(),
            "filtering by http method requires the event type filter to only match 'l7' events"
        );
        assert!(matches!(
            build_err(FlowFilter {
                http_url: s(&["a(b"]),
                ..ff()
            }),
            FilterError::InvalidRegex {
                field: "http_url",
                ..
            }
        ));
    }

    #[test]
    fn request_uri_paths() {
        for (url, want) in [
            ("/a/b?c", Some("/a/b")),
            ("http://h:80/a%20b", Some("/a b")),
            ("http://h", Some("")),
            ("HTTP://user:pw@h/x", Some("/x")),
            ("http://[::1]:8080/x", Some("/x")),
            ("mailto:x", Some("")),
            ("*", Some("*")),
            ("//h/x", Some("//h/x")),
            ("a/b", None),
            (":x", None),
            ("http://h:x/", None),
            ("http://[::1/x", None),
            ("/a\n", None),
            ("/%4", None),
        ] {
            assert_eq!(request_uri_path(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn status_format() {
        let mut buf = [0u8; 10];
        assert_eq!(format_status(7, &mut buf), "007");
        assert_eq!(format_status(404, &mut buf), "404");
        assert_eq!(format_status(u32::MAX, &mut buf), "4294967295");
    }
}
