//! The engine's resolved policy, written as the datapath's tables. Pure: the loader writes what
//! this computes.

use crate::abi::{
    AUDIT_DEFAULT_DENY_IDENTITY, AUDIT_VIEW_GENERATION, DIR_EGRESS, DIR_INGRESS, EP_AUDIT,
    EP_AUDIT_EGRESS_ENFORCED, EP_AUDIT_INGRESS_ENFORCED, EP_AUDIT_VIEW, EP_EGRESS_ENFORCED,
    EP_INGRESS_ENFORCED, EP_READY, POL_DENY, POLICY_FIXED_BITS, PolicyKey, PolicyValue,
};
use imdsguard_policy::PolicyRef;
use imdsguard_policy::mapstate::{Entry, Origin};
use imdsguard_policy::repository::{DirectionPolicy, EndpointPolicy};
use std::collections::HashMap;

/// Small numbers for the policies that decide, so an event can say which one it was. Stable for
/// the life of the agent; 0 means "no policy" (default allow, allow-localhost).
#[derive(Debug, Default)]
pub struct RuleIds {
    by_ref: HashMap<PolicyRef, u32>,
    refs: Vec<PolicyRef>,
}

impl RuleIds {
    pub fn id(&mut self, origin: &Origin) -> u32 {
        let Origin::Rule { policy, .. } = origin else {
            return 0;
        };
        self.id_of(policy)
    }

    /// The id of a policy, given one if it has none yet.
    pub fn id_of(&mut self, policy: &PolicyRef) -> u32 {
        if let Some(id) = self.by_ref.get(policy) {
            return *id;
        }
        self.refs.push(policy.clone());
        let id = self.refs.len() as u32;
        self.by_ref.insert(policy.clone(), id);
        id
    }

    pub fn policy(&self, id: u32) -> Option<&PolicyRef> {
        self.refs.get(id.checked_sub(1)? as usize)
    }
}

/// One policy table row: the LPM prefix length, the key and the value.
pub type PolicyRow = (u32, PolicyKey, PolicyValue);

/// What an endpoint's tables say, for one generation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointTables {
    pub flags: u32,
    pub rows: Vec<PolicyRow>,
}

/// The rows for an endpoint's policy. Entries that redirect to a proxy get `proxy_port`.
pub fn endpoint_tables(
    ep_id: u32,
    generation: u32,
    policy: &EndpointPolicy,
    audit: bool,
    proxy_port: u16,
    ids: &mut RuleIds,
) -> EndpointTables {
    let mut flags = EP_READY;
    if policy.egress.enforced {
        flags |= EP_EGRESS_ENFORCED;
    }
    if policy.ingress.enforced {
        flags |= EP_INGRESS_ENFORCED;
    }
    if audit {
        flags |= EP_AUDIT;
    }
    let mut rows = Vec::new();
    for (dir, d) in [(DIR_INGRESS, &policy.ingress), (DIR_EGRESS, &policy.egress)] {
        direction_rows(ep_id, generation, dir, d, proxy_port, ids, &mut rows);
    }
    // The full view, only for endpoints an audit-mode policy selects: its rows sit beside the
    // enforced ones under the audit generation bit, so one flip switches both.
    if let Some(a) = &policy.audit_view {
        flags |= EP_AUDIT_VIEW;
        if a.egress.table.enforced {
            flags |= EP_AUDIT_EGRESS_ENFORCED;
        }
        if a.ingress.table.enforced {
            flags |= EP_AUDIT_INGRESS_ENFORCED;
        }
        let audit_generation = generation | AUDIT_VIEW_GENERATION;
        for (dir, d) in [(DIR_INGRESS, &a.ingress), (DIR_EGRESS, &a.egress)] {
            direction_rows(
                ep_id,
                audit_generation,
                dir,
                &d.table,
                proxy_port,
                ids,
                &mut rows,
            );
            // A full-view miss is reported against the audit policy that turns default deny on
            // (the first, when several do).
            if let Some(p) = d.default_deny_by.first().filter(|_| d.table.enforced) {
                rows.push((
                    POLICY_FIXED_BITS,
                    PolicyKey {
                        ep_id,
                        generation: audit_generation,
                        identity: AUDIT_DEFAULT_DENY_IDENTITY,
                        dir,
                        proto: 0,
                        dport_be: 0,
                    },
                    PolicyValue {
                        rule_id: ids.id_of(p),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    EndpointTables { flags, rows }
}

fn direction_rows(
    ep_id: u32,
    generation: u32,
    dir: u8,
    d: &DirectionPolicy,
    proxy_port: u16,
    ids: &mut RuleIds,
    rows: &mut Vec<PolicyRow>,
) {
    for (key, entry) in d.map.iter() {
        let key_l4 = u32::from(key.prefix_len());
        rows.push((
            POLICY_FIXED_BITS + key_l4,
            PolicyKey {
                ep_id,
                generation,
                identity: key.identity,
                dir,
                proto: key.proto,
                dport_be: u16::from_ne_bytes(key.port.to_be_bytes()),
            },
            value(
                key.match_type().value(),
                key_l4 as u8,
                entry,
                proxy_port,
                ids,
            ),
        ));
    }
}

fn value(
    match_type: u8,
    prefixlen_l4: u8,
    e: &Entry,
    proxy_port: u16,
    ids: &mut RuleIds,
) -> PolicyValue {
    PolicyValue {
        flags: if e.deny { POL_DENY } else { 0 },
        prefixlen_l4,
        proxy_rank: e.proxy_rank,
        match_type,
        proxy_port: if e.proxy_rank > 0 && !e.deny {
            proxy_port
        } else {
            0
        },
        pad: 0,
        rule_id: ids.id(&e.origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_manifest::Source;
    use imdsguard_policy::{DecodeOptions, EndpointSpec, EngineOptions, Repository, decode_source};

    const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-imds}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egressDeny:
    - toCIDR: [169.254.169.254/32]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
    - toCIDR: [10.0.0.10/32]
      toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"#;

    fn resolved() -> (Repository, String) {
        let decoded = decode_source(&Source::new("p.yaml", POLICY), &DecodeOptions::default());
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let mut repo = Repository::new(EngineOptions::default());
        repo.load(&decoded);
        let spec = EndpointSpec {
            name: "web".to_owned(),
            namespace: "default".to_owned(),
            labels: vec![("app".to_owned(), "web".to_owned())],
            ips: vec!["10.1.0.5".parse().expect("ip")],
            ..Default::default()
        };
        let key = spec.key();
        repo.upsert_endpoint(spec);
        repo.resolve();
        (repo, key)
    }

    #[test]
    fn rows_follow_the_engine_table() {
        let (repo, key) = resolved();
        let policy = repo.endpoint_policy(&key).expect("resolved");
        let mut ids = RuleIds::default();
        let t = endpoint_tables(9, 1, policy, false, 15001, &mut ids);
        assert_eq!(t.flags & EP_READY, EP_READY);
        assert_eq!(t.flags & EP_EGRESS_ENFORCED, EP_EGRESS_ENFORCED);
        assert_eq!(t.flags & EP_AUDIT, 0);
        assert_eq!(
            t.rows.len(),
            policy.egress.map.len() + policy.ingress.map.len()
        );
        // The deny: the CIDR identity, all protocols, L3-only, named by its policy.
        let deny = t
            .rows
            .iter()
            .find(|(_, _, v)| v.flags & POL_DENY != 0)
            .expect("a deny row");
        assert_eq!(deny.0, POLICY_FIXED_BITS);
        assert_eq!(
            (deny.1.ep_id, deny.1.generation, deny.1.dir),
            (9, 1, DIR_EGRESS)
        );
        assert_eq!((deny.1.proto, deny.2.match_type), (0, 1));
        assert_eq!(
            ids.policy(deny.2.rule_id).map(|p| &*p.name),
            Some("deny-imds")
        );
        // The DNS allow: UDP/53, big-endian, a full 24-bit L4 prefix.
        let dns = t
            .rows
            .iter()
            .find(|(_, k, _)| k.proto == 17)
            .expect("a UDP row");
        assert_eq!(dns.0, POLICY_FIXED_BITS + 24);
        assert_eq!(dns.1.dport_be.to_ne_bytes(), 53u16.to_be_bytes());
        assert_eq!(dns.2.proxy_port, 0);
    }
}
