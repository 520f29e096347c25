//! Policy files as a running agent keeps them. A file that changes is decoded again; an object in
//! it that became invalid keeps its last good version in force (and the error is reported), an
//! object that left the file is deleted, and a file that no longer parses at all keeps all of its
//! objects. Unchanged files are not decoded again.

use crate::decode::{DecodeOptions, PolicyError, Warning, decode_source};
use crate::{CidrGroup, Policy, PolicyRef, Repository};
use imdsguard_manifest::Source;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Default)]
struct FileEntry {
    hash: u64,
    policies: Vec<Policy>,
    groups: Vec<CidrGroup>,
    /// What the file's current text is wrong about.
    errors: Vec<PolicyError>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct StoreUpdate {
    pub files_changed: usize,
    pub policies_upserted: usize,
    pub policies_deleted: usize,
    pub errors: Vec<PolicyError>,
    pub warnings: Vec<Warning>,
    /// Objects whose new version is invalid, still in force at their last good version.
    pub kept: Vec<String>,
}

#[derive(Debug, Default)]
pub struct PolicyStore {
    files: BTreeMap<String, FileEntry>,
}

impl PolicyStore {
    pub fn new() -> PolicyStore {
        PolicyStore::default()
    }

    /// Brings the store and `repo` in line with `sources` (every policy file, as read now).
    /// The caller resolves the repository afterwards.
    pub fn reload(
        &mut self,
        sources: &[Source],
        opts: &DecodeOptions,
        repo: &mut Repository,
    ) -> StoreUpdate {
        let mut up = StoreUpdate::default();
        let mut delete: Vec<PolicyRef> = Vec::new();
        let mut delete_groups: Vec<String> = Vec::new();
        let mut upsert: Vec<Policy> = Vec::new();
        let mut upsert_groups: Vec<CidrGroup> = Vec::new();
        let names: HashSet<&str> = sources.iter().map(|s| &*s.name).collect();
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|f| !names.contains(f.as_str()))
            .cloned()
            .collect();
        for f in gone {
            if let Some(old) = self.files.remove(&f) {
                up.files_changed += 1;
                delete.extend(old.policies.into_iter().map(|p| p.id));
                delete_groups.extend(old.groups.into_iter().map(|g| g.name.to_string()));
            }
        }
        for source in sources {
            let hash = crate::identity::fnv1a(source.text.as_bytes());
            let old = self.files.entry(source.name.to_string()).or_default();
            if old.hash == hash && hash != 0 {
                continue;
            }
            up.files_changed += 1;
            old.hash = hash;
            let decoded = decode_source(source, opts);
            let invalid = |kind: &str, name: &str| {
                decoded.errors.iter().any(|e| {
                    // A document that does not parse names no object: it may have been any.
                    e.object.is_empty()
                        || (e.kind.as_deref() == Some(kind) && e.name.as_deref() == Some(name))
                })
            };
            let mut policies = decoded.policies.clone();
            for p in std::mem::take(&mut old.policies) {
                if policies.iter().any(|n| n.id == p.id) {
                    continue;
                }
                if invalid(p.id.kind.as_str(), &p.id.name) {
                    up.kept.push(p.id.to_string());
                    policies.push(p);
                } else {
                    delete.push(p.id.clone());
                }
            }
            let mut groups = decoded.groups.clone();
            for g in std::mem::take(&mut old.groups) {
                if groups.iter().any(|n| n.name == g.name) {
                    continue;
                }
                if invalid("CiliumCIDRGroup", &g.name) {
                    up.kept.push(format!("CiliumCIDRGroup {}", g.name));
                    groups.push(g);
                } else {
                    delete_groups.push(g.name.to_string());
                }
            }
            upsert.extend(decoded.policies);
            upsert_groups.extend(decoded.groups);
            old.policies = policies;
            old.groups = groups;
            old.errors = decoded.errors.clone();
            up.errors.extend(decoded.errors);
            up.warnings.extend(decoded.warnings);
        }
        // Deletes first, so an object that moved between files survives.
        let upserted: HashSet<PolicyRef> = upsert.iter().map(|p| p.id.clone()).collect();
        for id in delete.iter().filter(|id| !upserted.contains(id)) {
            if repo.delete_policy(id) {
                up.policies_deleted += 1;
            }
        }
        for name in delete_groups
            .iter()
            .filter(|n| !upsert_groups.iter().any(|g| &*g.name == n.as_str()))
        {
            repo.delete_group(name);
        }
        for g in upsert_groups {
            repo.upsert_group(g);
        }
        up.policies_upserted = upsert.len();
        for p in upsert {
            repo.upsert_policy(p);
        }
        up
    }

    /// The errors of every file as it reads now (an error stays until its file is fixed).
    pub fn errors(&self) -> impl Iterator<Item = &PolicyError> {
        self.files.values().flat_map(|e| e.errors.iter())
    }

    /// Every policy in force, with the file it came from.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &Policy)> {
        self.files
            .iter()
            .flat_map(|(f, e)| e.policies.iter().map(move |p| (f.as_str(), p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EndpointSpec, EngineOptions};

    const GOOD: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-imds}
spec:
  endpointSelector: {}
  egressDeny:
    - toCIDR: [169.254.169.254/32]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: other}
spec:
  endpointSelector: {}
  egressDeny:
    - toCIDR: [10.0.0.1/32]
"#;

    fn repo() -> Repository {
        let mut r = Repository::new(EngineOptions::default());
        r.upsert_endpoint(EndpointSpec {
            name: "p".into(),
            namespace: "default".into(),
            ips: vec!["10.1.0.5".parse().expect("ip")],
            ..Default::default()
        });
        r
    }

    fn names(r: &Repository) -> Vec<String> {
        let mut v: Vec<String> = r.policies().map(|p| p.id.name.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn errors_stay_until_the_file_is_fixed() {
        let mut store = PolicyStore::new();
        let mut r = repo();
        let opts = DecodeOptions::default();
        let bad = GOOD.replace("10.0.0.1/32", "10.0.0.1/99");
        store.reload(&[Source::new("p.yaml", bad.as_str())], &opts, &mut r);
        assert_eq!(store.errors().count(), 1);
        // Unchanged text is not decoded again, and its error is still known.
        let up = store.reload(&[Source::new("p.yaml", bad.as_str())], &opts, &mut r);
        assert!(up.errors.is_empty());
        assert_eq!(store.errors().count(), 1);
        store.reload(&[Source::new("p.yaml", GOOD)], &opts, &mut r);
        assert_eq!(store.errors().count(), 0);
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_good_version() {
        let mut store = PolicyStore::new();
        let mut r = repo();
        let opts = DecodeOptions::default();
        let up = store.reload(&[Source::new("p.yaml", GOOD)], &opts, &mut r);
        assert!(up.errors.is_empty());
        assert_eq!(names(&r), ["deny-imds", "other"]);

        // deny-imds becomes invalid, other is removed from the file.
        let bad = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-imds}
spec:
  endpointSelector: {}
  egressDeny:
    - toCIDR: [not-a-cidr]
"#;
        let up = store.reload(&[Source::new("p.yaml", bad)], &opts, &mut r);
        assert_eq!(up.errors.len(), 1, "{:?}", up.errors);
        assert!(
            up.errors[0].to_string().starts_with("p.yaml:8:"),
            "{}",
            up.errors[0]
        );
        assert_eq!(up.kept, ["CiliumClusterwideNetworkPolicy deny-imds"]);
        assert_eq!(names(&r), ["deny-imds"]);

        // A file that does not parse at all keeps everything it had.
        let up = store.reload(&[Source::new("p.yaml", "a: [")], &opts, &mut r);
        assert!(!up.errors.is_empty());
        assert_eq!(names(&r), ["deny-imds"]);

        // The same text again is not decoded again.
        let up = store.reload(&[Source::new("p.yaml", "a: [")], &opts, &mut r);
        assert_eq!(up.files_changed, 0);

        // Removing the file removes its objects.
        let up = store.reload(&[], &opts, &mut r);
        assert_eq!(up.policies_deleted, 1);
        assert!(names(&r).is_empty());
    }

    #[test]
    fn a_policy_moving_between_files_stays() {
        let mut store = PolicyStore::new();
        let mut r = repo();
        let opts = DecodeOptions::default();
        store.reload(&[Source::new("a.yaml", GOOD)], &opts, &mut r);
        store.reload(
            &[Source::new("a.yaml", ""), Source::new("b.yaml", GOOD)],
            &opts,
            &mut r,
        );
        assert_eq!(names(&r), ["deny-imds", "other"]);
        assert_eq!(store.policies().filter(|(f, _)| *f == "b.yaml").count(), 2);
    }
}
