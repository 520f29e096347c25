//! Label selectors: Kubernetes' LabelSelector with Cilium's key normalisation, and the namespace
//! Cilium injects into endpoint peers.

use super::{Cx, R, Scope};
use crate::api::PolicyKind;
use crate::identity::NAMESPACE_LABEL;
use crate::labels::{LabelKey, LabelSource, validate_label_value, validate_qualified_name};
use crate::selector::{Operator, Requirement, Selector};
use imdsguard_manifest::Field;

impl Cx<'_> {
    /// A Kubernetes LabelSelector with Cilium's key normalisation (§2.2).
    pub(super) fn selector(&mut self, f: &Field) -> R<Selector> {
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
    pub(super) fn inject_peer(&self, sel: Selector, scope: &Scope) -> Selector {
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
}
