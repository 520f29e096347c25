//! Which identities each peer selector selects, kept up to date as identities come and go, so a
//! selector is evaluated once per identity rather than once per rule and endpoint (Cilium's
//! SelectorCache).

use crate::identity::Identity;
use crate::labels::LabelSet;
use crate::selector::Selector;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

pub type SelectorId = u32;

#[derive(Debug, Clone)]
struct Cached {
    selector: Selector,
    matches: FxHashSet<Identity>,
}

#[derive(Debug, Clone, Default)]
pub struct SelectorCache {
    ids: FxHashMap<Selector, SelectorId>,
    cached: Vec<Cached>,
    identities: FxHashMap<Identity, Arc<LabelSet>>,
    /// Pod identities by namespace: most peer selectors name one namespace after injection.
    by_namespace: FxHashMap<Arc<str>, FxHashSet<Identity>>,
    /// Selectors that can only match some namespaces, by namespace; the rest are `global`.
    selectors_by_namespace: FxHashMap<Arc<str>, Vec<SelectorId>>,
    global: Vec<SelectorId>,
}

impl SelectorCache {
    pub fn intern(&mut self, selector: &Selector) -> SelectorId {
        if let Some(id) = self.ids.get(selector) {
            return *id;
        }
        let mut matches = FxHashSet::default();
        match selector.namespaces() {
            Some(namespaces) => {
                for ns in namespaces {
                    for id in self.by_namespace.get(ns.as_str()).into_iter().flatten() {
                        if selector.matches(&self.identities[id]) {
                            matches.insert(*id);
                        }
                    }
                }
            }
            None => {
                for (id, labels) in &self.identities {
                    if selector.matches(labels) {
                        matches.insert(*id);
                    }
                }
            }
        }
        let id = self.cached.len() as SelectorId;
        match selector.namespaces() {
            Some(namespaces) => {
                for ns in namespaces {
                    self.selectors_by_namespace
                        .entry(ns.as_str().into())
                        .or_default()
                        .push(id);
                }
            }
            None => self.global.push(id),
        }
        self.cached.push(Cached {
            selector: selector.clone(),
            matches,
        });
        self.ids.insert(selector.clone(), id);
        id
    }

    pub fn matches(&self, id: SelectorId) -> &FxHashSet<Identity> {
        &self.cached[id as usize].matches
    }

    pub fn selector(&self, id: SelectorId) -> &Selector {
        &self.cached[id as usize].selector
    }

    /// Adds an identity; returns the selectors that now select it.
    pub fn add_identity(&mut self, id: Identity, labels: Arc<LabelSet>) -> Vec<SelectorId> {
        let mut hit = Vec::new();
        let scoped = labels
            .namespace()
            .and_then(|ns| self.selectors_by_namespace.get(ns));
        for &s in self.global.iter().chain(scoped.into_iter().flatten()) {
            let c = &mut self.cached[s as usize];
            if c.selector.matches(&labels) && c.matches.insert(id) {
                hit.push(s);
            }
        }
        if let Some(ns) = labels.namespace() {
            self.by_namespace.entry(ns.into()).or_default().insert(id);
        }
        self.identities.insert(id, labels);
        hit
    }

    /// Removes an identity; returns the selectors that selected it.
    pub fn remove_identity(&mut self, id: Identity) -> Vec<SelectorId> {
        let mut hit = Vec::new();
        for (i, c) in self.cached.iter_mut().enumerate() {
            if c.matches.remove(&id) {
                hit.push(i as SelectorId);
            }
        }
        if let Some(labels) = self.identities.remove(&id)
            && let Some(ns) = labels.namespace()
            && let Some(set) = self.by_namespace.get_mut(ns)
        {
            set.remove(&id);
        }
        hit
    }

    pub fn has_identity(&self, id: Identity) -> bool {
        self.identities.contains_key(&id)
    }
}
