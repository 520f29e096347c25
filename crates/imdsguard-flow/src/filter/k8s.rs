//! Kubernetes names in flows: `[namespace/]name` prefixes of pods and services, and the FQDN and
//! node-name glob patterns of Hubble's `patterns.go`.

use regex::Regex;

use super::FilterError;

/// `[namespace/]prefix` as parsed by Hubble's `ParseNamespaceName`.
#[derive(Debug, Clone)]
pub(super) struct NsName {
    ns: String,
    prefix: String,
}

impl NsName {
    pub(super) fn parse(field: &'static str, s: &str) -> Result<Self, FilterError> {
        if s.is_empty() {
            return Err(FilterError::InvalidNamespacedName {
                field,
                value: s.to_owned(),
            });
        }
        let mut parts = s.split('/');
        let first = parts.next().unwrap_or_default();
        Ok(match parts.next() {
            Some(second) => NsName {
                ns: first.to_owned(),
                prefix: second.to_owned(),
            },
            None => NsName {
                ns: "default".to_owned(),
                prefix: first.to_owned(),
            },
        })
    }
}

pub(super) fn match_ns_names(filters: &[NsName], ns: &str, name: &str) -> bool {
    if ns.is_empty() && name.is_empty() {
        return false;
    }
    filters.iter().any(|f| {
        (f.prefix.is_empty() || name.starts_with(f.prefix.as_str()))
            && (f.ns.is_empty() || f.ns == ns)
    })
}

/// Node names carry their cluster (`cluster/node`); a bare name is in cluster `default`.
pub(super) fn match_node_name(re: &Regex, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    if name.contains('/') {
        return re.is_match(name);
    }
    // The node name always includes a cluster name: prepend the default one, on the stack.
    const PREFIX: &[u8] = b"default/";
    let mut buf = [0u8; 320];
    let len = PREFIX.len() + name.len();
    if len > buf.len() {
        return re.is_match(&format!("default/{name}"));
    }
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    buf[PREFIX.len()..len].copy_from_slice(name.as_bytes());
    std::str::from_utf8(&buf[..len]).is_ok_and(|s| re.is_match(s))
}

/// Matches an FQDN, including underscores (Hubble's `fqdnRegexpStr`).
const FQDN_REGEX: &str = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)";

fn append_fqdn_pattern(out: &mut String, pattern: &str) -> Result<(), String> {
    let trimmed = pattern.trim();
    let p = trimmed.strip_suffix('.').unwrap_or(trimmed).to_lowercase();
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    for r in p.chars() {
        match r {
            '.' => out.push_str(r"\."),
            '*' => out.push_str("[-.0-9a-z]*"),
            '-' | '0'..='9' | '_' | 'a'..='z' => out.push(r),
            _ => return Err(format!("{r:?}: invalid rune in pattern")),
        }
    }
    Ok(())
}

pub(super) fn compile_fqdn_patterns(
    field: &'static str,
    patterns: &[String],
) -> Result<Regex, FilterError> {
    compile_patterns(field, patterns, append_fqdn_pattern)
}

fn append_node_name_pattern(out: &mut String, pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    let elems: Vec<&str> = pattern.split('/').collect();
    let (cluster, node) = match elems[..] {
        [node] => ("", node),
        [cluster, node] => (cluster, node),
        _ => return Err("too many slashes in pattern".into()),
    };
    for (i, elem) in [cluster, node].into_iter().enumerate() {
        if i == 1 {
            out.push('/');
        }
        if elem.is_empty() {
            out.push_str(FQDN_REGEX);
        } else {
            append_fqdn_pattern(out, elem)?;
        }
    }
    Ok(())
}

pub(super) fn compile_node_name_patterns(patterns: &[String]) -> Result<Regex, FilterError> {
    compile_patterns("node_name", patterns, append_node_name_pattern)
}

/// One anchored alternation of `patterns`, each translated by `append` (Hubble's `compile`).
fn compile_patterns(
    field: &'static str,
    patterns: &[String],
    append: fn(&mut String, &str) -> Result<(), String>,
) -> Result<Regex, FilterError> {
    let mut re = String::from(r"\A(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        append(&mut re, p).map_err(|reason| FilterError::InvalidPattern {
            field,
            value: p.clone(),
            reason,
        })?;
    }
    re.push_str(r")\z");
    Regex::new(&re).map_err(|e| FilterError::InvalidPattern {
        field,
        value: patterns.join(","),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn pod_namespace_parsing() {
        let f = FlowFilter {
            source_pod: s(&["xwing", "kube-system/coredns-"]),
            ..ff()
        };
        check(
            f,
            &[
                (
                    Flow {
                        source: ep("default", "xwing"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("default", "xwing-t-65b"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("kube-system", "coredns-12345"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("kube-system", "-coredns-1"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        source: ep("kube-system", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        source: ep("", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: ep("default", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (Flow::default(), false),
            ],
        );
        // "ns/" = any pod in ns; "/x" = prefix x in any namespace; "/" = any namespaced endpoint.
        check(
            FlowFilter {
                destination_pod: s(&["kube-system/"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: ep("kube-system", "a"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: ep("default", "a"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                destination_pod: s(&["/core"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: ep("kube-system", "coredns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: ep("default", "coreutils"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: ep("default", "xcore"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                source_pod: s(&["/"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        source: ep("any", ""),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("", "pod-without-ns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: ep("", ""),
                        ..Default::default()
                    },
                    false,
                ),
                (Flow::default(), false),
            ],
        );
        assert_eq!(
            build_err(FlowFilter {
                source_pod: s(&[""]),
                ..ff()
            }),
            FilterError::InvalidNamespacedName {
                field: "source_pod",
                value: String::new()
            }
        );
        assert!(matches!(
            build_err(FlowFilter {
                destination_pod: s(&[""]),
                ..ff()
            }),
            FilterError::InvalidNamespacedName {
                field: "destination_pod",
                ..
            }
        ));
    }

    #[test]
    fn service() {
        let svc = |ns: &str, name: &str| {
            Some(Service {
                namespace: ns.into(),
                name: name.into(),
            })
        };
        check(
            FlowFilter {
                source_service: s(&["deathstar", "kube-system/kube-dns"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        source_service: svc("default", "xwing"),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        source_service: svc("default", "deathstar"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source_service: svc("kube-system", "kube-dns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_service: svc("default", "deathstar"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                destination_service: s(&["default/", "kube-system/kube-"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination_service: svc("default", "x"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_service: svc("kube-system", "kube-dns"),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_service: svc("kube-system", "core"),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        assert!(matches!(
            build_err(FlowFilter {
                source_service: s(&[""]),
                ..ff()
            }),
            FilterError::InvalidNamespacedName {
                field: "source_service",
                ..
            }
        ));
    }

    #[test]
    fn fqdn_glob() {
        let f = FlowFilter {
            destination_fqdn: s(&["*.cilium.io", "Example.COM."]),
            ..ff()
        };
        let flow = |names: &[&str]| Flow {
            destination_names: s(names),
            ..Default::default()
        };
        check(
            f,
            &[
                (flow(&["docs.cilium.io"]), true),
                (flow(&["a.b.cilium.io"]), true),
                (flow(&["cilium.io"]), false),
                (flow(&["other", "example.com"]), true),
                (flow(&["www.example.com"]), false),
                (flow(&["Docs.cilium.io"]), false),
                (flow(&[]), false),
            ],
        );
        check(
            FlowFilter {
                source_fqdn: s(&["api_v1.example.com"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        source_names: s(&["api_v1.example.com"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination_names: s(&["api_v1.example.com"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        for (bad, reason) in [
            ("", "empty pattern"),
            ("a..", "multiple trailing dots in pattern"),
            ("a b", "' ': invalid rune in pattern"),
            ("a/b", "'/': invalid rune in pattern"),
        ] {
            assert_eq!(
                build_err(FlowFilter {
                    source_fqdn: s(&[bad]),
                    ..ff()
                }),
                FilterError::InvalidPattern {
                    field: "source_fqdn",
                    value: bad.into(),
                    reason: reason.into()
                },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn workload() {
        let wl = |kind: &str, name: &str| Workload {
            kind: kind.into(),
            name: name.into(),
        };
        let flow = |w: Workload| Flow {
            destination: Some(Endpoint {
                workloads: vec![w],
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                destination_workload: vec![wl("Deployment", "api"), wl("", "db"), wl("Job", "")],
                ..ff()
            },
            &[
                (flow(wl("Deployment", "api")), true),
                (flow(wl("StatefulSet", "api")), false),
                (flow(wl("StatefulSet", "db")), true),
                (flow(wl("Job", "anything")), true),
                (Flow::default(), false),
            ],
        );
        check(
            FlowFilter {
                source_workload: vec![wl("", "db")],
                ..ff()
            },
            &[(flow(wl("", "db")), false)],
        );
    }

    #[test]
    fn cluster_name() {
        let flow = |c: &str| Flow {
            source: Some(Endpoint {
                cluster_name: c.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        check(
            FlowFilter {
                source_cluster_name: s(&["c1", "c2"]),
                ..ff()
            },
            &[
                (flow("c1"), true),
                (flow("c3"), false),
                (Flow::default(), false),
            ],
        );
        assert_eq!(
            build_err(FlowFilter {
                destination_cluster_name: s(&["a", ""]),
                ..ff()
            }),
            FilterError::EmptyClusterName {
                field: "destination_cluster_name"
            }
        );
    }

    #[test]
    fn node_name_glob() {
        let flow = |n: &str| Flow {
            node_name: n.into(),
            ..Default::default()
        };
        check(
            FlowFilter {
                node_name: s(&["k8s*", "test-cluster/*.company.com"]),
                ..ff()
            },
            &[
                (flow("k8s1"), true),
                (flow("default/k8s2"), true),
                (flow("other/k8s1"), true),
                (flow("test-cluster/node01.company.com"), true),
                (flow("node01.company.com"), false),
                // `*` is `[-.0-9a-z]*`: it spans dots.
                (flow("k8s1.example"), true),
                (flow("xk8s1"), false),
                (flow("K8S1"), false),
                (flow(""), false),
            ],
        );
        check(
            FlowFilter {
                node_name: s(&["default/"]),
                ..ff()
            },
            &[
                (flow("anything.example"), true),
                (flow("c2/anything"), false),
            ],
        );
        check(
            FlowFilter {
                node_name: s(&["/node-1"]),
                ..ff()
            },
            &[
                (flow("node-1"), true),
                (flow("c2/node-1"), true),
                (flow("c2/node-2"), false),
            ],
        );
        for (bad, reason) in [
            ("", "empty pattern"),
            ("a/b/c", "too many slashes in pattern"),
        ] {
            assert_eq!(
                build_err(FlowFilter {
                    node_name: s(&[bad]),
                    ..ff()
                }),
                FilterError::InvalidPattern {
                    field: "node_name",
                    value: bad.into(),
                    reason: reason.into()
                }
            );
        }
    }
}
