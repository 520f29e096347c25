//! Holes in metadata protection, found by asking the engine about each pod the policies select
//! (docs/metadata-services.md): 169.254.169.254 denied but Azure's WireServer (IG1501) or the IPv6
//! metadata addresses (IG1502) open; hostNetwork pods, which no pod policy covers (IG1503); and
//! allow rules that open the credential endpoints to whole namespaces (IG1601).

use crate::Finding;
use crate::checks::{IMDS_HOST_NETWORK, IMDS_IPV6_OPEN, IMDS_TOKEN_OPEN, IMDS_WIRESERVER_OPEN};
use crate::metadata::{
    IMDS_V4, TYPICAL_REQUESTS, ToHttp, WIRESERVER, WIRESERVER_PORTS, imds_v6, instance_request,
};
use crate::model::{Loc, Model, RuleAt, is_witness, key_loc, path_loc, some_pods};
use imdsguard_metadata::Cloud;
use imdsguard_policy::api::Subject;
use imdsguard_policy::identity::{CLUSTER_LABEL, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use imdsguard_policy::labels::LabelSource;
use imdsguard_policy::selector::{Operator, Selector};
use imdsguard_policy::{FlowVerdict, PolicyRef, Verdict};
use std::collections::{BTreeMap, BTreeSet};

/// Where one policy protects the metadata service, and what it leaves open.
#[derive(Default)]
struct Protection {
    pods: BTreeSet<String>,
    wireserver: BTreeSet<u16>,
    ipv6: BTreeSet<String>,
}

fn open(v: Option<FlowVerdict>) -> bool {
    v.is_some_and(|v| v.verdict == Verdict::Allowed && v.http_allowed != Some(false))
}

pub fn check(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let instance = instance_request();
    let mut protections: BTreeMap<usize, Protection> = BTreeMap::new();
    for pod in m.all_subjects() {
        let Some(v) = m.egress(&pod, IMDS_V4, 80, Some(instance.http(IMDS_V4))) else {
            continue;
        };
        let Some(egress) = &v.egress else {
            continue;
        };
        // Only policies that name the metadata service count as protecting it: a deny that matches
        // it, or HTTP rules towards it. Plain default deny is not about metadata.
        let by: Vec<PolicyRef> = if egress.verdict == Verdict::Denied {
            egress.denied_by.clone()
        } else if egress.http_allowed == Some(false) {
            egress.allowed_by.clone()
        } else {
            continue;
        };
        let wireserver: Vec<u16> = WIRESERVER_PORTS
            .into_iter()
            .filter(|port| {
                let http = (*port == 80).then(|| instance.http(WIRESERVER));
                open(m.egress(&pod, WIRESERVER, *port, http))
            })
            .collect();
        let aws = TYPICAL_REQUESTS
            .iter()
            .find(|r| r.cloud == Cloud::Aws && r.method == "GET")
            .unwrap_or(instance);
        let ipv6: Vec<String> = imds_v6()
            .filter(|(ip, _)| open(m.egress(&pod, *ip, 80, Some(aws.http(*ip)))))
            .map(|(ip, cloud)| format!("{ip} ({cloud})"))
            .collect();
        for policy in by {
            let Some(pi) = m.policies().iter().position(|p| p.id == policy) else {
                continue;
            };
            let prot = protections.entry(pi).or_default();
            prot.pods.insert(pod.clone());
            prot.wireserver.extend(wireserver.iter().copied());
            prot.ipv6.extend(ipv6.iter().cloned());
        }
    }
    for (pi, prot) in &protections {
        let p = &m.policies()[*pi];
        let real: Vec<String> = prot
            .pods
            .iter()
            .filter(|k| !is_witness(k))
            .cloned()
            .collect();
        let who = if real.is_empty() {
            "the pods it selects".to_owned()
        } else {
            some_pods(&real, 3)
        };
        if !prot.wireserver.is_empty() {
            let ports: Vec<String> = prot.wireserver.iter().map(u16::to_string).collect();
            let message = format!(
                "This policy keeps {who} from {IMDS_V4}, but Azure's WireServer {WIRESERVER} stays open to them \
                 on TCP {}: it answers /metadata/instance as IMDS does, and port 32526 (the HostGAPlugin) carries \
                 VM extension settings. AKS nodes drop both for pods with iptables; other nodes may not.",
                ports.join(" and ")
            );
            out.push(m.finding(
                &IMDS_WIRESERVER_OPEN,
                p,
                protecting_item(m, *pi),
                message,
                None,
            ));
        }
        if !prot.ipv6.is_empty() {
            let addrs: Vec<&str> = prot.ipv6.iter().map(String::as_str).collect();
            let message = format!(
                "This policy keeps {who} from {IMDS_V4}, but {} stay open to them: on nodes with IPv6 the \
                 metadata service answers there too.",
                addrs.join(" and ")
            );
            out.push(m.finding(&IMDS_IPV6_OPEN, p, protecting_item(m, *pi), message, None));
        }
    }
    if let Some((pi, _)) = protections.iter().next()
        && !host_policy_denies_imds(m)
    {
        let p = &m.policies()[*pi];
        let rule = m.rule_field(RuleAt {
            policy: *pi,
            rule: 0,
        });
        let message = format!(
            "Pods with hostNetwork: true share the node's host identity, and endpointSelector policies \
             never select it: such pods still reach {IMDS_V4}, with the node's own managed identity. \
             The imdsguard agent applies this policy to them only with --host-network-pods enforce \
             (an extension to Cilium's semantics; the default, ignore, is Cilium's behaviour)."
        );
        out.push(m.finding(
            &IMDS_HOST_NETWORK,
            p,
            rule.and_then(|r| key_loc(&r, "endpointSelector")),
            message,
            None,
        ));
    }
    out.extend(tokens(m));
    out
}

/// Where a policy keeps pods from IMDS: its first deny that names the address, else its first
/// allow with L7 rules towards it, else its first rule.
fn protecting_item(m: &Model, pi: usize) -> Option<Loc> {
    let p = &m.policies()[pi];
    for (section, name) in [
        (imdsguard_policy::api::Section::EgressDeny, "egressDeny"),
        (imdsguard_policy::api::Section::Egress, "egress"),
    ] {
        for (ri, rule) in p.rules.iter().enumerate() {
            for (s, items) in rule.sections() {
                if s != section {
                    continue;
                }
                let hit = items.iter().find(|i| {
                    m.item_reaches(i, IMDS_V4)
                        && (s.is_deny() || i.ports.iter().flatten().any(|pr| pr.l7.is_some()))
                });
                if let Some(i) = hit {
                    let rf = m.rule_field(RuleAt {
                        policy: pi,
                        rule: ri,
                    })?;
                    return path_loc(&rf, &[name, &i.index.to_string()]);
                }
            }
        }
    }
    m.rule_field(RuleAt {
        policy: pi,
        rule: 0,
    })
    .and_then(|r| key_loc(&r, "endpointSelector"))
}

fn host_policy_denies_imds(m: &Model) -> bool {
    m.policies().iter().any(|p| {
        p.rules.iter().any(|r| {
            matches!(r.subject, Subject::Nodes(_))
                && r.egress_deny
                    .iter()
                    .flatten()
                    .any(|i| m.item_reaches(i, IMDS_V4))
        })
    })
}

/// Whether a subject selector picks whole namespaces (or everything) rather than a workload.
fn namespace_wide(sel: &Selector) -> bool {
    sel.requirements().iter().all(|r| {
        matches!(r.key.source, LabelSource::Any | LabelSource::K8s)
            && (&*r.key.key == NAMESPACE_LABEL
                || &*r.key.key == CLUSTER_LABEL
                || r.key.key.starts_with(NAMESPACE_LABELS_PREFIX))
    })
}

/// IG1601.
fn tokens(m: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    for (at, p, sel) in m.endpoint_rules() {
        let rule = &p.rules[at.rule];
        let towards_imds = rule
            .egress
            .iter()
            .flatten()
            .any(|i| m.item_reaches(i, IMDS_V4));
        if !towards_imds || !namespace_wide(sel) {
            continue;
        }
        // In catalog order: Azure's first.
        let mut routes: Vec<String> = Vec::new();
        let mut pods: Vec<String> = Vec::new();
        for pod in m.subjects(at) {
            let mut any = false;
            for t in TYPICAL_REQUESTS.iter().filter(|r| r.grants_credentials()) {
                let v = m.egress(&pod, IMDS_V4, 80, Some(t.http(IMDS_V4)));
                let by_this = v
                    .as_ref()
                    .and_then(|v| v.egress.as_ref())
                    .is_some_and(|e| e.allowed_by.contains(&p.id));
                if by_this && open(v) {
                    let route = format!("{} {} ({})", t.method, t.route(), t.cloud);
                    if !routes.contains(&route) {
                        routes.push(route);
                    }
                    any = true;
                }
            }
            if any && !is_witness(&pod) {
                pods.push(pod);
            }
        }
        if routes.is_empty() {
            continue;
        }
        let namespaces: Vec<&str> = sel
            .requirements()
            .iter()
            .filter(|r| &*r.key.key == NAMESPACE_LABEL && r.op == Operator::In)
            .flat_map(|r| r.values.iter().map(String::as_str))
            .collect();
        let scope = match (namespaces.is_empty(), pods.is_empty()) {
            (true, true) => "every pod".to_owned(),
            (false, true) => format!("every pod in {}", namespaces.join(", ")),
            (_, false) => format!(
                "all {} pods it selects ({})",
                pods.len(),
                some_pods(&pods, 3)
            ),
        };
        let example = match routes.len() {
            1 => routes[0].clone(),
            n => format!("{}, and {} more credential paths", routes[0], n - 1),
        };
        let message = format!(
            "This rule lets {scope} fetch credentials from {IMDS_V4} ({example}), because its \
             endpointSelector names whole namespaces rather than the workload that needs a token."
        );
        let loc = m
            .rule_field(at)
            .and_then(|r| key_loc(&r, "endpointSelector"));
        out.push(m.finding(&IMDS_TOKEN_OPEN, p, loc, message, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    const DENY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: imds-deny}
spec:
  endpointSelector:
    matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [logging]}]
  enableDefaultDeny: {egress: false}
  egressDeny:
    - toCIDRSet: [{cidrGroupRef: azure-imds}]
";

    const WIRESERVER_DENY: &str = "\
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: wireserver-deny}
spec:
  endpointSelector: {}
  enableDefaultDeny: {egress: false}
  egressDeny:
    - toCIDR: [168.63.129.16/32, fd00:ec2::254/128, fd20:ce::254/128]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}, {port: \"32526\", protocol: TCP}]}]
";

    #[test]
    fn ig1501_wireserver_left_open() {
        let r = lint_text(DENY);
        let f = with_code(&r, "IG1501");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].field, "spec.egressDeny[0]");
        assert!(
            f[0].message.contains("TCP 80 and 32526"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn ig1501_not_reported_when_wireserver_is_denied_too() {
        let r = lint_text(&format!("{DENY}{WIRESERVER_DENY}"));
        assert!(with_code(&r, "IG1501").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn ig1502_ipv6_metadata_left_open() {
        let r = lint_text(DENY);
        let f = with_code(&r, "IG1502");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(
            f[0].message.contains("fd00:ec2::254 (AWS)"),
            "{}",
            f[0].message
        );
        let r = lint_text(&format!("{DENY}{WIRESERVER_DENY}"));
        assert!(with_code(&r, "IG1502").is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn ig1503_host_network_pods_are_uncovered_once_imds_is_protected() {
        let r = lint_text(DENY);
        let f = with_code(&r, "IG1503");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(f[0].field, "spec.endpointSelector");
        // Nothing protects IMDS here, so there is no hole to speak of.
        let open = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: web}
spec:
  endpointSelector: {}
  egress: [{toEntities: [world]}]
";
        assert!(with_code(&lint_text(open), "IG1503").is_empty());
        // Default deny keeps pods from IMDS too, but such a policy is not about metadata.
        let default_deny = open.replace(
            "[world]}]",
            "[world], toPorts: [{ports: [{port: \"443\"}]}]}]",
        );
        let r = lint_text(&default_deny);
        assert!(with_code(&r, "IG1503").is_empty(), "{:?}", r.findings);
        assert!(with_code(&r, "IG1501").is_empty(), "{:?}", r.findings);
    }

    fn allow(selector: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: imds-allow}}
spec:
  endpointSelector: {selector}
  enableDefaultDeny: {{egress: true}}
  egress:
    - toCIDRSet: [{{cidrGroupRef: azure-imds}}]
      toPorts:
        - ports: [{{port: \"80\", protocol: TCP}}]
          rules: {{http: [{{method: GET, path: \"/metadata/.*\"}}]}}
"
        )
    }

    #[test]
    fn ig1601_a_namespace_wide_rule_opens_the_token_endpoint() {
        let r = lint_text(&allow(
            "{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: In, values: [logging, kube-system]}]}",
        ));
        let f = with_code(&r, "IG1601");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert_eq!(
            (f[0].line, f[0].field.as_str()),
            (5, "spec.endpointSelector")
        );
        assert!(
            f[0].message.contains("every pod in kube-system, logging"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].message
                .contains("GET /metadata/identity/oauth2/token (Azure)"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn ig1601_not_reported_for_a_workload_selector_or_a_path_without_tokens() {
        let r = lint_text(&allow(
            "{matchLabels: {k8s:io.kubernetes.pod.namespace: logging, app.kubernetes.io/name: fluent-bit}}",
        ));
        assert!(with_code(&r, "IG1601").is_empty(), "{:?}", r.findings);
        let narrow = allow("{matchLabels: {k8s:io.kubernetes.pod.namespace: logging}}")
            .replace("/metadata/.*", "/metadata/instance.*");
        assert!(with_code(&lint_text(&narrow), "IG1601").is_empty());
    }

    #[test]
    fn ig1601_lists_the_cluster_pods_that_get_tokens() {
        let c = cluster(
            &["logging"],
            &[
                ("logging", "fluent-bit-a", &[("app", "fluent-bit")]),
                ("logging", "loki-0", &[("app", "loki")]),
            ],
        );
        let text = allow("{matchLabels: {k8s:io.kubernetes.pod.namespace: logging}}");
        let r = crate::lint(
            &[
                imdsguard_manifest::Source::new("group.yaml", GROUP),
                imdsguard_manifest::Source::new("policy.yaml", text),
            ],
            Some(&c),
        );
        let f = with_code(&r, "IG1601");
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(
            f[0].message
                .contains("all 2 pods it selects (logging/fluent-bit-a, logging/loki-0)"),
            "{}",
            f[0].message
        );
    }
}
