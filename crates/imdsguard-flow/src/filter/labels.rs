//! Label criteria (`source_label`, `destination_label`, `node_labels`): Kubernetes selector
//! strings over the Cilium labels a flow carries, as Hubble's `labels.go` reads them.
//!
//! Parsing and matching are `imdsguard_labels::LabelSelector`'s; what is Hubble's own is only
//! `translate_selector`, which turns `k8s:app` into the `k8s.app` Cilium's parser wants. The
//! policy engine's selectors (`imdsguard_policy::selector`) share the name rules and CIDR keys
//! but not the matcher, because they differ in two places: (1) they come from
//! `matchLabels`/`matchExpressions`, so they have no `=`, `!=`, `>` or `<`; (2) they match an
//! identity's label set, sorted and with one label per source and key, so an `any` key reads the
//! label of the first source in `LabelSource` order, where here it reads the first label in the
//! order the flow lists them.

use imdsguard_labels::LabelSelector;

use super::FilterError;

pub(super) fn compile_selectors(
    field: &'static str,
    selectors: &[String],
) -> Result<Vec<LabelSelector>, FilterError> {
    selectors
        .iter()
        .map(|s| {
            LabelSelector::parse(&translate_selector(s)).map_err(|e| {
                FilterError::InvalidLabelSelector {
                    field,
                    selector: s.clone(),
                    reason: e.to_string(),
                }
            })
        })
        .collect()
}

/// Hubble's `translateSelector`: `k8s:foo` → `k8s.foo`, bare keys get `any.`.
fn translate_selector(selector: &str) -> String {
    let mut out = String::with_capacity(selector.len() + 8);
    let mut chars = selector.chars().peekable();
    while chars.peek().is_some() {
        while let Some(&c) = chars.peek() {
            if !c.is_whitespace() && c != '!' {
                break;
            }
            out.push(c);
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == '!' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.contains(':') {
            out.push_str(&key.replacen(':', ".", 1));
        } else {
            out.push_str("any.");
            out.push_str(&key);
        }
        let mut nesting = 0i32;
        for c in chars.by_ref() {
            match c {
                '(' => nesting += 1,
                ')' => nesting -= 1,
                _ => {}
            }
            out.push(c);
            if c == ',' && nesting == 0 {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testutil::*;

    #[test]
    fn label_selectors() {
        let flow = |labels: &[&str]| Flow {
            source: labeled(labels),
            ..Default::default()
        };
        // Without value.
        check(
            FlowFilter {
                source_label: s(&["label1", "label2"]),
                ..ff()
            },
            &[
                (flow(&["label1"]), true),
                (flow(&["label1=val1"]), true),
                (flow(&["label2", "label3", "label4=val4"]), true),
                (flow(&["label3"]), false),
            ],
        );
        // With value.
        check(
            FlowFilter {
                source_label: s(&["label1=val1", "label2==val2"]),
                ..ff()
            },
            &[
                (flow(&["label1"]), false),
                (flow(&["label1=val1"]), true),
                (flow(&["label1=val2", "label2=val1", "label3"]), false),
                (flow(&["label2=val2", "label3"]), true),
                (flow(&["label3=val1"]), false),
                (flow(&[""]), false),
                (flow(&[]), false),
                (flow(&["label1=val1=toomuch"]), false),
            ],
        );
        // in / notin, "()" is the set {""}.
        check(
            FlowFilter {
                source_label: s(&["label1 in (val1, val2), label3 notin ()"]),
                ..ff()
            },
            &[
                (flow(&["label1"]), false),
                (flow(&["label1=val1"]), true),
                (flow(&["label1=val2", "label2=val1", "label3=val3"]), true),
                (flow(&["label2=val2", "label3"]), false),
                (flow(&["label1=val1", "label3=val3"]), true),
                (flow(&["label1=val1", "label3"]), false),
            ],
        );
        // Source and destination must both match.
        let both = FlowFilter {
            source_label: s(&["src1, src2=val2"]),
            destination_label: s(&["dst1, dst2=val2"]),
            ..ff()
        };
        check(
            both,
            &[
                (
                    Flow {
                        source: labeled(&["src1", "src2=val2"]),
                        destination: labeled(&["dst1", "dst2=val2"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        source: labeled(&["dst1", "dst2=val2"]),
                        destination: labeled(&["src1", "src2=val2"]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&["dst1", "dst2=val2"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        // "" matches everything, even flows without endpoint.
        check(
            FlowFilter {
                source_label: s(&[""]),
                ..ff()
            },
            &[
                (flow(&["a"]), true),
                (flow(&[]), true),
                (Flow::default(), true),
            ],
        );
        // Cilium sources: explicit source must match; keys without source get `any:`.
        check(
            FlowFilter {
                source_label: s(&["k8s:app=bar", "foo", "reserved:host"]),
                ..ff()
            },
            &[
                (flow(&["k8s:app=bar"]), true),
                (flow(&["k8s:foo=baz"]), true),
                (flow(&["k8s.app=bar"]), false),
                (flow(&["container:app=bar"]), false),
                (flow(&["container:foo=bar", "reserved:host"]), true),
            ],
        );
        check(
            FlowFilter {
                source_label: s(&["any:key"]),
                ..ff()
            },
            &[
                (flow(&["key"]), true),
                (flow(&["reserved:key"]), true),
                (flow(&["any.key"]), false),
            ],
        );
        // Dotted keys and !key, != and exists.
        check(
            FlowFilter {
                destination_label: s(&[
                    "k8s:io.kubernetes.pod.namespace=kube-system, !k8s:app, tier!=db",
                ]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: labeled(&["k8s:io.kubernetes.pod.namespace=kube-system"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: labeled(&[
                            "k8s:app=x",
                            "k8s:io.kubernetes.pod.namespace=kube-system",
                        ]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&[
                            "container:app=x",
                            "k8s:io.kubernetes.pod.namespace=kube-system",
                            "k8s:tier=db",
                        ]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&[
                            "container:app=x",
                            "k8s:io.kubernetes.pod.namespace=kube-system",
                            "k8s:tier=web",
                        ]),
                        ..Default::default()
                    },
                    true,
                ),
            ],
        );
        // Prefixed keys, gt/lt, `$` reserved shorthand, reserved.<key> form.
        check(
            FlowFilter {
                source_label: s(&["k8s:app.kubernetes.io/name=web,k8s:replicas>2,k8s:replicas<10"]),
                ..ff()
            },
            &[
                (
                    flow(&["k8s:app.kubernetes.io/name=web", "k8s:replicas=3"]),
                    true,
                ),
                (
                    flow(&["k8s:app.kubernetes.io/name=web", "k8s:replicas=2"]),
                    false,
                ),
                (
                    flow(&["k8s:app.kubernetes.io/name=web", "k8s:replicas=x"]),
                    false,
                ),
            ],
        );
        check(
            FlowFilter {
                source_label: s(&["reserved:world"]),
                ..ff()
            },
            &[
                (flow(&["$world"]), true),
                (flow(&["reserved.world"]), true),
                (flow(&["world"]), false),
            ],
        );
        // CIDR labels match broader selector prefixes.
        check(
            FlowFilter {
                destination_label: s(&["cidr:10.0.0.0/8"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        destination: labeled(&["cidr:10.1.2.3/32"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: labeled(&["cidr:10.0.0.0/8"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        destination: labeled(&["cidr:0.0.0.0/0"]),
                        ..Default::default()
                    },
                    false,
                ),
                (
                    Flow {
                        destination: labeled(&["cidr:11.0.0.0/8"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        // Node labels.
        check(
            FlowFilter {
                node_labels: s(&["io.cilium/egress-gateway", "zone in (a,b)"]),
                ..ff()
            },
            &[
                (
                    Flow {
                        node_labels: s(&["io.cilium/egress-gateway=true"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        node_labels: s(&["zone=b"]),
                        ..Default::default()
                    },
                    true,
                ),
                (
                    Flow {
                        node_labels: s(&["zone=c"]),
                        ..Default::default()
                    },
                    false,
                ),
            ],
        );
        for bad in [
            "()",
            "=",
            "any:k8s:bla",
            "a=b=c",
            "a,",
            "a in b",
            "a>x",
            "a=%",
            " ",
        ] {
            let err = build_err(FlowFilter {
                destination_label: s(&[bad]),
                ..ff()
            });
            assert!(
                matches!(
                    err,
                    FilterError::InvalidLabelSelector {
                        field: "destination_label",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            build_err(FlowFilter {
                node_labels: s(&["!"]),
                ..ff()
            }),
            FilterError::InvalidLabelSelector {
                field: "node_labels",
                ..
            }
        ));
    }

    #[test]
    fn translate_selector_like_hubble() {
        for (input, want) in [
            ("foo", "any.foo"),
            ("foo, bar", "any.foo, any.bar"),
            ("k8s:foo, !bar", "k8s.foo, !any.bar"),
            ("foo, bar!= buzz", "any.foo, any.bar!= buzz"),
            ("foo notin   (a,b,c)", "any.foo notin   (a,b,c)"),
            (
                "x in (foo,,baz),y,z notin ()",
                "any.x in (foo,,baz),any.y,any.z notin ()",
            ),
            (
                "a=b, foo:bar, !k8s:b, foo in  (a, ,   c, d), !any:buzz, c!= d.e, \
                 foo:bar.example.com=any.value, !any.other, k8s.example.com in (foo.bar, bar.buzz,  a)",
                "any.a=b, foo.bar, !k8s.b, any.foo in  (a, ,   c, d), !any.buzz, any.c!= d.e, \
                 foo.bar.example.com=any.value, !any.any.other, any.k8s.example.com in (foo.bar, bar.buzz,  a)",
            ),
        ] {
            assert_eq!(translate_selector(input), want);
        }
    }
}
