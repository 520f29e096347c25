//! Endpoint selectors with Cilium's exact matching semantics (docs/policy-semantics.md §2.3).
//!
//! The label syntax (key and value rules, CIDR label keys) is `imdsguard_labels`', shared with the
//! flow filters; the matcher is not, because the two differ in two places: (1) these selectors
//! come from `matchLabels`/`matchExpressions`, so they have In, NotIn, Exists and DoesNotExist
//! only, where a flow filter's selector string also has `=`, `!=`, `>` and `<`; (2) they match an
//! identity's [`LabelSet`], sorted and with one label per source and key, so an `any` key reads the
//! label of the first source in [`LabelSource`] order, where a flow filter reads a flow's label
//! strings in the order the flow lists them (`imdsguard_labels::LabelSelector`).

use crate::identity::NAMESPACE_LABEL;
use crate::labels::{LabelKey, LabelSet, LabelSource};
use imdsguard_labels::prefix_contains;
use std::fmt;

/// `10.0.0.0/8`, or an IPv6 prefix written with `-` for `:` (`cidr:0--0/0`).
pub use imdsguard_labels::cidr_prefix as parse_cidr_label_key;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: LabelKey,
    pub op: Operator,
    /// Sorted and deduplicated, so equal selectors compare equal.
    pub values: Vec<String>,
}

impl Requirement {
    pub fn new(key: LabelKey, op: Operator, mut values: Vec<String>) -> Requirement {
        values.sort();
        values.dedup();
        Requirement { key, op, values }
    }

    pub fn exists(key: LabelKey) -> Requirement {
        Requirement::new(key, Operator::Exists, Vec::new())
    }

    pub fn equals(key: LabelKey, value: &str) -> Requirement {
        Requirement::new(key, Operator::In, vec![value.to_owned()])
    }

    /// A requirement on a key as a selector writes it (`app`, `k8s:app`, `$host`), for tests and
    /// tools that build selectors by hand.
    pub fn on(key: &str, op: Operator, values: &[&str]) -> Requirement {
        let values = values.iter().map(|v| (*v).to_owned()).collect();
        Requirement::new(LabelKey::from_selector_key(key), op, values)
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        match self.op {
            Operator::Exists => self.value_of(labels).is_some(),
            Operator::DoesNotExist => self.value_of(labels).is_none(),
            Operator::In => self
                .value_of(labels)
                .is_some_and(|v| self.values.iter().any(|x| x == v)),
            // Absent keys match NotIn: this is why NotIn selectors also pick world, host and CIDR
            // identities (the trap of §2.3).
            Operator::NotIn => self
                .value_of(labels)
                .is_none_or(|v| !self.values.iter().any(|x| x == v)),
        }
    }

    /// The value of the first label this requirement's key finds.
    fn value_of<'a>(&self, labels: &'a LabelSet) -> Option<&'a str> {
        match &self.key.source {
            LabelSource::Any => labels.by_key(&self.key.key).first().map(|l| &*l.value),
            LabelSource::Cidr => {
                // A `cidr.P` key finds a `cidr:Q` label when Q lies inside P.
                let outer = parse_cidr_label_key(&self.key.key)?;
                labels
                    .iter()
                    .filter(|l| l.source == LabelSource::Cidr)
                    .find(|l| {
                        parse_cidr_label_key(&l.key)
                            .is_some_and(|inner| prefix_contains(&outer, &inner))
                    })
                    .map(|l| &*l.value)
            }
            source => labels.get(source, &self.key.key),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector matches every identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    pub fn new(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    pub fn wildcard() -> Selector {
        Selector::default()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_wildcard(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn with(&self, extra: Requirement) -> Selector {
        let mut reqs = self.requirements.clone();
        reqs.push(extra);
        Selector::new(reqs)
    }

    /// Replaces every requirement on `key` by `extra`.
    pub fn replacing(&self, key: &LabelKey, extra: Requirement) -> Selector {
        let mut reqs: Vec<_> = self
            .requirements
            .iter()
            .filter(|r| &r.key != key)
            .cloned()
            .collect();
        reqs.push(extra);
        Selector::new(reqs)
    }

    /// Whether any requirement uses this key (source-exact).
    pub fn has_key(&self, source: &LabelSource, key: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| &r.key.source == source && &*r.key.key == key)
    }

    pub fn has_key_with_prefix(&self, extended_prefix: &str) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key.extended().starts_with(extended_prefix))
    }

    /// If the selector can only match pods of some namespaces, those namespaces. Lets resolution
    /// skip identities of other namespaces without evaluating the selector.
    pub fn namespaces(&self) -> Option<&[String]> {
        self.requirements
            .iter()
            .find(|r| {
                // Only `k8s:` keys: an `any:` key also matches namespace labels of other sources,
                // which the namespace index does not cover.
                r.op == Operator::In
                    && &*r.key.key == NAMESPACE_LABEL
                    && r.key.source == LabelSource::K8s
            })
            .map(|r| r.values.as_slice())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match r.op {
                Operator::In if r.values.len() == 1 => write!(f, "{}={}", r.key, r.values[0])?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
                op => write!(f, "{} {} ({})", r.key, op.as_str(), r.values.join(","))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Label;

    fn set(labels: &[&str]) -> LabelSet {
        LabelSet::new(labels.iter().map(|l| Label::parse(l)).collect())
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement::on(key, op, values)
    }

    #[test]
    fn any_source_matches_every_source_but_not_the_reverse() {
        let k8s = set(&["k8s:foo=bar"]);
        let any = set(&["any:foo=bar"]);
        assert!(Selector::new(vec![req("foo", Operator::In, &["bar"])]).matches(&k8s));
        assert!(!Selector::new(vec![req("k8s:foo", Operator::In, &["bar"])]).matches(&any));
    }

    #[test]
    fn not_in_matches_missing_keys() {
        let world = set(&["reserved:world"]);
        let sel = Selector::new(vec![req(
            "io.kubernetes.pod.namespace",
            Operator::NotIn,
            &["kube-system"],
        )]);
        assert!(sel.matches(&world));
        assert!(!sel.matches(&set(&["k8s:io.kubernetes.pod.namespace=kube-system"])));
    }

    #[test]
    fn cidr_keys_match_by_containment() {
        let id = set(&["cidr:10.1.2.0/24", "reserved:world"]);
        assert!(Selector::new(vec![req("cidr:10.0.0.0/8", Operator::Exists, &[])]).matches(&id));
        assert!(!Selector::new(vec![req("cidr:10.1.2.0/25", Operator::Exists, &[])]).matches(&id));
        assert!(
            Selector::new(vec![req("cidr:10.1.3.0/24", Operator::DoesNotExist, &[])]).matches(&id)
        );
        let v6 = set(&["cidr:2001-db8--/32"]);
        assert!(Selector::new(vec![req("cidr:0--0/0", Operator::Exists, &[])]).matches(&v6));
    }
}
