//! One rule of a policy (`spec` or an item of `specs`): its subject, its four sections and their
//! items, default deny and logging.

use super::{Cx, R, Scope};
use crate::api::*;
use crate::identity::NAMESPACE_LABEL;
use crate::labels::{LabelKey, LabelSource};
use crate::selector::Requirement;
use imdsguard_manifest::{Field, FieldError};
use std::sync::Arc;

impl Cx<'_> {
    pub(super) fn rule(&mut self, f: &Field, index: usize, id: &PolicyRef) -> R<Rule> {
        let m = f.map(&[
            "endpointSelector",
            "nodeSelector",
            "ingress",
            "ingressDeny",
            "egress",
            "egressDeny",
            "labels",
            "description",
            "enableDefaultDeny",
            "log",
        ])?;
        let cnp = id.kind == PolicyKind::CiliumNetworkPolicy;
        let subject = match (m.get("endpointSelector"), m.get("nodeSelector")) {
            (Some(_), Some(n)) => {
                return Err(n.error("rule cannot have both EndpointSelector and NodeSelector"));
            }
            (None, None) => {
                return Err(m.error("rule must have one of EndpointSelector or NodeSelector"));
            }
            (None, Some(n)) if cnp => return Err(n.error("rule cannot have NodeSelector")),
            (None, Some(n)) => Subject::Nodes(self.selector(&n)?),
            (Some(e), None) => {
                let sel = self.selector(&e)?;
                if cnp {
                    let key = LabelKey::new(LabelSource::K8s, NAMESPACE_LABEL);
                    Subject::Endpoints(
                        sel.replacing(&key, Requirement::equals(key.clone(), &id.namespace)),
                    )
                } else {
                    Subject::Endpoints(sel)
                }
            }
        };
        let host = matches!(subject, Subject::Nodes(_));
        let subject_has_init =
            matches!(&subject, Subject::Endpoints(s) if s.has_key(&LabelSource::Reserved, "init"));
        let scope = Scope {
            kind: id.kind,
            namespace: id.namespace.clone(),
            subject_has_init,
            host,
        };
        let mut sections: [Option<Vec<PolicyItem>>; 4] = Default::default();
        for (slot, (name, section)) in sections.iter_mut().zip([
            ("ingress", Section::Ingress),
            ("ingressDeny", Section::IngressDeny),
            ("egress", Section::Egress),
            ("egressDeny", Section::EgressDeny),
        ]) {
            if let Some(list) = m.get(name) {
                let mut items = Vec::new();
                for (i, item) in list.seq()?.iter().enumerate() {
                    items.push(self.item(item, i, section, &scope)?);
                }
                *slot = Some(items);
            }
        }
        let [ingress, ingress_deny, egress, egress_deny] = sections;
        let non_empty = |s: &Option<Vec<PolicyItem>>| s.as_ref().is_some_and(|v| !v.is_empty());
        if !m.has("ingress") && !m.has("ingressDeny") && !m.has("egress") && !m.has("egressDeny") {
            return Err(
                m.error("rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny")
            );
        }
        let (mut dd_in, mut dd_eg) = (
            non_empty(&ingress) || non_empty(&ingress_deny),
            non_empty(&egress) || non_empty(&egress_deny),
        );
        if let Some(edd) = m.get("enableDefaultDeny") {
            let edd = edd.map(&["ingress", "egress"])?;
            if let Some(v) = edd.get("ingress") {
                dd_in = v.bool()?;
            }
            if let Some(v) = edd.get("egress") {
                dd_eg = v.bool()?;
            }
        }
        if let Some(labels) = m.get("labels") {
            for l in labels.seq()? {
                let lm = l.map(&["key", "value", "source"])?;
                lm.required("key")?.str()?;
            }
        }
        let log = match m.get("log") {
            Some(l) => {
                let lm = l.map(&["value"])?;
                match lm.get("value") {
                    Some(v) => {
                        let s = v.str()?;
                        if s.len() > 32 || !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                            return Err(
                                v.error("log value must be at most 32 printable characters")
                            );
                        }
                        Some(Arc::from(s))
                    }
                    None => None,
                }
            }
            None => None,
        };
        let description = m
            .get("description")
            .map(|d| d.str().map(str::to_owned))
            .transpose()?;
        Ok(Rule {
            index,
            subject,
            ingress,
            ingress_deny,
            egress,
            egress_deny,
            default_deny_ingress: dd_in,
            default_deny_egress: dd_eg,
            log,
            description,
        })
    }

    fn item(&mut self, f: &Field, index: usize, section: Section, scope: &Scope) -> R<PolicyItem> {
        let ingress = section.direction() == Direction::Ingress;
        let deny = section.is_deny();
        let p = if ingress { "from" } else { "to" };
        let peer_fields: Vec<String> = if ingress {
            [
                "Endpoints",
                "CIDR",
                "CIDRSet",
                "Entities",
                "Nodes",
                "Groups",
            ]
            .iter()
            .map(|s| format!("from{s}"))
            .collect()
        } else {
            let mut v: Vec<String> = [
                "Endpoints",
                "CIDR",
                "CIDRSet",
                "Entities",
                "Services",
                "Groups",
                "Nodes",
            ]
            .iter()
            .map(|s| format!("to{s}"))
            .collect();
            if !deny {
                v.push("toFQDNs".to_owned());
            }
            v
        };
        let mut known: Vec<&str> = peer_fields.iter().map(String::as_str).collect();
        let requires = format!("{p}Requires");
        known.extend([requires.as_str(), "toPorts", "icmps"]);
        if !deny {
            known.push("authentication");
        }
        let m = f.map(&known)?;
        // At most one peer kind per rule; explicit empty lists count as present.
        let present: Vec<&String> = peer_fields
            .iter()
            .filter(|n| m.get_raw(n).is_some())
            .collect();
        if present.len() > 1 {
            let second = m
                .get_raw(present[1])
                .map(|f| f.error(""))
                .unwrap_or_else(|| m.error(""));
            return Err(FieldError {
                message: format!(
                    "combining {} and {} is not supported yet",
                    present[0], present[1]
                ),
                ..second
            });
        }
        let mut prefixes = Vec::new();
        let (peers, peer_field) = match present.first() {
            None => (Peers::Any, ""),
            Some(name) => {
                let pf = m
                    .get_raw(name)
                    .ok_or_else(|| m.error("internal: peer field vanished"))?;
                let sels = self.peers(&pf, name, scope, &mut prefixes)?;
                (Peers::Selectors(sels), field_name(name))
            }
        };
        let mut requires_list = Vec::new();
        if let Some(req) = m.get(&requires) {
            for s in req.seq()? {
                requires_list.extend(self.selector(&s)?.requirements().iter().cloned());
            }
        }
        let ports = match m.get_raw("toPorts") {
            Some(tp) => Some(self.port_rules(&tp, section, scope)?),
            None => None,
        };
        let icmps = match m.get_raw("icmps") {
            Some(ic) => {
                if ports.is_some() {
                    return Err(ic.error("the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts"));
                }
                Some(self.icmps(&ic)?)
            }
            None => None,
        };
        let auth_required = match m.get("authentication") {
            Some(a) => {
                let am = a.map(&["mode"])?;
                let mode = am.required("mode")?;
                match mode.str()? {
                    "disabled" => false,
                    "required" | "test-always-fail" => true,
                    other => {
                        return Err(mode.error(format!(
                            "{other:?} is not a valid authentication mode (disabled, required, test-always-fail)"
                        )));
                    }
                }
            }
            None => false,
        };
        // `ingress: [{}]`: no peers and no ports allows nothing (it only turns on default deny).
        let peers = if present.is_empty() && ports.is_none() && icmps.is_none() {
            Peers::Selectors(Vec::new())
        } else {
            peers
        };
        Ok(PolicyItem {
            index,
            peers,
            peer_field,
            requires: requires_list,
            ports,
            icmps,
            auth_required,
            prefixes,
        })
    }
}

fn field_name(name: &str) -> &'static str {
    match name {
        "fromEndpoints" => "fromEndpoints",
        "toEndpoints" => "toEndpoints",
        "fromCIDR" => "fromCIDR",
        "toCIDR" => "toCIDR",
        "fromCIDRSet" => "fromCIDRSet",
        "toCIDRSet" => "toCIDRSet",
        "fromEntities" => "fromEntities",
        "toEntities" => "toEntities",
        "fromNodes" => "fromNodes",
        "toNodes" => "toNodes",
        "toServices" => "toServices",
        "toFQDNs" => "toFQDNs",
        _ => "peers",
    }
}
