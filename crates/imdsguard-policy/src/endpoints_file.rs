//! The endpoints file: the pods of one node as the agent's `--endpoints FILE` reads them, and the
//! `endpoints:` and `namespaces:` sections that policy-test scenarios and lab topologies share
//! with it. One schema serves all three, so an endpoint written for a scenario can be given to
//! the agent as is. The format is documented in docs/policy-testing.md and docs/lab.md.
//!
//! Pure parsing: text in, typed entries (or an error with file, line, column and field) out.

use crate::labels::{Label, LabelSet};
use crate::{EndpointSpec, NamedPort, Protocol};
use imdsguard_manifest::{Field, FieldError, Source};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct EndpointEntry {
    pub handle: String,
    pub spec: EndpointSpec,
    /// The host side of the pod's veth (agent endpoints files; ignored by `policy test`).
    pub interface: Option<String>,
    /// Cilium's per-endpoint PolicyAuditMode: denials pass and are reported as AUDIT (agent
    /// endpoints files and `policy test` scenarios, next to the scenario-wide `auditMode`).
    pub policy_audit_mode: bool,
    /// The pod's containers and their cgroups: the cgroup's processes, and those of its
    /// descendant cgroups, are that container's (flows name it; hostNetwork pods are judged by it).
    pub containers: Vec<ContainerRef>,
    /// A hostNetwork pod: it shares the node's network, so it has no interface and no addresses
    /// of its own, and only its containers' cgroups tell its sockets from the node's.
    pub host_network: bool,
}

/// One container of an endpoint: its name in the pod and its cgroup v2 directory (absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub name: String,
    pub cgroup: PathBuf,
}

/// The agent's `--endpoints` file: the `namespaces:` and `endpoints:` sections of a scenario.
#[derive(Debug, Clone, Default)]
pub struct EndpointsFile {
    pub namespaces: Vec<(String, Vec<(String, String)>)>,
    pub endpoints: Vec<EndpointEntry>,
    /// Whether the document has an `endpoints:` key: the agent takes only `endpoints: []`, not a
    /// missing list, to mean "no pods".
    pub endpoints_declared: bool,
}

/// A document (endpoints file, scenario, topology) that cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
pub struct DocumentError {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
    pub field: String,
    pub message: String,
}

impl DocumentError {
    pub fn from_field(file: &Arc<str>, e: FieldError) -> DocumentError {
        DocumentError {
            file: file.clone(),
            line: e.pos.line,
            column: e.pos.col,
            field: e.path,
            message: e.message,
        }
    }
}

impl EndpointEntry {
    /// Whether the endpoint is in audit mode: its own `policyAuditMode`, or its namespace
    /// labelled for audit among `namespaces` (as the Namespace object's label does in a cluster).
    pub fn in_audit(&self, namespaces: &[(String, Vec<(String, String)>)]) -> bool {
        self.policy_audit_mode
            || namespaces.iter().any(|(ns, labels)| {
                *ns == self.spec.namespace && crate::api::namespace_in_audit(labels)
            })
    }
}

impl EndpointsFile {
    /// The endpoints (`namespace/name`) in audit mode.
    pub fn audited(&self) -> std::collections::HashSet<String> {
        self.endpoints
            .iter()
            .filter(|e| e.in_audit(&self.namespaces))
            .map(|e| e.spec.key())
            .collect()
    }
}

type R<T> = Result<T, FieldError>;

/// The first non-empty YAML document of a file that holds one (scenarios, endpoints files, lab
/// topologies); a syntax error names its line and column.
pub fn first_document(source: &Source) -> Result<Option<imdsguard_manifest::Node>, DocumentError> {
    let docs = imdsguard_manifest::parse_documents(&source.text).map_err(|(pos, message)| {
        DocumentError {
            file: source.name.clone(),
            line: pos.line,
            column: pos.col,
            field: String::new(),
            message: format!("YAML syntax error: {message}"),
        }
    })?;
    Ok(docs.into_iter().find(|d| !d.is_null()))
}

/// Parses an endpoints file (one endpoint schema serves it and scenarios).
pub fn parse_endpoints(source: &Source) -> Result<EndpointsFile, DocumentError> {
    let Some(doc) = first_document(source)? else {
        return Ok(EndpointsFile::default());
    };
    let parse = |root: &Field| -> R<EndpointsFile> {
        let m = root.map(&["namespaces", "endpoints"])?;
        let mut out = EndpointsFile::default();
        if let Some(ns) = m.get("namespaces") {
            for (n, labels) in ns.free_map()?.entries() {
                out.namespaces.push((n.to_owned(), string_map(&labels)?));
            }
        }
        if let Some(eps) = m.get("endpoints") {
            out.endpoints_declared = true;
            for e in eps.seq()? {
                out.endpoints.push(endpoint(&e)?);
            }
        }
        Ok(out)
    };
    parse(&Field::root(&doc)).map_err(|e| DocumentError::from_field(&source.name, e))
}

pub fn string_map(f: &Field) -> R<Vec<(String, String)>> {
    f.free_map()?
        .entries()
        .map(|(k, v)| Ok((k.to_owned(), v.node.as_str().unwrap_or("").to_owned())))
        .collect()
}

/// One entry of an `endpoints:` list (scenarios, agent endpoints files, lab topologies).
pub fn endpoint(f: &Field) -> R<EndpointEntry> {
    let m = f.map(&[
        "name",
        "namespace",
        "labels",
        "rawLabels",
        "serviceAccount",
        "ip",
        "ips",
        "namedPorts",
        "interface",
        "policyAuditMode",
        "containers",
        "hostNetwork",
    ])?;
    let handle = m.required("name")?.str()?.to_owned();
    let namespace = m
        .get("namespace")
        .map(|n| n.str().map(str::to_owned))
        .transpose()?
        .unwrap_or_else(|| "default".into());
    let labels = m
        .get("labels")
        .map(|l| string_map(&l))
        .transpose()?
        .unwrap_or_default();
    let raw_labels = m
        .get("rawLabels")
        .map(|l| l.strings())
        .transpose()?
        .map(|v| LabelSet::new(v.iter().map(|s| Label::parse(s)).collect()));
    let service_account = m
        .get_raw("serviceAccount")
        .map(|s| {
            if s.node.is_null() {
                Ok(String::new())
            } else {
                s.str().map(str::to_owned)
            }
        })
        .transpose()?
        .unwrap_or_else(|| "default".into());
    let mut ips = Vec::new();
    for name in ["ip", "ips"] {
        if let Some(ipf) = m.get(name) {
            let list = if name == "ip" { vec![ipf] } else { ipf.seq()? };
            for i in list {
                ips.push(i.str()?.parse().map_err(|_| i.error("not an IP address"))?);
            }
        }
    }
    let mut named_ports = Vec::new();
    if let Some(np) = m.get("namedPorts") {
        for (name, v) in np.free_map()?.entries() {
            let s = v.str()?;
            let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
            let port: u16 = port
                .parse()
                .map_err(|_| v.error("expected PORT/PROTOCOL, e.g. 8080/TCP"))?;
            let protocol = Protocol::parse(proto).ok_or_else(|| v.error("unknown protocol"))?;
            named_ports.push(NamedPort {
                name: name.to_owned(),
                port,
                protocol,
            });
        }
    }
    let spec = EndpointSpec {
        name: handle.clone(),
        namespace,
        labels,
        service_account,
        ips,
        named_ports,
        raw_labels,
    };
    let interface = m
        .get("interface")
        .map(|i| i.str().map(str::to_owned))
        .transpose()?;
    let policy_audit_mode = m
        .get("policyAuditMode")
        .map(|f| f.bool())
        .transpose()?
        .unwrap_or(false);
    let containers = m
        .get("containers")
        .map(|c| containers(&c))
        .transpose()?
        .unwrap_or_default();
    let host_network = m
        .get("hostNetwork")
        .map(|f| f.bool())
        .transpose()?
        .unwrap_or(false);
    if host_network {
        // The pod has the node's addresses and interfaces: none of them is the pod's to claim.
        for (name, why) in [
            (
                "interface",
                "a hostNetwork endpoint has no interface of its own (it shares the node's)",
            ),
            (
                "ip",
                "a hostNetwork endpoint has no address of its own (it shares the node's)",
            ),
            (
                "ips",
                "a hostNetwork endpoint has no addresses of its own (it shares the node's)",
            ),
        ] {
            if let Some(f) = m.get(name) {
                return Err(f.error(why));
            }
        }
    }
    Ok(EndpointEntry {
        handle,
        spec,
        interface,
        policy_audit_mode,
        containers,
        host_network,
    })
}

/// `containers: [{name, cgroup}]`: names unique and non-empty, cgroups absolute paths.
fn containers(f: &Field) -> R<Vec<ContainerRef>> {
    let mut out: Vec<ContainerRef> = Vec::new();
    for c in f.seq()? {
        let m = c.map(&["name", "cgroup"])?;
        let name_field = m.required("name")?;
        let name = name_field.str()?.trim();
        if name.is_empty() {
            return Err(name_field.error("a container needs a name"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(name_field.error(format!("container {name:?} is listed twice")));
        }
        let cgroup_field = m.required("cgroup")?;
        let cgroup = PathBuf::from(cgroup_field.str()?);
        if !cgroup.is_absolute() {
            return Err(cgroup_field.error(
                "expected the absolute path of a cgroup v2 directory, e.g. /sys/fs/cgroup/lab/web/app",
            ));
        }
        out.push(ContainerRef {
            name: name.to_owned(),
            cgroup,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agent_endpoints_file() {
        let text = r#"
namespaces:
  logging: {team: observability}
endpoints:
  - name: fluent-bit-qg7vq
    namespace: logging
    labels: {app.kubernetes.io/name: fluent-bit}
    serviceAccount: fluent-bit
    ips: [10.244.1.40, "fd00:10::40"]
    interface: veth-fb0
    policyAuditMode: true
"#;
        let f = parse_endpoints(&Source::new("endpoints.yaml", text)).expect("valid");
        assert_eq!(f.namespaces[0].0, "logging");
        let ep = &f.endpoints[0];
        assert_eq!(ep.interface.as_deref(), Some("veth-fb0"));
        assert!(ep.policy_audit_mode);
        assert_eq!(ep.spec.service_account, "fluent-bit");
        assert_eq!(ep.spec.ips.len(), 2);
        let err = parse_endpoints(&Source::new(
            "endpoints.yaml",
            "endpoints:\n  - name: a\n    ip: 10.0.0.300\n",
        ))
        .expect_err("bad ip");
        assert_eq!(
            err.to_string(),
            "endpoints.yaml:3:9: endpoints[0].ip: not an IP address"
        );
    }

    #[test]
    fn reads_containers_and_host_network_pods() {
        let text = r#"
endpoints:
  - name: web
    ip: 10.0.0.2
    interface: veth-web
    containers:
      - {name: app, cgroup: /sys/fs/cgroup/lab/web/app}
      - {name: istio-proxy, cgroup: /sys/fs/cgroup/lab/web/istio-proxy}
  - name: node-agent
    namespace: monitoring
    hostNetwork: true
    containers:
      - {name: agent, cgroup: /sys/fs/cgroup/lab/node-agent/agent}
"#;
        let f = parse_endpoints(&Source::new("endpoints.yaml", text)).expect("valid");
        let web = &f.endpoints[0];
        assert!(!web.host_network);
        assert_eq!(
            web.containers,
            [
                ContainerRef {
                    name: "app".into(),
                    cgroup: "/sys/fs/cgroup/lab/web/app".into()
                },
                ContainerRef {
                    name: "istio-proxy".into(),
                    cgroup: "/sys/fs/cgroup/lab/web/istio-proxy".into()
                },
            ]
        );
        let agent = &f.endpoints[1];
        assert!(agent.host_network);
        assert!(agent.interface.is_none() && agent.spec.ips.is_empty());
        assert_eq!(agent.containers[0].name, "agent");
    }

    #[test]
    fn bad_containers_and_host_network_pods_are_refused_where_written() {
        let err = |text: &str| {
            parse_endpoints(&Source::new("e.yaml", text))
                .expect_err(text)
                .to_string()
        };
        assert_eq!(
            err("endpoints:\n  - name: a\n    hostNetwork: true\n    interface: veth0\n"),
            "e.yaml:4:16: endpoints[0].interface: a hostNetwork endpoint has no interface of its own (it shares the node's)"
        );
        assert_eq!(
            err("endpoints:\n  - name: a\n    ips: [10.0.0.2]\n    hostNetwork: true\n"),
            "e.yaml:3:10: endpoints[0].ips: a hostNetwork endpoint has no addresses of its own (it shares the node's)"
        );
        assert!(
            err("endpoints:\n  - {name: a, hostNetwork: true, ip: 10.0.0.2}\n")
                .contains("endpoints[0].ip: a hostNetwork endpoint has no address")
        );
        assert_eq!(
            err("endpoints:\n  - name: a\n    containers:\n      - {name: \"\", cgroup: /x}\n"),
            "e.yaml:4:16: endpoints[0].containers[0].name: a container needs a name"
        );
        assert_eq!(
            err("endpoints:\n  - name: a\n    containers:\n      - {name: app, cgroup: lab/app}\n"),
            "e.yaml:4:29: endpoints[0].containers[0].cgroup: expected the absolute path of a cgroup v2 directory, e.g. /sys/fs/cgroup/lab/web/app"
        );
        assert_eq!(
            err(
                "endpoints:\n  - name: a\n    containers:\n      - {name: app, cgroup: /a}\n      - {name: app, cgroup: /b}\n"
            ),
            "e.yaml:5:16: endpoints[0].containers[1].name: container \"app\" is listed twice"
        );
        assert!(
            err("endpoints:\n  - name: a\n    containers:\n      - {name: app}\n")
                .contains("endpoints[0].containers[0].cgroup: required field is missing")
        );
        assert!(
            err("endpoints:\n  - name: a\n    containers:\n      - {name: app, cgroup: /a, pid: 3}\n")
                .contains("pid")
        );
        assert!(
            err("endpoints:\n  - name: a\n    hostNetwork: yes-please\n")
                .contains("endpoints[0].hostNetwork")
        );
    }
}
