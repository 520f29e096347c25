//! A fast reader for Hubble's JSON lines (`hubble observe -o jsonpb`, the flow exporter).
//!
//! Why it exists: the generated serde decoder allocates every string of every flow and goes
//! through serde's `untagged` machinery for every number, which caps `observe --input-file` at
//! about 150,000 flows/s. This reader decodes a line straight from its bytes into one reused
//! `GetFlowsResponse`, so steady state allocates nothing.
//!
//! The contract is that it never decides differently from the reference decoder,
//! [`decode_reference`]: the generated decoder, which also reads `Flow.extensions` in Go
//! protojson's form (see [`crate::extensions`]). It accepts only what it knows for certain: the
//! fields Hubble writes, under their proto names, with plain numbers, known enum names and
//! strings, and our extension in protojson's form with flat values. Anything else (a `null`, a
//! camelCase name, an unknown field, a duplicate, a float where an integer belongs, an extension
//! in pbjson's form or of another type) hands the whole line to the reference decoder, which then
//! gives the result or the error. `tests::agrees_with_generated_decoder` and the `flow_json` fuzz
//! target check the contract.
//!
//! [`FlowReader`] reads whole files (or stdin) with it: the one reader of recorded flows.

use crate::flow::{
    Aggregate, AuthType, CiliumEventType, DebugCapturePoint, Dns, DropReason, Emitter, Endpoint,
    Ethernet, FileInfo, Flow, FlowType, Http, HttpHeader, IcmPv4, IcmPv6, Ip, IpTraceId, IpVersion,
    L7FlowType, Layer4, Layer7, NetworkInterface, Policy, Sctp, Service, SocketTranslationPoint,
    Tcp, TcpFlags, TraceContext, TraceObservationPoint, TraceParent, TraceReason, TrafficDirection,
    Udp, Verdict, Workload, layer4, layer7,
};
use crate::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use imdsguard_hubble_proto::process::{STRUCT_TYPE_URL, encode_sorted_fields};
use imdsguard_hubble_proto::wkt::Timestamp;
use pbjson_types::{Any, BoolValue, value::Kind};

mod reader;

pub use crate::extensions::decode_reference;
pub use reader::{FlowReader, Line, ReadError};

/// Decodes one JSON line after another into the same response, reusing its allocations.
#[derive(Default)]
pub struct LineDecoder {
    resp: GetFlowsResponse,
    fast: u64,
    generic: u64,
}

impl LineDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `line`. The result is the same as [`decode_reference`]'s: for lines without
    /// extensions, `serde_json::from_str::<GetFlowsResponse>`'s.
    pub fn decode(&mut self, line: &str) -> Result<&GetFlowsResponse, serde_json::Error> {
        let mut p = Parser {
            s: line,
            b: line.as_bytes(),
            i: 0,
        };
        if p.response(&mut self.resp).is_ok() && p.at_end() {
            self.fast += 1;
        } else {
            self.resp = decode_reference(line)?;
            self.generic += 1;
        }
        Ok(&self.resp)
    }

    /// Lines decoded by the fast path and by the generated decoder: a low first number on real
    /// input means this reader is missing a field that input uses.
    pub fn counts(&self) -> (u64, u64) {
        (self.fast, self.generic)
    }
}

/// The line holds something this reader does not decode itself.
struct Unsupported;

type R<T = ()> = Result<T, Unsupported>;

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R {
        if self.eat(c) {
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    /// A string without escapes, borrowed from the line.
    fn str(&mut self) -> R<&'a str> {
        self.expect(b'"')?;
        let start = self.i;
        // Escapes and control characters (invalid in JSON strings) go to the generated decoder.
        self.i += string_len(&self.b[start..]).ok_or(Unsupported)?;
        if self.b[self.i] != b'"' {
            return Err(Unsupported);
        }
        let s = self.s.get(start..self.i).ok_or(Unsupported)?;
        self.i += 1;
        Ok(s)
    }

    /// A string value into `out` (replacing what it held), escapes decoded: Go's JSON encoder
    /// writes `&`, `<` and `>` as `\u0026`, `\u003c` and `\u003e`, so Hubble's URLs have them.
    fn string_into(&mut self, out: &mut String) -> R {
        self.expect(b'"')?;
        out.clear();
        loop {
            let start = self.i;
            self.i += string_len(&self.b[start..]).ok_or(Unsupported)?;
            out.push_str(self.s.get(start..self.i).ok_or(Unsupported)?);
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i += 1;
                    let c = self.escape()?;
                    out.push(c);
                }
                // A control character: invalid JSON, which the generated decoder reports.
                _ => return Err(Unsupported),
            }
        }
    }

    /// The character of the escape after a backslash.
    fn escape(&mut self) -> R<char> {
        let c = *self.b.get(self.i).ok_or(Unsupported)?;
        self.i += 1;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if self.b.get(self.i..self.i + 2) != Some(b"\\u".as_slice()) {
                        return Err(Unsupported);
                    }
                    self.i += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(Unsupported);
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                // A lone low surrogate is no character.
                char::from_u32(code).ok_or(Unsupported)?
            }
            _ => return Err(Unsupported),
        })
    }

    /// Exactly four hex digits (`from_str_radix` would also take a sign).
    fn hex4(&mut self) -> R<u32> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(Unsupported)?;
        let mut v = 0;
        for d in digits {
            v = v * 16 + char::from(*d).to_digit(16).ok_or(Unsupported)?;
        }
        self.i += 4;
        Ok(v)
    }

    /// Calls `f` with each key of an object, positioned at its value.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> R) -> R {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = self.str()?.as_bytes();
            self.expect(b':')?;
            f(self, key)?;
            if !self.eat(b',') {
                return self.expect(b'}');
            }
        }
    }

    /// Marks field `bit` as seen; a second occurrence is left to the generated decoder, which
    /// reports it.
    fn once(seen: &mut u64, bit: u32) -> R {
        if *seen & (1 << bit) != 0 {
            return Err(Unsupported);
        }
        *seen |= 1 << bit;
        Ok(())
    }

    fn digits(&mut self) -> R<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(c - b'0')))
                .ok_or(Unsupported)?;
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 || (len > 1 && self.b[start] == b'0') {
            return Err(Unsupported);
        }
        Ok(n)
    }

    /// An unsigned integer, bare or quoted (proto3 JSON writes 64-bit numbers as strings).
    fn unsigned(&mut self) -> R<u64> {
        self.ws();
        let n = if self.b.get(self.i) == Some(&b'"') {
            self.i += 1;
            let n = self.digits()?;
            self.expect_raw(b'"')?;
            n
        } else {
            self.digits()?
        };
        // A fraction or an exponent is left to the generated decoder.
        if let Some(b'.' | b'e' | b'E') = self.b.get(self.i) {
            return Err(Unsupported);
        }
        Ok(n)
    }

    fn signed(&mut self) -> R<i64> {
        self.ws();
        let neg = self.b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
            if self.b.get(self.i) == Some(&b'"') {
                return Err(Unsupported);
            }
        }
        let n = i64::try_from(self.unsigned()?).map_err(|_| Unsupported)?;
        Ok(if neg { -n } else { n })
    }

    fn expect_raw(&mut self, c: u8) -> R {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    fn bool(&mut self) -> R<bool> {
        self.ws();
        let rest = &self.b[self.i..];
        if rest.starts_with(b"true") {
            self.i += 4;
            Ok(true)
        } else if rest.starts_with(b"false") {
            self.i += 5;
            Ok(false)
        } else {
            Err(Unsupported)
        }
    }

    /// An enum given by name or by a number the enum knows, as the generated decoder accepts.
    fn enumeration(
        &mut self,
        out: &mut i32,
        by_name: impl Fn(&str) -> Option<i32>,
        known: impl Fn(i32) -> bool,
    ) -> R {
        self.ws();
        let v = if self.b.get(self.i) == Some(&b'"') {
            by_name(self.str()?).ok_or(Unsupported)?
        } else {
            let n = i32::try_from(self.signed()?).map_err(|_| Unsupported)?;
            if !known(n) {
                return Err(Unsupported);
            }
            n
        };
        *out = v;
        Ok(())
    }

    fn response(&mut self, resp: &mut GetFlowsResponse) -> R {
        let mut seen = 0;
        self.object(|p, key| match key {
            b"flow" => {
                Self::once(&mut seen, 0)?;
                match &mut resp.response_types {
                    Some(ResponseTypes::Flow(f)) => f.decode(p),
                    other => {
                        let mut f = Flow::default();
                        f.decode(p)?;
                        *other = Some(ResponseTypes::Flow(f));
                        Ok(())
                    }
                }
            }
            b"node_name" => {
                Self::once(&mut seen, 1)?;
                resp.node_name.decode(p)
            }
            b"time" => {
                Self::once(&mut seen, 2)?;
                resp.time.decode(p)
            }
            _ => Err(Unsupported),
        })?;
        if seen & 1 == 0 {
            resp.response_types = None;
        }
        if seen & 2 == 0 {
            resp.node_name.clear();
        }
        if seen & 4 == 0 {
            resp.time = None;
        }
        Ok(())
    }
}

/// The length of the string body at the start of `b`: the position of the first `"`, `\\` or
/// control character. Eight bytes at a time, since flow strings (names, labels, IPs) are long
/// enough for it to pay and this scan is most of the decoding time.
fn string_len(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte below `n`. Exact up to the first such byte (a borrow can only
    // mark bytes after a true one), so the lowest set bit is the answer.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let special = |w: u64| {
        below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20)
    };
    let mut i = 0;
    while let Some(chunk) = b[i..].first_chunk::<8>() {
        let m = special(u64::from_le_bytes(*chunk));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    // The last few bytes, padded with a quote that only counts if it is within the input.
    let rest = &b[i..];
    let mut tail = [b'"'; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let at = (special(u64::from_le_bytes(tail)).trailing_zeros() / 8) as usize;
    (at < rest.len()).then_some(i + at)
}

/// A value decoded in place: `decode` overwrites it, reusing what it can, and `reset` sets it to
/// the default, as when its field is absent.
trait Value {
    fn decode(&mut self, p: &mut Parser<'_>) -> R;
    fn reset(&mut self);
}

impl Value for String {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        p.string_into(self)
    }
    fn reset(&mut self) {
        self.clear();
    }
}

impl Value for u32 {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        *self = u32::try_from(p.unsigned()?).map_err(|_| Unsupported)?;
        Ok(())
    }
    fn reset(&mut self) {
        *self = 0;
    }
}

impl Value for u64 {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        *self = p.unsigned()?;
        Ok(())
    }
    fn reset(&mut self) {
        *self = 0;
    }
}

impl Value for i32 {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        *self = i32::try_from(p.signed()?).map_err(|_| Unsupported)?;
        Ok(())
    }
    fn reset(&mut self) {
        *self = 0;
    }
}

impl Value for bool {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        *self = p.bool()?;
        Ok(())
    }
    fn reset(&mut self) {
        *self = false;
    }
}

impl Value for Timestamp {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        *self = Timestamp::parse_rfc3339(p.str()?).ok_or(Unsupported)?;
        Ok(())
    }
    fn reset(&mut self) {
        *self = Timestamp::default();
    }
}

impl Value for BoolValue {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        self.value = p.bool()?;
        Ok(())
    }
    fn reset(&mut self) {
        self.value = false;
    }
}

impl<T: Value + Default> Value for Option<T> {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        self.get_or_insert_with(T::default).decode(p)
    }
    fn reset(&mut self) {
        *self = None;
    }
}

impl<T: Value + Default> Value for Vec<T> {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        p.expect(b'[')?;
        let mut n = 0;
        if !p.eat(b']') {
            loop {
                if n == self.len() {
                    self.push(T::default());
                }
                self[n].decode(p)?;
                n += 1;
                if !p.eat(b',') {
                    p.expect(b']')?;
                    break;
                }
            }
        }
        self.truncate(n);
        Ok(())
    }
    fn reset(&mut self) {
        self.clear();
    }
}

/// The position of `key` in `keys`, at compile time: the bit that marks a field as seen.
const fn bit(keys: &[&[u8]], key: &[u8]) -> u32 {
    let mut i = 0;
    while i < keys.len() {
        let k = keys[i];
        if k.len() == key.len() {
            let mut j = 0;
            while j < k.len() && k[j] == key[j] {
                j += 1;
            }
            if j == k.len() {
                return i as u32;
            }
        }
        i += 1;
    }
    panic!("key not in list")
}

/// Implements `Value` for a message from its JSON field names. `as Enum` marks an enum field,
/// which accepts the enum's names and known numbers.
macro_rules! message {
    ($ty:ty { $( $key:literal => $field:ident $(as $en:ident)? ),* $(,)? }) => {
        #[allow(deprecated)]
        impl Value for $ty {
            fn decode(&mut self, p: &mut Parser<'_>) -> R {
                const KEYS: &[&[u8]] = &[$($key),*];
                const _: () = assert!(KEYS.len() <= 64);
                let mut seen = 0u64;
                p.object(|p, key| match key {
                    $( $key => {
                        Parser::once(&mut seen, const { bit(KEYS, $key) })?;
                        message!(@field p, self.$field $(, $en)?)
                    } )*
                    _ => Err(Unsupported),
                })?;
                $(
                    if seen & (1 << const { bit(KEYS, $key) }) == 0 {
                        Value::reset(&mut self.$field);
                    }
                )*
                Ok(())
            }
            fn reset(&mut self) {
                *self = Self::default();
            }
        }
    };
    (@field $p:ident, $place:expr) => { Value::decode(&mut $place, $p) };
    (@field $p:ident, $place:expr, $en:ident) => {
        $p.enumeration(
            &mut $place,
            |s| $en::from_str_name(s).map(|e| e as i32),
            |n| $en::try_from(n).is_ok(),
        )
    };
}

message!(Flow {
    b"time" => time,
    b"uuid" => uuid,
    b"emitter" => emitter,
    b"verdict" => verdict as Verdict,
    b"drop_reason" => drop_reason,
    b"auth_type" => auth_type as AuthType,
    b"ethernet" => ethernet,
    b"IP" => ip,
    b"l4" => l4,
    b"source" => source,
    b"destination" => destination,
    b"Type" => r#type as FlowType,
    b"node_name" => node_name,
    b"node_labels" => node_labels,
    b"source_names" => source_names,
    b"destination_names" => destination_names,
    b"l7" => l7,
    b"reply" => reply,
    b"event_type" => event_type,
    b"source_service" => source_service,
    b"destination_service" => destination_service,
    b"traffic_direction" => traffic_direction as TrafficDirection,
    b"policy_match_type" => policy_match_type,
    b"trace_observation_point" => trace_observation_point as TraceObservationPoint,
    b"trace_reason" => trace_reason as TraceReason,
    b"file" => file,
    b"ip_trace_id" => ip_trace_id,
    b"drop_reason_desc" => drop_reason_desc as DropReason,
    b"is_reply" => is_reply,
    b"debug_capture_point" => debug_capture_point as DebugCapturePoint,
    b"interface" => interface,
    b"proxy_port" => proxy_port,
    b"trace_context" => trace_context,
    b"sock_xlate_point" => sock_xlate_point as SocketTranslationPoint,
    b"socket_cookie" => socket_cookie,
    b"cgroup_id" => cgroup_id,
    b"Summary" => summary,
    b"extensions" => extensions,
    b"egress_allowed_by" => egress_allowed_by,
    b"ingress_allowed_by" => ingress_allowed_by,
    b"egress_denied_by" => egress_denied_by,
    b"ingress_denied_by" => ingress_denied_by,
    b"policy_log" => policy_log,
    b"aggregate" => aggregate,
});

message!(Emitter { b"name" => name, b"version" => version });
message!(FileInfo { b"name" => name, b"line" => line });
message!(IpTraceId { b"trace_id" => trace_id, b"ip_option_type" => ip_option_type });
message!(Aggregate {
    b"ingress_flow_count" => ingress_flow_count,
    b"egress_flow_count" => egress_flow_count,
    b"unknown_direction_flow_count" => unknown_direction_flow_count,
});
message!(Ethernet { b"source" => source, b"destination" => destination });
message!(Ip {
    b"source" => source,
    b"source_xlated" => source_xlated,
    b"destination" => destination,
    b"ipVersion" => ip_version as IpVersion,
    b"encrypted" => encrypted,
});
message!(Endpoint {
    b"ID" => id,
    b"identity" => identity,
    b"cluster_name" => cluster_name,
    b"namespace" => namespace,
    b"labels" => labels,
    b"pod_name" => pod_name,
    b"workloads" => workloads,
});
message!(Workload { b"name" => name, b"kind" => kind });
message!(Tcp {
    b"source_port" => source_port,
    b"destination_port" => destination_port,
    b"flags" => flags,
});
message!(TcpFlags {
    b"FIN" => fin, b"SYN" => syn, b"RST" => rst, b"PSH" => psh, b"ACK" => ack,
    b"URG" => urg, b"ECE" => ece, b"CWR" => cwr, b"NS" => ns,
});
message!(Udp { b"source_port" => source_port, b"destination_port" => destination_port });
message!(Sctp { b"source_port" => source_port, b"destination_port" => destination_port });
message!(IcmPv4 { b"type" => r#type, b"code" => code });
message!(IcmPv6 { b"type" => r#type, b"code" => code });
message!(CiliumEventType { b"type" => r#type, b"sub_type" => sub_type });
message!(Service { b"name" => name, b"namespace" => namespace });
message!(NetworkInterface { b"index" => index, b"name" => name });
message!(TraceContext { b"parent" => parent });
message!(TraceParent { b"trace_id" => trace_id });
message!(Policy {
    b"name" => name,
    b"namespace" => namespace,
    b"labels" => labels,
    b"revision" => revision,
    b"kind" => kind,
});
message!(Http {
    b"code" => code,
    b"method" => method,
    b"url" => url,
    b"protocol" => protocol,
    b"headers" => headers,
});
message!(HttpHeader { b"key" => key, b"value" => value });
message!(Dns {
    b"query" => query,
    b"ips" => ips,
    b"ttl" => ttl,
    b"cnames" => cnames,
    b"observation_source" => observation_source,
    b"rcode" => rcode,
    b"qtypes" => qtypes,
    b"rrtypes" => rrtypes,
});

/// `Flow.extensions` in protojson's form holding our Struct with flat values (strings, integers
/// a double holds exactly, booleans, nulls): what imdsguard writes. Its key order is free.
impl Value for Any {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        let mut seen = 0u64;
        // Ours has four fields.
        let mut fields = Vec::with_capacity(4);
        p.object(|p, key| match key {
            b"@type" => {
                Parser::once(&mut seen, 0)?;
                if p.str()? == STRUCT_TYPE_URL {
                    Ok(())
                } else {
                    Err(Unsupported)
                }
            }
            b"value" => {
                Parser::once(&mut seen, 1)?;
                p.flat_struct(&mut fields)
            }
            _ => Err(Unsupported),
        })?;
        if seen != 3 {
            return Err(Unsupported);
        }
        // Key order, and of a repeated key the last, as the generated decoder's map keeps it.
        fields.sort_by(|a: &(&str, _), b| a.0.cmp(b.0));
        let mut unique: Vec<(&str, &pbjson_types::Value)> = Vec::with_capacity(fields.len());
        for (k, v) in &fields {
            match unique.last_mut() {
                Some(last) if last.0 == *k => *last = (k, v),
                _ => unique.push((k, v)),
            }
        }
        STRUCT_TYPE_URL.clone_into(&mut self.type_url);
        self.value = encode_sorted_fields(unique).into();
        Ok(())
    }
    fn reset(&mut self) {
        *self = Any::default();
    }
}

impl<'a> Parser<'a> {
    /// The fields of a Struct's JSON object, in the line's order.
    fn flat_struct(&mut self, out: &mut Vec<(&'a str, pbjson_types::Value)>) -> R {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = self.str()?;
            self.expect(b':')?;
            let kind = self.flat_value()?;
            out.push((key, pbjson_types::Value { kind }));
            if !self.eat(b',') {
                return self.expect(b'}');
            }
        }
    }

    /// `null` is no kind, as the generated decoder reads it.
    fn flat_value(&mut self) -> R<Option<Kind>> {
        self.ws();
        let rest = &self.b[self.i..];
        match rest.first() {
            Some(b'"') => {
                let mut s = String::new();
                self.string_into(&mut s)?;
                Ok(Some(Kind::StringValue(s)))
            }
            Some(b't' | b'f') => Ok(Some(Kind::BoolValue(self.bool()?))),
            Some(b'n') if rest.starts_with(b"null") => {
                self.i += 4;
                Ok(None)
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = self.signed()?;
                // The generated decoder refuses integers a double does not hold exactly, and
                // reads `-0` as a float (negative zero).
                const EXACT: i64 = 1 << f64::MANTISSA_DIGITS;
                if n <= -EXACT || n >= EXACT || (n == 0 && rest[0] == b'-') {
                    return Err(Unsupported);
                }
                Ok(Some(Kind::NumberValue(n as f64)))
            }
            _ => Err(Unsupported),
        }
    }
}

/// Decodes a oneof member into `slot`, reusing it when it already holds that member.
fn member<O, T: Value + Default>(
    p: &mut Parser<'_>,
    slot: &mut Option<O>,
    get: impl Fn(&mut O) -> Option<&mut T>,
    wrap: impl Fn(T) -> O,
) -> R {
    if let Some(v) = slot.as_mut().and_then(get) {
        return v.decode(p);
    }
    let mut v = T::default();
    v.decode(p)?;
    *slot = Some(wrap(v));
    Ok(())
}

impl Value for Layer4 {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        use layer4::Protocol as P;
        let mut seen = 0;
        let slot = &mut self.protocol;
        p.object(|p, key| {
            // A second member of the oneof is an error the generated decoder reports.
            Parser::once(&mut seen, 0)?;
            match key {
                b"TCP" => member(p, slot, Member::member, P::Tcp),
                b"UDP" => member(p, slot, Member::member, P::Udp),
                b"ICMPv4" => member(p, slot, Member::member, P::IcmPv4),
                b"ICMPv6" => member(p, slot, Member::member, P::IcmPv6),
                b"SCTP" => member(p, slot, Member::member, P::Sctp),
                _ => Err(Unsupported),
            }
        })?;
        if seen == 0 {
            self.protocol = None;
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.protocol = None;
    }
}

/// The oneof member of type `T`, when that is the one `self` holds.
trait Member<T> {
    fn member(&mut self) -> Option<&mut T>;
}

macro_rules! member {
    ($oneof:ty, $variant:path, $t:ty) => {
        impl Member<$t> for $oneof {
            #[allow(deprecated, unreachable_patterns)]
            fn member(&mut self) -> Option<&mut $t> {
                match self {
                    $variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

member!(layer4::Protocol, layer4::Protocol::Tcp, Tcp);
member!(layer4::Protocol, layer4::Protocol::Udp, Udp);
member!(layer4::Protocol, layer4::Protocol::IcmPv4, IcmPv4);
member!(layer4::Protocol, layer4::Protocol::IcmPv6, IcmPv6);
member!(layer4::Protocol, layer4::Protocol::Sctp, Sctp);
member!(layer7::Record, layer7::Record::Http, Http);
member!(layer7::Record, layer7::Record::Dns, Dns);

impl Value for Layer7 {
    fn decode(&mut self, p: &mut Parser<'_>) -> R {
        use layer7::Record as Rec;
        let mut seen = 0u64;
        let (kind, latency, record) = (&mut self.r#type, &mut self.latency_ns, &mut self.record);
        p.object(|p, key| match key {
            b"type" => {
                Parser::once(&mut seen, 0)?;
                p.enumeration(
                    kind,
                    |s| L7FlowType::from_str_name(s).map(|e| e as i32),
                    |n| L7FlowType::try_from(n).is_ok(),
                )
            }
            b"latency_ns" => {
                Parser::once(&mut seen, 1)?;
                latency.decode(p)
            }
            b"http" => {
                Parser::once(&mut seen, 2)?;
                member(p, record, Member::member, Rec::Http)
            }
            b"dns" => {
                Parser::once(&mut seen, 2)?;
                member(p, record, Member::member, Rec::Dns)
            }
            _ => Err(Unsupported),
        })?;
        if seen & 1 == 0 {
            self.r#type = 0;
        }
        if seen & 2 == 0 {
            self.latency_ns = 0;
        }
        if seen & 4 == 0 {
            self.record = None;
        }
        Ok(())
    }
    fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(line: &str) -> Result<GetFlowsResponse, String> {
        decode_reference(line).map_err(|e| e.to_string())
    }

    /// Decodes `line` with the fast path only.
    fn fast(line: &str) -> Option<GetFlowsResponse> {
        let mut resp = GetFlowsResponse::default();
        let mut p = Parser {
            s: line,
            b: line.as_bytes(),
            i: 0,
        };
        (p.response(&mut resp).is_ok() && p.at_end()).then_some(resp)
    }

    fn corpus() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/flows");
        let mut lines = Vec::new();
        for e in std::fs::read_dir(dir).expect("tests/flows") {
            let path = e.expect("dir entry").path();
            if path.extension().is_some_and(|x| x == "jsonl") {
                let text = std::fs::read_to_string(&path).expect("read corpus");
                lines.extend(text.lines().map(str::to_owned));
            }
        }
        assert!(lines.len() >= 12, "corpus too small");
        lines
    }

    #[test]
    fn string_len_finds_the_first_special_byte() {
        for len in 0..40 {
            for special in [b'"', b'\\', b'\n', 0x1f, 0] {
                let mut b = vec![b'a'; 50];
                b[len] = special;
                // Bytes that look special to a careless word test must not stop the scan.
                for (i, c) in b.iter_mut().enumerate().take(len) {
                    *c = [0x20, 0x21, 0x7f, 0xff, b'#', b']'][i % 6];
                }
                assert_eq!(string_len(&b), Some(len), "{len} {special}");
            }
        }
        assert_eq!(string_len(b"abcdefghijklmnop"), None);
        for n in 0..20 {
            let mut b = vec![b'x'; n];
            assert_eq!(string_len(&b), None, "{n}");
            b.push(b'"');
            assert_eq!(string_len(&b), Some(n), "{n}");
        }
    }

    #[test]
    fn agrees_with_generated_decoder() {
        let mut d = LineDecoder::new();
        for line in corpus() {
            let want = generic(&line);
            let got = d.decode(&line).cloned().map_err(|e| e.to_string());
            assert_eq!(got, want, "line {line}");
        }
        let (fast, generic) = d.counts();
        assert!(fast > 0 && generic == 0, "fast {fast}, generic {generic}");
    }

    #[test]
    fn reuse_leaves_nothing_of_the_previous_line() {
        let mut lines = corpus();
        lines.push(WITH_PROCESS.to_owned());
        let mut d = LineDecoder::new();
        // Every ordered pair: the second decode must not keep fields of the first.
        for a in &lines {
            for b in lines.iter().take(40) {
                d.decode(a).expect("corpus line");
                let got = d.decode(b).expect("corpus line").clone();
                assert_eq!(got, generic(b).expect("corpus line"));
            }
        }
    }

    #[test]
    fn accepts_what_hubble_writes_and_the_number_forms_proto3_allows() {
        let lines = [
            r#"{"flow":{"verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED","l4":{"UDP":{"source_port":"53","destination_port":1}}}}"#,
            r#" { "flow" : { "verdict" : 2 , "event_type" : { "type" : -1 } } , "node_name" : "n" } "#,
            r#"{"flow":{"l7":{"type":"REQUEST","latency_ns":"1200","http":{"method":"GET","headers":[{"key":"a","value":"b"}]}}}}"#,
            r#"{"flow":{"l4":{"ICMPv4":{"type":8}},"is_reply":true,"source":{},"egress_allowed_by":[]}}"#,
            r#"{"flow":{"time":"2025-07-15T21:49:39.668000001Z","l4":{}}}"#,
            r#"{"flow":{"node_name":"a\"b"}}"#, // escapes, as Go writes them
            r#"{"flow":{"Summary":"a\u0026b \u003c\u003e \"q\" \\ \/ \n\t\b\f\r \ud83d\ude00 é"}}"#,
            r#"{"flow":{"Summary":"\u00e9\u20AC"}}"#,
        ];
        for line in lines {
            let got = fast(line).unwrap_or_else(|| panic!("fast path refused {line}"));
            assert_eq!(Ok(got), generic(line), "{line}");
        }
    }

    const WITH_PROCESS: &str = r#"{"flow":{"uuid":"u","verdict":"FORWARDED","Summary":"s","extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":4242,"process":"envoy","uid":1337}}},"node_name":"n"}"#;

    #[test]
    fn reads_our_extension_itself() {
        use imdsguard_hubble_proto::process::{self, ProcessInfo};
        let lines = [
            WITH_PROCESS,
            r#"{"flow":{"extensions":{"value":{"uid":0,"neg":-5,"s":"a\u0026b","t":true,"n":null},"@type":"type.googleapis.com/google.protobuf.Struct"}}}"#,
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"pid":1,"pid":2}}}}"#,
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{}}}}"#,
        ];
        for line in lines {
            let got = fast(line).unwrap_or_else(|| panic!("fast path refused {line}"));
            assert_eq!(Ok(got), generic(line), "{line}");
        }
        let mut d = LineDecoder::new();
        let resp = d.decode(WITH_PROCESS).expect("decodes").clone();
        let Some(ResponseTypes::Flow(f)) = &resp.response_types else {
            panic!("a flow");
        };
        let want = ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 4242,
            uid: Some(1337),
        };
        assert_eq!(process::get(f), Some(want));
        // The next line without extensions has none left over.
        let plain = r#"{"flow":{"uuid":"u"}}"#;
        assert_eq!(
            d.decode(plain).cloned().map_err(|e| e.to_string()),
            generic(plain)
        );
        assert_eq!(d.counts(), (2, 0));
    }

    #[test]
    fn hands_everything_else_to_the_generated_decoder() {
        let lines = [
            r#"{"flow":{"source":null}}"#,                     // null
            r#"{"flow":{"nodeName":"x"}}"#,                    // camelCase
            r#"{"flow":{"verdict":"FORWARDED","verdict":1}}"#, // duplicate
            r#"{"flow":{"proxy_port":1.0}}"#,                  // float
            r#"{"flow":{"proxy_port":01}}"#,                   // leading zero
            r#"{"flow":{"proxy_port":4294967296}}"#,           // overflow
            r#"{"flow":{"verdict":"NOPE"}}"#,                  // unknown enum name
            r#"{"flow":{"verdict":99}}"#,                      // unknown enum number
            r#"{"flow":{"l4":{"TCP":{},"UDP":{}}}}"#,          // two oneof members
            r#"{"flow":{"Summary":"\ud83d"}}"#,                // a lone high surrogate
            r#"{"flow":{"Summary":"\ude00"}}"#,                // a lone low surrogate
            r#"{"flow":{"Summary":"\u+123"}}"#,                // a sign is no hex digit
            r#"{"flow":{"Summary":"\x"}}"#,                    // no such escape
            r#"{"flow":{"Summary":"\u12"}}"#,                  // too short
            r#"{"flow":{"extensions":{}}}"#,                   // an Any without a type
            r#"{"flow":{"extensions":{"typeUrl":"type.googleapis.com/google.protobuf.Struct","value":""}}}"#, // pbjson's form
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/x.Y","value":{}}}}"#, // another type
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"a":[1]}}}}"#, // nested
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"a":1.5}}}}"#, // float
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"a":-0}}}}"#, // negative zero
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"a":9007199254740992}}}}"#, // inexact
            r#"{"flow":{"extensions":{"@type":"type.googleapis.com/google.protobuf.Struct"}}}"#, // no value
            r#"{"flow":{"tunnel":{}}}"#, // a field it does not list
            r#"{"lost_events":{"num_events_lost":"3"}}"#, // another response type
            r#"{"flow":{}} x"#,          // trailing garbage
            r#"{"flow":{"uuid":"a"#,     // truncated
        ];
        for line in lines {
            assert!(fast(line).is_none(), "fast path took {line}");
            let mut d = LineDecoder::new();
            let got = d.decode(line).cloned().map_err(|e| e.to_string());
            assert_eq!(got, generic(line), "{line}");
        }
    }
}
