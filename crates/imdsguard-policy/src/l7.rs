//! L7 rules and the HTTP matching Cilium's Envoy filter performs (docs/policy-semantics.md §3.6,
//! §5.4): RE2 regexes that must match the whole string, `path` against the full `:path` including
//! the query, `host` against `:authority` including any port, and header presence or exact values.

use regex::Regex;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A regex that must match the entire input, as Envoy's `SafeRegex` does.
#[derive(Clone)]
pub struct FullMatch {
    source: Arc<str>,
    regex: Regex,
}

impl FullMatch {
    /// Compiles `pattern` anchored at both ends. Errors read like Go's `regexp` messages.
    pub fn new(pattern: &str) -> Result<FullMatch, String> {
        let regex =
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| regex_message(pattern, &e))?;
        Ok(FullMatch {
            source: pattern.into(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

fn regex_message(pattern: &str, err: &regex::Error) -> String {
    let text = err.to_string();
    let detail = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.as_str())
        .trim();
    let detail = match detail {
        "unclosed group" => "missing )",
        "unopened group" => "unexpected )",
        "unclosed character class" => "missing ]",
        other => other,
    };
    format!("invalid regex {pattern:?}: {detail}")
}

impl PartialEq for FullMatch {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for FullMatch {}
impl Hash for FullMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}
impl fmt::Debug for FullMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderMismatch {
    Fail,
    Log,
    Add,
    Delete,
    Replace,
}

/// A header requirement from `headers` (`"Name: value"` or `"Name"`) or `headerMatches`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderMatch {
    /// Lowercased: header names are case-insensitive.
    pub name: String,
    /// `None` means presence only.
    pub value: Option<String>,
    pub mismatch: HeaderMismatch,
}

impl HeaderMatch {
    /// Cilium splits `headers` entries on the first space and trims a trailing `:` from the name.
    pub fn from_header_string(s: &str) -> HeaderMatch {
        let (name, value) = match s.split_once(' ') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (s, None),
        };
        HeaderMatch {
            name: name.trim_end_matches(':').to_ascii_lowercase(),
            value,
            mismatch: HeaderMismatch::Fail,
        }
    }

    fn matches(&self, req: &HttpRequest) -> bool {
        // A mismatch action other than FAIL only logs or rewrites; the request is not rejected.
        if self.mismatch != HeaderMismatch::Fail {
            return true;
        }
        let mut values = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&self.name))
            .map(|(_, v)| v);
        match &self.value {
            None => values.next().is_some(),
            Some(want) => values.any(|v| v == want),
        }
    }
}

/// One element of `rules.http`. Empty fields match anything; the empty rule is the wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpRule {
    pub method: Option<FullMatch>,
    pub path: Option<FullMatch>,
    pub host: Option<FullMatch>,
    pub headers: Vec<HeaderMatch>,
}

impl HttpRule {
    pub fn is_wildcard(&self) -> bool {
        self.method.is_none()
            && self.path.is_none()
            && self.host.is_none()
            && self.headers.is_empty()
    }

    pub fn matches(&self, req: &HttpRequest) -> bool {
        self.method.as_ref().is_none_or(|m| m.is_match(&req.method))
            && self.path.as_ref().is_none_or(|p| p.is_match(&req.path))
            && self.host.as_ref().is_none_or(|h| h.is_match(&req.host))
            && self.headers.iter().all(|h| h.matches(req))
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_wildcard() {
            return f.write_str("{}");
        }
        let mut parts = Vec::new();
        if let Some(m) = &self.method {
            parts.push(format!("method={:?}", m.as_str()));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path={:?}", p.as_str()));
        }
        if let Some(h) = &self.host {
            parts.push(format!("host={:?}", h.as_str()));
        }
        for h in &self.headers {
            match &h.value {
                Some(v) => parts.push(format!("header {}={v:?}", h.name)),
                None => parts.push(format!("header {}", h.name)),
            }
        }
        write!(f, "{{{}}}", parts.join(" "))
    }
}

/// The L7 rules of one port rule. Only HTTP is judged by imdsguard; the other parsers are parsed,
/// validated and merged (so conflicts are detected) but their traffic is only made visible.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum L7Rules {
    Http(Vec<Arc<HttpRule>>),
    Kafka(usize),
    Dns(usize),
    Generic(String),
}

impl L7Rules {
    pub fn parser(&self) -> &str {
        match self {
            L7Rules::Http(_) => "http",
            L7Rules::Kafka(_) => "kafka",
            L7Rules::Dns(_) => "dns",
            L7Rules::Generic(p) => p,
        }
    }
}

/// The parts of an HTTP request that rules can look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpRequest {
    pub method: String,
    /// The whole request target, query included.
    pub path: String,
    /// `Host` / `:authority`, with the port if the client sent one.
    pub host: String,
    pub headers: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            host: "169.254.169.254".into(),
            headers: vec![],
        }
    }

    #[test]
    fn full_string_match() {
        let rule = HttpRule {
            method: Some(FullMatch::new("GET").unwrap()),
            path: Some(FullMatch::new("/metadata").unwrap()),
            ..Default::default()
        };
        assert!(rule.matches(&req("GET", "/metadata")));
        assert!(!rule.matches(&req("GET", "/metadata/instance")));
        assert!(!rule.matches(&req("GET", "/metadata?api-version=1")));
        assert!(!rule.matches(&req("GETX", "/metadata")));
    }

    #[test]
    fn regex_errors_read_like_go() {
        assert_eq!(
            FullMatch::new("GET(").unwrap_err(),
            "invalid regex \"GET(\": missing )"
        );
    }

    #[test]
    fn headers() {
        let h = HeaderMatch::from_header_string("Metadata: true");
        assert_eq!(h.name, "metadata");
        let mut r = req("GET", "/");
        assert!(!h.matches(&r));
        r.headers.push(("metadata".into(), "true".into()));
        assert!(h.matches(&r));
        assert!(
            HeaderMatch::from_header_string("X-Token").matches(&HttpRequest {
                headers: vec![("x-token".into(), "a".into())],
                ..r
            })
        );
    }
}
