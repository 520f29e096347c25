//! Go RE2 patterns as Rust regexes: `\d \w \s \b` (and their negations) stay ASCII-only as in Go,
//! `\Q…\E` works, and a `{` that does not start a repetition is a literal.

use regex::Regex;

use super::FilterError;

/// `dns_query`, `http_path` and `http_url` patterns, Go syntax.
pub(super) fn compile_regexes(
    field: &'static str,
    patterns: &[String],
) -> Result<Vec<Regex>, FilterError> {
    patterns
        .iter()
        .map(|p| {
            compile_go_regex(p).map_err(|reason| FilterError::InvalidRegex {
                field,
                pattern: p.clone(),
                reason,
            })
        })
        .collect()
}

fn compile_go_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&translate_go_regex(pattern)).map_err(|e| {
        // The regex crate's message spans several lines; keep the last (the reason).
        e.to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned()
    })
}

/// Perl classes with Go's ASCII-only meaning; `None` leaves the escape as it is.
fn go_perl_class(c: char, in_class: bool) -> Option<&'static str> {
    Some(match (c, in_class) {
        ('d', false) => "[0-9]",
        ('d', true) => "0-9",
        ('w', false) => "[0-9A-Za-z_]",
        ('w', true) => "0-9A-Za-z_",
        ('s', false) => r"[\t\n\x0C\r ]",
        ('s', true) => r"\t\n\x0C\r ",
        ('D', _) => "[^0-9]",
        ('W', _) => "[^0-9A-Za-z_]",
        ('S', _) => r"[^\t\n\x0C\r ]",
        ('b', false) => r"(?-u:\b)",
        ('B', false) => r"(?-u:\B)",
        _ => return None,
    })
}

/// Is `rest` (after a `{`) a Go repetition `n}`, `n,}` or `n,m}`?
fn is_go_repeat(rest: &str) -> bool {
    let Some(end) = rest.find('}') else {
        return false;
    };
    let body = &rest[..end];
    let (min, max) = body
        .split_once(',')
        .map_or((body, None), |(a, b)| (a, Some(b)));
    !min.is_empty()
        && min.bytes().all(|b| b.is_ascii_digit())
        && max.is_none_or(|m| m.bytes().all(|b| b.is_ascii_digit()))
}

fn translate_go_regex(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 16);
    let mut in_class = false;
    // Just after `[` (1) or `[^` (2): a `]` here is a literal.
    let mut class_start = 0u8;
    let mut i = 0;
    while i < p.len() {
        let Some(c) = p[i..].chars().next() else {
            break;
        };
        let next = p[i + c.len_utf8()..].chars().next();
        let was_start = std::mem::take(&mut class_start);
        if c == '\\' {
            let Some(n) = next else {
                out.push('\\');
                break;
            };
            i += 1 + n.len_utf8();
            if matches!(n, 'p' | 'P' | 'x') && p[i..].starts_with('{') {
                // \p{Name}, \x{hex}: copy the braces verbatim.
                let end = p[i..].find('}').map_or(p.len(), |e| i + e + 1);
                out.push('\\');
                out.push(n);
                out.push_str(&p[i..end]);
                i = end;
                continue;
            }
            if n == 'Q' && !in_class {
                let rest = &p[i..];
                let (lit, skip) = rest
                    .find(r"\E")
                    .map_or((rest, rest.len()), |e| (&rest[..e], e + 2));
                out.push_str(&regex::escape(lit));
                i += skip;
                continue;
            }
            match go_perl_class(n, in_class) {
                Some(r) => out.push_str(r),
                None => {
                    out.push('\\');
                    out.push(n);
                }
            }
            continue;
        }
        i += c.len_utf8();
        if in_class {
            match c {
                ']' if was_start > 0 => out.push_str(r"\]"),
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                // [:name:] copied as is (Go looks for `:]` after the `[:`).
                '[' if next == Some(':') && p[i + 1..].contains(":]") => {
                    let end = p[i + 1..].find(":]").map_or(0, |e| e + 3);
                    out.push('[');
                    out.push_str(&p[i..i + end]);
                    i += end;
                }
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '^' if was_start == 1 => {
                    out.push('^');
                    class_start = 2;
                }
                _ => out.push(c),
            }
        } else {
            match c {
                '[' => {
                    in_class = true;
                    class_start = 1;
                    out.push('[');
                }
                '{' if !is_go_repeat(&p[i..]) => out.push_str(r"\{"),
                _ => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn dns_query_regex() {
        let dns = |q: &str| Flow {
            l7: Some(Layer7 {
                record: Some(layer7::Record::Dns(Dns {
                    query: q.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                dns_query: s(&[r"^api\.", r"\.svc\.cluster\.local\.$"]),
                ..ff()
            },
            &[
                (dns("api.example.com."), true),
                (dns("kube-dns.kube-system.svc.cluster.local."), true),
                (dns("www.example.com."), false),
                (http_flow("GET", "/", 200), false),
            ],
        );
        assert!(matches!(
            build_err(FlowFilter {
                dns_query: s(&["("]),
                ..ff()
            }),
            FilterError::InvalidRegex {
                field: "dns_query",
                ..
            }
        ));
    }

    #[test]
    fn go_regex_translation() {
        for (go, want) in [
            (r"\d+", "[0-9]+"),
            (r"[\d.]", "[0-9.]"),
            (r"[^\D]", "[^[^0-9]]"),
            (r"\bword\b", r"(?-u:\b)word(?-u:\b)"),
            (r"\Qa.b\E+", r"a\.b+"),
            (r"a{", r"a\{"),
            (r"a{2,3}", "a{2,3}"),
            (r"[]a]", r"[\]a]"),
            (r"[^]a]", r"[^\]a]"),
            (r"[^^]x", r"[^^]x"),
            (r"[[:]", r"[\[:]"),
            (r"[[:digit:]x]", r"[[:digit:]x]"),
            (r"[[:alpha:]&]", r"[[:alpha:]\&]"),
            (r"\p{Greek}", r"\p{Greek}"),
            (r"\x{41}{2}", r"\x{41}{2}"),
        ] {
            assert_eq!(translate_go_regex(go), want, "{go}");
        }
        assert!(compile_go_regex(r"^\w+$").unwrap().is_match("a_1"));
        assert!(!compile_go_regex(r"^\w+$").unwrap().is_match("é"));
        assert!(!compile_go_regex(r"^\s$").unwrap().is_match("\u{a0}"));
    }
}
