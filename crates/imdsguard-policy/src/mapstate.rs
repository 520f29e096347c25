//! The per-endpoint, per-direction policy table, shaped like Cilium's datapath policy map: keys of
//! (remote identity or ANY, protocol or ANY, port prefix), entries of allow/deny, proxy redirect
//! and the rules that put them there. Lookup follows the 1.17+ datapath (docs/policy-semantics.md
//! §5.3): one longest-prefix match for the peer's identity, one for ANY, and a choice between them.

use crate::api::{PolicyRef, Protocol};
use crate::identity::Identity;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Identity 0 in a key means "any identity", as in Cilium's map.
pub const ANY_IDENTITY: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Key {
    pub identity: u32,
    /// 0 means any protocol (and then the port prefix is empty).
    pub proto: u8,
    /// The port, masked to `port_prefix_len` leading bits.
    pub port: u16,
    /// 0 = all ports, 16 = one port, in between = a range chunk.
    pub port_prefix_len: u8,
}

impl std::hash::Hash for Key {
    // One word instead of four fields: tables are built and probed millions of times.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(
            u64::from(self.identity) << 32
                | u64::from(self.proto) << 24
                | u64::from(self.port) << 8
                | u64::from(self.port_prefix_len),
        );
    }
}

impl Key {
    pub fn new(identity: u32, proto: u8, port: u16, port_prefix_len: u8) -> Key {
        Key {
            identity,
            proto,
            port: port & mask(port_prefix_len),
            port_prefix_len,
        }
    }

    /// Total prefix length in Cilium's LPM terms: 8 protocol bits, then port bits.
    pub fn prefix_len(&self) -> u8 {
        if self.proto == 0 {
            0
        } else {
            8 + self.port_prefix_len
        }
    }

    /// Whether this key's traffic includes all of `other`'s (ANY identity covers every identity).
    pub fn covers(&self, other: &Key) -> bool {
        (self.identity == ANY_IDENTITY || self.identity == other.identity)
            && (self.proto == 0
                || (self.proto == other.proto
                    && self.port_prefix_len <= other.port_prefix_len
                    && other.port & mask(self.port_prefix_len) == self.port))
    }

    pub fn match_type(&self) -> MatchType {
        match (
            self.identity == ANY_IDENTITY,
            self.proto == 0,
            self.port_prefix_len == 0,
        ) {
            (false, true, _) => MatchType::L3Only,
            (false, false, false) => MatchType::L3L4,
            (false, false, true) => MatchType::L3Proto,
            (true, true, _) => MatchType::All,
            (true, false, false) => MatchType::L4Only,
            (true, false, true) => MatchType::ProtoOnly,
        }
    }
}

/// Which (identity, protocol) pairs have keys of which port prefix lengths, so the keys covering
/// a key can be probed directly instead of generating every candidate.
#[derive(Default)]
struct Shapes {
    lens: FxHashMap<(u32, u8), u32>,
}

impl Shapes {
    fn new<'a>(keys: impl Iterator<Item = &'a Key>) -> Shapes {
        let mut shapes = Shapes::default();
        for k in keys {
            *shapes.lens.entry((k.identity, k.proto)).or_default() |= 1 << k.port_prefix_len;
        }
        shapes
    }

    /// Every existing-shaped key (other than `k`) whose traffic includes all of `k`'s: the same or
    /// the ANY identity, the same protocol with a shorter or equal port prefix, or any protocol.
    fn covering(&self, k: &Key, mut f: impl FnMut(Key) -> bool) -> bool {
        let ids: &[u32] = if k.identity == ANY_IDENTITY {
            &[ANY_IDENTITY]
        } else {
            &[ANY_IDENTITY, k.identity]
        };
        for &id in ids {
            if k.proto != 0
                && let Some(bits) = self.lens.get(&(id, k.proto))
            {
                let mut bits = *bits & ((1u32 << (k.port_prefix_len + 1)) - 1);
                while bits != 0 {
                    let len = bits.trailing_zeros() as u8;
                    bits &= bits - 1;
                    let c = Key::new(id, k.proto, k.port, len);
                    if c != *k && f(c) {
                        return true;
                    }
                }
            }
            if self.lens.contains_key(&(id, 0)) {
                let c = Key::new(id, 0, 0, 0);
                if c != *k && f(c) {
                    return true;
                }
            }
        }
        false
    }
}

fn mask(len: u8) -> u16 {
    if len == 0 {
        0
    } else {
        u16::MAX << (16 - u32::from(len.min(16)))
    }
}

/// Splits an inclusive port range into aligned prefixes (5–10 → 5/16, 6/15, 8/15, 10/16).
pub fn port_range_prefixes(start: u16, end: u16) -> Vec<(u16, u8)> {
    if start == 0 && end == u16::MAX {
        return vec![(0, 0)];
    }
    let mut out = Vec::new();
    let mut cur = u32::from(start);
    let end = u32::from(end);
    while cur <= end {
        let mut size: u32 = 1;
        while cur % (size * 2) == 0 && cur + size * 2 - 1 <= end && size * 2 <= 65536 {
            size *= 2;
        }
        let bits = size.trailing_zeros() as u8;
        out.push((cur as u16, 16 - bits));
        cur += size;
    }
    out
}

/// Policy verdict match type (§6.1), with Hubble's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum MatchType {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "L3-Only")]
    L3Only,
    #[serde(rename = "L3-L4")]
    L3L4,
    #[serde(rename = "L4-Only")]
    L4Only,
    #[serde(rename = "all")]
    All,
    #[serde(rename = "L3-Proto")]
    L3Proto,
    #[serde(rename = "Proto-Only")]
    ProtoOnly,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchType::None => "none",
            MatchType::L3Only => "L3-Only",
            MatchType::L3L4 => "L3-L4",
            MatchType::L4Only => "L4-Only",
            MatchType::All => "all",
            MatchType::L3Proto => "L3-Proto",
            MatchType::ProtoOnly => "Proto-Only",
        }
    }

    /// The numeric value in Cilium's monitor events.
    pub fn value(self) -> u8 {
        match self {
            MatchType::None => 0,
            MatchType::L3Only => 1,
            MatchType::L3L4 => 2,
            MatchType::L4Only => 3,
            MatchType::All => 4,
            MatchType::L3Proto => 5,
            MatchType::ProtoOnly => 6,
        }
    }

    pub fn parse(s: &str) -> Option<MatchType> {
        [
            MatchType::None,
            MatchType::L3Only,
            MatchType::L3L4,
            MatchType::L4Only,
            MatchType::All,
            MatchType::L3Proto,
            MatchType::ProtoOnly,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// Who put an entry in the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Origin {
    Rule {
        policy: PolicyRef,
        rule: usize,
        log: Option<Arc<str>>,
    },
    /// Added because no selecting rule asked for default deny in this direction (§4.2).
    DefaultAllow,
    /// The implicit ingress allow from the local host (§4.3).
    AllowLocalhost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub deny: bool,
    /// 0: no redirect. Higher values take precedence (HTTP, Kafka, proxylib, DNS ranks).
    pub proxy_rank: u8,
    pub auth_required: bool,
    /// The first origin; most entries have exactly one, and keeping it inline saves an
    /// allocation per entry.
    pub origin: Arc<Origin>,
    /// Boxed so an entry stays small: tables hold tens of thousands of them.
    pub more_origins: Option<Box<Vec<Arc<Origin>>>>,
}

/// One rule's wish for one key, before merging.
#[derive(Debug, Clone)]
pub struct Contribution {
    pub deny: bool,
    pub proxy_rank: u8,
    pub auth_required: bool,
    pub origin: Arc<Origin>,
}

impl Entry {
    pub fn origins(&self) -> impl Iterator<Item = &Arc<Origin>> {
        std::iter::once(&self.origin).chain(self.more_origins.iter().flat_map(|v| v.iter()))
    }
}

/// One direction's table of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct MapState {
    entries: FxHashMap<Key, Entry>,
    /// For each protocol number, the port prefix lengths present (bit i = length i), so lookups
    /// only probe lengths that exist.
    lens: FxHashMap<u8, u32>,
    any_proto: bool,
}

/// Result of a table lookup.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    pub key: Key,
    pub entry: &'a Entry,
}

impl MapState {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter()
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Builds a table from raw contributions (see [`MapStateBuilder`]).
    pub fn build(contributions: Vec<(Key, Contribution)>) -> MapState {
        let mut b = MapStateBuilder::default();
        for (key, c) in contributions {
            b.add(key, c);
        }
        b.finish()
    }

    fn from_entries(entries: FxHashMap<Key, Entry>) -> MapState {
        let mut state = MapState {
            entries,
            ..Default::default()
        };
        for k in state.entries.keys() {
            if k.proto == 0 {
                state.any_proto = true;
            } else {
                *state.lens.entry(k.proto).or_default() |= 1 << k.port_prefix_len;
            }
        }
        state
    }

    fn lpm(&self, identity: u32, proto: u8, port: u16) -> Option<Lookup<'_>> {
        if let Some(bits) = self.lens.get(&proto) {
            let mut bits = *bits;
            while bits != 0 {
                let len = 31 - bits.leading_zeros() as u8;
                bits &= !(1 << len);
                let key = Key::new(identity, proto, port, len);
                if let Some(entry) = self.entries.get(&key) {
                    return Some(Lookup { key, entry });
                }
            }
        }
        if self.any_proto {
            let key = Key::new(identity, 0, 0, 0);
            if let Some(entry) = self.entries.get(&key) {
                return Some(Lookup { key, entry });
            }
        }
        None
    }

    /// The entry the datapath would choose for a packet from/to `peer` (§5.3).
    pub fn lookup(&self, peer: Identity, proto: Protocol, port: u16) -> Option<Lookup<'_>> {
        let proto = proto.number();
        let l3 = self.lpm(peer.0, proto, port);
        let l4 = self.lpm(ANY_IDENTITY, proto, port);
        match (l3, l4) {
            (Some(a), _) if a.entry.deny => Some(a),
            (None, b) => b,
            (Some(a), None) => Some(a),
            (Some(a), Some(b)) => {
                let prefer_l4 = b.entry.deny
                    || b.entry.proxy_rank > a.entry.proxy_rank
                    || (b.entry.proxy_rank == a.entry.proxy_rank
                        && b.key.prefix_len() > a.key.prefix_len());
                Some(if prefer_l4 { b } else { a })
            }
        }
    }
}

/// Merges contributions as they are produced, then applies Cilium's insertion rules (§5.3):
/// denies remove every allow they cover, a redirect shadows narrower allows of lower rank, and an
/// identity-specific allow identical to an ANY allow on the same port is elided.
#[derive(Default)]
pub struct MapStateBuilder {
    merged: FxHashMap<Key, Entry>,
    /// Without denies, redirects or ANY-identity port keys no insertion rule can apply.
    rules_apply: bool,
}

impl MapStateBuilder {
    pub fn add(&mut self, key: Key, c: Contribution) {
        self.rules_apply |=
            c.deny || c.proxy_rank > 0 || (key.identity == ANY_IDENTITY && key.proto != 0);
        match self.merged.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry {
                    deny: c.deny,
                    proxy_rank: c.proxy_rank,
                    auth_required: c.auth_required,
                    origin: c.origin,
                    more_origins: None,
                });
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let cur = o.get_mut();
                if cur.deny != c.deny {
                    if c.deny {
                        *cur = Entry {
                            deny: true,
                            proxy_rank: 0,
                            auth_required: false,
                            origin: c.origin,
                            more_origins: None,
                        };
                    }
                    return;
                }
                cur.proxy_rank = cur.proxy_rank.max(c.proxy_rank);
                cur.auth_required |= c.auth_required;
                if cur.origin != c.origin {
                    let more = cur.more_origins.get_or_insert_default();
                    if !more.contains(&c.origin) {
                        more.push(c.origin);
                    }
                }
            }
        }
    }

    pub fn finish(self) -> MapState {
        let mut merged = self.merged;
        if !self.rules_apply {
            return MapState::from_entries(merged);
        }
        let shapes = Shapes::new(merged.keys());
        let mut remove = Vec::new();
        for (k, e) in &merged {
            if e.deny {
                // A narrower deny under a broader deny is redundant.
                if shapes.covering(k, |c| merged.get(&c).is_some_and(|ce| ce.deny)) {
                    remove.push(*k);
                }
                continue;
            }
            if shapes.covering(k, |c| {
                merged
                    .get(&c)
                    .is_some_and(|ce| ce.deny || ce.proxy_rank > e.proxy_rank)
            }) {
                remove.push(*k);
                continue;
            }
            if k.identity != ANY_IDENTITY && k.proto != 0 {
                let any = Key {
                    identity: ANY_IDENTITY,
                    ..*k
                };
                if let Some(ae) = merged.get(&any)
                    && ae.proxy_rank == e.proxy_rank
                    && ae.auth_required == e.auth_required
                {
                    remove.push(*k);
                }
            }
        }
        for k in remove {
            merged.remove(&k);
        }
        MapState::from_entries(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(rank: u8) -> Contribution {
        Contribution {
            deny: false,
            proxy_rank: rank,
            auth_required: false,
            origin: Arc::new(Origin::DefaultAllow),
        }
    }
    fn deny() -> Contribution {
        Contribution {
            deny: true,
            proxy_rank: 0,
            auth_required: false,
            origin: Arc::new(Origin::DefaultAllow),
        }
    }

    #[test]
    fn ranges_split_into_prefixes() {
        assert_eq!(
            port_range_prefixes(5, 10),
            vec![(5, 16), (6, 15), (8, 15), (10, 16)]
        );
        assert_eq!(port_range_prefixes(64, 127), vec![(64, 10)]);
        assert_eq!(port_range_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_range_prefixes(80, 80), vec![(80, 16)]);
    }

    #[test]
    fn deny_wins_over_narrower_allow() {
        let foo = 1000;
        let m = MapState::build(vec![
            (Key::new(foo, 0, 0, 0), deny()),
            (Key::new(foo, 6, 80, 16), allow(0)),
            (Key::new(ANY_IDENTITY, 6, 80, 16), allow(0)),
        ]);
        let hit = m.lookup(Identity(foo), Protocol::Tcp, 80).unwrap();
        assert!(hit.entry.deny);
        assert_eq!(hit.key.match_type(), MatchType::L3Only);
        assert!(
            !m.lookup(Identity(2000), Protocol::Tcp, 80)
                .unwrap()
                .entry
                .deny
        );
    }

    #[test]
    fn redirect_shadows_plain_allow() {
        let foo = 1000;
        let m = MapState::build(vec![
            (Key::new(ANY_IDENTITY, 6, 80, 16), allow(154)),
            (Key::new(foo, 6, 80, 16), allow(0)),
        ]);
        assert_eq!(m.len(), 1);
        let hit = m.lookup(Identity(foo), Protocol::Tcp, 80).unwrap();
        assert_eq!(hit.key.match_type(), MatchType::L4Only);
    }
}
