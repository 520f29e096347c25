//! `--unknown-veths guard`: veths no known pod has.

use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

/// `--unknown-veths guard`: the veths no known pod has, rescanned when links change, so a pod the
/// agent has not heard of yet (its veth exists before its Pod object or its endpoints entry)
/// cannot reach a metadata address.
pub struct VethGuard {
    links: Option<imdsguard_netns::LinkWatch>,
    pub(super) rescan: bool,
    veths: BTreeSet<String>,
}

impl Default for VethGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl VethGuard {
    pub fn new() -> VethGuard {
        let links = match imdsguard_netns::LinkWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    error = %e,
                    "watching network interfaces: new veths are found every --reload-interval"
                );
                None
            }
        };
        VethGuard {
            links,
            rescan: true,
            veths: BTreeSet::new(),
        }
    }

    /// Whether links changed since the last scan (checked on every turn of the loop).
    pub fn links_changed(&mut self) -> bool {
        if self.links.as_ref().is_some_and(|w| w.changed()) {
            self.rescan = true;
        }
        self.rescan
    }

    /// The veths to guard: every veth that is not one of `owned`'s interfaces.
    pub fn guarded(&mut self, owned: &BTreeMap<String, String>, retry: bool) -> BTreeSet<String> {
        if retry || self.rescan {
            match imdsguard_netns::veths() {
                Ok(v) => self.veths = v.into_iter().collect(),
                Err(e) => warn!(error = %e, "cannot list veths"),
            }
        }
        self.rescan = false;
        let owned: BTreeSet<&String> = owned.values().collect();
        self.veths
            .iter()
            .filter(|v| !owned.contains(v))
            .cloned()
            .collect()
    }
}
