//! Finds the rules that may select an identity without testing every rule: a rule whose subject
//! selector requires one exact label value is filed under that (key, value); the others are kept
//! per namespace (CNPs) or in one cluster-wide list. Candidates are still checked with the selector.

use crate::api::{PolicyKind, PolicyRef};
use crate::labels::{LabelSet, LabelSource};
use crate::selector::{Operator, Selector};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

/// A label key and value.
type KeyValue = (Arc<str>, Arc<str>);
/// Rules filed as `(policy, T)`; `T` is whatever the caller needs to reach the rule.
type Filed<T> = Vec<(PolicyRef, T)>;

/// Rules are filed as `(policy, T)`; `T` is whatever the caller needs to reach the rule.
#[derive(Debug, Clone)]
pub struct SubjectIndex<T> {
    by_label: FxHashMap<KeyValue, Filed<T>>,
    /// Unindexed rules by namespace; "" holds the cluster-wide ones.
    rest: FxHashMap<Arc<str>, Filed<T>>,
}

impl<T> Default for SubjectIndex<T> {
    fn default() -> Self {
        SubjectIndex {
            by_label: FxHashMap::default(),
            rest: FxHashMap::default(),
        }
    }
}

fn index_key(selector: &Selector) -> Option<KeyValue> {
    // The namespace requirement injected into every CNP subject is a poor key: prefer another.
    let mut reqs: Vec<_> = selector
        .requirements()
        .iter()
        .filter(|r| {
            r.op == Operator::In
                && r.values.len() == 1
                && matches!(r.key.source, LabelSource::K8s | LabelSource::Any)
        })
        .collect();
    reqs.sort_by_key(|r| &*r.key.key == crate::identity::NAMESPACE_LABEL);
    reqs.first()
        .map(|r| (r.key.key.clone(), Arc::from(r.values[0].as_str())))
}

impl<T> SubjectIndex<T> {
    pub fn insert(&mut self, policy: &PolicyRef, rule: T, subject: &Selector) {
        let entry = (policy.clone(), rule);
        match index_key(subject) {
            Some(k) => self.by_label.entry(k).or_default().push(entry),
            None => {
                let ns: Arc<str> = match policy.kind {
                    PolicyKind::CiliumNetworkPolicy => policy.namespace.clone(),
                    PolicyKind::CiliumClusterwideNetworkPolicy => Arc::from(""),
                };
                self.rest.entry(ns).or_default().push(entry);
            }
        }
    }

    pub fn remove(&mut self, policy: &PolicyRef) {
        self.by_label.retain(|_, v| {
            v.retain(|(p, _)| p != policy);
            !v.is_empty()
        });
        self.rest.retain(|_, v| {
            v.retain(|(p, _)| p != policy);
            !v.is_empty()
        });
    }

    /// Rules that may select an identity with these labels (a superset; check the selector).
    pub fn candidates(&self, labels: &LabelSet) -> Vec<&(PolicyRef, T)> {
        let ns = labels.namespace().unwrap_or("");
        let mut out: Vec<&(PolicyRef, T)> = Vec::new();
        out.extend(self.rest.get("").into_iter().flatten());
        if !ns.is_empty() {
            out.extend(self.rest.get(ns).into_iter().flatten());
        }
        let mut seen: FxHashSet<(&str, &str)> = FxHashSet::default();
        for l in labels.iter() {
            if seen.insert((&l.key, &l.value))
                && let Some(v) = self.by_label.get(&(l.key.clone(), l.value.clone()))
            {
                out.extend(v.iter().filter(|(p, _)| {
                    p.kind == PolicyKind::CiliumClusterwideNetworkPolicy || &*p.namespace == ns
                }));
            }
        }
        out
    }
}
