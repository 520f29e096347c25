//! Benchmark workloads, shared by `benches/resolve.rs` and `examples/resolve_cluster.rs`.
#![allow(dead_code)]
// Fixed benchmark input: a panic here is a broken benchmark, not a runtime failure.
#![allow(clippy::unwrap_used)]

use imdsguard_manifest::Source;
use imdsguard_policy::labels::{Label, LabelSet};
use imdsguard_policy::{
    DecodeOptions, Decoded, EndpointSpec, EngineOptions, Repository, decode_source,
};
use std::fmt::Write;

pub fn decode(text: &str) -> Decoded {
    let d = decode_source(&Source::new("bench.yaml", text), &DecodeOptions::default());
    assert!(d.errors.is_empty(), "{:?}", d.errors.first());
    d
}

/// A cluster: `endpoints` pods over `namespaces` namespaces (10 apps per namespace), `policies`
/// policies (90% CNPs, 10% CCNPs) and CIDR groups holding `prefixes` prefixes in total.
pub struct Cluster {
    pub endpoints: usize,
    pub namespaces: usize,
    pub policies: usize,
    pub prefixes: usize,
}

impl Cluster {
    pub const ISSUE: Cluster = Cluster {
        endpoints: 10_000,
        namespaces: 500,
        policies: 1_000,
        prefixes: 2_000,
    };

    pub fn policy_text(&self, i: usize, port: u16) -> String {
        let ns = i % self.namespaces;
        let app = i % 10;
        let peer = (i + 1) % 10;
        let other_ns = (i + 7) % self.namespaces;
        if i % 10 == 9 {
            // Cluster-wide: IMDS protection per group of namespaces, over the CIDR groups.
            let group = (i / 10) % 20;
            format!(
                "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: ccnp-{i}}}\nspec:\n  endpointSelector:\n    matchExpressions:\n    - {{key: k8s:io.kubernetes.pod.namespace, operator: In, values: [ns-{ns}, ns-{other_ns}]}}\n  enableDefaultDeny: {{egress: false}}\n  egressDeny:\n  - toCIDRSet: [{{cidrGroupRef: group-{group}}}]\n  egress:\n  - toCIDRSet: [{{cidrGroupRef: group-{}}}]\n    toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}], rules: {{http: [{{method: GET, path: \"/metadata/.*\"}}]}}}}]\n",
                (group + 1) % 20
            )
        } else {
            format!(
                "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: cnp-{i}, namespace: ns-{ns}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: app-{app}}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: app-{peer}}}}}]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n  - fromEndpoints: [{{matchLabels: {{k8s:io.kubernetes.pod.namespace: ns-{other_ns}}}}}]\n  egress:\n  - toEndpoints: [{{matchLabels: {{app: app-{peer}}}}}]\n  - toEntities: [kube-apiserver]\n    toPorts: [{{ports: [{{port: \"443\", protocol: TCP}}]}}]\n"
            )
        }
    }

    pub fn groups_text(&self) -> String {
        let mut out = String::new();
        let per = self.prefixes / 20;
        for g in 0..20 {
            let _ = write!(
                out,
                "---\napiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata: {{name: group-{g}}}\nspec:\n  externalCIDRs:\n"
            );
            for j in 0..per {
                let _ = writeln!(
                    out,
                    "  - 10.{g}.{}.{}/{}",
                    j / 200,
                    j % 200,
                    if j % 4 == 0 { 30 } else { 32 }
                );
            }
        }
        out
    }

    pub fn endpoint(&self, i: usize) -> EndpointSpec {
        let ns = i % self.namespaces;
        let app = (i / self.namespaces) % 10;
        EndpointSpec {
            name: format!("pod-{i}"),
            namespace: format!("ns-{ns}"),
            labels: vec![
                ("app".into(), format!("app-{app}")),
                ("pod-template-hash".into(), format!("h{i}")),
            ],
            service_account: "default".into(),
            ips: vec![
                format!("10.244.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
            ],
            ..Default::default()
        }
    }

    /// A repository holding the whole cluster, resolved once.
    pub fn repository(&self) -> Repository {
        let mut repo = Repository::new(EngineOptions::default());
        repo.load(&decode(&self.groups_text()));
        let mut all = String::new();
        for i in 0..self.policies {
            all.push_str("---\n");
            all.push_str(&self.policy_text(i, 8080));
        }
        repo.load(&decode(&all));
        for i in 0..self.endpoints {
            repo.upsert_endpoint(self.endpoint(i));
        }
        repo.resolve();
        repo
    }
}

/// Cilium's own policy benchmarks (`pkg/policy`): subject identity with the single label
/// `k8s:foo`, peers 1000–3999 with `k8s:foo<i>`, `k8s:app=analytics-erneh`, namespace `monitoring`,
/// service account and cluster `default`.
pub fn cilium_repository(policies: &str) -> Repository {
    let mut repo = Repository::new(EngineOptions::default());
    for i in 1000..4000 {
        repo.upsert_remote_identity(LabelSet::new(vec![
            Label::k8s(&format!("foo{i}"), ""),
            Label::k8s("app", "analytics-erneh"),
            Label::k8s("io.kubernetes.pod.namespace", "monitoring"),
            Label::k8s("io.cilium.k8s.policy.serviceaccount", "default"),
            Label::k8s("io.cilium.k8s.policy.cluster", "default"),
        ]));
    }
    repo.load(&decode(policies));
    repo.upsert_endpoint(EndpointSpec {
        name: "subject".into(),
        namespace: "default".into(),
        raw_labels: Some(LabelSet::new(vec![Label::k8s("foo", "")])),
        ..Default::default()
    });
    repo.resolve();
    repo
}

pub fn cilium_l3(direction: &str, peer_field: &str) -> String {
    let mut out = String::new();
    for i in 0..1000 {
        let _ = write!(
            out,
            "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: r{i}}}\nspec:\n  endpointSelector: {{matchLabels: {{k8s:foo: \"\"}}}}\n  {direction}:\n  - {peer_field}: [{{matchLabels: {{bar: \"\"}}}}]\n"
        );
    }
    out
}

fn cilium_cidr(i: usize) -> String {
    let len = [8, 16, 24, 28, 32][i % 5];
    let x = [10, 192, 244][i % 3];
    let net = match len {
        8 => format!("{x}.0.0.0"),
        16 => format!("{x}.{}.0.0", i % 17),
        24 => format!("{x}.{}.{}.0", i % 17, i % 121),
        28 => format!("{x}.{}.{}.{}", i % 17, i % 121, (i % 16) * 16),
        _ => format!("{x}.{}.{}.{}", i % 17, i % 121, i % 255),
    };
    format!("{net}/{len}")
}

pub fn cilium_cidr_rules(count: usize, selector: impl Fn(usize) -> String) -> String {
    let mut out = String::new();
    for i in 1..=count {
        let cidr = cilium_cidr(i);
        let port = 80 + (i % 97);
        let _ = write!(
            out,
            "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: r{i}}}\nspec:\n  endpointSelector: {{matchLabels: {{{}}}}}\n  egress:\n  - toCIDR: [\"{cidr}\"]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n",
            selector(i)
        );
    }
    out
}
