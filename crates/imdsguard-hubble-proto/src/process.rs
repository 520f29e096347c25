//! imdsguard's extension to Hubble's flow: the container and the process behind it.
//!
//! Hubble's `Flow` has `socket_cookie` and `cgroup_id` but nothing for a container or process
//! name. Those travel in `Flow.extensions`, a `google.protobuf.Any`, holding a
//! `google.protobuf.Struct`: a well-known type that the real `hubble` CLI (Go protojson) can print
//! with `-o json`, where a message type of our own would be unknown to it. Its compact output
//! ignores extensions, so it stays byte-identical.
//!
//! The Struct's fields: `container` (string), `process` (the task's comm), `pid` (the thread
//! group id), `uid` (number). A field that is not known is left out.

use crate::flow::Flow;
use pbjson_types::{Any, Struct, Value, value::Kind};
use prost::Message;

/// The Any type URL of a `google.protobuf.Struct`.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// Who sent a flow's packets, as far as the node knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The container's name in its pod (`istio-proxy`); empty when unknown.
    pub container: String,
    /// The process name (the kernel's comm, at most 15 bytes); empty when unknown.
    pub process: String,
    /// The thread group id as the node sees it (host pid namespace); 0 when unknown.
    pub pid: u32,
    pub uid: Option<u32>,
}

impl ProcessInfo {
    pub fn is_empty(&self) -> bool {
        self.container.is_empty() && self.process.is_empty() && self.pid == 0 && self.uid.is_none()
    }

    /// The compact form: `container/process[pid]`, leaving out what is unknown.
    pub fn compact(&self) -> String {
        let mut s = String::new();
        if !self.container.is_empty() {
            s.push_str(&self.container);
        }
        if !self.process.is_empty() {
            if !s.is_empty() {
                s.push('/');
            }
            s.push_str(&self.process);
        }
        if self.pid != 0 {
            s.push_str(&format!("[{}]", self.pid));
        }
        s
    }

    pub fn to_struct(&self) -> Struct {
        let mut s = Struct::default();
        let text = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_owned())),
        };
        let num = |v: u32| Value {
            kind: Some(Kind::NumberValue(f64::from(v))),
        };
        if !self.container.is_empty() {
            s.fields.insert("container".into(), text(&self.container));
        }
        if !self.process.is_empty() {
            s.fields.insert("process".into(), text(&self.process));
        }
        if self.pid != 0 {
            s.fields.insert("pid".into(), num(self.pid));
        }
        if let Some(uid) = self.uid {
            s.fields.insert("uid".into(), num(uid));
        }
        s
    }

    /// Reads the fields it knows from a Struct; others are ignored. Numbers out of range are
    /// ignored too.
    pub fn from_struct(s: &Struct) -> ProcessInfo {
        let text = |k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(v)) => v.clone(),
            _ => String::new(),
        };
        let num = |k: &str| match s.fields.get(k).and_then(|v| v.kind.as_ref()) {
            Some(Kind::NumberValue(v))
                if *v >= 0.0 && *v <= f64::from(u32::MAX) && v.fract() == 0.0 =>
            {
                Some(*v as u32)
            }
            _ => None,
        };
        ProcessInfo {
            container: text("container"),
            process: text("process"),
            pid: num("pid").unwrap_or(0),
            uid: num("uid"),
        }
    }
}

/// The flow's process information, if its extensions hold ours.
pub fn get(flow: &Flow) -> Option<ProcessInfo> {
    let any = flow.extensions.as_ref()?;
    if any.type_url != STRUCT_TYPE_URL {
        return None;
    }
    let s = Struct::decode(any.value.as_ref()).ok()?;
    let p = ProcessInfo::from_struct(&s);
    (!p.is_empty()).then_some(p)
}

/// Puts `p` into the flow's extensions (or clears them when `p` is empty).
pub fn set(flow: &mut Flow, p: &ProcessInfo) {
    flow.extensions = (!p.is_empty()).then(|| Any {
        type_url: STRUCT_TYPE_URL.to_owned(),
        value: encode_struct(&p.to_struct()).into(),
    });
}

/// A Struct's protobuf encoding with its fields in key order. prost writes a map in its hash
/// order, which differs from one map to the next: the same process would give different bytes,
/// and flows that are equal would compare unequal.
pub fn encode_struct(s: &Struct) -> Vec<u8> {
    let mut fields: Vec<(&str, &Value)> = s.fields.iter().map(|(k, v)| (k.as_str(), v)).collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    encode_sorted_fields(fields)
}

/// The encoding of a Struct with these fields, which must come in key order, each key once.
pub fn encode_sorted_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Vec<u8> {
    use prost::encoding::{
        WireType, encode_key, encode_varint, encoded_len_varint, key_len, message,
    };
    let mut out = Vec::with_capacity(64);
    for (k, v) in fields {
        // A map entry as prost writes one: field 1 of the Struct, a message of the key (1) and
        // the value (2), each left out when it is the default.
        let (key, value) = (!k.is_empty(), v.kind.is_some());
        let len = if key {
            key_len(1) + encoded_len_varint(k.len() as u64) + k.len()
        } else {
            0
        } + if value { message::encoded_len(2, v) } else { 0 };
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
        if key {
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(k.len() as u64, &mut out);
            out.extend_from_slice(k.as_bytes());
        }
        if value {
            message::encode(2, v, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_flow() {
        let p = ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 4242,
            uid: Some(1337),
        };
        let mut f = Flow::default();
        set(&mut f, &p);
        assert_eq!(get(&f), Some(p.clone()));
        assert_eq!(p.compact(), "istio-proxy/envoy[4242]");
        let bytes = f.encode_to_vec();
        let back = Flow::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(get(&back), Some(p));
    }

    #[test]
    fn equal_processes_give_equal_flows() {
        let p = ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 4242,
            uid: Some(1337),
        };
        let (mut a, mut b) = (Flow::default(), Flow::default());
        set(&mut a, &p);
        // Another map, another hash order: the bytes must not depend on it.
        for _ in 0..8 {
            set(&mut b, &p);
            assert_eq!(a, b);
        }
        let bytes = a.extensions.expect("set").value;
        let s = Struct::decode(bytes.as_ref()).expect("decodes");
        assert_eq!(ProcessInfo::from_struct(&s), p);
        // prost's bytes for each entry, in key order.
        let mut keys: Vec<&String> = s.fields.keys().collect();
        keys.sort();
        let mut want = Vec::new();
        for k in keys {
            let one = Struct {
                fields: [(k.clone(), s.fields[k].clone())].into_iter().collect(),
            };
            want.extend(one.encode_to_vec());
        }
        assert_eq!(bytes.as_ref(), want.as_slice());
    }

    #[test]
    fn unknown_parts_are_left_out() {
        let p = ProcessInfo {
            process: "curl".into(),
            ..Default::default()
        };
        assert_eq!(p.compact(), "curl");
        assert_eq!(p.to_struct().fields.len(), 1);
        let mut f = Flow::default();
        set(&mut f, &ProcessInfo::default());
        assert!(f.extensions.is_none());
        assert_eq!(get(&f), None);
    }

    #[test]
    fn another_extension_is_not_ours() {
        let f = Flow {
            extensions: Some(Any {
                type_url: "type.googleapis.com/example.Other".into(),
                value: vec![1, 2, 3].into(),
            }),
            ..Default::default()
        };
        assert_eq!(get(&f), None);
    }
}
