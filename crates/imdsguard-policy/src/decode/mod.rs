//! Decoding and validation of Cilium's CRDs (docs/policy-semantics.md §1, §3), with Cilium's
//! translation of peers into selectors (§2.4 namespace injection, §3.3 CIDR and entity selectors).
//! Every error names the file, line, column, object and field path. One invalid rule rejects its
//! whole object and no other.
//!
//! One module per part of the CRDs: `rule` (a rule's subject, sections and items), `selectors`,
//! `peers` (and the CIDR label keys), `ports` (with L7 rules), `icmp` and `cidrgroup`.

mod cidrgroup;
mod icmp;
mod peers;
mod ports;
mod rule;
mod selectors;

pub use peers::{cidr_key, cidr_label_key};

use crate::api::{AUDIT_ANNOTATION, CidrGroup, Policy, PolicyKind, PolicyRef};
use imdsguard_manifest::{Field, FieldError, Object, Pos, Source};
use std::fmt;
use std::sync::Arc;

/// Settings that change how policies are translated.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The local cluster name, used by the `cluster` entity.
    pub cluster_name: String,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            cluster_name: "default".to_owned(),
        }
    }
}

/// A rejected object, or a document that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub struct PolicyError {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
    /// `Kind name` or `Kind namespace/name`; empty for syntax errors.
    pub object: String,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Something skipped or ignored that the user should know about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Everything read from a set of sources.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub policies: Vec<Policy>,
    pub groups: Vec<CidrGroup>,
    pub errors: Vec<PolicyError>,
    pub warnings: Vec<Warning>,
}

impl Decoded {
    pub fn extend(&mut self, other: Decoded) {
        self.policies.extend(other.policies);
        self.groups.extend(other.groups);
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}

/// Decodes every object of every source.
pub fn decode_sources(sources: &[Source], opts: &DecodeOptions) -> Decoded {
    let mut out = Decoded::default();
    for source in sources {
        out.extend(decode_source(source, opts));
    }
    out
}

pub fn decode_source(source: &Source, opts: &DecodeOptions) -> Decoded {
    let mut out = Decoded::default();
    let objects = match imdsguard_manifest::objects(source) {
        Ok(o) => o,
        Err(e) => {
            out.errors.push(PolicyError {
                file: e.file.clone(),
                line: e.pos.line,
                column: e.pos.col,
                object: String::new(),
                kind: None,
                name: None,
                field: String::new(),
                message: format!("YAML syntax error: {}", e.message),
            });
            return out;
        }
    };
    for obj in &objects {
        let mut warnings = Vec::new();
        let mut cx = Cx {
            obj,
            opts,
            warnings: &mut warnings,
        };
        match cx.object() {
            Ok(Some(Decodable::Policy(p))) => out.policies.push(p),
            Ok(Some(Decodable::Group(g))) => out.groups.push(g),
            Ok(None) => {}
            Err(e) => out.errors.push(PolicyError {
                file: obj.file.clone(),
                line: e.pos.line,
                column: e.pos.col,
                object: obj.display_name(),
                kind: obj.kind.clone(),
                name: obj.name.clone(),
                field: e.path,
                message: e.message,
            }),
        }
        out.warnings.extend(warnings);
    }
    out
}

enum Decodable {
    Policy(Policy),
    Group(CidrGroup),
}

/// One object being decoded; warnings are collected apart, as a rejected object keeps them.
struct Cx<'a> {
    obj: &'a Object,
    opts: &'a DecodeOptions,
    warnings: &'a mut Vec<Warning>,
}

type R<T> = Result<T, FieldError>;

const CNP: &str = "CiliumNetworkPolicy";
const CCNP: &str = "CiliumClusterwideNetworkPolicy";
const CCG: &str = "CiliumCIDRGroup";

impl Cx<'_> {
    fn warn(&mut self, pos: Pos, message: String) {
        self.warnings.push(Warning {
            file: self.obj.file.clone(),
            line: pos.line,
            column: pos.col,
            message,
        });
    }

    fn object(&mut self) -> R<Option<Decodable>> {
        let root = Field::root(&self.obj.node);
        let map = root.free_map()?;
        let kind = match map.get("kind") {
            Some(k) => k.str()?,
            // Policy test scenarios may sit next to the policies they test.
            None if map.has("cases") || map.has("endpoints") => return Ok(None),
            None => {
                self.warn(root.pos(), "skipping a document without `kind`".to_owned());
                return Ok(None);
            }
        };
        if ![CNP, CCNP, CCG].contains(&kind) {
            let name = self.obj.name.as_deref().unwrap_or("<no name>");
            self.warn(
                root.pos(),
                format!("skipping {kind} {name}: not a Cilium policy or CIDR group"),
            );
            return Ok(None);
        }
        let map = root.map(&["apiVersion", "kind", "metadata", "spec", "specs", "status"])?;
        let api_version = map.required("apiVersion")?;
        let allowed: &[&str] = if kind == CCG {
            &["cilium.io/v2", "cilium.io/v2alpha1"]
        } else {
            &["cilium.io/v2"]
        };
        if !allowed.contains(&api_version.str()?) {
            return Err(api_version.error(format!(
                "unsupported apiVersion for {kind}; use {}",
                allowed.join(" or ")
            )));
        }
        let meta = map.required("metadata")?.free_map()?;
        let name_field = meta.required("name")?;
        let name = name_field.str()?;
        if name.is_empty() {
            return Err(name_field.error(format!("{kind} must have name")));
        }
        if kind == CCG {
            return self
                .cidr_group(&map, &meta, name)
                .map(|g| Some(Decodable::Group(g)));
        }
        let (kind, namespace) = match (kind, meta.get("namespace")) {
            (CNP, Some(ns)) if !ns.str()?.is_empty() => {
                (PolicyKind::CiliumNetworkPolicy, ns.str()?.to_owned())
            }
            // kubectl puts a namespaced object without a namespace into `default`.
            (CNP, _) => (PolicyKind::CiliumNetworkPolicy, "default".to_owned()),
            (_, Some(ns)) if !ns.str()?.is_empty() => {
                return Err(ns.error("CiliumClusterwideNetworkPolicy is cluster-scoped and must not have a namespace"));
            }
            _ => (PolicyKind::CiliumClusterwideNetworkPolicy, String::new()),
        };
        let id = PolicyRef {
            kind,
            namespace: namespace.as_str().into(),
            name: name.into(),
        };
        let audit = match meta
            .get("annotations")
            .map(|a| a.free_map())
            .transpose()?
            .and_then(|a| a.get(AUDIT_ANNOTATION))
        {
            None => false,
            Some(v) => match v.str()? {
                "true" => true,
                "false" => false,
                _ => return Err(v.error("must be \"true\" or \"false\"")),
            },
        };
        let mut rules = Vec::new();
        if let Some(spec) = map.get("spec") {
            rules.push(self.rule(&spec, 0, &id)?);
        }
        if let Some(specs) = map.get("specs") {
            for (i, s) in specs.seq()?.iter().enumerate() {
                rules.push(self.rule(s, i, &id)?);
            }
        }
        if !map.has("spec") && !map.has("specs") {
            return Err(map.error(format!(
                "{} must have at least one of spec or specs",
                kind.as_str()
            )));
        }
        Ok(Some(Decodable::Policy(Policy {
            id,
            file: self.obj.file.clone(),
            pos: self.obj.node.pos,
            rules,
            audit,
        })))
    }
}

/// What a rule's items depend on beyond themselves: Cilium injects peers' namespaces by policy
/// kind and subject, and host policies allow fewer L7 rules.
struct Scope {
    kind: PolicyKind,
    namespace: Arc<str>,
    subject_has_init: bool,
    host: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Decoded {
        decode_source(
            &Source::new("policies.yaml", text),
            &DecodeOptions::default(),
        )
    }

    #[test]
    fn error_names_file_line_object_and_field() {
        let text = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: azure-imds-allow
spec:
  endpointSelector: {}
  egress:
  - toCIDRSet:
    - cidrGroupRef: azure-imds
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
      rules:
        http:
        - method: \"GET(\"
";
        let d = decode(text);
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert_eq!(
            d.errors[0].to_string(),
            "policies.yaml:16:19: CiliumClusterwideNetworkPolicy azure-imds-allow: spec.egress[0].toPorts[0].rules.http[0].method: invalid regex \"GET(\": missing )"
        );
    }

    #[test]
    fn one_bad_object_rejects_only_itself() {
        let text = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: good, namespace: a}
spec: {endpointSelector: {}, ingress: [{}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: a}
specs:
- {endpointSelector: {}, ingress: [{}]}
- {endpointSelector: {}, egres: [{}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
";
        let d = decode(text);
        assert_eq!(d.policies.len(), 1);
        assert_eq!(&*d.policies[0].id.name, "good");
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].field, "specs[1].egres");
        assert_eq!(d.warnings.len(), 1);
    }
}
