//! Connection slots: how many connections the proxy holds open for each source identity and,
//! inside that, for each pod (client source address). The identity limit keeps one workload from
//! taking the proxy from the others; the pod limit keeps one pod from taking its identity's share
//! from the other pods of the same workload.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The client's own address holds this many connections already.
    Pod(usize),
    /// The client's identity holds this many connections already, over all its pods.
    Identity(usize),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Pod(n) => write!(f, "too many connections from this pod ({n} open)"),
            Limit::Identity(n) => write!(f, "too many connections from this identity ({n} open)"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_identity: usize,
    pub per_pod: usize,
}

#[derive(Default)]
pub struct Slots(Mutex<Open>);

#[derive(Default)]
struct Open {
    identities: HashMap<u32, usize>,
    pods: HashMap<IpAddr, usize>,
}

/// One open connection's place, given back when dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
    identity: u32,
    pod: IpAddr,
}

impl Slots {
    fn open(&self) -> MutexGuard<'_, Open> {
        // The counts are changed only by whole increments and decrements, so a panic elsewhere
        // cannot leave them half-updated: the data behind a poisoned lock is still right.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `pod` of `identity`, unless either is at its cap. Both counts
    /// are checked and taken under one lock, so a refusal by one limit costs nothing in the
    /// other.
    pub fn take(&self, identity: u32, pod: IpAddr, caps: Caps) -> Result<Slot<'_>, Limit> {
        let mut open = self.open();
        let by_pod = open.pods.get(&pod).copied().unwrap_or(0);
        if by_pod >= caps.per_pod {
            return Err(Limit::Pod(by_pod));
        }
        let by_identity = open.identities.get(&identity).copied().unwrap_or(0);
        if by_identity >= caps.per_identity {
            return Err(Limit::Identity(by_identity));
        }
        *open.pods.entry(pod).or_default() += 1;
        *open.identities.entry(identity).or_default() += 1;
        Ok(Slot {
            slots: self,
            identity,
            pod,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let open = self.open();
        (open.identities.len(), open.pods.len())
    }
}

/// Takes one from a count and forgets the key at zero: pods come and go with their addresses,
/// and a map that kept every address ever seen would only grow.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self.slots.open();
        release(&mut open.pods, &self.pod);
        release(&mut open.identities, &self.identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        per_identity: 3,
        per_pod: 2,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_pod_at_its_cap_leaves_room_for_its_identitys_other_pods() {
        let slots = Slots::default();
        let a1 = slots.take(7, ip("10.0.0.1"), CAPS).expect("a1");
        let _a2 = slots.take(7, ip("10.0.0.1"), CAPS).expect("a2");
        assert_eq!(
            slots.take(7, ip("10.0.0.1"), CAPS).err(),
            Some(Limit::Pod(2))
        );
        let _b1 = slots.take(7, ip("10.0.0.2"), CAPS).expect("b1");
        // The identity is full now: pod C is refused by the identity's cap, not its own.
        assert_eq!(
            slots.take(7, ip("10.0.0.3"), CAPS).err(),
            Some(Limit::Identity(3))
        );
        // Another identity is not affected.
        let _x = slots.take(8, ip("10.0.0.9"), CAPS).expect("other identity");
        drop(a1);
        let _c1 = slots
            .take(7, ip("10.0.0.3"), CAPS)
            .expect("c1 after a1 left");
    }

    #[test]
    fn a_refusal_takes_nothing() {
        let slots = Slots::default();
        let caps = Caps {
            per_identity: 1,
            per_pod: 1,
        };
        let held = slots.take(7, ip("10.0.0.1"), caps).expect("first");
        for _ in 0..5 {
            assert!(slots.take(7, ip("10.0.0.1"), caps).is_err());
            assert!(slots.take(7, ip("10.0.0.2"), caps).is_err());
        }
        drop(held);
        assert!(slots.take(7, ip("10.0.0.2"), caps).is_ok());
    }

    #[test]
    fn given_back_slots_are_forgotten() {
        let slots = Slots::default();
        let a = slots.take(7, ip("10.0.0.1"), CAPS).expect("a");
        let b = slots.take(8, ip("10.0.0.2"), CAPS).expect("b");
        assert_eq!(slots.tracked(), (2, 2));
        drop((a, b));
        assert_eq!(slots.tracked(), (0, 0));
    }
}
