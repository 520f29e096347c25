//! `Flow.extensions` in JSON lines.
//!
//! The field is a `google.protobuf.Any`; ours holds a `google.protobuf.Struct`
//! ([`imdsguard_hubble_proto::process`]). Go's protojson, which the hubble CLI prints and reads,
//! writes such an Any as `{"@type":"type.googleapis.com/google.protobuf.Struct","value":{…}}`.
//! The generated serde code (pbjson) writes `{"typeUrl":…,"value":"<base64>"}` instead and cannot
//! read protojson's form. So:
//! - writing: [`crate::printer`]'s flow JSON (the one writer of flow JSON) replaces pbjson's form
//!   with protojson's through [`rewrite`], and leaves out an extension it cannot write that way;
//! - reading: [`decode_reference`] is the generated decoder plus protojson's form; the fast
//!   reader ([`crate::jsonline`]) decodes the common case itself and agrees with it.
//!
//! An extension that is not a Struct (another program's) is dropped when read, the flow kept:
//! nothing here could print it, and protojson cannot write an Any of a type it does not know.

use crate::flow::Flow;
use crate::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use imdsguard_hubble_proto::process::{STRUCT_TYPE_URL, encode_struct};
use pbjson_types::{Any, Struct, Value, value::Kind};
use prost::Message;

/// The key of an Any's type in protojson.
const TYPE_KEY: &str = "@type";

/// Writes `any` as protojson does; false (and nothing written) when it cannot: not a Struct,
/// bytes that are none, or a number JSON has no form for.
pub fn write_any(out: &mut String, any: &Any) -> bool {
    if any.type_url != STRUCT_TYPE_URL {
        return false;
    }
    let Ok(s) = Struct::decode(any.value.as_ref()) else {
        return false;
    };
    let start = out.len();
    out.push_str("{\"@type\":\"");
    out.push_str(STRUCT_TYPE_URL);
    out.push_str("\",\"value\":");
    if !write_struct(out, &s) {
        out.truncate(start);
        return false;
    }
    out.push('}');
    true
}

/// Protojson sorts a Struct's keys.
fn write_struct(out: &mut String, s: &Struct) -> bool {
    let mut fields: Vec<(&String, &Value)> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        if !write_value(out, v) {
            return false;
        }
    }
    out.push('}');
    true
}

fn write_value(out: &mut String, v: &Value) -> bool {
    match &v.kind {
        // The generated decoder reads `null` as no kind.
        None | Some(Kind::NullValue(_)) => out.push_str("null"),
        Some(Kind::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Kind::StringValue(s)) => write_string(out, s),
        Some(Kind::NumberValue(n)) => return write_number(out, *n),
        Some(Kind::StructValue(s)) => return write_struct(out, s),
        Some(Kind::ListValue(l)) => {
            out.push('[');
            for (i, v) in l.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !write_value(out, v) {
                    return false;
                }
            }
            out.push(']');
        }
    }
    true
}

fn write_string(out: &mut String, s: &str) {
    // serde_json escapes as Go does (short escapes, `\u00XX` for other control characters);
    // the printer escapes `<`, `>` and `&` of the whole line afterwards.
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Go's JSON number: integers without a fraction, `e` notation below 1e-6 and from 1e21 on
/// (`1e-07` written `1e-7`, `1e+21` with its sign). Not a number or infinite: none.
fn write_number(out: &mut String, n: f64) -> bool {
    if !n.is_finite() {
        return false;
    }
    let abs = n.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let e = format!("{n:e}");
        match e.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                out.push_str(mantissa);
                out.push_str("e+");
                out.push_str(exp);
            }
            _ => out.push_str(&e),
        }
    } else {
        // Rust's shortest round-trip digits, as Go's `strconv.FormatFloat(n, 'f', -1, 64)`.
        out.push_str(&n.to_string());
    }
    true
}

/// In `flow_json` (the generated serializer's text of a flow whose extensions are `any`),
/// replaces the Any with protojson's form, or removes the field when that has none.
pub(crate) fn rewrite(flow_json: &mut String, any: &Any) -> Result<(), serde_json::Error> {
    // The generated code writes the field as exactly this. A key can only be found outside
    // strings: inside one its quotes would be escaped.
    let written = format!("\"extensions\":{}", serde_json::to_string(any)?);
    let Some(at) = flow_json.find(&written) else {
        return Ok(());
    };
    let mut protojson = String::from("\"extensions\":");
    if write_any(&mut protojson, any) {
        flow_json.replace_range(at..at + written.len(), &protojson);
    } else {
        // With the comma before it, or (as the first field) the one after it.
        let mut range = at..at + written.len();
        if at > 0 && flow_json.as_bytes()[at - 1] == b',' {
            range.start -= 1;
        } else if flow_json.as_bytes().get(range.end) == Some(&b',') {
            range.end += 1;
        }
        flow_json.replace_range(range, "");
    }
    Ok(())
}

/// What a line of JSON is, by the generated decoder, which also reads protojson's form of an
/// Any. An extension that is not a Struct, or no valid one, is dropped.
pub fn decode_reference(line: &str) -> Result<GetFlowsResponse, serde_json::Error> {
    match serde_json::from_str::<GetFlowsResponse>(line) {
        Ok(mut resp) => {
            if let Some(ResponseTypes::Flow(f)) = &mut resp.response_types {
                keep_ours(f);
            }
            Ok(resp)
        }
        Err(e) => match protojson_any(line) {
            Some(result) => result,
            None => Err(e),
        },
    }
}

fn keep_ours(f: &mut Flow) {
    let ours = f
        .extensions
        .as_ref()
        .is_some_and(|a| a.type_url == STRUCT_TYPE_URL && Struct::decode(a.value.as_ref()).is_ok());
    if !ours {
        f.extensions = None;
    }
}

/// A bare flow (not in a `GetFlowsResponse`), as [`decode_reference`] reads a response.
pub fn decode_flow(text: &str) -> Result<Flow, serde_json::Error> {
    match serde_json::from_str::<Flow>(text) {
        Ok(mut f) => {
            keep_ours(&mut f);
            Ok(f)
        }
        Err(e) => {
            let parsed = text
                .contains(TYPE_KEY)
                .then(|| serde_json::from_str::<serde_json::Value>(text).ok())
                .flatten();
            let Some(mut doc) = parsed else {
                return Err(e);
            };
            let Some(any) = take_protojson_any(&mut doc) else {
                return Err(e);
            };
            let mut f = serde_json::from_value::<Flow>(doc)?;
            f.extensions = any;
            Ok(f)
        }
    }
}

/// A line whose flow has an extension in protojson's form: the rest through the generated
/// decoder, the extension here. None when the line is not of that kind.
fn protojson_any(line: &str) -> Option<Result<GetFlowsResponse, serde_json::Error>> {
    if !line.contains(TYPE_KEY) {
        return None;
    }
    let mut doc: serde_json::Value = serde_json::from_str(line).ok()?;
    let any = take_protojson_any(doc.get_mut("flow")?)?;
    Some(
        serde_json::from_value::<GetFlowsResponse>(doc).map(|mut resp| {
            if let Some(ResponseTypes::Flow(f)) = &mut resp.response_types {
                f.extensions = any;
            }
            resp
        }),
    )
}

/// Takes `extensions` out of a flow's JSON object when it is in protojson's form: `Some` of our
/// Struct, or `Some(None)` for another type or an invalid one. `None` (nothing taken) for any
/// other form.
fn take_protojson_any(flow: &mut serde_json::Value) -> Option<Option<Any>> {
    let fields = flow.as_object_mut()?;
    let ext = fields.get("extensions")?.as_object()?;
    let kind = ext.get(TYPE_KEY)?;
    let any = match (kind.as_str(), ext.get("value")) {
        (Some(STRUCT_TYPE_URL), Some(value)) => serde_json::from_value::<Struct>(value.clone())
            .ok()
            .map(|s| Any {
                type_url: STRUCT_TYPE_URL.to_owned(),
                value: encode_struct(&s).into(),
            }),
        _ => None,
    };
    fields.remove("extensions");
    Some(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_hubble_proto::process::{self, ProcessInfo};

    fn sidecar() -> ProcessInfo {
        ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 4242,
            uid: Some(1337),
        }
    }

    fn any_of(p: &ProcessInfo) -> Any {
        let mut f = Flow::default();
        process::set(&mut f, p);
        f.extensions.expect("set")
    }

    #[test]
    fn writes_what_go_protojson_writes() {
        let mut out = String::new();
        assert!(write_any(&mut out, &any_of(&sidecar())));
        assert_eq!(
            out,
            r#"{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":4242,"process":"envoy","uid":1337}}"#
        );
        let other = Any {
            type_url: "type.googleapis.com/example.Other".into(),
            value: vec![1].into(),
        };
        assert!(!write_any(&mut out, &other));
    }

    #[test]
    fn numbers_as_go_writes_them() {
        let cases = [
            (4242.0, "4242"),
            (0.0, "0"),
            (-3.0, "-3"),
            (0.5, "0.5"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (123456789.125, "123456789.125"),
        ];
        for (n, want) in cases {
            let mut out = String::new();
            assert!(write_number(&mut out, n));
            assert_eq!(out, want, "{n}");
        }
        assert!(!write_number(&mut String::new(), f64::NAN));
        assert!(!write_number(&mut String::new(), f64::INFINITY));
    }

    #[test]
    fn rewrites_the_generated_form_in_place() {
        let mut f = Flow {
            uuid: "a".into(),
            ..Default::default()
        };
        process::set(&mut f, &sidecar());
        let mut text = serde_json::to_string(&f).expect("serializes");
        assert!(text.contains("\"typeUrl\""), "{text}");
        rewrite(&mut text, f.extensions.as_ref().expect("set")).expect("rewrites");
        assert_eq!(
            text,
            r#"{"uuid":"a","extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":4242,"process":"envoy","uid":1337}}}"#
        );
        // One that has no protojson form is left out, first field or not.
        for uuid in ["", "a"] {
            let other = Flow {
                uuid: uuid.into(),
                extensions: Some(Any {
                    type_url: "type.googleapis.com/example.Other".into(),
                    value: vec![1].into(),
                }),
                egress_allowed_by: vec![Default::default()],
                ..Default::default()
            };
            let mut text = serde_json::to_string(&other).expect("serializes");
            rewrite(&mut text, other.extensions.as_ref().expect("set")).expect("rewrites");
            let back: Flow = serde_json::from_str(&text).expect("still JSON");
            assert_eq!(back.extensions, None);
            assert_eq!(back.uuid, uuid);
        }
    }

    #[test]
    fn reads_both_forms_and_drops_foreign_extensions() {
        let protojson = r#"{"flow":{"uuid":"u","extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":4242,"process":"envoy","uid":1337}}}}"#;
        let mut flow = Flow {
            uuid: "u".into(),
            ..Default::default()
        };
        process::set(&mut flow, &sidecar());
        let pbjson = format!(
            r#"{{"flow":{{"uuid":"u","extensions":{}}}}}"#,
            serde_json::to_string(flow.extensions.as_ref().expect("set")).expect("any")
        );
        for line in [protojson, pbjson.as_str()] {
            let resp = decode_reference(line).expect(line);
            let Some(ResponseTypes::Flow(f)) = &resp.response_types else {
                panic!("no flow in {line}");
            };
            assert_eq!(process::get(f), Some(sidecar()), "{line}");
            assert_eq!(f, &flow, "{line}");
        }
        let foreign = [
            r#"{"flow":{"uuid":"u","extensions":{"@type":"type.googleapis.com/example.Other","name":"x"}}}"#,
            r#"{"flow":{"uuid":"u","extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":"nope"}}}"#,
            r#"{"flow":{"uuid":"u","extensions":{"typeUrl":"type.googleapis.com/example.Other","value":"AQ=="}}}"#,
        ];
        for line in foreign {
            let resp = decode_reference(line).expect(line);
            let Some(ResponseTypes::Flow(f)) = &resp.response_types else {
                panic!("no flow in {line}");
            };
            assert_eq!(f.uuid, "u");
            assert_eq!(f.extensions, None, "{line}");
        }
        // A bare flow, as some recordings hold them.
        let bare = protojson
            .strip_prefix(r#"{"flow":"#)
            .and_then(|t| t.strip_suffix('}'));
        assert_eq!(
            decode_flow(bare.expect("a flow object")).expect("decodes"),
            flow
        );
        assert!(decode_flow(r#"{"verdict":"NOPE"}"#).is_err());
        // A line that is bad elsewhere stays bad.
        assert!(
            decode_reference(r#"{"flow":{"verdict":"NOPE","extensions":{"@type":"x"}}}"#).is_err()
        );
        assert!(decode_reference("{not json").is_err());
    }
}
