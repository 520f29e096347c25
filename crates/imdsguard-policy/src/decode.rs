//! Decoding and validation of Cilium's CRDs (docs/policy-semantics.md §1, §3), with Cilium's
//! translation of peers into selectors (§2.4 namespace injection, §3.3 CIDR and entity selectors).
//! Every error names the file, line, column, object and field path. One invalid rule rejects its
//! whole object and no other.

use crate::api::*;
use crate::identity::{CLUSTER_LABEL, NAMESPACE_LABEL};
use crate::ipcache::CIDR_GROUP_ANY_KEY;
use crate::l7::{FullMatch, HeaderMatch, HeaderMismatch, HttpRule, L7Rules};
use crate::labels::{LabelKey, LabelSource, validate_label_value, validate_qualified_name};
use crate::selector::{Operator, Requirement, Selector};
use imdsguard_manifest::{Field, FieldError, MapField, Object, Pos, Source};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
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
        })))
    }

    fn cidr_group(&mut self, map: &MapField, meta: &MapField, name: &str) -> R<CidrGroup> {
        let mut labels = Vec::new();
        if let Some(l) = meta.get("labels") {
            for (k, v) in l.free_map()?.entries() {
                labels.push((k.to_owned(), v.str()?.to_owned()));
            }
        }
        let spec = map.required("spec")?.map(&["externalCIDRs"])?;
        let list = spec.get_raw("externalCIDRs").ok_or_else(|| FieldError {
            pos: spec.field.pos(),
            path: "spec.externalCIDRs".into(),
            message: "required field is missing".into(),
        })?;
        let mut cidrs = Vec::new();
        for item in list.seq()? {
            cidrs.push(parse_prefix(&item, true)?);
        }
        Ok(CidrGroup {
            name: name.into(),
            labels,
            cidrs,
            file: self.obj.file.clone(),
            pos: self.obj.node.pos,
        })
    }

    fn rule(&mut self, f: &Field, index: usize, id: &PolicyRef) -> R<Rule> {
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

    /// A Kubernetes LabelSelector with Cilium's key normalisation (§2.2).
    fn selector(&mut self, f: &Field) -> R<Selector> {
        let m = f.map(&["matchLabels", "matchExpressions"])?;
        let mut reqs = Vec::new();
        if let Some(ml) = m.get("matchLabels") {
            for (k, v) in ml.free_map()?.entries() {
                let key = self.selector_key(&v, k)?;
                let value = v.node.as_str().unwrap_or("");
                validate_label_value(value).map_err(|e| v.error(e))?;
                reqs.push(Requirement::equals(key, value));
            }
        }
        if let Some(me) = m.get("matchExpressions") {
            for e in me.seq()? {
                let em = e.map(&["key", "operator", "values"])?;
                let kf = em.required("key")?;
                let key = self.selector_key(&kf, kf.str()?)?;
                let of = em.required("operator")?;
                let op = Operator::parse(of.str()?).ok_or_else(|| {
                    of.error(format!("{:?} is not a valid label selector operator (In, NotIn, Exists, DoesNotExist)", of.node.as_str().unwrap_or("")))
                })?;
                let values = match em.get("values") {
                    Some(v) => v.strings()?,
                    None => Vec::new(),
                };
                match op {
                    Operator::In | Operator::NotIn if values.is_empty() => {
                        return Err(
                            of.error("values must be non-empty when operator is In or NotIn")
                        );
                    }
                    Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                        return Err(of.error(
                            "values must be empty when operator is Exists or DoesNotExist",
                        ));
                    }
                    _ => {}
                }
                if let Some(vf) = em.get("values") {
                    for (item, v) in vf.seq()?.iter().zip(&values) {
                        validate_label_value(v).map_err(|e| item.error(e))?;
                    }
                }
                reqs.push(Requirement::new(key, op, values));
            }
        }
        Ok(Selector::new(reqs))
    }

    fn selector_key(&mut self, at: &Field, raw: &str) -> R<LabelKey> {
        let key = LabelKey::from_selector_key(raw);
        validate_qualified_name(&key.extended()).map_err(|e| at.error(e))?;
        Ok(key)
    }

    /// Cilium's `getEndpointSelector` (§2.4) for `fromEndpoints`/`toEndpoints`.
    fn inject_peer(&self, sel: Selector, scope: &Scope) -> Selector {
        if sel
            .requirements()
            .iter()
            .any(|r| r.key.source == LabelSource::Reserved)
        {
            return sel;
        }
        if sel.has_key(&LabelSource::K8s, NAMESPACE_LABEL)
            || sel.has_key(&LabelSource::Any, NAMESPACE_LABEL)
        {
            return sel;
        }
        let ns_key = LabelKey::new(LabelSource::K8s, NAMESPACE_LABEL);
        match scope.kind {
            PolicyKind::CiliumClusterwideNetworkPolicy if scope.subject_has_init => sel,
            PolicyKind::CiliumClusterwideNetworkPolicy => sel.with(Requirement::exists(ns_key)),
            PolicyKind::CiliumNetworkPolicy => {
                if sel.has_key_with_prefix("k8s.io.cilium.k8s.namespace.labels.")
                    || sel.has_key_with_prefix("any.io.cilium.k8s.namespace.labels.")
                {
                    sel
                } else {
                    sel.with(Requirement::equals(ns_key, &scope.namespace))
                }
            }
        }
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

    fn peers(
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

    fn port_rules(&mut self, f: &Field, section: Section, scope: &Scope) -> R<Vec<PortRule>> {
        let mut out = Vec::new();
        for pr in f.seq()? {
            let known: &[&str] = if section.is_deny() {
                &["ports"]
            } else {
                &[
                    "ports",
                    "rules",
                    "serverNames",
                    "terminatingTLS",
                    "originatingTLS",
                    "listener",
                ]
            };
            let m = pr.map(known)?;
            let mut ports = Vec::new();
            if let Some(pf) = m.get("ports") {
                let items = pf.seq()?;
                if items.len() > 40 {
                    return Err(pf.error("too many ports, the max is 40"));
                }
                for p in &items {
                    ports.push(port_protocol(p)?);
                }
            }
            for name in [
                "serverNames",
                "terminatingTLS",
                "originatingTLS",
                "listener",
            ] {
                if let Some(x) = m.get(name) {
                    self.warn(x.pos(), format!("{name} is ignored by imdsguard (no TLS interception or Envoy listeners)"));
                }
            }
            let l7 = match m.get("rules") {
                Some(rf) => self.l7_rules(&rf, &ports, section, scope, m.get("ports"))?,
                None => None,
            };
            out.push(PortRule { ports, l7 });
        }
        Ok(out)
    }

    fn l7_rules(
        &mut self,
        f: &Field,
        ports: &[PortProtocol],
        section: Section,
        scope: &Scope,
        ports_field: Option<Field>,
    ) -> R<Option<L7Rules>> {
        let m = f.map(&["http", "kafka", "dns", "l7proto", "l7"])?;
        let kinds: Vec<&str> = ["http", "kafka", "dns", "l7"]
            .into_iter()
            .filter(|k| m.get_raw(k).is_some())
            .collect();
        if kinds.len() > 1 {
            return Err(f.error(format!(
                "multiple L7 protocol rule types specified in single rule ({})",
                kinds.join(", ")
            )));
        }
        if m.has("l7proto") && kinds.first().is_some_and(|k| *k != "l7") {
            return Err(f.error("l7proto may only be combined with l7 rules"));
        }
        let Some(kind) =
            kinds
                .first()
                .copied()
                .or(if m.has("l7proto") { Some("l7") } else { None })
        else {
            return Ok(None);
        };
        for (i, p) in ports.iter().enumerate() {
            let at = ports_field
                .as_ref()
                .and_then(|pf| pf.seq().ok())
                .and_then(|s| s.get(i).cloned());
            let at = at.as_ref().unwrap_or(f);
            if p.port == PortSpec::Number(0) {
                return Err(at.error("L7 rules can not be used when a port is 0"));
            }
            if kind != "dns" && p.protocol != Protocol::Tcp {
                return Err(at.error(format!(
                    "L7 rules can only apply to TCP (not {}) except for DNS rules",
                    p.protocol.as_str()
                )));
            }
            if kind == "dns"
                && p.end_port
                    .is_some_and(|e| matches!(p.port, PortSpec::Number(n) if e > n))
            {
                return Err(at.error("DNS rules do not support port ranges"));
            }
        }
        if scope.host && !(kind == "dns" && section.direction() == Direction::Egress) {
            return Err(f.error("host policies (nodeSelector) only support L7 DNS rules on egress"));
        }
        let list = m.get_raw(kind);
        Ok(Some(match kind {
            "http" => {
                let mut rules = Vec::new();
                for h in list.map(|l| l.seq()).transpose()?.unwrap_or_default() {
                    rules.push(std::sync::Arc::new(http_rule(&h)?));
                }
                L7Rules::Http(rules)
            }
            "kafka" => {
                let items = list.map(|l| l.seq()).transpose()?.unwrap_or_default();
                for k in &items {
                    k.map(&["role", "apiKey", "apiVersion", "clientID", "topic"])?;
                }
                L7Rules::Kafka(items.len())
            }
            "dns" => {
                if section.direction() == Direction::Ingress {
                    return Err(f.error("DNS rules are not allowed on ingress"));
                }
                if ports.is_empty() {
                    return Err(f.error("DNS rules require ports"));
                }
                let items = list.map(|l| l.seq()).transpose()?.unwrap_or_default();
                for d in &items {
                    let dm = d.map(&["matchName", "matchPattern"])?;
                    if dm.get("matchName").is_none() && dm.get("matchPattern").is_none() {
                        return Err(d.error("one of matchName or matchPattern is required"));
                    }
                }
                L7Rules::Dns(items.len())
            }
            _ => {
                let proto = m
                    .get("l7proto")
                    .ok_or_else(|| f.error("l7 rules require l7proto"))?;
                L7Rules::Generic(proto.str()?.to_owned())
            }
        }))
    }

    fn icmps(&mut self, f: &Field) -> R<Vec<IcmpField>> {
        let mut out = Vec::new();
        for rule in f.seq()? {
            let m = rule.map(&["fields"])?;
            let fields = match m.get("fields") {
                Some(fl) => fl.seq()?,
                None => Vec::new(),
            };
            if fields.len() > 40 {
                return Err(rule.error("too many ICMP fields, the max is 40"));
            }
            for field in fields {
                let fm = field.map(&["type", "family"])?;
                let v6 = match fm.get("family") {
                    Some(fam) => match fam.str()? {
                        "IPv4" | "" => false,
                        "IPv6" => true,
                        other => {
                            return Err(fam.error(format!(
                                "{other:?} is not a valid ICMP family (IPv4, IPv6)"
                            )));
                        }
                    },
                    None => false,
                };
                let tf = fm.required("type")?;
                let t = tf.str()?;
                let icmp_type = match t.parse::<u8>() {
                    Ok(n) => n,
                    Err(_) => icmp_type_by_name(t, v6).ok_or_else(|| {
                        tf.error(format!("{t:?} is not a valid ICMP{} type (a number 0-255 or a name such as EchoRequest)", if v6 { "v6" } else { "" }))
                    })?,
                };
                out.push(IcmpField { v6, icmp_type });
            }
        }
        Ok(out)
    }
}

struct Scope {
    kind: PolicyKind,
    namespace: Arc<str>,
    subject_has_init: bool,
    host: bool,
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
fn parse_prefix(f: &Field, require_len: bool) -> R<IpNet> {
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

fn port_protocol(f: &Field) -> R<PortProtocol> {
    let m = f.map(&["port", "endPort", "protocol"])?;
    let pf = m.required("port")?;
    let raw = pf.str()?;
    let port = match parse_port_number(raw) {
        Some(n) => PortSpec::Number(n),
        None if raw.chars().all(|c| c.is_ascii_digit()) => {
            return Err(pf.error(format!("unable to parse port {raw:?}: must be 0-65535")));
        }
        None => {
            let name = raw.to_ascii_lowercase();
            if !is_iana_service_name(&name) {
                return Err(pf.error(format!(
                    "{raw:?} is not a valid port number or IANA service name"
                )));
            }
            PortSpec::Named(name)
        }
    };
    let end_port = match m.get("endPort") {
        Some(e) => {
            let n = e.int()?;
            if !(0..=65535).contains(&n) {
                return Err(e.error(format!("endPort {n} is out of range 0-65535")));
            }
            Some(n as u16)
        }
        None => None,
    };
    let protocol = match m.get("protocol") {
        Some(p) => {
            let s = p.str()?;
            match Protocol::parse(s) {
                Some(pr @ (Protocol::Any | Protocol::Tcp | Protocol::Udp | Protocol::Sctp)) => pr,
                _ => {
                    return Err(p.error(format!(
                        "{s:?} is not a valid protocol (TCP, UDP, SCTP, ANY); use icmps for ICMP"
                    )));
                }
            }
        }
        None => Protocol::Any,
    };
    Ok(PortProtocol {
        port,
        end_port,
        protocol,
    })
}

/// Go's `strconv.ParseUint(p, 0, 16)`: decimal, `0x` hex, `0o`/leading-0 octal, `0b` binary.
fn parse_port_number(s: &str) -> Option<u16> {
    let s2 = s.replace('_', "");
    let (digits, radix) = if let Some(h) = s2.strip_prefix("0x").or_else(|| s2.strip_prefix("0X")) {
        (h.to_owned(), 16)
    } else if let Some(b) = s2.strip_prefix("0b").or_else(|| s2.strip_prefix("0B")) {
        (b.to_owned(), 2)
    } else if let Some(o) = s2.strip_prefix("0o").or_else(|| s2.strip_prefix("0O")) {
        (o.to_owned(), 8)
    } else if s2.len() > 1 && s2.starts_with('0') {
        (s2[1..].to_owned(), 8)
    } else {
        (s2, 10)
    };
    if digits.is_empty() {
        return None;
    }
    u16::from_str_radix(&digits, radix).ok()
}

/// IANA service names (RFC 6335): 1–15 of `[a-z0-9-]`, at least one letter, no leading, trailing
/// or doubled hyphens.
fn is_iana_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn http_rule(f: &Field) -> R<HttpRule> {
    let m = f.map(&["method", "path", "host", "headers", "headerMatches"])?;
    let regex = |name: &str| -> R<Option<FullMatch>> {
        match m.get(name) {
            Some(v) => {
                let s = v.str()?;
                if s.is_empty() {
                    return Ok(None);
                }
                FullMatch::new(s).map(Some).map_err(|e| v.error(e))
            }
            None => Ok(None),
        }
    };
    let mut rule = HttpRule {
        method: regex("method")?,
        path: regex("path")?,
        host: regex("host")?,
        headers: Vec::new(),
    };
    if let Some(h) = m.get("headers") {
        for s in h.strings()? {
            rule.headers.push(HeaderMatch::from_header_string(&s));
        }
    }
    if let Some(hm) = m.get("headerMatches") {
        for item in hm.seq()? {
            let im = item.map(&["name", "value", "secret", "mismatch"])?;
            let name = im.required("name")?.str()?.to_ascii_lowercase();
            let value = im
                .get("value")
                .map(|v| v.str().map(str::to_owned))
                .transpose()?;
            let mismatch =
                match im.get("mismatch") {
                    Some(mf) => match mf.str()? {
                        "" | "FAIL" => HeaderMismatch::Fail,
                        "LOG" => HeaderMismatch::Log,
                        "ADD" => HeaderMismatch::Add,
                        "DELETE" => HeaderMismatch::Delete,
                        "REPLACE" => HeaderMismatch::Replace,
                        other => return Err(mf.error(format!(
                            "{other:?} is not a valid mismatch action (LOG, ADD, DELETE, REPLACE)"
                        ))),
                    },
                    None => HeaderMismatch::Fail,
                };
            let value = match (value, im.get("secret")) {
                (v, None) => v,
                (_, Some(sf)) => {
                    sf.map(&["namespace", "name"])?;
                    // The secret's value is not visible here: require a value nothing can carry, so
                    // the rule fails closed instead of letting every request through.
                    Some("\u{0}imdsguard: secret values are not supported".to_owned())
                }
            };
            rule.headers.push(HeaderMatch {
                name,
                value,
                mismatch,
            });
        }
    }
    Ok(rule)
}

fn icmp_type_by_name(name: &str, v6: bool) -> Option<u8> {
    let v4: &[(&str, u8)] = &[
        ("EchoReply", 0),
        ("DestinationUnreachable", 3),
        ("Redirect", 5),
        ("Echo", 8),
        ("EchoRequest", 8),
        ("RouterAdvertisement", 9),
        ("RouterSelection", 10),
        ("TimeExceeded", 11),
        ("ParameterProblem", 12),
        ("Timestamp", 13),
        ("TimestampReply", 14),
        ("Photuris", 40),
        ("ExtendedEchoRequest", 42),
        ("ExtendedEchoReply", 43),
    ];
    let v6t: &[(&str, u8)] = &[
        ("DestinationUnreachable", 1),
        ("PacketTooBig", 2),
        ("TimeExceeded", 3),
        ("ParameterProblem", 4),
        ("EchoRequest", 128),
        ("EchoReply", 129),
        ("MulticastListenerQuery", 130),
        ("MulticastListenerReport", 131),
        ("MulticastListenerDone", 132),
        ("RouterSolicitation", 133),
        ("RouterAdvertisement", 134),
        ("NeighborSolicitation", 135),
        ("NeighborAdvertisement", 136),
        ("RedirectMessage", 137),
        ("RouterRenumbering", 138),
        ("ICMPNodeInformationQuery", 139),
        ("ICMPNodeInformationResponse", 140),
        ("InverseNeighborDiscoverySolicitation", 141),
        ("InverseNeighborDiscoveryAdvertisement", 142),
        ("HomeAgentAddressDiscoveryRequest", 144),
        ("HomeAgentAddressDiscoveryReply", 145),
        ("MobilePrefixSolicitation", 146),
        ("MobilePrefixAdvertisement", 147),
        ("DuplicateAddressRequestCodeSuffix", 157),
        ("DuplicateAddressConfirmationCodeSuffix", 158),
        ("ExtendedEchoRequest", 160),
        ("ExtendedEchoReply", 161),
    ];
    let table = if v6 { v6t } else { v4 };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
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

    #[test]
    fn ipv6_cidr_labels() {
        assert_eq!(cidr_label_key("::/0".parse().unwrap()), "0--0/0");
        assert_eq!(
            cidr_label_key("2001:db8::/32".parse().unwrap()),
            "2001-db8--0/32"
        );
    }

    #[test]
    fn port_numbers_follow_go() {
        assert_eq!(parse_port_number("80"), Some(80));
        assert_eq!(parse_port_number("0x50"), Some(80));
        assert_eq!(parse_port_number("65536"), None);
        assert!(is_iana_service_name("port-80"));
        assert!(!is_iana_service_name("80"));
    }
}
