//! Peers (`toEndpoints`, `toCIDR`, `toCIDRSet`, `toEntities`, `toNodes`, `toGroups`, `toFQDNs`,
//! `toServices` and their `from` twins) translated into the selectors Cilium derives from them
//! (§3.3), and the CIDR label keys they select.

use super::{Cx, R, Scope};
use crate::api::CIDR_GROUP_NAME_KEY;
use crate::identity::CLUSTER_LABEL;
use crate::ipcache::CIDR_GROUP_ANY_KEY;
use crate::labels::{LabelKey, LabelSource, validate_label_value};
use crate::selector::{Operator, Requirement, Selector};
use imdsguard_manifest::Field;
use ipnet::IpNet;
use std::net::IpAddr;

impl Cx<'_> {
    pub(super) fn peers(
        &mut self,
        f: &Field,
        name: &str,
        scope: &Scope,
        prefixes: &mut Vec<IpNet>,
    ) -> R<Vec<Selector>> {
        let mut out = Vec::new();
        let items = f.seq()?;
        let peer_kind = name
            .strip_prefix("from")
            .or_else(|| name.strip_prefix("to"))
            .unwrap_or(name);
        match peer_kind {
            "Endpoints" => {
                for s in &items {
                    let sel = self.selector(s)?;
                    out.push(self.inject_peer(sel, scope));
                }
            }
            "CIDRSet" => {
                for s in &items {
                    out.extend(self.cidr_set(s, prefixes)?);
                }
            }
            "CIDR" => {
                for s in &items {
                    let net = parse_prefix(s, false)?;
                    prefixes.push(net);
                    out.extend(cidr_selectors(net, &[]));
                }
            }
            "Entities" => {
                for s in &items {
                    out.extend(self.entity(s)?);
                }
            }
            "Nodes" => {
                for s in &items {
                    let sel = self.selector(s)?;
                    out.push(sel.with(Requirement::exists(LabelKey::new(
                        LabelSource::Reserved,
                        "remote-node",
                    ))));
                }
            }
            "Groups" => {
                return Err(f.error(format!(
                    "{name} is not supported: the Cilium operator turns cloud security groups into CIDR sets; write toCIDRSet instead"
                )));
            }
            "FQDNs" => {
                for s in &items {
                    let m = s.map(&["matchName", "matchPattern"])?;
                    if m.get("matchName").is_none() && m.get("matchPattern").is_none() {
                        return Err(s.error("one of matchName or matchPattern is required"));
                    }
                }
                self.warn(f.pos(), "toFQDNs selects nothing in imdsguard (no DNS proxy): the rule allows no traffic".into());
            }
            "Services" => {
                for s in &items {
                    s.map(&["k8sService", "k8sServiceSelector"])?;
                }
                self.warn(f.pos(), "toServices selects nothing in imdsguard (no Service watch yet): the rule allows no traffic".into());
            }
            _ => return Err(f.error(format!("unsupported peer field {name}"))),
        }
        Ok(out)
    }

    fn cidr_set(&mut self, f: &Field, prefixes: &mut Vec<IpNet>) -> R<Vec<Selector>> {
        let m = f.map(&["cidr", "except", "cidrGroupRef", "cidrGroupSelector"])?;
        let given: Vec<&str> = ["cidr", "cidrGroupRef", "cidrGroupSelector"]
            .into_iter()
            .filter(|n| m.has(n))
            .collect();
        if given.len() != 1 {
            return Err(
                m.error("exactly one of cidr, cidrGroupRef or cidrGroupSelector must be set")
            );
        }
        let mut excepts = Vec::new();
        if let Some(ex) = m.get("except") {
            for e in ex.seq()? {
                excepts.push((parse_prefix(&e, true)?, e));
            }
        }
        let base: Requirement = match given[0] {
            "cidr" => {
                let cf = m.required("cidr")?;
                let net = parse_prefix(&cf, true)?;
                for (e, ef) in &excepts {
                    if !(net.prefix_len() <= e.prefix_len() && net.contains(&e.network())) {
                        return Err(ef.error(format!("except {e} is not contained in cidr {net}")));
                    }
                }
                prefixes.push(net);
                prefixes.extend(excepts.iter().map(|(e, _)| *e));
                let ex: Vec<IpNet> = excepts.iter().map(|(e, _)| *e).collect();
                return Ok(cidr_selectors(net, &ex));
            }
            "cidrGroupRef" => {
                let r = m.required("cidrGroupRef")?;
                let name = r.str()?;
                validate_label_value(name)
                    .map_err(|e| r.error(format!("invalid CIDR group name: {e}")))?;
                Requirement::exists(LabelKey::new(
                    LabelSource::CidrGroup,
                    &format!("{CIDR_GROUP_NAME_KEY}/{name}"),
                ))
            }
            _ => {
                let sf = m.required("cidrGroupSelector")?;
                let sel = self.selector(&sf)?;
                let reqs: Vec<Requirement> = sel
                    .requirements()
                    .iter()
                    .map(|r| {
                        Requirement::new(
                            LabelKey::new(LabelSource::CidrGroup, &r.key.key),
                            r.op,
                            r.values.clone(),
                        )
                    })
                    .collect();
                // An empty cidrGroupSelector selects every group.
                let mut all = reqs;
                if all.is_empty() {
                    all.push(Requirement::exists(LabelKey::new(
                        LabelSource::Reserved,
                        "world",
                    )));
                }
                prefixes.extend(excepts.iter().map(|(e, _)| *e));
                let mut sel = Selector::new(all);
                for (e, _) in &excepts {
                    sel = sel.with(Requirement::new(
                        cidr_key(*e),
                        Operator::DoesNotExist,
                        vec![],
                    ));
                }
                return Ok(vec![sel.with(Requirement::exists(LabelKey::new(
                    LabelSource::CidrGroup,
                    CIDR_GROUP_ANY_KEY,
                )))]);
            }
        };
        prefixes.extend(excepts.iter().map(|(e, _)| *e));
        let mut sel = Selector::new(vec![base]);
        for (e, _) in &excepts {
            sel = sel.with(Requirement::new(
                cidr_key(*e),
                Operator::DoesNotExist,
                vec![],
            ));
        }
        Ok(vec![sel])
    }

    fn entity(&mut self, f: &Field) -> R<Vec<Selector>> {
        let name = f.str()?;
        let reserved = |k: &str| {
            Selector::new(vec![Requirement::exists(LabelKey::new(
                LabelSource::Reserved,
                k,
            ))])
        };
        Ok(match name {
            "all" => vec![Selector::wildcard()],
            "world" => vec![
                reserved("world"),
                reserved("world-ipv4"),
                reserved("world-ipv6"),
            ],
            "cluster" => {
                let mut v: Vec<Selector> = [
                    "host",
                    "remote-node",
                    "init",
                    "ingress",
                    "health",
                    "unmanaged",
                    "kube-apiserver",
                ]
                .into_iter()
                .map(reserved)
                .collect();
                v.push(Selector::new(vec![Requirement::equals(
                    LabelKey::new(LabelSource::K8s, CLUSTER_LABEL),
                    &self.opts.cluster_name,
                )]));
                v
            }
            "host" | "remote-node" | "kube-apiserver" | "ingress" | "health" | "init"
            | "unmanaged" | "none" => {
                vec![reserved(name)]
            }
            "world-ipv4" | "world-ipv6" => {
                return Err(f.error(format!(
                    "entity {name:?} is accepted by the Cilium agent but not by the CRD schema; use \"world\" or a toCIDR of 0.0.0.0/0 or ::/0"
                )));
            }
            other => {
                return Err(f.error(format!(
                    "unknown entity {other:?} (all, world, cluster, host, init, ingress, unmanaged, remote-node, health, none, kube-apiserver)"
                )));
            }
        })
    }
}

/// The label key of a prefix: `cidr:10.0.0.0/8`, IPv6 with `-` for `:`.
pub fn cidr_key(net: IpNet) -> LabelKey {
    LabelKey::new(LabelSource::Cidr, &cidr_label_key(net))
}

pub fn cidr_label_key(net: IpNet) -> String {
    match net {
        IpNet::V4(n) => n.to_string(),
        IpNet::V6(n) => {
            let s = n.to_string().replace(':', "-");
            let s = if s.starts_with('-') {
                format!("0{s}")
            } else {
                s
            };
            // A trailing `-` before the `/len` gets a `0` too (`0--0/0`).
            match s.split_once('/') {
                Some((addr, len)) if addr.ends_with('-') => format!("{addr}0/{len}"),
                _ => s,
            }
        }
    }
}

/// `cidr.P Exists ∧ ∀E: cidr.E DoesNotExist`, plus the `reserved.world` twin for `/0` (§3.3).
fn cidr_selectors(net: IpNet, excepts: &[IpNet]) -> Vec<Selector> {
    let mut sel = Selector::new(vec![Requirement::exists(cidr_key(net))]);
    for e in excepts {
        sel = sel.with(Requirement::new(
            cidr_key(*e),
            Operator::DoesNotExist,
            vec![],
        ));
    }
    let mut out = vec![sel];
    if net.prefix_len() == 0 {
        let mut twin = Selector::new(vec![Requirement::exists(LabelKey::new(
            LabelSource::Reserved,
            "world",
        ))]);
        for e in excepts {
            twin = twin.with(Requirement::new(
                cidr_key(*e),
                Operator::DoesNotExist,
                vec![],
            ));
        }
        out.push(twin);
    }
    out
}

/// A prefix; with `require_len` false a bare address means /32 or /128.
pub(super) fn parse_prefix(f: &Field, require_len: bool) -> R<IpNet> {
    let s = f.str()?;
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if !require_len && let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(f.error(format!(
        "invalid CIDR {s:?}: expected an address and prefix length such as 10.0.0.0/8{}",
        if require_len {
            ""
        } else {
            " or a single address"
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_cidr_labels() {
        assert_eq!(cidr_label_key("::/0".parse().unwrap()), "0--0/0");
        assert_eq!(
            cidr_label_key("2001:db8::/32".parse().unwrap()),
            "2001-db8--0/32"
        );
    }
}
