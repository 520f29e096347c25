//! Kubernetes objects → the engine's inputs. Pure: no client, no I/O.

use imdsguard_manifest::Source;
use imdsguard_policy::repository::NamedPort;
use imdsguard_policy::{EndpointSpec, Protocol};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::DynamicObject;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A pod as an endpoint candidate, before IP ownership is decided.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    pub spec: EndpointSpec,
    pub uid: String,
    /// Creation time in seconds; the later pod wins an IP conflict.
    pub created: i64,
}

/// The endpoint a pod is, or `None` when it is not one: host-network pods (they share the node's
/// address, which no pod policy governs; see [`host_network_endpoint`]), pods without an IP yet,
/// and pods that have finished.
pub fn pod_endpoint(pod: &Pod) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    if pod.spec.as_ref()?.host_network == Some(true) {
        return None;
    }
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
    {
        if let Ok(ip) = ip.parse::<IpAddr>()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return None;
    }
    let mut ep = pod_spec(pod)?;
    ep.spec.ips = ips;
    Some(ep)
}

/// A running hostNetwork pod as an endpoint with no addresses of its own (it has the node's):
/// only its cgroups tell its sockets from the node's, so only the cgroup hooks can judge it
/// (`--host-network-pods enforce`, an imdsguard extension: Cilium leaves such pods out).
pub fn host_network_endpoint(pod: &Pod) -> Option<EndpointSpec> {
    let status = pod.status.as_ref()?;
    if pod.spec.as_ref()?.host_network != Some(true)
        || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        return None;
    }
    Some(pod_spec(pod)?.spec)
}

/// A pod's containers as the kubelet reports them: what names the container behind a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainers {
    /// `namespace/name`.
    pub endpoint: String,
    pub uid: String,
    pub host_network: bool,
    /// Each container's name and `containerID` (`containerd://…`), init and ephemeral
    /// containers included; containers not created yet have no ID and are left out.
    pub containers: Vec<(String, String)>,
}

/// The containers of a pod that has not finished.
pub fn pod_containers(pod: &Pod) -> Option<PodContainers> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let containers = status
        .container_statuses
        .iter()
        .chain(&status.init_container_statuses)
        .chain(&status.ephemeral_container_statuses)
        .flatten()
        .filter_map(|c| Some((c.name.clone(), c.container_id.clone()?)))
        .filter(|(_, id)| !id.is_empty())
        .collect();
    Some(PodContainers {
        endpoint: format!("{}/{}", meta.namespace.as_deref()?, meta.name.as_deref()?),
        uid: meta.uid.clone()?,
        host_network: pod.spec.as_ref()?.host_network == Some(true),
        containers,
    })
}

/// What a pod is as an endpoint, addresses aside.
fn pod_spec(pod: &Pod) -> Option<PodEndpoint> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref()?;
    let named_ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                port: u16::try_from(p.container_port).ok()?,
                protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?,
            })
        })
        .collect();
    Some(PodEndpoint {
        spec: EndpointSpec {
            name: meta.name.clone()?,
            namespace: meta.namespace.clone()?,
            labels: sorted(meta.labels.as_ref()),
            service_account: spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            ips: Vec::new(),
            named_ports,
            raw_labels: None,
        },
        uid: meta.uid.clone().unwrap_or_default(),
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    })
}

fn sorted(map: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Gives each IP to one pod: the newest (by creation time, then UID). A pod keeps the IPs it
/// owns; a pod left with none is dropped. Output is ordered by `namespace/name`.
pub fn assign_ips(mut pods: Vec<PodEndpoint>) -> Vec<EndpointSpec> {
    let mut owner: HashMap<IpAddr, usize> = HashMap::new();
    for (i, p) in pods.iter().enumerate() {
        for ip in &p.spec.ips {
            let newer = match owner.get(ip) {
                Some(&j) => (p.created, p.uid.as_str()) > (pods[j].created, pods[j].uid.as_str()),
                None => true,
            };
            if newer {
                owner.insert(*ip, i);
            }
        }
    }
    for (i, p) in pods.iter_mut().enumerate() {
        p.spec.ips.retain(|ip| owner.get(ip) == Some(&i));
    }
    let mut out: Vec<EndpointSpec> = pods
        .into_iter()
        .filter(|p| !p.spec.ips.is_empty())
        .map(|p| p.spec)
        .collect();
    out.sort_by_key(|s| s.key());
    out
}

/// The labels of a namespace, sorted.
pub fn namespace_labels(ns: &Namespace) -> Option<(String, Vec<(String, String)>)> {
    Some((
        ns.metadata.name.clone()?,
        sorted(ns.metadata.labels.as_ref()),
    ))
}

/// A policy object as the policy decoder reads files: the name of the "file" is
/// `kind/namespace/name`, and the text carries only what the decoder judges (apiVersion, kind,
/// name, namespace, labels, the audit-mode annotation, spec, specs), so a status update (or
/// kubectl's last-applied annotation) does not count as a change.
pub fn policy_source(kind: &str, api_version: &str, obj: &DynamicObject) -> Option<Source> {
    let name = obj.metadata.name.clone()?;
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), name.clone().into());
    let file = match &obj.metadata.namespace {
        Some(ns) => {
            meta.insert("namespace".into(), ns.clone().into());
            format!("{kind}/{ns}/{name}")
        }
        None => format!("{kind}/{name}"),
    };
    if let Some(labels) = &obj.metadata.labels {
        meta.insert(
            "labels".into(),
            serde_json::to_value(labels).unwrap_or_default(),
        );
    }
    // Only the annotation the decoder reads: it puts the policy in audit mode.
    let audit = imdsguard_policy::api::AUDIT_ANNOTATION;
    if let Some(v) = obj.metadata.annotations.as_ref().and_then(|a| a.get(audit)) {
        meta.insert("annotations".into(), serde_json::json!({ audit: v }));
    }
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".into(), api_version.into());
    doc.insert("kind".into(), kind.into());
    doc.insert("metadata".into(), meta.into());
    for key in ["spec", "specs"] {
        if let Some(v) = obj.data.get(key) {
            doc.insert(key.into(), v.clone());
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(doc)).ok()?;
    Some(Source::new(file, text))
}

/// Everything the engine needs from the cluster, converted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    pub namespaces: BTreeMap<String, Vec<(String, String)>>,
    pub endpoints: Vec<EndpointSpec>,
    /// Running hostNetwork pods, as endpoints without addresses, ordered by `namespace/name`.
    pub host_network: Vec<EndpointSpec>,
    /// Every running pod's containers, ordered by `namespace/name`.
    pub containers: Vec<PodContainers>,
    /// Policies and CIDR groups, ordered by name.
    pub policies: Vec<Source>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, ContainerStatus, PodIP, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, ip: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), name.to_string())].into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_running_pod_is_an_endpoint_with_its_labels_account_and_ports() {
        let ep = pod_endpoint(&pod("web", "10.0.0.5", 1)).unwrap();
        assert_eq!(ep.spec.key(), "default/web");
        assert_eq!(ep.spec.service_account, "sa");
        assert_eq!(ep.spec.labels, vec![("app".into(), "web".into())]);
        assert_eq!(ep.spec.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(ep.spec.named_ports[0].port, 8080);
    }

    #[test]
    fn host_network_finished_and_unaddressed_pods_are_not_endpoints() {
        let mut p = pod("a", "10.0.0.5", 1);
        p.spec.as_mut().unwrap().host_network = Some(true);
        assert!(pod_endpoint(&p).is_none());
        let mut p = pod("a", "10.0.0.5", 1);
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(pod_endpoint(&p).is_none());
        let mut p = pod("a", "10.0.0.5", 1);
        p.status.as_mut().unwrap().pod_ip = None;
        p.status.as_mut().unwrap().pod_ips = None;
        assert!(pod_endpoint(&p).is_none());
    }

    #[test]
    fn a_host_network_pod_is_an_endpoint_without_addresses_and_its_containers_are_named() {
        let id = |c: char| format!("containerd://{}", c.to_string().repeat(64));
        let mut p = pod("agent", "192.168.1.10", 1);
        p.spec.as_mut().unwrap().host_network = Some(true);
        p.status.as_mut().unwrap().container_statuses = Some(vec![
            ContainerStatus {
                name: "agent".into(),
                container_id: Some(id('a')),
                ..Default::default()
            },
            // Not created yet: no ID.
            ContainerStatus {
                name: "late".into(),
                ..Default::default()
            },
        ]);
        p.status.as_mut().unwrap().init_container_statuses = Some(vec![ContainerStatus {
            name: "init".into(),
            container_id: Some(id('b')),
            ..Default::default()
        }]);
        let ep = host_network_endpoint(&p).expect("a hostNetwork endpoint");
        assert_eq!(ep.key(), "default/agent");
        assert!(ep.ips.is_empty(), "the node's addresses are not the pod's");
        assert_eq!(ep.service_account, "sa");
        let c = pod_containers(&p).expect("containers");
        assert!(c.host_network);
        assert_eq!(c.uid, "uid-agent");
        assert_eq!(
            c.containers,
            [("agent".to_owned(), id('a')), ("init".to_owned(), id('b'))]
        );
        // An ordinary pod is not a hostNetwork endpoint; a finished one has no containers.
        let web = pod("web", "10.0.0.5", 1);
        assert!(host_network_endpoint(&web).is_none());
        assert!(!pod_containers(&web).expect("containers").host_network);
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(host_network_endpoint(&p).is_none() && pod_containers(&p).is_none());
    }

    #[test]
    fn a_reused_ip_belongs_to_the_newer_pod_only() {
        let old = pod_endpoint(&pod("old", "10.0.0.5", 100)).unwrap();
        let new = pod_endpoint(&pod("new", "10.0.0.5", 200)).unwrap();
        for order in [vec![old.clone(), new.clone()], vec![new, old]] {
            let eps = assign_ips(order);
            assert_eq!(eps.len(), 1);
            assert_eq!(eps[0].name, "new");
        }
    }

    #[test]
    fn a_policy_source_drops_status_and_server_fields() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7", "uid": "u",
                         "managedFields": [{"manager": "kubectl"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                         "policy.imdsguard.io/audit-mode": "true"}},
            "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["world"]}]},
            "status": {"nodes": {}}
        }))
        .unwrap();
        let s = policy_source("CiliumNetworkPolicy", "cilium.io/v2", &obj).unwrap();
        assert_eq!(&*s.name, "CiliumNetworkPolicy/ns/p");
        assert!(s.text.contains("endpointSelector"));
        for absent in [
            "resourceVersion",
            "managedFields",
            "status",
            "\"uid\"",
            "last-applied",
        ] {
            assert!(!s.text.contains(absent), "{absent} in {}", s.text);
        }
        // The audit annotation reaches the decoder: the policy is in audit mode.
        let d = imdsguard_policy::decode_sources(&[s], &Default::default());
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert!(d.policies[0].audit);
    }
}
