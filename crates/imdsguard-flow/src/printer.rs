//! The output formats of `hubble observe` (docs/hubble.md#flows-as-hubble-prints-them), byte for
//! byte: compact (the
//! default), dict, table and JSON. Colors are not implemented (`--color never`).
// `Summary` is deprecated in Hubble's proto, but the CLI prints it.
#![allow(deprecated)]

use crate::flow::{self, Flow, layer4, layer7};
use crate::names::{self, enum_name};
use crate::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use imdsguard_hubble_proto::process::{self, ProcessInfo};
use imdsguard_hubble_proto::wkt::Timestamp;
use std::fmt::Write as _;

/// `--time-format` layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    #[default]
    StampMilli,
    YearMonthDay,
    YearMonthDayHour,
    YearMonthDayHourMinute,
    Rfc3339,
    Rfc3339Milli,
    Rfc3339Micro,
    Rfc3339Nano,
    Rfc1123Z,
}

impl TimeFormat {
    pub fn parse(s: &str) -> Option<TimeFormat> {
        Some(match s {
            "StampMilli" => TimeFormat::StampMilli,
            "YearMonthDay" => TimeFormat::YearMonthDay,
            "YearMonthDayHour" => TimeFormat::YearMonthDayHour,
            "YearMonthDayHourMinute" => TimeFormat::YearMonthDayHourMinute,
            "RFC3339" => TimeFormat::Rfc3339,
            "RFC3339Milli" => TimeFormat::Rfc3339Milli,
            "RFC3339Micro" => TimeFormat::Rfc3339Micro,
            "RFC3339Nano" => TimeFormat::Rfc3339Nano,
            "RFC1123Z" => TimeFormat::Rfc1123Z,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct PrintOptions {
    pub node_name: bool,
    pub policy_names: bool,
    /// `--numeric`: addresses instead of pod and service names.
    pub numeric: bool,
    pub time_format: TimeFormat,
    /// `--print-process` (imdsguard's): the container and process from the flow's extensions.
    /// Off, every format prints what Hubble's does.
    pub process: bool,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Formats a timestamp with a Go layout, in UTC; `N/A` when absent or invalid.
pub fn format_time(t: Option<&Timestamp>, format: TimeFormat) -> String {
    let mut out = String::new();
    write_time(&mut out, t, format);
    out
}

/// `format_time`, appended to `out`.
pub fn write_time(out: &mut String, t: Option<&Timestamp>, format: TimeFormat) {
    let Some(t) = t.filter(|t| t.is_valid()) else {
        out.push_str("N/A");
        return;
    };
    let c = t.civil();
    let mon = MONTHS[(c.month - 1) as usize];
    // The time is most of a compact line's numbers: written digit by digit, not through fmt.
    let date = |out: &mut String| {
        push_padded(out, c.year.clamp(0, 9999) as u32, 4, '0');
        out.push('-');
        push_padded(out, c.month, 2, '0');
        out.push('-');
        push_padded(out, c.day, 2, '0');
    };
    let hms = |out: &mut String| {
        push_padded(out, c.hour, 2, '0');
        out.push(':');
        push_padded(out, c.minute, 2, '0');
        out.push(':');
        push_padded(out, c.second, 2, '0');
    };
    let frac = |out: &mut String, digits: u32| {
        out.push('.');
        push_padded(out, c.nanos / 10u32.pow(9 - digits), digits as usize, '0');
    };
    match format {
        TimeFormat::StampMilli => {
            out.push_str(mon);
            out.push(' ');
            push_padded(out, c.day, 2, ' ');
            out.push(' ');
            hms(out);
            frac(out, 3);
        }
        TimeFormat::YearMonthDay => date(out),
        TimeFormat::YearMonthDayHour => {
            date(out);
            let _ = write!(out, "T{:02}Z", c.hour);
        }
        TimeFormat::YearMonthDayHourMinute => {
            date(out);
            let _ = write!(out, "T{:02}:{:02}Z", c.hour, c.minute);
        }
        TimeFormat::Rfc3339 | TimeFormat::Rfc3339Milli | TimeFormat::Rfc3339Micro => {
            date(out);
            out.push('T');
            hms(out);
            match format {
                TimeFormat::Rfc3339Milli => frac(out, 3),
                TimeFormat::Rfc3339Micro => frac(out, 6),
                _ => {}
            }
            out.push('Z');
        }
        TimeFormat::Rfc3339Nano => {
            date(out);
            out.push('T');
            hms(out);
            // RFC3339Nano trims trailing zeros (Go's `.999999999`).
            if c.nanos != 0 {
                let (mut v, mut width) = (c.nanos, 9);
                while v % 10 == 0 {
                    v /= 10;
                    width -= 1;
                }
                let _ = write!(out, ".{v:0width$}");
            }
            out.push('Z');
        }
        TimeFormat::Rfc1123Z => {
            let _ = write!(
                out,
                "{}, {:02} {mon} {:04} ",
                DAYS[c.weekday as usize], c.day, c.year
            );
            hms(out);
            out.push_str(" +0000");
        }
    }
}

/// `v` in decimal, padded on the left with `fill` to `width`.
fn push_padded(out: &mut String, mut v: u32, width: usize, fill: char) {
    let mut digits = [b'0'; 10];
    let mut n = 0;
    loop {
        digits[9 - n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for _ in n..width {
        out.push(fill);
    }
    for &d in &digits[10 - n..] {
        out.push(char::from(d));
    }
}

/// One side of a flow as the printers name it (`GetHostNames`).
struct Side<'a> {
    /// Without an IP layer the side is its Ethernet address, as is.
    ethernet: Option<&'a str>,
    ip: &'a str,
    port: u32,
    namespace: &'a str,
    pod: &'a str,
    service: &'a str,
    names: &'a [String],
    identity: u32,
}

impl<'a> Side<'a> {
    fn of(f: &'a Flow, source: bool) -> Side<'a> {
        let (ep, svc, names) = if source {
            (&f.source, &f.source_service, &f.source_names)
        } else {
            (&f.destination, &f.destination_service, &f.destination_names)
        };
        let ip = f.ip.as_ref();
        let ethernet = match (ip, &f.ethernet) {
            (Some(_), _) => None,
            (None, Some(e)) => Some(if source { &e.source } else { &e.destination }.as_str()),
            (None, None) => Some(""),
        };
        let port = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            Some(layer4::Protocol::Tcp(t)) => (t.source_port, t.destination_port),
            Some(layer4::Protocol::Udp(u)) => (u.source_port, u.destination_port),
            Some(layer4::Protocol::Sctp(s)) => (s.source_port, s.destination_port),
            _ => (0, 0),
        };
        // A service names the side, and its namespace wins over the pod's.
        let (namespace, service) = match svc {
            Some(s) => (s.namespace.as_str(), s.name.as_str()),
            None => (ep.as_ref().map_or("", |e| e.namespace.as_str()), ""),
        };
        Side {
            ethernet,
            ip: ip.map_or("", |ip| {
                if source { &ip.source } else { &ip.destination }.as_str()
            }),
            port: if source { port.0 } else { port.1 },
            namespace,
            pod: ep.as_ref().map_or("", |e| e.pod_name.as_str()),
            service,
            names,
            identity: ep.as_ref().map_or(0, |e| e.identity),
        }
    }

    fn write_host(&self, out: &mut String, numeric: bool) {
        if let Some(e) = self.ethernet {
            out.push_str(e);
            return;
        }
        let start = out.len();
        let named = |out: &mut String, name: &str| {
            if !self.namespace.is_empty() {
                out.push_str(self.namespace);
                out.push('/');
            }
            out.push_str(name);
        };
        if numeric {
            out.push_str(self.ip);
        } else if !self.pod.is_empty() {
            named(out, self.pod);
        } else if !self.service.is_empty() {
            named(out, self.service);
        } else if !self.names.is_empty() {
            for (i, n) in self.names.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(n);
            }
        } else {
            out.push_str(self.ip);
        }
        if self.port == 0 {
            return;
        }
        if out[start..].contains(':') {
            out.insert(start, '[');
            out.push(']');
        }
        out.push(':');
        push_padded(out, self.port, 0, '0');
    }

    fn host(&self, numeric: bool) -> String {
        let mut out = String::new();
        self.write_host(&mut out, numeric);
        out
    }
}

/// Source and destination as printed (`GetHostNames`).
pub fn host_names(f: &Flow, numeric: bool) -> (String, String) {
    (
        Side::of(f, true).host(numeric),
        Side::of(f, false).host(numeric),
    )
}

/// The type token (`GetFlowType`).
pub fn flow_type(f: &Flow) -> String {
    let mut out = String::new();
    write_flow_type(&mut out, f);
    out
}

fn write_flow_type(out: &mut String, f: &Flow) {
    if let Some(l7) = &f.l7 {
        let kind = enum_name(l7.r#type, |t: flow::L7FlowType| t.as_str_name()).to_lowercase();
        let _ = match &l7.record {
            Some(layer7::Record::Http(_)) => write!(out, "http-{kind}"),
            Some(layer7::Record::Dns(d)) => write!(out, "dns-{kind} {}", d.observation_source),
            #[allow(deprecated)]
            Some(layer7::Record::Kafka(_)) => write!(out, "kafka-{kind}"),
            None => write!(out, "l7-{kind}"),
        };
        return;
    }
    let Some(et) = &f.event_type else {
        out.push_str("UNKNOWN");
        return;
    };
    match et.r#type {
        names::EVENT_TRACE => out.push_str(&names::trace_point_name(et.sub_type)),
        names::EVENT_DROP => out.push_str(&names::drop_reason_text(et.sub_type as u32)),
        names::EVENT_POLICY_VERDICT => {
            let _ = write!(
                out,
                "policy-verdict:{} {}",
                names::match_type_name(f.policy_match_type),
                enum_name(f.traffic_direction, |d: flow::TrafficDirection| d
                    .as_str_name())
            );
        }
        names::EVENT_CAPTURE => out.push_str(&enum_name(
            f.debug_capture_point,
            |d: flow::DebugCapturePoint| d.as_str_name(),
        )),
        names::EVENT_TRACE_SOCK => match flow::SocketTranslationPoint::try_from(f.sock_xlate_point)
        {
            Ok(flow::SocketTranslationPoint::SockXlatePointPreDirectionFwd) => {
                out.push_str("pre-xlate-fwd")
            }
            Ok(flow::SocketTranslationPoint::SockXlatePointPostDirectionFwd) => {
                out.push_str("post-xlate-fwd")
            }
            Ok(flow::SocketTranslationPoint::SockXlatePointPreDirectionRev) => {
                out.push_str("pre-xlate-rev")
            }
            Ok(flow::SocketTranslationPoint::SockXlatePointPostDirectionRev) => {
                out.push_str("post-xlate-rev")
            }
            Ok(other) => out.push_str(other.as_str_name()),
            Err(_) => {
                let _ = write!(out, "{}", f.sock_xlate_point);
            }
        },
        _ => out.push_str("UNKNOWN"),
    }
}

fn is_policy_verdict(f: &Flow) -> bool {
    f.event_type
        .as_ref()
        .is_some_and(|e| e.r#type == names::EVENT_POLICY_VERDICT)
}

/// The verdict token (`getVerdict`), with ` BY …` policy names when asked.
pub fn verdict_token(f: &Flow, policy_names: bool) -> String {
    let mut out = String::new();
    write_verdict_token(&mut out, f, policy_names);
    out
}

fn write_verdict_token(out: &mut String, f: &Flow, policy_names: bool) {
    let pv = is_policy_verdict(f);
    let verdict = flow::Verdict::try_from(f.verdict).unwrap_or(flow::Verdict::Unknown);
    let (token, allowed) = match verdict {
        flow::Verdict::Forwarded | flow::Verdict::Redirected if pv => ("ALLOWED", Some(true)),
        flow::Verdict::Dropped | flow::Verdict::Error if pv => ("DENIED", Some(false)),
        flow::Verdict::Audit if pv => ("AUDITED", Some(true)),
        flow::Verdict::Audit => ("AUDIT", None),
        other => (other.as_str_name(), None),
    };
    out.push_str(token);
    let (Some(allowed), true) = (allowed, policy_names) else {
        return;
    };
    let egress = f.traffic_direction == flow::TrafficDirection::Egress as i32;
    let list = match (egress, allowed) {
        (true, true) => &f.egress_allowed_by,
        (true, false) => &f.egress_denied_by,
        (false, true) => &f.ingress_allowed_by,
        (false, false) => &f.ingress_denied_by,
    };
    let named = list
        .iter()
        .filter(|p| !p.name.is_empty() && !p.kind.is_empty());
    for (i, p) in named.enumerate() {
        out.push_str(if i == 0 { " BY " } else { ", " });
        let _ = write!(out, "{} ({})", p.name, p.kind);
    }
}

/// The summary (`getSummary`), without the parentheses.
pub fn summary(f: &Flow) -> String {
    let mut out = String::new();
    write_summary(&mut out, f);
    out
}

fn write_summary(out: &mut String, f: &Flow) {
    if let Some(id) = f.ip_trace_id.as_ref().filter(|t| t.trace_id > 0) {
        let _ = write!(out, "IP Trace ID: {}; ", id.trace_id);
    }
    out.push_str(&f.summary);
    if f.auth_type != 0 {
        let _ = write!(
            out,
            "; Auth: {}",
            enum_name(f.auth_type, |a: flow::AuthType| a.as_str_name())
        );
    }
}

fn write_identity(out: &mut String, identity: u32) {
    match names::reserved_identity_name(identity) {
        Some(name) => {
            out.push('(');
            out.push_str(name);
            out.push(')');
        }
        None => {
            out.push_str("(ID:");
            push_padded(out, identity, 0, '0');
            out.push(')');
        }
    }
}

/// One flow in the compact format, with its newline.
pub fn compact(f: &Flow, opts: &PrintOptions) -> String {
    let mut out = String::new();
    compact_into(&mut out, f, opts);
    out
}

/// `compact`, appended to `out`: a reader that prints many flows reuses one buffer.
pub fn compact_into(out: &mut String, f: &Flow, opts: &PrintOptions) {
    let start = out.len();
    write_time(out, f.time.as_ref(), opts.time_format);
    if opts.node_name {
        out.push_str(" [");
        out.push_str(&f.node_name);
        out.push(']');
    }
    out.push_str(": ");
    let (src, dst) = (Side::of(f, true), Side::of(f, false));
    let (first, second, arrow) = match f.is_reply.map(|b| b.value) {
        None => (src, dst, " <> "),
        Some(true) => (dst, src, " <- "),
        Some(false) => (src, dst, " -> "),
    };
    first.write_host(out, opts.numeric);
    out.push(' ');
    write_identity(out, first.identity);
    out.push_str(arrow);
    second.write_host(out, opts.numeric);
    out.push(' ');
    write_identity(out, second.identity);
    out.push(' ');
    write_flow_type(out, f);
    out.push(' ');
    write_verdict_token(out, f, opts.policy_names);
    out.push_str(" (");
    write_summary(out, f);
    out.push(')');
    if opts.process {
        write_process(out, f);
    }
    out.push('\n');
    if memchr::memchr2(0x1b, b'\r', &out.as_bytes()[start..]).is_some() {
        let line = out.split_off(start);
        out.push_str(&escape_terminal(line));
    }
}

/// `--print-process` on a compact line: ` container=NAME process=COMM pid=N` with what is known
/// (nothing when nothing is). Labelled, because a name alone could be either; a value with a
/// space, a quote or `=` is quoted.
fn write_process(out: &mut String, f: &Flow) {
    let Some(p) = process::get(f) else {
        return;
    };
    let mut pair = |key: &str, value: &str| {
        if value.is_empty() {
            return;
        }
        out.push(' ');
        out.push_str(key);
        out.push('=');
        if value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
            out.push_str(&serde_json::Value::from(value).to_string());
        } else {
            out.push_str(value);
        }
    };
    pair("container", &p.container);
    pair("process", &p.process);
    if p.pid != 0 {
        pair("pid", &p.pid.to_string());
    }
}

/// `process[pid]`, or what of it is known, for the dict and table formats.
fn process_cell(p: &ProcessInfo) -> String {
    match (p.process.is_empty(), p.pid) {
        (_, 0) => p.process.clone(),
        (true, pid) => format!("[{pid}]"),
        (false, pid) => format!("{}[{pid}]", p.process),
    }
}

/// Flows carry strings from the network (URLs, DNS names): like Hubble's `terminal.go`, escape
/// what could drive the user's terminal (`ESC` → `^[`, `CR` → `\r`).
pub fn escape_terminal(s: String) -> String {
    if !s.contains(['\x1b', '\r']) {
        return s;
    }
    s.replace('\x1b', "^[").replace('\r', "\\r")
}

/// One flow in the dict format; `first` omits the separator line.
pub fn dict(f: &Flow, opts: &PrintOptions, first: bool) -> String {
    let (src, dst) = host_names(f, opts.numeric);
    let mut out = String::new();
    if !first {
        out.push_str("------------\n");
    }
    out.push_str(&format!(
        "  TIMESTAMP: {}\n",
        format_time(f.time.as_ref(), opts.time_format)
    ));
    if opts.node_name {
        out.push_str(&format!("       NODE: {}\n", f.node_name));
    }
    out.push_str(&format!("     SOURCE: {src}\nDESTINATION: {dst}\n"));
    out.push_str(&format!(
        "       TYPE: {}\n    VERDICT: {}\n",
        flow_type(f),
        verdict_token(f, opts.policy_names)
    ));
    out.push_str(&format!("    SUMMARY: {}\n", summary(f)));
    if opts.process {
        let p = process::get(f).unwrap_or_default();
        out.push_str(&format!("  CONTAINER: {}\n", p.container));
        out.push_str(&format!("    PROCESS: {}\n", process_cell(&p)));
    }
    escape_terminal(out)
}

/// The table format: rows are collected, then aligned as Go's tabwriter (min width 2, padding 3).
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(opts: &PrintOptions) -> Table {
        let mut header = vec!["TIMESTAMP".to_owned()];
        if opts.node_name {
            header.push("NODE".to_owned());
        }
        header.extend(["SOURCE", "DESTINATION", "TYPE", "VERDICT"].map(str::to_owned));
        if opts.process {
            header.extend(["CONTAINER", "PROCESS"].map(str::to_owned));
        }
        header.push("SUMMARY".to_owned());
        Table { rows: vec![header] }
    }

    pub fn push(&mut self, f: &Flow, opts: &PrintOptions) {
        let (src, dst) = host_names(f, opts.numeric);
        let mut row = vec![format_time(f.time.as_ref(), opts.time_format)];
        if opts.node_name {
            row.push(f.node_name.clone());
        }
        row.extend([src, dst, flow_type(f), verdict_token(f, opts.policy_names)]);
        if opts.process {
            let p = process::get(f).unwrap_or_default();
            row.push(p.container.clone());
            row.push(process_cell(&p));
        }
        row.push(summary(f));
        self.rows
            .push(row.into_iter().map(escape_terminal).collect());
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(2)
                    + 3
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}", w = widths[i]));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Go's `encoding/json` escapes these even inside protojson output.
fn html_escape(s: &str) -> String {
    if !s.contains(['<', '>', '&']) {
        return s.to_owned();
    }
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A flow's JSON before `html_escape`: the generated serializer's, with `extensions` in
/// protojson's form. Every writer of flow JSON goes through here (`json`, [`FlowJson`]).
fn flow_text(f: &Flow) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string(f)?;
    if let Some(any) = &f.extensions {
        crate::extensions::rewrite(&mut text, any)?;
    }
    Ok(text)
}

/// A flow that serializes (with serde_json) as `-o json` prints it, for JSON documents that
/// embed flows, such as the UI's API. The generated `Serialize` of `Flow` would write its
/// extensions in pbjson's form, which Hubble's tools cannot read.
pub struct FlowJson<'a>(pub &'a Flow);

impl serde::Serialize for FlowJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let text = flow_text(self.0).map_err(S::Error::custom)?;
        let raw = serde_json::value::RawValue::from_string(html_escape(&text))
            .map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

/// One `GetFlowsResponse` as Hubble's `-o json` line (protojson, proto field names, declaration
/// order: the oneof comes first in this message).
pub fn json(resp: &GetFlowsResponse) -> Result<String, serde_json::Error> {
    let mut out = String::from("{");
    let mut sep = "";
    let mut field = |out: &mut String, name: &str, value: String| {
        out.push_str(sep);
        out.push_str(&format!("\"{name}\":{value}"));
        sep = ",";
    };
    match &resp.response_types {
        Some(ResponseTypes::Flow(f)) => field(&mut out, "flow", flow_text(f)?),
        Some(ResponseTypes::NodeStatus(n)) => {
            field(&mut out, "node_status", serde_json::to_string(n)?)
        }
        Some(ResponseTypes::LostEvents(l)) => {
            field(&mut out, "lost_events", serde_json::to_string(l)?)
        }
        None => {}
    }
    if !resp.node_name.is_empty() {
        field(
            &mut out,
            "node_name",
            serde_json::to_string(&resp.node_name)?,
        );
    }
    if let Some(t) = &resp.time {
        field(&mut out, "time", serde_json::to_string(t)?);
    }
    out.push('}');
    Ok(html_escape(&out))
}

/// A lost-events notice in the compact format.
pub fn lost_events(l: &flow::LostEvent, opts: &PrintOptions) -> String {
    let source = enum_name(l.source, |s: flow::LostEventSource| s.as_str_name());
    let mut s = format!(
        "{} EVENTS LOST: {source} CPU({}) {}",
        format_time(l.first.as_ref().or(l.last.as_ref()), opts.time_format),
        l.cpu.map_or(0, |c| c.value),
        l.num_events_lost
    );
    if let (Some(first), Some(last)) = (&l.first, &l.last) {
        s.push_str(&format!(
            " (first: {}, last: {})",
            format_time(Some(first), opts.time_format),
            format_time(Some(last), opts.time_format)
        ));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flow of Hubble's printer tests (`printer_test.go`).
    fn vector() -> Flow {
        Flow {
            time: Some(Timestamp::new(1234, 567_800_000)),
            verdict: flow::Verdict::Dropped as i32,
            drop_reason_desc: flow::DropReason::PolicyDenied as i32,
            ip: Some(flow::Ip {
                source: "1.1.1.1".into(),
                destination: "2.2.2.2".into(),
                ..Default::default()
            }),
            l4: Some(flow::Layer4 {
                protocol: Some(layer4::Protocol::Tcp(flow::Tcp {
                    source_port: 31793,
                    destination_port: 8080,
                    flags: None,
                })),
            }),
            source: Some(flow::Endpoint {
                identity: 4,
                ..Default::default()
            }),
            destination: Some(flow::Endpoint {
                identity: 12345,
                ..Default::default()
            }),
            r#type: flow::FlowType::L3L4 as i32,
            node_name: "k8s1".into(),
            event_type: Some(flow::CiliumEventType {
                r#type: 1,
                sub_type: 133,
            }),
            is_reply: Some(pbjson_types::BoolValue { value: false }),
            summary: "TCP Flags: SYN".into(),
            ..Default::default()
        }
    }

    #[test]
    fn compact_vectors() {
        let f = vector();
        let plain = PrintOptions::default();
        let node = PrintOptions {
            node_name: true,
            ..Default::default()
        };
        assert_eq!(
            compact(&f, &plain),
            "Jan  1 00:20:34.567: 1.1.1.1:31793 (health) -> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)\n"
        );
        let reply = Flow {
            is_reply: Some(pbjson_types::BoolValue { value: true }),
            ..f.clone()
        };
        assert_eq!(
            compact(&reply, &node),
            "Jan  1 00:20:34.567 [k8s1]: 2.2.2.2:8080 (ID:12345) <- 1.1.1.1:31793 (health) Policy denied DROPPED (TCP Flags: SYN)\n"
        );
        let pv = Flow {
            is_reply: None,
            event_type: Some(flow::CiliumEventType {
                r#type: 5,
                sub_type: 0,
            }),
            traffic_direction: flow::TrafficDirection::Egress as i32,
            ..f.clone()
        };
        assert_eq!(
            compact(&pv, &node),
            "Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) <> 2.2.2.2:8080 (ID:12345) policy-verdict:none EGRESS DENIED (TCP Flags: SYN)\n"
        );
        let unknown = Flow {
            is_reply: None,
            ..f
        };
        assert_eq!(
            compact(&unknown, &node),
            "Jan  1 00:20:34.567 [k8s1]: 1.1.1.1:31793 (health) <> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)\n"
        );
    }

    #[test]
    fn compact_seed_shapes() {
        let f = Flow {
            time: Some(Timestamp::from_civil(2025, 7, 15, 21, 49, 39, 668_000_000)),
            verdict: flow::Verdict::Forwarded as i32,
            ip: Some(flow::Ip {
                source: "10.244.1.17".into(),
                destination: "169.254.169.254".into(),
                ..Default::default()
            }),
            l4: Some(flow::Layer4 {
                protocol: Some(layer4::Protocol::Tcp(flow::Tcp {
                    source_port: 40132,
                    destination_port: 80,
                    flags: None,
                })),
            }),
            source: Some(flow::Endpoint {
                identity: 14226,
                namespace: "go-webapp".into(),
                pod_name: "go-webapp-847857f68-2qlnd".into(),
                ..Default::default()
            }),
            destination: Some(flow::Endpoint {
                identity: 16777218,
                ..Default::default()
            }),
            event_type: Some(flow::CiliumEventType {
                r#type: 5,
                sub_type: 0,
            }),
            traffic_direction: flow::TrafficDirection::Egress as i32,
            policy_match_type: 4,
            is_reply: Some(pbjson_types::BoolValue { value: false }),
            summary: "TCP Flags: SYN".into(),
            ..Default::default()
        };
        assert_eq!(
            compact(&f, &PrintOptions::default()),
            "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) -> 169.254.169.254:80 (ID:16777218) policy-verdict:all EGRESS ALLOWED (TCP Flags: SYN)\n"
        );
        let drop = Flow {
            verdict: flow::Verdict::Dropped as i32,
            event_type: Some(flow::CiliumEventType {
                r#type: 1,
                sub_type: 181,
            }),
            is_reply: None,
            ..f.clone()
        };
        assert_eq!(
            compact(&drop, &PrintOptions::default()),
            "Jul 15 21:49:39.668: go-webapp/go-webapp-847857f68-2qlnd:40132 (ID:14226) <> 169.254.169.254:80 (ID:16777218) Policy denied by denylist DROPPED (TCP Flags: SYN)\n"
        );
        let http = Flow {
            l7: Some(flow::Layer7 {
                r#type: flow::L7FlowType::Request as i32,
                latency_ns: 0,
                record: Some(layer7::Record::Http(flow::Http {
                    method: "GET".into(),
                    url: "http://169.254.169.254/metadata/instance".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                })),
            }),
            event_type: Some(flow::CiliumEventType {
                r#type: 129,
                sub_type: 0,
            }),
            summary: "HTTP/1.1 GET http://169.254.169.254/metadata/instance".into(),
            ..f.clone()
        };
        let line = compact(&http, &PrintOptions::default());
        assert!(
            line.contains(
                " http-request FORWARDED (HTTP/1.1 GET http://169.254.169.254/metadata/instance)\n"
            ),
            "{line}"
        );
        let named = Flow {
            egress_allowed_by: vec![flow::Policy {
                name: "azure-imds-allow".into(),
                kind: "CiliumClusterwideNetworkPolicy".into(),
                ..Default::default()
            }],
            ..f
        };
        let line = compact(
            &named,
            &PrintOptions {
                policy_names: true,
                ..Default::default()
            },
        );
        assert!(
            line.contains("ALLOWED BY azure-imds-allow (CiliumClusterwideNetworkPolicy) ("),
            "{line}"
        );
    }

    #[test]
    fn json_vector() {
        let resp = GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(vector())),
            node_name: String::new(),
            time: None,
        };
        assert_eq!(
            json(&resp).unwrap(),
            r#"{"flow":{"time":"1970-01-01T00:20:34.567800Z","verdict":"DROPPED","IP":{"source":"1.1.1.1","destination":"2.2.2.2"},"l4":{"TCP":{"source_port":31793,"destination_port":8080}},"source":{"identity":4},"destination":{"identity":12345},"Type":"L3_L4","node_name":"k8s1","event_type":{"type":1,"sub_type":133},"drop_reason_desc":"POLICY_DENIED","is_reply":false,"Summary":"TCP Flags: SYN"}}"#
        );
        let with_meta = GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(vector())),
            node_name: "k8s1".into(),
            time: Some(Timestamp::new(1234, 567_800_000)),
        };
        let line = json(&with_meta).unwrap();
        assert!(line.ends_with(r#""Summary":"TCP Flags: SYN"},"node_name":"k8s1","time":"1970-01-01T00:20:34.567800Z"}"#), "{line}");
        let back: Flow = serde_json::from_str(&serde_json::to_string(&vector()).unwrap()).unwrap();
        assert_eq!(back, vector());
    }

    #[test]
    fn dict_and_table() {
        let f = vector();
        let opts = PrintOptions::default();
        assert_eq!(
            dict(&f, &opts, true),
            "  TIMESTAMP: Jan  1 00:20:34.567\n     SOURCE: 1.1.1.1:31793\nDESTINATION: 2.2.2.2:8080\n       TYPE: Policy denied\n    VERDICT: DROPPED\n    SUMMARY: TCP Flags: SYN\n"
        );
        assert!(dict(&f, &opts, false).starts_with("------------\n"));
        let mut t = Table::new(&opts);
        t.push(&f, &opts);
        assert_eq!(
            t.render(),
            "TIMESTAMP             SOURCE          DESTINATION    TYPE            VERDICT   SUMMARY\nJan  1 00:20:34.567   1.1.1.1:31793   2.2.2.2:8080   Policy denied   DROPPED   TCP Flags: SYN\n"
        );
    }

    fn with_process(f: &Flow) -> Flow {
        let mut f = f.clone();
        process::set(
            &mut f,
            &ProcessInfo {
                container: "istio-proxy".into(),
                process: "envoy".into(),
                pid: 4242,
                uid: Some(1337),
            },
        );
        f
    }

    #[test]
    fn extensions_change_nothing_without_print_process() {
        let (plain, ext) = (vector(), with_process(&vector()));
        let opts = PrintOptions::default();
        assert_eq!(compact(&ext, &opts), compact(&plain, &opts));
        assert_eq!(dict(&ext, &opts, true), dict(&plain, &opts, true));
        let (mut a, mut b) = (Table::new(&opts), Table::new(&opts));
        a.push(&plain, &opts);
        b.push(&ext, &opts);
        assert_eq!(a.render(), b.render());
    }

    #[test]
    fn print_process() {
        let opts = PrintOptions {
            process: true,
            ..Default::default()
        };
        let f = with_process(&vector());
        assert_eq!(
            compact(&f, &opts),
            "Jan  1 00:20:34.567: 1.1.1.1:31793 (health) -> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN) container=istio-proxy process=envoy pid=4242\n"
        );
        // Nothing known, nothing added; a partial one prints what it has.
        assert_eq!(
            compact(&vector(), &opts),
            compact(&vector(), &PrintOptions::default())
        );
        let mut partial = vector();
        process::set(
            &mut partial,
            &ProcessInfo {
                process: "my tool".into(),
                ..Default::default()
            },
        );
        assert!(
            compact(&partial, &opts).ends_with("(TCP Flags: SYN) process=\"my tool\"\n"),
            "{}",
            compact(&partial, &opts)
        );
        assert!(dict(&f, &opts, true).ends_with(
            "    SUMMARY: TCP Flags: SYN\n  CONTAINER: istio-proxy\n    PROCESS: envoy[4242]\n"
        ));
        let mut t = Table::new(&opts);
        t.push(&f, &opts);
        t.push(&vector(), &opts);
        assert_eq!(
            t.render(),
            concat!(
                "TIMESTAMP             SOURCE          DESTINATION    TYPE            VERDICT   CONTAINER     PROCESS       SUMMARY\n",
                "Jan  1 00:20:34.567   1.1.1.1:31793   2.2.2.2:8080   Policy denied   DROPPED   istio-proxy   envoy[4242]   TCP Flags: SYN\n",
                "Jan  1 00:20:34.567   1.1.1.1:31793   2.2.2.2:8080   Policy denied   DROPPED                               TCP Flags: SYN\n",
            )
        );
    }

    #[test]
    fn json_writes_the_extension_as_protojson_and_reads_it_back() {
        let f = with_process(&vector());
        let resp = GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(f.clone())),
            node_name: "k8s1".into(),
            time: None,
        };
        let line = json(&resp).unwrap();
        assert!(
            line.contains(r#","Summary":"TCP Flags: SYN","extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":4242,"process":"envoy","uid":1337}}},"node_name":"k8s1"}"#),
            "{line}"
        );
        let mut d = crate::jsonline::LineDecoder::new();
        assert_eq!(d.decode(&line).unwrap(), &resp);
        assert_eq!(d.counts(), (1, 0), "the fast path reads it");
        // Embedded in another document, the same text.
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            flow: FlowJson<'a>,
        }
        let doc = serde_json::to_string(&Doc { flow: FlowJson(&f) }).unwrap();
        let without_node = line.strip_suffix(r#","node_name":"k8s1"}"#).unwrap();
        assert_eq!(doc, format!("{without_node}}}"));
    }

    #[test]
    fn terminal_control_characters_are_escaped() {
        let f = Flow {
            summary: "HTTP/1.1 GET http://x/\x1b[2J\rboom".into(),
            ..vector()
        };
        let line = compact(&f, &PrintOptions::default());
        assert!(
            line.ends_with("(HTTP/1.1 GET http://x/^[[2J\\rboom)\n"),
            "{line}"
        );
        assert!(!line.contains('\x1b') && !line.contains('\r'));
    }

    #[test]
    fn time_formats() {
        let t = Timestamp::new(1234, 567_800_000);
        assert_eq!(
            format_time(Some(&t), TimeFormat::Rfc3339Nano),
            "1970-01-01T00:20:34.5678Z"
        );
        assert_eq!(
            format_time(Some(&t), TimeFormat::Rfc1123Z),
            "Thu, 01 Jan 1970 00:20:34 +0000"
        );
        assert_eq!(format_time(None, TimeFormat::StampMilli), "N/A");
    }
}
