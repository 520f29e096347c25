//! `CiliumCIDRGroup`: its labels and `spec.externalCIDRs`.

use super::peers::parse_prefix;
use super::{Cx, R};
use crate::api::CidrGroup;
use imdsguard_manifest::{FieldError, MapField};

impl Cx<'_> {
    pub(super) fn cidr_group(
        &mut self,
        map: &MapField,
        meta: &MapField,
        name: &str,
    ) -> R<CidrGroup> {
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
}
