//! The lab's topology file: the pods of one node (the agent's endpoint schema), the processes
//! ("containers") each runs, and which metadata service the emulator plays. Pure.
//!
//! ```yaml
//! podCIDR: 10.244.1.0/24          # pods without an ip: get the next free address
//! imds: azure                     # azure | aws | gcp
//! namespaces: {logging: {team: observability}}
//! endpoints:
//!   - {name: fluent-bit-qg7vq, namespace: logging, labels: {app.kubernetes.io/name: fluent-bit}}
//!   - {name: node-agent-x2k8q, namespace: monitoring, hostNetwork: true}   # in the lab's node netns
//! aliases: {pilot-agent: curl}    # programs the containers can run under another name (their comm)
//! containers:
//!   fluent-bit-qg7vq:
//!     - name: fluent-bit
//!       command: [sh, -c, "while true; do curl -s …; sleep 10; done"]
//! ```
//!
//! The lab's node (the namespace hostNetwork pods share) has the pod CIDR's last address, so
//! no pod may take it.

use imdsguard_manifest::{Field, FieldError, Source};
use imdsguard_policy::endpoints_file::{
    DocumentError as ScenarioError, EndpointEntry as ScenarioEndpoint, EndpointsFile, endpoint,
    first_document,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LabPod {
    pub endpoint: ScenarioEndpoint,
    /// The pod's address; a hostNetwork pod has the node's.
    pub ipv4: Ipv4Addr,
    pub containers: Vec<Container>,
}

impl LabPod {
    pub fn host_network(&self) -> bool {
        self.endpoint.host_network
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub imds_flavor: String,
    pub namespaces: Vec<(String, Vec<(String, String)>)>,
    pub pods: Vec<LabPod>,
    /// The address of the lab's node: the namespace hostNetwork pods and `lab exec node` share.
    pub node_ipv4: Ipv4Addr,
    /// Programs the containers may run under another name, `(name, program)`: a process's name
    /// (its comm) is the name it was started by, so `pilot-agent` that is curl shows as
    /// pilot-agent in flows.
    pub aliases: Vec<(String, String)>,
}

/// How a pod was placed by `lab up`, for the endpoints file: its host-side interface (none for
/// a hostNetwork pod) and its containers' cgroups.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub pod: String,
    pub interface: Option<String>,
    pub containers: Vec<(String, PathBuf)>,
}

/// Whether a YAML file is a lab topology (it has `podCIDR`, `imds`, `aliases` or `containers`),
/// so that `policy test` does not read it as a scenario.
pub fn is_topology(source: &Source) -> bool {
    imdsguard_manifest::parse_documents(&source.text)
        .ok()
        .and_then(|docs| docs.into_iter().find(|d| !d.is_null()))
        .is_some_and(|d| {
            ["podCIDR", "imds", "aliases", "containers"]
                .iter()
                .any(|k| d.get(k).is_some())
        })
}

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] ScenarioError),
}

/// Reads and parses the topology file at `path`; errors name it as given.
pub fn load(path: &Path) -> Result<Topology, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&Source::new(path.display().to_string(), text))?)
}

/// The namespaces and pods a topology or a scenario declares, as an endpoints file would
/// (`policy trace --endpoints` and `replay --endpoints` take either).
pub fn endpoints_of(source: &Source) -> Result<EndpointsFile, ScenarioError> {
    if is_topology(source) {
        let t = parse(source)?;
        return Ok(EndpointsFile {
            namespaces: t.namespaces,
            endpoints: t.pods.into_iter().map(|p| p.endpoint).collect(),
            endpoints_declared: true,
        });
    }
    let scenario = imdsguard_scenario::parse(source)?;
    Ok(EndpointsFile {
        namespaces: scenario.namespaces,
        endpoints: scenario.endpoints,
        endpoints_declared: true,
    })
}

/// Parses a topology and gives every pod an IPv4 address.
pub fn parse(source: &Source) -> Result<Topology, ScenarioError> {
    let doc = first_document(source)?.ok_or_else(|| ScenarioError {
        file: source.name.clone(),
        line: 1,
        column: 1,
        field: String::new(),
        message: "empty topology".into(),
    })?;
    parse_doc(&Field::root(&doc)).map_err(|e| ScenarioError::from_field(&source.name, e))
}

fn parse_doc(root: &Field) -> Result<Topology, FieldError> {
    let m = root.map(&[
        "podCIDR",
        "imds",
        "namespaces",
        "endpoints",
        "aliases",
        "containers",
    ])?;
    let cidr_field = m.get("podCIDR");
    let cidr: ipnet::Ipv4Net = match &cidr_field {
        Some(f) => f
            .str()?
            .parse()
            .map_err(|_| f.error("not an IPv4 CIDR, e.g. 10.244.1.0/24"))?,
        None => "10.244.1.0/24"
            .parse()
            .map_err(|_| root.error("default pod CIDR"))?,
    };
    let imds_flavor = match m.get("imds") {
        Some(f) => {
            let v = f.str()?.to_ascii_lowercase();
            if !["azure", "aws", "gcp"].contains(&v.as_str()) {
                return Err(f.error("expected azure, aws or gcp"));
            }
            v
        }
        None => "azure".into(),
    };
    let mut namespaces = Vec::new();
    if let Some(ns) = m.get("namespaces") {
        for (n, labels) in ns.free_map()?.entries() {
            let labels = labels
                .free_map()?
                .entries()
                .map(|(k, v)| Ok((k.to_owned(), v.str()?.to_owned())))
                .collect::<Result<Vec<_>, FieldError>>()?;
            namespaces.push((n.to_owned(), labels));
        }
    }
    // The node takes the CIDR's last address.
    let node_ipv4 = cidr
        .hosts()
        .last()
        .ok_or_else(|| root.error(format!("podCIDR {cidr} has no address for the lab's node")))?;
    let mut endpoints: Vec<ScenarioEndpoint> = Vec::new();
    if let Some(eps) = m.get("endpoints") {
        for e in eps.seq()? {
            let entry = endpoint(&e)?;
            // The name is a cgroup directory's: a path component, one per pod.
            let h = &entry.handle;
            if h.is_empty() || h.contains('/') || h.starts_with('.') {
                return Err(e.error(format!("pod name {h:?} cannot name a cgroup directory")));
            }
            if endpoints.iter().any(|o| o.handle == *h) {
                return Err(e.error(format!("pod {h:?} is listed twice")));
            }
            if entry.spec.ips.contains(&IpAddr::V4(node_ipv4)) {
                return Err(e.error(format!(
                    "{node_ipv4} is the podCIDR's last address, which the lab's node takes"
                )));
            }
            endpoints.push(entry);
        }
    }
    let mut aliases = Vec::new();
    if let Some(a) = m.get("aliases") {
        for (name, program) in a.free_map()?.entries() {
            if name.is_empty() || name.contains('/') || name.len() > 15 {
                return Err(program.error(format!(
                    "alias {name:?}: expected a file name of at most 15 bytes (a process name)"
                )));
            }
            aliases.push((name.to_owned(), program.str()?.to_owned()));
        }
    }
    let mut containers: Vec<(String, Vec<Container>)> = Vec::new();
    if let Some(cs) = m.get("containers") {
        for (pod, list) in cs.free_map()?.entries() {
            if !endpoints.iter().any(|e| e.handle == pod) {
                return Err(list.error(format!("no endpoint named {pod:?}")));
            }
            let mut out: Vec<Container> = Vec::new();
            for c in list.seq()? {
                let cm = c.map(&["name", "command"])?;
                let name_field = cm.required("name")?;
                let name = name_field.str()?.to_owned();
                // The name is a cgroup directory's: a path component.
                if name.is_empty() || name.contains('/') || name.starts_with('.') {
                    return Err(name_field.error("expected a container name such as istio-proxy"));
                }
                if out.iter().any(|o| o.name == name) {
                    return Err(name_field.error(format!("container {name:?} is listed twice")));
                }
                out.push(Container {
                    name,
                    command: cm.required("command")?.strings()?,
                });
            }
            containers.push((pod.to_owned(), out));
        }
    }
    // Pods without an address: the CIDR's hosts in order, skipping those taken.
    let mut taken: Vec<Ipv4Addr> = endpoints
        .iter()
        .flat_map(|e| e.spec.ips.iter())
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    taken.push(node_ipv4);
    let mut free = cidr.hosts().filter(|h| !taken.contains(h));
    let mut pods = Vec::new();
    for mut e in endpoints {
        let given = e.spec.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let ipv4 = match given {
            // The node's address, which is not the pod's to declare (the endpoints file has none).
            _ if e.host_network => node_ipv4,
            Some(v4) => v4,
            None => {
                let v4 = free.next().ok_or_else(|| {
                    root.error(format!(
                        "podCIDR {cidr} has no free address for {}",
                        e.handle
                    ))
                })?;
                e.spec.ips.push(IpAddr::V4(v4));
                v4
            }
        };
        let containers = containers
            .iter()
            .find(|(p, _)| *p == e.handle)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        pods.push(LabPod {
            endpoint: e,
            ipv4,
            containers,
        });
    }
    Ok(Topology {
        imds_flavor,
        namespaces,
        pods,
        node_ipv4,
        aliases,
    })
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The agent's `--endpoints` file for these pods, with where `lab up` placed each: its host-side
/// interface and its containers' cgroups. hostNetwork pods have `hostNetwork: true` and neither
/// interface nor addresses.
pub fn endpoints_file(t: &Topology, placed: &[Placement]) -> String {
    let mut out = String::from("# Written by `imdsguard lab up`.\nnamespaces:\n");
    for (ns, labels) in &t.namespaces {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}: {}", yaml_str(k), yaml_str(v)))
            .collect();
        out += &format!("  {}: {{{}}}\n", yaml_str(ns), l.join(", "));
    }
    if t.namespaces.is_empty() {
        out = out.replace("namespaces:\n", "namespaces: {}\n");
    }
    out += "endpoints:\n";
    for p in &t.pods {
        let s = &p.endpoint.spec;
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{}: {}", yaml_str(k), yaml_str(v)))
            .collect();
        let place = placed.iter().find(|pl| pl.pod == p.endpoint.handle);
        let mut rest = String::new();
        if p.host_network() {
            rest += ", hostNetwork: true";
        } else {
            let ips: Vec<String> = s.ips.iter().map(|ip| yaml_str(&ip.to_string())).collect();
            rest += &format!(", ips: [{}]", ips.join(", "));
            if let Some(i) = place.and_then(|pl| pl.interface.as_deref()) {
                rest += &format!(", interface: {}", yaml_str(i));
            }
        }
        if p.endpoint.policy_audit_mode {
            rest += ", policyAuditMode: true";
        }
        let containers: Vec<String> = place
            .map(|pl| pl.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|(name, cgroup)| {
                format!(
                    "{{name: {}, cgroup: {}}}",
                    yaml_str(name),
                    yaml_str(&cgroup.to_string_lossy())
                )
            })
            .collect();
        if !containers.is_empty() {
            rest += &format!(", containers: [{}]", containers.join(", "));
        }
        out += &format!(
            "  - {{name: {}, namespace: {}, labels: {{{}}}, serviceAccount: {}{rest}}}\n",
            yaml_str(&p.endpoint.handle),
            yaml_str(&s.namespace),
            labels.join(", "),
            yaml_str(&s.service_account),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"
podCIDR: 10.244.1.0/24
namespaces: {logging: {team: observability}}
endpoints:
  - {name: fluent-bit-qg7vq, namespace: logging, labels: {app.kubernetes.io/name: fluent-bit}}
  - {name: go-webapp-847857f68-2qlnd, namespace: go-webapp, labels: {app: go-webapp}, ip: 10.244.1.17}
  - {name: other, namespace: default}
  - {name: node-agent, namespace: monitoring, hostNetwork: true}
aliases: {pilot-agent: curl}
containers:
  go-webapp-847857f68-2qlnd:
    - {name: app, command: [sleep, infinity]}
    - {name: istio-proxy, command: [pilot-agent, -s, "http://169.254.169.254/"]}
  node-agent:
    - {name: agent, command: [sleep, infinity]}
"#;

    #[test]
    fn addresses_are_assigned_around_the_given_ones() {
        let t = parse(&Source::new("lab.yaml", TOPOLOGY)).expect("valid");
        let ips: Vec<String> = t.pods.iter().map(|p| p.ipv4.to_string()).collect();
        // The hostNetwork pod has the node's address, the CIDR's last.
        assert_eq!(
            ips,
            ["10.244.1.1", "10.244.1.17", "10.244.1.2", "10.244.1.254"]
        );
        assert_eq!(t.node_ipv4.to_string(), "10.244.1.254");
        assert!(t.pods[3].host_network() && t.pods[3].endpoint.spec.ips.is_empty());
        assert_eq!(t.pods[1].containers[1].name, "istio-proxy");
        assert_eq!(t.aliases, [("pilot-agent".to_owned(), "curl".to_owned())]);
        assert_eq!(t.imds_flavor, "azure");
    }

    #[test]
    fn the_endpoints_file_reads_back_with_the_agent_schema() {
        let t = parse(&Source::new("lab.yaml", TOPOLOGY)).expect("valid");
        let cg = |c: &str| PathBuf::from(format!("/sys/fs/cgroup/lab/{c}"));
        let text = endpoints_file(
            &t,
            &[
                Placement {
                    pod: "other".into(),
                    interface: Some("lab0v2".into()),
                    containers: vec![],
                },
                Placement {
                    pod: "go-webapp-847857f68-2qlnd".into(),
                    interface: Some("lab0v1".into()),
                    containers: vec![
                        ("app".into(), cg("w/app")),
                        ("istio-proxy".into(), cg("w/ip")),
                    ],
                },
                Placement {
                    pod: "node-agent".into(),
                    interface: None,
                    containers: vec![("agent".into(), cg("n/agent"))],
                },
            ],
        );
        let back =
            imdsguard_policy::endpoints_file::parse_endpoints(&Source::new("e.yaml", text.clone()))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.endpoints.len(), 4);
        assert_eq!(back.endpoints[2].interface.as_deref(), Some("lab0v2"));
        assert_eq!(back.endpoints[0].spec.ips, t.pods[0].endpoint.spec.ips);
        let webapp = &back.endpoints[1];
        let names: Vec<(&str, &Path)> = webapp
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.cgroup.as_path()))
            .collect();
        assert_eq!(
            names,
            [
                ("app", cg("w/app").as_path()),
                ("istio-proxy", cg("w/ip").as_path())
            ]
        );
        let node_agent = &back.endpoints[3];
        assert!(node_agent.host_network, "{text}");
        assert!(node_agent.interface.is_none() && node_agent.spec.ips.is_empty());
        assert_eq!(node_agent.containers[0].name, "agent");
        assert_eq!(
            back.namespaces[0].1,
            [("team".to_owned(), "observability".to_owned())]
        );
    }

    #[test]
    fn topologies_are_told_from_scenarios() {
        assert!(is_topology(&Source::new("lab.yaml", TOPOLOGY)));
        assert!(!is_topology(&Source::new(
            "s.yaml",
            "name: x\nendpoints: []\ncases: []\n"
        )));
    }

    #[test]
    fn errors_name_the_field() {
        let bad = "podCIDR: nope\n";
        let e = parse(&Source::new("lab.yaml", bad)).expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "lab.yaml:1:10: podCIDR: not an IPv4 CIDR, e.g. 10.244.1.0/24"
        );
        let bad = "endpoints: []\ncontainers: {ghost: []}\n";
        let e = parse(&Source::new("lab.yaml", bad)).expect_err("invalid");
        assert!(e.to_string().contains("no endpoint named \"ghost\""), "{e}");
        let bad = "endpoints: [{name: a, ip: 10.244.1.254}]\n";
        let e = parse(&Source::new("lab.yaml", bad)).expect_err("invalid");
        assert!(e.to_string().contains("which the lab's node takes"), "{e}");
        let bad = "endpoints: [{name: a}]\ncontainers: {a: [{name: x, command: [s]}, {name: x, command: [s]}]}\n";
        let e = parse(&Source::new("lab.yaml", bad)).expect_err("invalid");
        assert!(e.to_string().contains("listed twice"), "{e}");
        let bad = "aliases: {a/b: curl}\n";
        let e = parse(&Source::new("lab.yaml", bad)).expect_err("invalid");
        assert!(e.to_string().contains("at most 15 bytes"), "{e}");
    }
}
