//! The Kubernetes label-selector language (`k8s.io/apimachinery/pkg/labels.Parse`): `a=b`,
//! `a==b`, `a!=b`, `a in (b,c)`, `a notin (b)`, `a`, `!a`, `a>1`, `a<1`, joined by `,` (AND).
//! Keys are in Cilium's `source.key` form (`k8s.app`, `any.app`, `$host`); Hubble's
//! `translateSelector` turns what users type (`k8s:app`, `app`) into it.
//!
//! Matching is over a list of Cilium label strings, as Hubble filters a flow's labels: a
//! requirement reads the first label, in list order, whose key it names (Cilium's
//! `LabelArray.Get`); source `any` names every source, and a CIDR key names every CIDR label
//! inside its prefix.

use crate::cilium::{cidr_prefix, parse_label, parse_select_key, prefix_contains};
use crate::names::{check_label_value, check_qualified_name};
use ipnet::IpNet;

/// Why a selector does not parse; the text is the Kubernetes parser's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone)]
struct Requirement {
    /// Label source (`any` matches every source).
    source: String,
    key: String,
    /// For `cidr` sources: the prefix, for broader-prefix matching.
    cidr: Option<IpNet>,
    op: Op,
    /// Sorted, deduplicated.
    values: Vec<String>,
    /// The value of `>`/`<`.
    int: i64,
}

/// A Kubernetes label selector (AND of requirements; empty = everything).
#[derive(Debug, Clone)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a selector whose keys are already in `source.key` form.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let reqs = SelectorParser::new(selector)
            .parse()
            .map_err(SelectorError)?;
        Ok(LabelSelector { reqs })
    }

    /// Whether every requirement holds for `labels`, Cilium label strings (`k8s:app=web`).
    pub fn matches(&self, labels: &[String]) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// The value of the first label with this requirement's key (Cilium's `LabelArray.Has/Get`).
    fn lookup<'a>(&self, labels: &'a [String]) -> Option<&'a str> {
        labels.iter().find_map(|l| {
            let (src, key, value) = parse_label(l);
            self.has_key(src, key).then_some(value)
        })
    }

    fn has_key(&self, src: &str, key: &str) -> bool {
        if self.source != "any" && src != self.source {
            return false;
        }
        if src == "cidr"
            && let Some(target) = &self.cidr
            && let Some(have) = cidr_prefix(key)
            && prefix_contains(target, &have)
        {
            return true;
        }
        key == self.key
    }

    fn matches(&self, labels: &[String]) -> bool {
        let value = self.lookup(labels);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Op::In | Op::Equals => value.is_some_and(has),
            Op::NotIn | Op::NotEquals => value.is_none_or(|v| !has(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::GreaterThan => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > self.int),
            Op::LessThan => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < self.int),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The Kubernetes selector lexer (`k8s.io/apimachinery/pkg/labels`).
fn lex(s: &str) -> Vec<(Tok, &str)> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_ws(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            toks.push((Tok::End, ""));
            return toks;
        }
        let start = pos;
        if is_special(b[pos]) {
            let mut last: Option<(Tok, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                match keyword(&s[start..=pos]) {
                    Some(t) => last = Some((t, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            match last {
                Some((t, end)) => {
                    toks.push((t, &s[start..end]));
                    pos = end;
                }
                None => {
                    toks.push((Tok::Error, &s[start..pos]));
                }
            }
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_ws(b[pos]) {
                pos += 1;
            }
            let lit = &s[start..pos];
            toks.push((keyword(lit).unwrap_or(Tok::Identifier), lit));
        }
    }
}

struct SelectorParser<'a> {
    toks: Vec<(Tok, &'a str)>,
    pos: usize,
}

impl<'a> SelectorParser<'a> {
    fn new(s: &'a str) -> Self {
        SelectorParser {
            toks: lex(s),
            pos: 0,
        }
    }

    /// In the "values" context `in`/`notin` are identifiers.
    fn values_tok(t: Tok) -> Tok {
        match t {
            Tok::In | Tok::NotIn => Tok::Identifier,
            t => t,
        }
    }

    fn lookahead(&self) -> (Tok, &'a str) {
        let (t, l) = self.toks[self.pos.min(self.toks.len() - 1)];
        (Self::values_tok(t), l)
    }

    fn consume_raw(&mut self) -> (Tok, &'a str) {
        let tok = self.toks[self.pos.min(self.toks.len() - 1)];
        self.pos += 1;
        tok
    }

    fn consume(&mut self) -> (Tok, &'a str) {
        let (t, l) = self.consume_raw();
        (Self::values_tok(t), l)
    }

    fn parse(mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead();
            match t {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, lit) = self.consume();
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead();
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{lit}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (mut t, mut key) = self.consume();
        let mut op = None;
        if t == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (t, key) = self.consume();
        }
        if t != Tok::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        check_qualified_name(key).map_err(|e| e.to_string())?;
        if matches!(self.lookahead().0, Tok::End | Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        if let Some(op) = op {
            return new_requirement(key, op, Vec::new());
        }
        let (t, lit) = self.consume_raw();
        let op = match t {
            Tok::In => Op::In,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values)
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume();
        if t != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead();
        match t {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume();
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume();
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (t, lit) = self.consume();
            match t {
                Tok::Identifier => {
                    s.push(lit.to_owned());
                    let (t2, l2) = self.lookahead();
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (t2, _) = self.lookahead();
                    if t2 == Tok::ClosedPar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if t2 == Tok::Comma {
                        self.consume();
                        s.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (t, _) = self.lookahead();
        if t == Tok::End || t == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume();
        if t == Tok::Identifier {
            return Ok(vec![lit.to_owned()]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

fn new_requirement(key: &str, op: Op, mut values: Vec<String>) -> Result<Requirement, String> {
    values.sort();
    values.dedup();
    let mut int = 0;
    match op {
        Op::In | Op::NotIn if values.is_empty() => {
            return Err("for 'in', 'notin' operators, values set can't be empty".into());
        }
        Op::Equals | Op::NotEquals if values.len() != 1 => {
            return Err("exact-match compatibility requires one single value".into());
        }
        Op::GreaterThan | Op::LessThan => {
            int = match values.as_slice() {
                [v] => v.parse::<i64>().map_err(|_| {
                    format!("{v:?}: for 'Gt', 'Lt' operators, the value must be an integer")
                })?,
                _ => return Err("for 'Gt', 'Lt' operators, exactly one value is required".into()),
            };
        }
        _ => {}
    }
    for v in &values {
        check_label_value(v).map_err(|e| e.to_string())?;
    }
    let (source, key) = parse_select_key(key);
    Ok(Requirement {
        source: source.to_owned(),
        key: key.to_owned(),
        cidr: if source == "cidr" {
            cidr_prefix(key)
        } else {
            None
        },
        op,
        values,
        int,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    fn matches(selector: &str, l: &[&str]) -> bool {
        LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .matches(&labels(l))
    }

    #[test]
    fn operators() {
        assert!(matches("", &[]));
        assert!(matches("any.a", &["k8s:a=x"]));
        assert!(!matches("k8s.a", &["container:a=x"]));
        assert!(matches("any.a=x,any.b!=y", &["k8s:a=x"]));
        assert!(matches(
            "any.a in (x, y), any.b notin (z)",
            &["k8s:a=y", "k8s:b=w"]
        ));
        assert!(matches("!any.a", &["k8s:b"]));
        assert!(matches("any.n>2,any.n<4", &["k8s:n=3"]));
        assert!(!matches("any.n>2", &["k8s:n=x"]));
        assert!(matches("reserved.host", &["reserved:host", "$world"]));
        assert!(matches("cidr.10.0.0.0/8", &["cidr:10.1.0.0/16"]));
        assert!(!matches("cidr.10.1.0.0/16", &["cidr:10.0.0.0/8"]));
    }

    #[test]
    fn the_first_label_with_the_key_decides() {
        assert!(matches("any.a=x", &["k8s:a=x", "container:a=y"]));
        assert!(!matches("any.a=y", &["k8s:a=x", "container:a=y"]));
    }

    #[test]
    fn errors_are_the_kubernetes_parser_s() {
        for (bad, want) in [
            ("any.a,", "found '', expected: identifier after ','"),
            (
                "any.a in b",
                "unable to parse requirement: found 'b' expected: '('",
            ),
            (
                "any.a>x",
                "unable to parse requirement: \"x\": for 'Gt', 'Lt' operators, the value must be \
                 an integer",
            ),
            (
                "a/b/c",
                "unable to parse requirement: \"a/b/c\": a qualified name must have at most one '/'",
            ),
        ] {
            let err = LabelSelector::parse(bad).map(|_| ()).unwrap_err();
            assert_eq!(err.to_string(), want, "{bad}");
        }
    }
}
